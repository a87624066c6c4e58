"""bridge.per_process.PerProcess: one object per process, fresh in a forked child."""

from __future__ import annotations

import os
import select
import signal
import threading

from bridge.per_process import PerProcess


class Thing:
    def __init__(self) -> None:
        self.pid = os.getpid()


def test_made_once_on_first_use_and_forgotten_on_reset() -> None:
    made: list[Thing] = []

    def make() -> Thing:
        made.append(Thing())
        return made[-1]

    things = PerProcess(make)
    assert things.current() is None and made == []
    first = things.get()
    assert things.get() is first and things.current() is first and len(made) == 1
    assert things.reset() is first and things.current() is None
    assert things.get() is not first and len(made) == 2


def test_threads_racing_for_the_first_use_share_one_object() -> None:
    barrier = threading.Barrier(8)
    things = PerProcess(Thing)
    seen: list[Thing] = []

    def use() -> None:
        barrier.wait()
        seen.append(things.get())

    workers = [threading.Thread(target=use) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(seen) == 8 and all(thing is seen[0] for thing in seen)


def test_a_forked_child_makes_its_own_even_while_the_parent_holds_the_lock() -> None:
    things = PerProcess(Thing)
    parent = things.get()
    read, write = os.pipe()
    with things._lock:  # a parent thread inside get() at the fork must not block the child
        pid = os.fork()
        if pid == 0:  # the child: report, then leave without running the parent's cleanup
            try:
                before = things.current()
                child = things.get()
                ok = before is None and child is not parent and child.pid == os.getpid()
                os.write(write, b"1" if ok else b"0")
            finally:
                os._exit(0)
    os.close(write)
    ready, _, _ = select.select([read], [], [], 30)
    if not ready:  # the child is stuck on the inherited lock: end it, fail the test
        os.kill(pid, signal.SIGKILL)
    said = os.read(read, 1) if ready else b"stuck"
    os.close(read)
    status = os.waitpid(pid, 0)[1]
    assert said == b"1" and status == 0
    assert things.current() is parent and things.get() is parent
