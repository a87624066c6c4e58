"""Helpers for the Celery gateway tests: a real redis-server (session fixture), a real local
endpoint serving the example handlers, and real workers: an embedded threads worker
(``start_worker``) or ``celery -A bridge.app worker`` subprocesses (prefork, kill -9,
warm shutdown). No eager mode, no sleeps for synchronisation: :func:`wait_until` polls
with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from bridge.gateway.journal import read as read_journal
from bridge.testing import LocalEndpoint
from bridge.testing.waiting import wait_until as _wait_until
from bridge.worker import install

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = str(ROOT / "examples" / "handlers.py")
CELERY = str(Path(sys.executable).parent / "celery")


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """bridge.testing's ``wait_until`` with the longer default these multi-process tests need."""
    return _wait_until(predicate, timeout, interval)


def serve_examples(**kwargs: Any) -> LocalEndpoint:
    """One local endpoint server with the example handlers as endpoints."""
    ep = LocalEndpoint(f"{HANDLERS}:sleep", endpoint_id="sleep", workers=500, api_key=API_KEY, **kwargs)
    ep.add_endpoint("echo", f"{HANDLERS}:aecho", workers=500)
    ep.add_endpoint("fail", f"{HANDLERS}:fail")
    ep.add_endpoint("stream", f"{HANDLERS}:astream_tokens", workers=50)
    return ep


@dataclass
class Stack:
    app: Celery
    endpoint: LocalEndpoint
    url: str
    redis: redis.Redis

    def journal(self, task_id: str) -> dict[str, str]:
        return read_journal(self.redis, task_id)

    def job_id(self, task_id: str, timeout: float = 10.0) -> str:
        """The remote job id once the task recorded it."""
        return str(wait_until(lambda: self.journal(task_id).get("job_id"), timeout))

    def remote_status(self, job_id: str) -> str | None:
        state = self.endpoint.job_state(job_id)
        return None if state is None else state.get("status")


def make_app(url: str, name: str = "bridge-tests", **conf: Any) -> Celery:
    app = Celery(name, broker=url, backend=url)
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"],
        worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True, **conf,
    )
    install(app)

    @app.task(name="tests.prep")
    def prep(n: int) -> dict[str, int]:
        return {"n": n}

    @app.task(name="tests.post")
    def post(output: dict[str, int]) -> int:
        return output["n"] * 10

    @app.task(name="tests.total")
    def total(outputs: list[dict[str, int]]) -> int:
        return sum(o["n"] for o in outputs)

    return app


API_KEY = "rpa_GOODKEY0123456789abcdef"
WRONG_KEY = "rpa_WRONGKEY9876543210fedcba"

GATEWAY_ENV = {
    "RUNPOD_API_KEY": API_KEY,
    "BRIDGE_SUBMIT_ATTEMPTS": "3",
    "BRIDGE_POLL_ERROR_DEADLINE": "30",
    "BRIDGE_LONG_POLL": "5",
}


class WorkerProcess:
    """``celery -A bridge.app worker`` in a subprocess, configured through the environment."""

    counter = 0

    def __init__(self, app: Celery, url: str, base_url: str, pool: str = "threads",
                 concurrency: int = 100, app_module: str = "bridge.app", **env: str) -> None:
        WorkerProcess.counter += 1
        self.app = app
        self.name = f"w{WorkerProcess.counter}-{os.getpid()}@bridge-tests"
        full_env = {
            **os.environ, **GATEWAY_ENV, "CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url,
            "BRIDGE_REDIS_URL": url, "RUNPOD_ENDPOINT_BASE_URL": base_url,
            "BRIDGE_WORKER_POOL": pool, "BRIDGE_WORKER_CONCURRENCY": str(concurrency),
            "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests' / 'celery'}", **env,
        }
        self.log = open(f"/tmp/bridge-test-{self.name.split('@')[0]}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [CELERY, "-A", app_module, "worker", "-l", "INFO", "-n", self.name, "--without-mingle",
             "--without-gossip", *([] if app_module == "bridge.app" else ["-P", pool, "-c", str(concurrency)])],
            cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self, timeout: float = 30.0) -> WorkerProcess:
        def pong() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}: {self.output()}")
            return bool(self.app.control.ping([self.name], timeout=0.5))

        wait_until(pong, timeout)
        return self

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        return self.proc.returncode


class GarbageServer:
    """An endpoint that accepts /run and then answers every status with HTML (an edge the
    local endpoint cannot produce): the job id must survive on the error and the journal."""

    JOB_ID = "garbage-job-1"

    def __init__(self) -> None:
        import http.server
        import threading

        job_id = self.JOB_ID

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, body: bytes, ctype: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._send(json.dumps({"id": job_id, "status": "IN_QUEUE"}).encode(), "application/json")

            def do_GET(self) -> None:  # noqa: N802
                self._send(b"<html>502 upstream oops</html>", "text/html")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v2"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def AiohttpServer(app: Any) -> Any:
    """An aiohttp app on 127.0.0.1 in a background thread (webhook receiver, caller)."""
    from bridge.testing import AppServer
    from bridge.webhooks.receiver import SafeAccessLogger

    return AppServer(app, access_log_class=SafeAccessLogger)


# Short visibility timeout, heartbeats and submit lease so a takeover (also of a delivery
# killed mid-submit, whose claim must lapse first) happens within seconds here.
FAST_TAKEOVER = {"BRIDGE_VISIBILITY_TIMEOUT": "4", "BRIDGE_HEARTBEAT_INTERVAL": "1",
                 "BRIDGE_RESTORE_INTERVAL": "1", "BRIDGE_SUBMIT_LEASE": "5"}


@dataclass
class KillReport:
    """What :func:`kill_during_submission` saw: tasks sent, results, messages lost (never
    reached a worker: no journal entry, no result), jobs created and ``/run`` posts."""

    tasks: int
    results: int
    lost: list[str]
    unfinished_with_job: list[str]
    jobs_created: int
    run_posts: int


def kill_during_submission(stack: Stack, start: Callable[..., WorkerProcess], cycles: int = 5,
                           per_cycle: int = 60, wait: float = 30.0) -> KillReport:
    """Kill -9 a worker while it submits, ``cycles`` times, with a second worker alive all
    along; then wait for every result. A task whose message reached a worker has a journal
    entry and must end with its result; one without either was lost by the broker."""
    ep = stack.endpoint
    created0, posts0 = ep.submissions("sleep"), ep.stats("sleep").get("run", 0)
    start(pool="threads", concurrency=4, **FAST_TAKEOVER)  # the survivor
    sent: list[Any] = []
    for cycle in range(cycles):
        victim = start(pool="threads", concurrency=4, **FAST_TAKEOVER)
        before = ep.submissions("sleep")
        sent += [stack.app.send_task("bridge.run", args=({"seconds": 1, "c": cycle, "i": i}, "sleep"))
                 for i in range(per_cycle)]
        wait_until(lambda before=before: ep.submissions("sleep") - before >= 5, 20, 0.002)
        victim.kill9()  # mid-submission: some /run posts are in flight or unrecorded
    done: dict[str, Any] = {}
    deadline = time.monotonic() + wait
    for r in sent:
        try:
            done[r.id] = r.get(timeout=max(0.1, deadline - time.monotonic()))
        except Exception:  # not finished by the deadline: counted below
            pass
    lost = [r.id for r in sent if r.id not in done and not stack.journal(r.id)]
    unfinished = [r.id for r in sent if r.id not in done and stack.journal(r.id)]
    return KillReport(len(sent), len(done), lost, unfinished, ep.submissions("sleep") - created0,
                      ep.stats("sleep").get("run", 0) - posts0)
