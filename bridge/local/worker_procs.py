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
import shutil
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

log = logging.getLogger(__name__)

#: Back-off between restarts of a worker that keeps dying before it contacts the endpoint.
_BACKOFF_FIRST, _BACKOFF_MAX = 0.5, 30.0

#: Variables a parent environment may carry that would make the SDK do something else than
#: poll this endpoint (e.g. start its own HTTP server).
_DROP_ENV = ("RUNPOD_REALTIME_PORT", "RUNPOD_REALTIME_CONCURRENCY", "RUNPOD_WEBHOOK_JOB_STREAM")


def worker_env(
    base_url: str,
    endpoint_id: str,
    worker_id: str,
    token: str,
    *,
    ping_interval: float = 10.0,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment that makes a runpod worker poll ``base_url`` (``http://host:port/v2``).

    Placeholders stay for the SDK to fill: ``$ID`` (worker id in the job-take URL, job id in
    the result URLs) and ``$RUNPOD_POD_ID`` (worker id). The job-take URL carries a query
    already because the SDK appends ``&job_in_progress=...`` to it.
    """
    env = dict(os.environ if base is None else base)
    for name in _DROP_ENV:
        env.pop(name, None)
    query = f"?gpu=bridge-local&worker_token={token}"
    root = f"{base_url.rstrip('/')}/{endpoint_id}"
    env.update({
        "RUNPOD_WEBHOOK_GET_JOB": f"{root}/job-take/$ID{query}",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{root}/job-done/$RUNPOD_POD_ID/$ID{query}",
        "RUNPOD_WEBHOOK_POST_STREAM": f"{root}/job-stream/$RUNPOD_POD_ID/$ID{query}",
        "RUNPOD_WEBHOOK_PING": f"{root}/ping/$RUNPOD_POD_ID{query}",
        "RUNPOD_POD_ID": worker_id,
        "RUNPOD_ENDPOINT_ID": endpoint_id,
        "RUNPOD_AI_API_KEY": token,
        # Without these the SDK's start-up checks connect to 8.8.8.8 and look for a GPU.
        "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
        "RUNPOD_SKIP_GPU_CHECK": "true",
        "RUNPOD_PING_INTERVAL": str(max(1000, int(ping_interval * 1000))),
        # Worker output is forwarded line by line; a block-buffered child would hold it back.
        "PYTHONUNBUFFERED": "1",
    })
    # The SDK logs every request at its default level (DEBUG); keep the user's choice if any.
    env.setdefault("RUNPOD_LOG_LEVEL", "INFO")
    return env


def split_command(command: str | Sequence[str]) -> list[str]:
    """The argv of a worker command; raises ConfigurationError if it cannot be run."""
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    if not argv:
        raise errors.ConfigurationError("the worker command is empty", None, None,
                                        "--worker-command / worker_command, e.g. \"python handler.py\"")
    if shutil.which(argv[0]) is None and not os.path.isfile(argv[0]):
        raise errors.ConfigurationError(
            f"worker command {argv[0]!r} was not found", None, None,
            "PATH (or give the interpreter's full path, e.g. .venv/bin/python handler.py)",
        )
    return argv


def _die_with_parent() -> None:
    # Runs in the child before exec (Linux): SIGTERM it if the server process dies without
    # stopping its workers (kill -9), instead of leaving them polling a dead port.
    # prctl(PR_SET_PDEATHSIG=1, SIGTERM); best effort where there is no prctl.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _all_groups_killed() -> None:
    # Interpreter exit without stop() (a script that never closed its endpoint): no orphans.
    for supervisor in list(_LIVE):
        for proc in list(supervisor.procs.values()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.process.pid, signal.SIGKILL)


_LIVE: weakref.WeakSet[WorkerSupervisor] = weakref.WeakSet()
atexit.register(_all_groups_killed)


def _loopback(base_url: str) -> str:
    # A server bound to every interface is still reached on loopback by its own workers.
    return base_url.replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//[::1]:")


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"was killed by {name}"
    return f"exited with code {code}"


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
    ) -> None:
        self.host = host
        self.argv = split_command(command)
        self.count = max(1, int(count))
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.stop_grace = float(stop_grace)
        self.quiet = quiet
        self.output = output or self._to_stderr
        self.procs: dict[str, _Proc] = {}
        self.started_total = 0
        self.restarts = 0
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
        self.base_url = _loopback(base_url)
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
                    preexec_fn=_die_with_parent,
                )
            except OSError as exc:
                self.host.retire(worker_id, "could not start")
                log.error("endpoint %s: cannot start worker command %s: %s", self.host.endpoint_id,
                          shlex.join(self.argv), exc)
                failures += 1
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
            how = _describe_exit(code)
            lost = self.host.retire(worker_id, how)
            if self._stopping:
                break
            if record.refreshing and not lost:
                failures = 0
                log.info("endpoint %s: worker %s recycled after refresh_worker", self.host.endpoint_id, worker_id)
                continue
            if not proc.killed_on_purpose:
                last = "\n".join(f"    {line}" for line in proc.tail)
                log.warning("endpoint %s: worker %s %s; restarting. Last output:\n%s",
                            self.host.endpoint_id, worker_id, how, errors.scrub(last, self.host.token))
            if record.first_contact is None and not proc.killed_on_purpose:
                failures += 1  # died before it ever reached us: a broken command or import
                await self._back_off(slot, generation, failures)
            else:
                failures = 0

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
