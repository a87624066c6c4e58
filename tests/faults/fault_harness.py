"""Redis fault scenarios with real processes, shared by tests/faults and ``bench/faults.py``.

A scenario: its own redis-server (AOF, ``appendfsync always``, data in a directory that
outlives the process), the local endpoint on 127.0.0.1, a ``celery -A bridge.app worker``
subprocess on that Redis (broker, result backend and bridge's keys), N ``bridge.run`` jobs
of S seconds published; once the worker received them all (submits still going on) Redis is
killed (-9) and started again on the same port ``outage`` seconds later. Then it counts, by a deadline after Redis
is back: correct results, failures, unfinished tasks, and ``/run`` requests beyond one per
task (possible double submissions; the local endpoint honours Idempotency-Key, so the
jobs it created are counted separately).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from bridge.embedded_redis import EmbeddedRedis
from bridge.testing import LocalEndpoint
from bridge.testing.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = str(ROOT / "examples" / "handlers.py")
CELERY = str(Path(sys.executable).parent / "celery")
API_KEY = "rpa_FAULTKEY0123456789abcdef"


class FaultRedis:
    """A redis-server with AOF (``appendfsync always``) that can be killed -9 and started
    again on the same port with its data, like a production Redis after a crash."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="bridge-fault-redis-")
        self.server = EmbeddedRedis(require_real=True, aof=True, data_dir=self.dir).start()
        self.port = self.server.port
        self.url = self.server.url

    def kill(self) -> None:
        self.server.kill()

    def restart(self) -> None:
        self.server = EmbeddedRedis(require_real=True, aof=True, data_dir=self.dir, port=self.port).start()
        # a client connecting while the AOF loads gets LOADING: wait until it answers
        client = redis.Redis.from_url(self.url)
        try:
            wait_until(lambda: _pings(client), 30, 0.05)
        finally:
            client.close()

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False


class Worker:
    """``celery -A bridge.app worker`` on ``url`` (broker, backend, bridge's keys)."""

    def __init__(self, url: str, base_url: str, pool: str, log_name: str, **env: str) -> None:
        self.name = f"{log_name}-{os.getpid()}@faults"
        full_env = {
            **os.environ, "CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url, "BRIDGE_REDIS_URL": url,
            "RUNPOD_API_KEY": API_KEY, "RUNPOD_ENDPOINT_BASE_URL": base_url, "BRIDGE_WORKER_POOL": pool,
            "BRIDGE_WORKER_CONCURRENCY": "2" if pool == "prefork" else "8", "BRIDGE_LONG_POLL": "5",
            "BRIDGE_HEARTBEAT_INTERVAL": "2", "PYTHONPATH": str(ROOT), **env,
        }
        self.log_path = Path(tempfile.gettempdir()) / f"bridge-fault-{log_name}-{os.getpid()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [CELERY, "-A", "bridge.app", "worker", "-l", "INFO", "-n", self.name, "--without-mingle",
             "--without-gossip"],
            cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self, app: Celery, timeout: float = 60.0) -> None:
        def pong() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.output()}")
            return bool(app.control.ping([self.name], timeout=0.5))

        wait_until(pong, timeout, 0.1)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


def producer_app(url: str) -> Celery:
    app = Celery("fault-producer", broker=url, backend=url)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                    broker_connection_retry_on_startup=True, result_backend_always_retry=True,
                    result_backend_max_retries=100)
    return app


@dataclass
class Figures:
    """What a scenario ended with."""

    jobs: int
    outage: float
    correct: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # task id -> the error's type and text
    unfinished: int = 0
    run_requests: int = 0
    jobs_created: int = 0
    recovered_in: float | None = None  # s from Redis back to the last result stored
    worker_alive: bool = True
    double_submits_logged: int = 0
    stuck: dict[str, str] = field(default_factory=dict)  # unfinished task id -> where it is

    @property
    def double_submits(self) -> int:
        """/run requests beyond one per task: a job the endpoint may have run twice."""
        return max(0, self.run_requests - self.jobs)

    def line(self) -> str:
        return (f"{self.correct}/{self.jobs} correct, {len(self.failed)} failed, {self.unfinished} unfinished, "
                f"{self.double_submits} possible double submits ({self.double_submits_logged} logged), "
                f"{self.jobs_created} remote jobs, last result {self.recovered_in or 0:.1f} s after Redis was back")


@contextmanager
def endpoint() -> Iterator[LocalEndpoint]:
    ep = LocalEndpoint(f"{HANDLERS}:sleep", endpoint_id="sleep", workers=2000, api_key=API_KEY)
    try:
        yield ep
    finally:
        ep.close()


@dataclass
class Scene:
    """One scenario's processes: its Redis, the endpoint, a worker, a producer app."""

    server: FaultRedis
    ep: LocalEndpoint
    app: Celery
    worker: Worker
    client: redis.Redis

    def outage(self, jobs: int, outage: float, log: Callable[[str], None]) -> None:
        """Kill Redis once the worker received all ``jobs`` and start it ``outage`` s later.

        Every message received (in the broker's unacked set) before the kill: kombu's Redis
        transport pops a message (BRPOP) before recording it as unacked, so a kill while the
        queue is being fetched can lose the message in between (docs/celery.md, Brokers);
        that is kombu's, not what these scenarios measure."""
        wait_until(lambda: self.client.hlen("unacked") >= jobs and self.ep.submissions() >= 1, 60, 0.005)
        log(f"{self.ep.submissions()} of {jobs} submitted: killing Redis (-9) for {outage:g} s")
        self.server.kill()
        threading.Event().wait(outage)  # the outage itself, not a synchronisation
        self.server.restart()
        log("Redis is back")

    def finish(self, log: Callable[[str], None]) -> tuple[bool, str]:
        """Stop the worker; (whether it was still alive, its log)."""
        alive = self.worker.proc.poll() is None
        self.worker.stop()
        return alive, self.worker.output()


@contextmanager
def scene(pool: str, name: str, log: Callable[[str], None]) -> Iterator[Scene]:
    server = FaultRedis()
    client = redis.Redis.from_url(server.url)
    worker = None
    try:
        with endpoint() as ep:
            app = producer_app(server.url)
            worker = Worker(server.url, ep.base_url, pool, name)
            worker.wait_ready(app)
            yield Scene(server, ep, app, worker, client)
    finally:
        if worker is not None and worker.proc.poll() is None:
            log(worker.output()[-3000:])
            worker.stop()
        client.close()
        server.stop()


def where(client: redis.Redis, task_id: str) -> str:
    """Where an unfinished task is: its journal entry, its message queued or unacked."""
    from bridge.gateway.journal import read

    journal = read(client, task_id)
    queued = any(task_id.encode() in m for m in client.lrange("celery", 0, -1))
    unacked = any(task_id.encode() in m for m in client.hvals("unacked"))
    return f"journal={journal.get('state')} job={journal.get('job_id')} queued={queued} unacked={unacked}"


def _states(client: redis.Redis, ids: list[str]) -> list[dict[str, Any] | None]:
    raw = client.mget([f"celery-task-meta-{t}" for t in ids])
    return [json.loads(r) if r else None for r in raw]


def run_outage(pool: str, *, jobs: int = 300, seconds: float = 5.0, outage: float = 3.0,
               settle: float = 60.0, log: Callable[[str], None] = lambda _: None) -> Figures:
    """The scenario of the module docstring; returns its figures."""
    figures = Figures(jobs, outage)
    with scene(pool, f"{pool}-{int(outage)}s", log) as sc:
        client, ep = sc.client, sc.ep
        ids = [sc.app.send_task("bridge.run", args=[{"seconds": seconds}, "sleep"]).id for _ in range(jobs)]
        sc.outage(jobs, outage, log)
        back = time.monotonic()

        def settled() -> bool:
            try:
                states = _states(client, ids)
            except redis.exceptions.RedisError:
                return False
            return all(s is not None and s.get("status") in ("SUCCESS", "FAILURE", "REVOKED") for s in states)

        try:
            wait_until(settled, settle, 0.2)
        except AssertionError:
            pass  # counted below as unfinished
        states = _states(client, ids)
        if all(s is not None and s.get("date_done") for s in states):
            figures.recovered_in = time.monotonic() - back
        for task_id, meta in zip(ids, states, strict=True):
            status = (meta or {}).get("status")
            if status == "SUCCESS" and meta and meta.get("result") == {"slept": seconds}:
                figures.correct += 1
            elif status in ("FAILURE", "REVOKED", "SUCCESS"):
                figures.failed[task_id] = f"{status}: {json.dumps((meta or {}).get('result'))[:200]}"
            else:
                figures.unfinished += 1
                figures.stuck[task_id] = where(client, task_id)
        figures.run_requests = ep.stats().get("run", 0)
        figures.jobs_created = ep.submissions()
        figures.worker_alive, output = sc.finish(log)
        figures.double_submits_logged = output.count("possible double submission")
        log(f"{figures.line()}; worker alive: {figures.worker_alive}")
    return figures


@dataclass
class BatchFigures:
    """How ``bridge batch --celery`` ended across the outage."""

    items: int
    exit_code: int | None = None
    correct: int = 0
    lines: int = 0
    run_requests: int = 0
    jobs_created: int = 0
    worker_alive: bool = True
    stderr: str = ""

    def line(self) -> str:
        return (f"bridge batch --celery exit {self.exit_code}: {self.correct}/{self.items} correct lines "
                f"({self.lines} written), {max(0, self.run_requests - self.items)} possible double submits, "
                f"{self.jobs_created} remote jobs")


def run_batch_outage(pool: str, *, items: int = 300, seconds: float = 5.0, outage: float = 3.0,
                     settle: float = 60.0, log: Callable[[str], None] = lambda _: None) -> BatchFigures:
    """``bridge batch --celery`` (the CLI as producer) over ``items`` jobs of ``seconds``, with
    Redis killed -9 once every item was received by the worker, back ``outage`` s later."""
    figures = BatchFigures(items)
    work = Path(tempfile.mkdtemp(prefix="bridge-fault-batch-"))
    try:
        with scene(pool, f"batch-{pool}-{int(outage)}s", log) as sc:
            url, ep = sc.server.url, sc.ep
            (work / "in.jsonl").write_text("".join(json.dumps({"seconds": seconds}) + "\n" for _ in range(items)))
            env = {**os.environ, "CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url,
                   "BRIDGE_REDIS_URL": url, "RUNPOD_API_KEY": API_KEY}
            cli = subprocess.Popen(
                [str(Path(sys.executable).parent / "bridge"), "batch", str(work / "in.jsonl"), "-o",
                 str(work / "out.jsonl"), "-e", "sleep", "--celery", "-c", str(items), "--base-url", ep.base_url,
                 "--progress-interval", "1"],
                cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
            )
            try:
                sc.outage(items, outage, log)
                _, err = cli.communicate(timeout=settle + seconds)
                figures.stderr = err.decode(errors="replace")[-2000:]
            finally:
                if cli.poll() is None:
                    os.killpg(cli.pid, signal.SIGKILL)
                    cli.wait(10)
            figures.exit_code = cli.returncode
            out = work / "out.jsonl"
            lines = out.read_text().splitlines() if out.exists() else []
            figures.lines = len(lines)
            figures.correct = sum(1 for raw in lines if json.loads(raw).get("output") == {"slept": seconds})
            figures.run_requests = ep.stats().get("run", 0)
            figures.jobs_created = ep.submissions()
            figures.worker_alive, _ = sc.finish(log)
            log(f"{figures.line()}; worker alive: {figures.worker_alive}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return figures
