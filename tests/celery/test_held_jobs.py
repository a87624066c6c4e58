"""Job tasks hold no worker slot: an existing app on Celery's default pool (prefork -c 2)
with ``bridge.install(app)`` runs 50 bridge jobs at once, its own tasks flow meanwhile, and
everything Celery users rely on (inspect, events, chords, chains, one result per task
across a broker reconnect) works as for a normal task.

The endpoint's handler is a barrier: a job finishes only once all 50 are IN_PROGRESS at
the same time *and* the test released them, so "held at once" is asserted, not timed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery, chain, chord, signature
from celery_helpers import Stack, WorkerProcess, wait_until

N = 50


class Barrier:
    """An async handler: each job waits until ``n`` jobs arrived and the test released them."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.arrived = 0
        self.all_in = threading.Event()
        self._release: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _event(self) -> asyncio.Event:
        if self._release is None:
            self._release, self._loop = asyncio.Event(), asyncio.get_running_loop()
        return self._release

    async def __call__(self, job: dict[str, Any]) -> dict[str, Any]:
        release = self._event()
        self.arrived += 1
        if self.arrived >= self.n:
            self.all_in.set()
        await asyncio.wait_for(release.wait(), 120)
        return {"n": job["input"]["n"]}

    def release(self) -> None:
        assert self._loop is not None and self._release is not None
        self._loop.call_soon_threadsafe(self._release.set)


@pytest.fixture
def barrier(sub_stack: Stack) -> Iterator[Barrier]:
    b = Barrier(N)
    sub_stack.endpoint.add_endpoint(f"barrier{id(b)}", b, workers=N + 10)
    yield b
    if b._release is not None:
        b.release()


def _producer(sub_stack: Stack, broker_db: int) -> Celery:
    base = sub_stack.url.rsplit("/", 1)[0]
    app = Celery("producer", broker=f"{base}/{broker_db}", backend=sub_stack.url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    return app


def _existing_worker(workers: Callable[..., WorkerProcess], app: Celery, pool: str = "prefork",
                     concurrency: int = 2) -> WorkerProcess:
    return workers(pool=pool, concurrency=concurrency, app_module="existing_app", app=app,
                   CELERY_BROKER_URL=app.conf.broker_url)


def _run(app: Celery, endpoint: str, n: int) -> Any:
    return signature("bridge.run", args=({"n": n}, endpoint), app=app)


def test_fifty_jobs_held_at_once_on_prefork_c2_while_the_apps_tasks_flow(
    sub_stack: Stack, workers: Callable[..., WorkerProcess], barrier: Barrier
) -> None:
    app = _producer(sub_stack, 8)
    worker = _existing_worker(workers, app)
    endpoint = f"barrier{id(barrier)}"
    results = [_run(app, endpoint, i).apply_async() for i in range(N)]
    # all 50 are IN_PROGRESS at the same time on 2 pool processes: none holds a slot
    assert barrier.all_in.wait(60), f"{barrier.arrived} of {N} jobs arrived\n{worker.output()}"
    # the app's own task goes through the pool meanwhile
    assert app.send_task("existing.add", args=(2, 3)).get(timeout=30) == 5
    assert not any(r.ready() for r in results)
    # inspect active lists the held jobs, in the worker's main process
    active = app.control.inspect([worker.name], timeout=5).active() or {}
    held = {t["id"]: t for t in active.get(worker.name, [])}
    assert {r.id for r in results} <= set(held), f"{len(held)} active"
    assert {held[r.id]["worker_pid"] for r in results} == {worker.proc.pid}
    barrier.release()
    assert sorted(r.get(timeout=60)["n"] for r in results) == list(range(N))
    assert sub_stack.endpoint.submissions(endpoint) == N


def test_events_chord_and_chain_on_held_jobs(
    sub_stack: Stack, workers: Callable[..., WorkerProcess]
) -> None:
    app = _producer(sub_stack, 9)
    worker = _existing_worker(workers, app)
    sub_stack.redis.delete("existing:total-calls", *[f"existing:record:{i}" for i in range(100, 105)])
    seen: dict[str, list[str]] = {}
    ready, stop = threading.Event(), threading.Event()

    def listen() -> None:
        def on_event(event: dict[str, Any]) -> None:
            seen.setdefault(event.get("uuid", ""), []).append(event["type"])

        with app.connection_for_read() as conn:
            receiver = app.events.Receiver(conn, handlers={"*": on_event})
            ready.set()
            while not stop.is_set():
                try:
                    receiver.capture(limit=None, timeout=0.5, wakeup=False)
                except Exception:  # the capture timeout; the test's end closes the connection
                    continue

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(10)
    # the receiver binds its queue inside capture(): wait until it hears a probe task
    wait_until(lambda: app.send_task("existing.add", args=(1, 1)).get(timeout=10) == 2
               and any("task-succeeded" in types for types in seen.values()), 15)
    one = _run(app, "echo", 1).apply_async()
    assert one.get(timeout=30) == {"n": 1}
    wait_until(lambda: "task-succeeded" in seen.get(one.id, []), 10)
    assert seen[one.id][:3] == ["task-received", "task-started", "task-succeeded"]
    # a chord over bridge tasks calls its body once, with every output
    body = signature("existing.total", app=app)
    total = chord([_run(app, "echo", n) for n in range(1, 6)], body).apply_async()
    assert total.get(timeout=30) == 15
    assert int(sub_stack.redis.get("existing:total-calls") or 0) == 1
    # a chain through a bridge task passes the output on
    ch = chain(_run(app, "echo", 100), signature("existing.record", app=app)).apply_async()
    assert ch.get(timeout=30) == 1
    assert worker.proc.poll() is None
    stop.set()
    listener.join(5)


def _kill_broker_connections(client: redis.Redis, db: int) -> int:
    """Drop every client connection on the broker's db (the worker's broker link)."""
    killed = 0
    for info in client.client_list():
        if int(info.get("db", -1)) == db and info.get("cmd") != "client|list":
            try:
                client.client_kill_filter(_id=info["id"])
                killed += 1
            except redis.ResponseError:
                pass
    return killed


def test_a_broker_connection_drop_while_jobs_are_held_gives_one_result_each(
    sub_stack: Stack, workers: Callable[..., WorkerProcess], barrier: Barrier
) -> None:
    app = _producer(sub_stack, 10)
    worker = _existing_worker(workers, app)
    endpoint = f"barrier{id(barrier)}"
    keys = [f"existing:record:{i}" for i in range(N)]
    sub_stack.redis.delete(*keys)
    results = [chain(_run(app, endpoint, i), signature("existing.record", app=app)).apply_async()
               for i in range(N)]
    assert barrier.all_in.wait(60), worker.output()
    assert _kill_broker_connections(sub_stack.redis, 10) > 0
    # kombu requeues the unacked messages; the worker reconnects and gets them again
    wait_until(lambda: "redelivered while held" in worker.output(), 30)
    barrier.release()
    assert [r.get(timeout=90) for r in results] == [1] * N  # every chain step ran once
    assert [int(v) for v in sub_stack.redis.mget(keys)] == [1] * N
    assert sub_stack.endpoint.submissions(endpoint) == N


def test_a_replacement_child_forked_while_jobs_are_held_works(
    sub_stack: Stack, workers: Callable[..., WorkerProcess]
) -> None:
    """billiard forks replacement children from the main process, which now runs the
    gateway and held-jobs threads: a child killed while jobs are held is replaced by one
    that runs the app's tasks (and blocking bridge calls) normally."""
    import os
    import signal
    import subprocess

    app = _producer(sub_stack, 11)
    worker = _existing_worker(workers, app)
    held = [signature("bridge.run", args=({"seconds": 4, "i": i}, "sleep"), app=app).apply_async()
            for i in range(20)]
    wait_until(lambda: all(sub_stack.journal(r.id).get("job_id") for r in held), 20)
    children = subprocess.run(["pgrep", "-P", str(worker.proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 2
    os.kill(int(children[0]), signal.SIGKILL)
    wait_until(lambda: len(subprocess.run(["pgrep", "-P", str(worker.proc.pid)], capture_output=True,
                                          text=True).stdout.split()) == 2
               and children[0] not in subprocess.run(["pgrep", "-P", str(worker.proc.pid)],
                                                     capture_output=True, text=True).stdout.split(), 20)
    # the app's tasks run in both children (the replacement included)
    assert [app.send_task("existing.add", args=(i, 1)).get(timeout=20) for i in range(8)] == list(range(1, 9))
    assert [r.get(timeout=30) for r in held] == [{"slept": 4.0}] * 20
    assert app.send_task("bridge.status", args=(sub_stack.job_id(held[0].id), "sleep")) \
        .get(timeout=20)["status"] == "COMPLETED"
