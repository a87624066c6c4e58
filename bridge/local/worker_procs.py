"""Real runpod worker processes for a local endpoint: start them, watch them, restart them.

``bridge serve --worker-command "python handler.py" --worker-count N`` (or
``LocalEndpoint(worker_command=..., worker_count=N)``) runs N copies of the user's unchanged
worker, each with the environment the runpod SDK reads on the platform (see
:func:`worker_env`), pointed at this endpoint's worker routes
(:mod:`bridge.local.worker_api`, :mod:`bridge.local.worker_host`). The command is split
like a shell would (``shlex``) but not run through a shell; it runs in the server's
working directory unless ``cwd`` is given.

- A worker that exits is started again under a new worker id (``w<slot>-<n>``): at once
  after ``refresh_worker``, otherwise after a back-off that doubles while it keeps dying
  before ever contacting the endpoint (0.5 s up to 30 s; it counts as ``unhealthy`` then).
  Jobs it was running end TIMED_OUT (see :mod:`bridge.local.worker_host`).
- A slot whose worker fails ``start_attempts`` times in a row (5 by default) before ever
  contacting the endpoint (a missing script, an import error) gives up and stays
  ``unhealthy``. Once every slot has given up, :attr:`WorkerSupervisor.failed` holds a
  ConfigurationError saying why, queued and new jobs end FAILED with its message instead of
  waiting forever, and ``on_give_up`` is called with it (``bridge serve`` exits 7).
- A worker that stops pinging is killed (SIGKILL to its process group) and restarted.
- Shutdown: SIGTERM to every worker's process group (the SDK finishes the job in hand and
  exits), open polls are answered at once, and whatever is still alive after
  ``stop_grace`` seconds gets SIGKILL.

Each worker runs in its own session (process group), so the SDK's heartbeat child process
goes down with it. Worker output is forwarded line by line, prefixed with
``[endpoint worker]``, to ``output`` (default: the server's stderr).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bridge import errors
from bridge.local.jobs import JobStore
from bridge.local.worker_host import WorkerHost
from bridge.local.worker_launch import describe_exit, die_with_parent, loopback, split_command, worker_env

__all__ = ["WorkerRunner", "WorkerSupervisor", "split_command", "worker_env"]

log = logging.getLogger(__name__)

#: Back-off between restarts of a worker that keeps dying before it contacts the endpoint.
_BACKOFF_FIRST, _BACKOFF_MAX = 0.5, 30.0
#: Starts in a row that die before contacting the endpoint, after which a slot gives up
#: (about 8 s of back-off for a command that fails at once).
START_ATTEMPTS = 5

def _all_groups_killed() -> None:
    # Interpreter exit without stop() (a script that never closed its endpoint): no orphans.
    for supervisor in list(_LIVE):
        for proc in list(supervisor.procs.values()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.process.pid, signal.SIGKILL)


_LIVE: weakref.WeakSet[WorkerSupervisor] = weakref.WeakSet()
atexit.register(_all_groups_killed)


class _Proc:
    """One worker process, with a thread waiting for its exit and one forwarding its output.

    Threads rather than asyncio's subprocess support: asyncio's ``Process.wait()`` also
    waits for the output pipe to close, and the SDK's heartbeat child keeps it open after
    the worker itself died.
    """

    def __init__(self, worker_id: str, process: subprocess.Popen[bytes], output: Callable[[str], Any],
                 prefix: str, secret: str) -> None:
        self.worker_id = worker_id
        self.process = process
        self.started = time.monotonic()
        self.tail: deque[str] = deque(maxlen=20)
        self.killed_on_purpose = False
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = loop.create_future()

        def settle(code: int) -> None:
            if not self.exited.done():
                self.exited.set_result(code)

        def wait() -> None:
            code = process.wait()
            with contextlib.suppress(RuntimeError):  # the loop may be closed at interpreter exit
                loop.call_soon_threadsafe(settle, code)

        def pump() -> None:
            assert process.stdout is not None
            for raw in process.stdout:
                line = errors.scrub(raw.decode("utf-8", "replace").rstrip("\n"), secret)
                self.tail.append(line)
                output(prefix + line)
            process.stdout.close()

        name = f"bridge-worker-{worker_id}"
        threading.Thread(target=wait, name=name + "-wait", daemon=True).start()
        self.pump = threading.Thread(target=pump, name=name + "-output", daemon=True)
        self.pump.start()


class WorkerSupervisor:
    """Keeps ``count`` worker processes running for one :class:`WorkerHost`."""

    def __init__(
        self,
        host: WorkerHost,
        command: str | Sequence[str],
        *,
        count: int = 1,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stop_grace: float = 10.0,
        output: Callable[[str], Any] | None = None,
        quiet: bool = False,
        start_attempts: int = START_ATTEMPTS,
        on_give_up: Callable[[errors.ConfigurationError], Any] | None = None,
    ) -> None:
        self.host = host
        self.argv = split_command(command, cwd)
        self.count = max(1, int(count))
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.stop_grace = float(stop_grace)
        self.quiet = quiet
        self.output = output or self._to_stderr
        self.procs: dict[str, _Proc] = {}
        self.started_total = 0
        self.restarts = 0
        self.start_attempts = max(1, int(start_attempts))
        self.on_give_up = on_give_up
        #: Set once every slot gave up: why no worker could start.
        self.failed: errors.ConfigurationError | None = None
        self._gave_up: set[int] = set()
        self.base_url: str | None = None
        self._stopping = False
        self._stop_event: asyncio.Event | None = None
        self._slots: list[asyncio.Task[None]] = []
        host.on_lost = self.kill_lost
        _LIVE.add(self)
        host.on_refresh = self.recycle

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, base_url: str) -> None:
        """Start the workers against ``base_url`` (``http://host:port/v2``) on the running loop."""
        if self._slots:
            return
        self.base_url = loopback(base_url)
        self._stop_event = asyncio.Event()
        self.host.start()
        loop = asyncio.get_running_loop()
        self._slots = [loop.create_task(self._slot(i + 1)) for i in range(self.count)]

    async def stop(self) -> None:
        """SIGTERM every worker, release their polls, SIGKILL stragglers after ``stop_grace``."""
        self._stopping = True
        if self._stop_event is not None:
            self._stop_event.set()  # slots waiting out a restart back-off end now
        for proc in list(self.procs.values()):
            self._signal(proc, signal.SIGTERM)
        await self.host.close()
        if not self._slots:
            return
        _done, pending = await asyncio.wait(self._slots, timeout=self.stop_grace)
        if pending:
            for proc in list(self.procs.values()):
                self._signal(proc, signal.SIGKILL)
            await asyncio.wait(pending, timeout=5.0)
        for task in self._slots:
            task.cancel()
        await asyncio.gather(*self._slots, return_exceptions=True)
        self._slots = []

    # -- control (tests, the watchdog) -------------------------------------------------

    def pids(self) -> dict[str, int]:
        """``{worker_id: pid}`` of the worker processes alive now."""
        return {wid: p.process.pid for wid, p in self.procs.items() if p.process.returncode is None}

    def kill(self, worker_id: str, sig: int = signal.SIGKILL) -> bool:
        """Send ``sig`` to one worker's main process (as a crash would); True if it was alive."""
        proc = self.procs.get(worker_id)
        if proc is None or proc.process.returncode is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.process.pid, sig)
        return True

    def recycle(self, worker_id: str) -> None:
        """Stop a worker gracefully (after ``refresh_worker``); its slot starts a fresh one."""
        proc = self.procs.get(worker_id)
        if proc is None:
            return
        proc.killed_on_purpose = True
        self._signal(proc, signal.SIGTERM)
        # A worker that ignores SIGTERM is not left holding its slot.
        asyncio.get_running_loop().call_later(self.stop_grace, self._signal, proc, signal.SIGKILL)

    def kill_lost(self, worker_id: str) -> None:
        """The host stopped hearing from this worker: kill its process group; it is restarted."""
        proc = self.procs.get(worker_id)
        if proc is not None:
            proc.killed_on_purpose = True
            log.warning("endpoint %s: killing worker %s, which stopped pinging", self.host.endpoint_id, worker_id)
            self._signal(proc, signal.SIGKILL)

    # -- internals ---------------------------------------------------------------------

    def _signal(self, proc: _Proc, sig: int) -> None:
        if proc.process.returncode is not None:
            return
        try:
            os.killpg(proc.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.process.pid, sig)

    def _to_stderr(self, line: str) -> None:
        if not self.quiet:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    async def _slot(self, slot: int) -> None:
        failures = 0
        generation = 0
        while not self._stopping:
            generation += 1
            worker_id = f"w{slot}-{generation}"
            record = self.host.register(worker_id)
            assert self.base_url is not None
            env = worker_env(self.base_url, self.host.endpoint_id, worker_id, self.host.token,
                             ping_interval=self.host.ping_interval, base=self.env)
            try:
                process = subprocess.Popen(
                    self.argv, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=die_with_parent,
                )
            except OSError as exc:
                self.host.retire(worker_id, "could not start")
                how = f"could not be started ({exc.strerror or exc})"
                failures += 1
                if failures >= self.start_attempts:
                    self._give_up(slot, worker_id, how, [])
                    return
                log.error("endpoint %s: worker command %s %s; retrying", self.host.endpoint_id,
                          shlex.join(self.argv), how)
                await self._back_off(slot, generation, failures)
                continue
            self.started_total += 1
            if generation > 1:
                self.restarts += 1
            proc = _Proc(worker_id, process, self.output, f"[{self.host.endpoint_id} {worker_id}] ",
                         self.host.token)
            self.procs[worker_id] = proc
            try:
                code = await asyncio.shield(proc.exited)
            except asyncio.CancelledError:
                self._signal(proc, signal.SIGKILL)
                raise
            finally:
                # The heartbeat child (and anything else the worker started) goes with it.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                del self.procs[worker_id]
            how = describe_exit(code)
            lost = self.host.retire(worker_id, how)
            if self._stopping:
                break
            if record.refreshing and not lost:
                failures = 0
                log.info("endpoint %s: worker %s recycled after refresh_worker", self.host.endpoint_id, worker_id)
                continue
            broken = record.first_contact is None and not proc.killed_on_purpose
            # Died before it ever reached us: a broken command or import.
            failures = failures + 1 if broken else 0
            if failures >= self.start_attempts:
                self._give_up(slot, worker_id, how, list(proc.tail))
                return
            if not proc.killed_on_purpose:
                last = "\n".join(f"    {line}" for line in proc.tail)
                log.warning("endpoint %s: worker %s %s; restarting. Last output:\n%s",
                            self.host.endpoint_id, worker_id, how, errors.scrub(last, self.host.token))
            if broken:
                await self._back_off(slot, generation, failures)

    def _give_up(self, slot: int, worker_id: str, how: str, tail: list[str]) -> None:
        """Stop restarting this slot; once all have given up, fail the endpoint's jobs."""
        last = next((line for line in reversed(tail) if line.strip()), "")
        message = (f"worker command {shlex.join(self.argv)!r} {how} before contacting the endpoint, "
                   f"{self.start_attempts} times in a row; gave up restarting it"
                   + (f". Its last output: {errors.scrub(last.strip(), self.host.token)[:300]}" if last else ""))
        log.error("endpoint %s: %s", self.host.endpoint_id, message)
        # Stays in /health as unhealthy, like a RunPod worker that never became ready.
        self.host.register(f"w{slot}-gave-up").unhealthy = True
        self._gave_up.add(slot)
        if len(self._gave_up) < self.count or self.failed is not None:
            return
        self.failed = errors.ConfigurationError(
            message, None, self.host.endpoint_id,
            "that the command runs on its own in this directory (the script path, and that its "
            "python has runpod installed)",
        )
        self.host.refuse_jobs(f"no worker of endpoint {self.host.endpoint_id} could start: {message}")
        if self.on_give_up is not None:
            self.on_give_up(self.failed)

    async def _back_off(self, slot: int, generation: int, failures: int) -> None:
        delay = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** (failures - 1))
        # Shown as unhealthy in /health while it waits, like a crash-looping RunPod worker.
        waiting = f"w{slot}-{generation + 1}"
        self.host.register(waiting).unhealthy = True
        try:
            if self._stop_event is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), delay)
        finally:
            self.host.workers.pop(waiting, None)


class WorkerRunner:
    """Runs one endpoint's jobs on real runpod worker processes (in place of a HandlerRunner).

    ``options`` may hold WorkerHost settings (``hold``, ``ping_interval``, ``lost_after``,
    ``token``) and WorkerSupervisor settings (``cwd``, ``env``, ``stop_grace``, ``output``,
    ``quiet``).
    """

    kind = "worker-command"

    def __init__(self, store: JobStore, command: str | Sequence[str], *, count: int = 1, **options: Any) -> None:
        host_keys = ("token", "hold", "ping_interval", "lost_after", "accept_unknown")
        host_options = {k: options.pop(k) for k in host_keys if k in options}
        # Only the processes we start may take jobs, unless asked otherwise.
        host_options.setdefault("accept_unknown", False)
        self.store = store
        self.command = command
        self.host = WorkerHost(store, **host_options)
        self.supervisor = WorkerSupervisor(self.host, command, count=count, **options)
        self.warm = True  # the fault injector's cold start does not apply: real workers have their own

    @property
    def started(self) -> bool:
        return self.supervisor.base_url is not None

    @property
    def running(self) -> int:
        return self.host.running_jobs

    @property
    def initializing(self) -> bool:
        return self.host.counts()["initializing"] > 0

    def worker_counts(self) -> dict[str, int]:
        return self.host.counts()

    def start(self, base_url: str) -> None:
        self.supervisor.start(base_url)

    async def close(self) -> None:
        await self.supervisor.stop()
