"""Issue 12, items 1, 2 and 4 (batch): ``bridge batch`` as a subprocess against the local
endpoint. An endpoint-wide mistake stops the batch with one error (nothing recorded against
the inputs), a re-run retries what a re-run should, a fresh journal never gets the jobs of an
abandoned run, and a bad option exits 7 before anything is sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bridge.testing import AppServer

from .conftest import flaky_handler, is_failing, journal_counts, slow_handler, wait_until

BRIDGE = str(Path(sys.executable).with_name("bridge"))
ROOT = Path(__file__).resolve().parents[2]
WRONG_KEY = "rpa_WRONGWRONGWRONG123"
RIGHT_KEY = "rpa_RIGHTRIGHTRIGHT456"


def double(job: dict[str, Any]) -> dict[str, Any]:
    return {"y": job["input"]["x"] * 2}


def env_for(base_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RUNPOD_API_KEY", "BRIDGE_PLUGINS")}
    env.update(RUNPOD_ENDPOINT_BASE_URL=base_url, PYTHONPATH=str(ROOT), **extra)
    return env


def batch(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BRIDGE, "batch", *args], env=env, capture_output=True, text=True, timeout=timeout)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def error_line(stderr: str) -> dict[str, Any]:
    """The CLI's one error line (JSON) on stderr, and nothing else there."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("{"), stderr
    return json.loads(lines[0])


def summary_count(stdout: str, label: str) -> int:
    match = re.search(re.escape(label) + r"\s*│\s*(\d+)", stdout)
    assert match, f"{label!r} not in the summary:\n{stdout}"
    return int(match.group(1))


class CountingProxy:
    """A pass-through in front of the local endpoint that counts every request by route
    (the endpoint's own stats leave out requests it refuses with 401/404)."""

    def __init__(self, target: str) -> None:
        import aiohttp

        self.target = target.rstrip("/")
        self.counts: dict[str, int] = {}
        self._aiohttp = aiohttp
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.forward)
        self.server = AppServer(app)
        self.base_url = f"{self.server.url}/v2"

    async def forward(self, request: web.Request) -> web.Response:
        route = request.path.split("/")[3] if request.path.count("/") >= 3 else request.path
        self.counts[route] = self.counts.get(route, 0) + 1
        async with self._aiohttp.ClientSession() as session, session.request(
            request.method, self.target + request.path_qs.removeprefix("/v2"), data=await request.read(),
            headers={k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")},
        ) as reply:
            return web.Response(body=await reply.read(), status=reply.status,
                                content_type=reply.content_type)

    def close(self) -> None:
        self.server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_nothing_recorded(out: Path, n: int) -> None:
    rows = read_jsonl(out)
    assert [r["index"] for r in rows] == list(range(n))
    assert {r["status"] for r in rows} == {"PENDING"}
    assert out.with_name("out.failures.jsonl").read_text() == ""
    assert journal_counts(f"{out}.journal") == {}


@pytest.mark.parametrize("case", ["wrong_key", "unknown_endpoint", "unreachable", "not_runpod"])
def test_item1_endpoint_wide_mistake_stops_the_batch(case, local_endpoint, input_file, tmp_path):
    n, concurrency = 100, 10
    ep = local_endpoint(double, endpoint_id="ep", api_key=RIGHT_KEY)
    inp, out = input_file(n), tmp_path / "out.jsonl"
    endpoint_id, base_url, key = "ep", ep.base_url, RIGHT_KEY
    received: list[str] = []
    proxy = server = None
    if case in ("wrong_key", "unknown_endpoint"):
        proxy = CountingProxy(ep.base_url)
        base_url = proxy.base_url
    if case == "wrong_key":
        key = WRONG_KEY
    elif case == "unknown_endpoint":
        endpoint_id = "nope"
    elif case == "unreachable":
        base_url = f"http://127.0.0.1:{free_port()}/v2"
    else:  # a web server that is not a RunPod endpoint: 200 with an HTML page
        async def page(request: web.Request) -> web.Response:
            received.append(request.path)
            return web.Response(text="<html>hello</html>", content_type="text/html")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", page)
        server = AppServer(app)
        base_url = f"{server.url}/v2"
    try:
        args = [str(inp), "-o", str(out), "-e", endpoint_id, "-c", str(concurrency)]
        first = batch(args, env_for(base_url, RUNPOD_API_KEY=key))
    finally:
        for closing in (server, proxy):
            if closing is not None:
                closing.close()
    expected = {"wrong_key": (3, "AuthenticationError", "401"), "unknown_endpoint": (4, "NotFound", "404"),
                "unreachable": (5, "TransportError", "could not be reached"),
                "not_runpod": (5, "MalformedResponse", "did not answer like a RunPod endpoint")}[case]
    assert first.returncode == expected[0], first.stderr
    err = error_line(first.stderr)
    assert err["error"] == expected[1] and expected[2] in err["message"], err
    assert "batch stopped" in err["message"]
    assert WRONG_KEY not in first.stderr + first.stdout
    assert "bridge batch: stopped" in first.stdout  # the summary still says what happened
    # Nothing more was submitted after the cause was clear, and no input counts as failed.
    assert ep.submissions() == 0
    if proxy is not None:
        assert 3 <= proxy.counts.get("run", 0) <= concurrency, proxy.counts
    if case == "not_runpod":
        assert 1 <= len(received) <= concurrency
    assert_nothing_recorded(out, n)

    if case == "wrong_key":  # with the key fixed, the same command runs every input
        again = batch(args, env_for(ep.base_url, RUNPOD_API_KEY=RIGHT_KEY))
        assert again.returncode == 0, again.stderr
        rows = read_jsonl(out)
        assert [r["output"] for r in rows] == [{"y": 2 * i} for i in range(n)]
        assert ep.submissions() == n


@contextlib.contextmanager
def celery_worker(redis_url: str, base_url: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> Iterator[None]:
    """An embedded threads worker with bridge installed, its gateway aimed at ``base_url``."""
    from celery import Celery
    from celery.contrib.testing.worker import start_worker

    import bridge
    import bridge.batch.celery  # noqa: F401  (registers bridge.batch_item)
    from bridge.gateway.core import reset_gateway

    for key, value in {"BRIDGE_REDIS_URL": redis_url, "RUNPOD_ENDPOINT_BASE_URL": base_url, **env}.items():
        monkeypatch.setenv(key, value)
    reset_gateway()
    app = Celery("bridge-endpoint-wide-tests", broker=redis_url, backend=redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True)
    bridge.install(app)
    try:
        with start_worker(app, pool="threads", concurrency=10, perform_ping_check=False, loglevel="WARNING",
                          shutdown_timeout=15):
            yield
    finally:
        reset_gateway()


def test_item1_through_celery(local_endpoint, input_file, tmp_path, redis_url, monkeypatch):
    import redis as redis_lib

    from bridge.gateway.core import reset_gateway

    n, concurrency = 60, 5
    ep = local_endpoint(double, endpoint_id="ep", api_key=RIGHT_KEY)
    proxy = CountingProxy(ep.base_url)
    inp, out = input_file(n), tmp_path / "out.jsonl"
    args = [str(inp), "-o", str(out), "-e", "ep", "--broker", redis_url, "-c", str(concurrency)]
    env = env_for(proxy.base_url, CELERY_BROKER_URL=redis_url, BRIDGE_REDIS_URL=redis_url)
    try:
        with celery_worker(redis_url, proxy.base_url, monkeypatch, RUNPOD_API_KEY=WRONG_KEY):
            first = batch(args, env)
            monkeypatch.setenv("RUNPOD_API_KEY", RIGHT_KEY)  # the workers' key, fixed
            reset_gateway()
            again = batch(args, env)
    finally:
        proxy.close()
    assert first.returncode == 3, first.stderr
    err = error_line(first.stderr)
    assert err["error"] == "AuthenticationError" and "batch stopped" in err["message"], err
    assert WRONG_KEY not in first.stderr + first.stdout
    # The producer stopped enqueuing: at most the items outstanding at the time asked /run.
    run_requests = proxy.counts["run"] - n
    assert 3 <= run_requests <= 2 * concurrency, proxy.counts
    rows_after_first = first.stdout  # (the summary)
    assert "bridge batch: stopped" in rows_after_first
    # The re-run (same Redis batch) ran every input: none had been recorded as failed.
    assert again.returncode == 0, again.stderr
    rows = read_jsonl(out)
    assert [r["output"] for r in rows] == [{"y": 2 * i} for i in range(n)]
    assert ep.submissions() == n
    r = redis_lib.Redis.from_url(redis_url)
    results = {int(k): json.loads(v) for k, v in r.hgetall(next(r.scan_iter("bridge:batch:*:results"))).items()}
    assert {v["s"] for v in results.values()} == {"done"} and len(results) == n


def test_item2_fresh_journal_never_gets_jobs_of_an_abandoned_run(local_endpoint, input_file, tmp_path):
    ep = local_endpoint(slow_handler, endpoint_id="slow")
    inp = input_file(10)
    env = env_for(ep.base_url)

    def interrupted_run(out: Path, running: int) -> list[dict[str, Any]]:
        proc = subprocess.Popen([BRIDGE, "batch", str(inp), "-o", str(out), "-e", "slow", "-c", "5"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: ep.health("slow")["jobs"]["inProgress"] == running, 30, f"{running} jobs running")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        return read_jsonl(out)

    out = tmp_path / "out.jsonl"
    first = {r["id"] for r in interrupted_run(out, 5) if r["status"] == "CANCELLED"}
    assert len(first) == 5 and ep.submissions() == 5
    # Start over as the journal-mismatch error suggests: delete the journal.
    os.remove(f"{out}.journal")
    rows = interrupted_run(out, 5)
    second = {r["id"] for r in rows if r["id"]}
    assert len(second) == 5 and not second & first, rows  # new jobs, not the cancelled ones
    assert all(r["status"] in ("CANCELLED", "PENDING") for r in rows)
    assert ep.submissions() == 10
    # A new -o is a fresh journal too.
    third = {r["id"] for r in interrupted_run(tmp_path / "other.jsonl", 5) if r["id"]}
    assert len(third) == 5 and not third & (first | second)
    assert ep.submissions() == 15


def test_item2_through_celery_a_batch_started_over_gets_new_jobs(local_endpoint, input_file, tmp_path, redis_url,
                                                                 monkeypatch):
    import redis as redis_lib

    ep = local_endpoint(slow_handler, endpoint_id="slow")
    inp, out = input_file(10), tmp_path / "out.jsonl"
    args = [BRIDGE, "batch", str(inp), "-o", str(out), "-e", "slow", "--broker", redis_url, "-c", "5"]
    env = env_for(ep.base_url, CELERY_BROKER_URL=redis_url, BRIDGE_REDIS_URL=redis_url)
    r = redis_lib.Redis.from_url(redis_url)

    def interrupted_run(submitted: int) -> set[str]:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: ep.submissions("slow") == submitted and ep.health("slow")["jobs"]["inProgress"] == 5,
                   30, f"{submitted} jobs submitted, 5 running")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=90)
        assert proc.returncode == 130, stderr
        return {row["id"] for row in read_jsonl(out) if row["id"]}

    with celery_worker(redis_url, ep.base_url, monkeypatch):
        first = interrupted_run(5)
        assert len(first) == 5 and all(ep.job_state(i)["status"] == "CANCELLED" for i in first)
        for key in r.scan_iter("bridge:batch:*"):  # the batch's Redis keys gone: a fresh batch
            r.delete(key)
        second = interrupted_run(10)
    assert len(second) == 5 and not second & first  # new jobs, not the cancelled ones
    assert ep.submissions("slow") == 10


def test_rerun_retries_cancelled_and_errors_keeps_completed_and_failed_unless_asked(
        local_endpoint, input_file, tmp_path):
    n = 40
    ep = local_endpoint(flaky_handler, endpoint_id="ep")
    inp, out = input_file(n), tmp_path / "out.jsonl"
    args = [str(inp), "-o", str(out), "-e", "ep", "-c", "10"]
    vetoed = [i for i in range(n) if i % 10 == 3]
    failing = [i for i in range(n) if is_failing(i)]

    first = batch(args, env_for(ep.base_url, BRIDGE_PLUGINS="tests.batch.veto_plugin"))
    assert first.returncode == 1, first.stderr
    rows = read_jsonl(out)
    assert [r["index"] for r in rows if r["status"] == "FAILED" and r["error"]["type"] == "JobRejected"] == vetoed
    assert [r["index"] for r in rows if r["status"] == "FAILED" and r["error"]["type"] == "JobFailed"] == failing
    assert ep.submissions() == n - len(vetoed)

    second = batch(args, env_for(ep.base_url))  # the plugin is gone: the bridge-side errors run again
    assert second.returncode == 1, second.stderr  # the endpoint's FAILED are kept
    assert summary_count(second.stdout, "earlier run: completed, kept") == n - len(vetoed) - len(failing)
    assert summary_count(second.stdout, "earlier run: bridge-side error, run again") == len(vetoed)
    assert summary_count(second.stdout, "earlier run: FAILED, kept (--retry-failed runs them)") == len(failing)
    rows = read_jsonl(out)
    assert all(rows[i]["status"] == "COMPLETED" and rows[i]["output"] == {"y": 2 * i} for i in vetoed)
    failed_ids = {rows[i]["id"] for i in failing}
    assert ep.submissions() == n

    third = batch([*args, "--retry-failed"], env_for(ep.base_url))
    assert third.returncode == 1, third.stderr  # they fail again: the handler is deterministic
    assert summary_count(third.stdout, "earlier run: FAILED, run again (--retry-failed)") == len(failing)
    rows = read_jsonl(out)
    assert all(rows[i]["status"] == "FAILED" for i in failing)
    assert not {rows[i]["id"] for i in failing} & failed_ids  # run again as new jobs (fresh keys)
    assert ep.submissions() == n + len(failing)


@pytest.mark.parametrize(("option", "says"), [
    (["--policy", '"abc"'], "policy must be a JSON object"),
    (["--policy", "[1, 2]"], "policy must be a JSON object"),
    (["--policy", "{not json"], "--policy is not JSON"),
    (["--webhooks", "not-a-url"], "--webhooks 'not-a-url' is not an http(s) URL"),
    (["--concurrency", "0"], "concurrency must be a whole number of at least 1"),
    (["--max-queue-depth", "-3"], "max_queue_depth must be a whole number of at least 1"),
    (["--rate", "fast"], "is not LIMIT/SECONDS"),
    (["--progress-interval", "0"], "--progress-interval must be positive"),
])
def test_item4_bad_options_exit_7_before_anything_is_sent(option, says, local_endpoint, input_file, tmp_path):
    ep = local_endpoint(double, endpoint_id="ep")
    inp, out = input_file(5), tmp_path / "out.jsonl"
    result = batch([str(inp), "-o", str(out), "-e", "ep", *option], env_for(ep.base_url), timeout=60)
    assert result.returncode == 7, result.stderr
    assert result.stderr.count("\n") == 1  # one clear line
    err = error_line(result.stderr)
    assert err["error"] == "ConfigurationError" and says in err["message"], err
    assert ep.stats() == {} and ep.submissions() == 0
    assert not out.exists() and not Path(f"{out}.journal").exists()


def test_item4_inputs_stay_any_json_value_with_a_policy(local_endpoint, tmp_path):
    ep = local_endpoint(lambda job: {"got": job["input"]}, endpoint_id="echo")
    values = ["abc", [1, 2], 3, None, {"x": 1}]
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps(v) + "\n" for v in values))
    result = batch([str(inp), "-o", str(out), "-e", "echo", "--policy", '{"ttl": 600000}'], env_for(ep.base_url))
    assert result.returncode == 0, result.stderr
    assert [r["output"] for r in read_jsonl(out)] == [{"got": v} for v in values]
    assert all(ep.job_state(r["id"])["policy"]["ttl"] == 600000 for r in read_jsonl(out))


def test_python_api_checks_the_policy_and_reports_the_stop(local_endpoint, tmp_path):
    from bridge.batch import batch as run_batch
    from bridge.errors import AuthenticationError, ConfigurationError

    ep = local_endpoint(double, endpoint_id="ep", api_key=RIGHT_KEY)
    with pytest.raises(ConfigurationError, match="policy must be a JSON object"):
        run_batch([{"x": 1}], "ep", base_url=ep.base_url, policy="abc")  # type: ignore[arg-type]
    handle = run_batch([{"x": i} for i in range(30)], "ep", base_url=ep.base_url, api_key=WRONG_KEY,
                       concurrency=4, journal=str(tmp_path / "j.sqlite"))
    with pytest.raises(AuthenticationError, match="batch stopped"):
        handle.wait(30)
    assert isinstance(handle.stopped_by, AuthenticationError) and handle.stopped_by.status_code == 401
    assert handle.failures() == [] and {r.status for r in handle.iter_results()} == {"PENDING"}
    handle.close()


def test_tripwire_needs_identical_refusals_with_no_accepted_job_between():
    from bridge import errors
    from bridge.batch.tripwire import Tripwire

    wire = Tripwire("ep")
    assert not wire.note(errors.AuthenticationError, "401") and not wire.note(errors.AuthenticationError, "401")
    wire.accepted_job()  # a job got through: the key works, the streak starts over
    assert not wire.note(errors.AuthenticationError, "401") and not wire.note(errors.NotFound, "404")
    assert not wire.note(errors.NotFound, "404")
    assert not wire.note(errors.TransportError, "refused")  # reachable before: an outage, retried
    assert wire.note(errors.NotFound, "404 unknown endpoint")
    assert isinstance(wire.error, errors.NotFound) and "3 /run requests in a row" in str(wire.error)
    fresh = Tripwire("ep")
    assert fresh.note(errors.TransportError, f"connect to http://x failed, key {WRONG_KEY}")
    assert isinstance(fresh.error, errors.TransportError) and WRONG_KEY not in str(fresh.error)


def test_key_revoked_mid_batch_stops_it_and_leaves_accepted_jobs_to_resume(local_endpoint, tmp_path, monkeypatch):
    from bridge.batch import batch as run_batch
    from bridge.batch import open_journal
    from bridge.batch.local import LocalBatch
    from bridge.batch.options import Options
    from bridge.errors import AuthenticationError

    async def three_seconds(job: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(3)
        return {"y": job["input"]["x"]}

    ep = local_endpoint(three_seconds, endpoint_id="ep", api_key=RIGHT_KEY)
    journal = str(tmp_path / "j.sqlite")
    store, batch_id = open_journal(journal, None, "ep")
    # Short plain status looks, so the revoked key shows within the test's time.
    for name, value in {"BRIDGE_LONG_POLL": "0", "BRIDGE_POLL_INTERVAL": "0.05",
                        "BRIDGE_POLL_MAX_INTERVAL": "0.3", "BRIDGE_LEARN_WAITS": "0"}.items():
        monkeypatch.setenv(name, value)
    handle = LocalBatch(batch_id, "ep", [{"x": i} for i in range(6)], store,
                        Options(concurrency=6, api_key=RIGHT_KEY, base_url=ep.base_url), total=6)
    wait_until(lambda: ep.submissions() == 6, 30, "6 jobs submitted")
    ep.server.api_key = "rpa_SOMEOTHERKEY789"  # the key is revoked while the jobs run
    with pytest.raises(AuthenticationError, match="batch stopped"):
        handle.wait(30)
    assert journal_counts(journal) == {"submitted": 6}  # nothing recorded as failed
    handle.close()

    ep.server.api_key = RIGHT_KEY
    again = run_batch([{"x": i} for i in range(6)], "ep", base_url=ep.base_url, api_key=RIGHT_KEY, journal=journal)
    assert [r.output for r in again.results(timeout=30)] == [{"y": i} for i in range(6)]
    assert ep.submissions() == 6  # the accepted jobs were resumed, not paid for twice
    again.close()
