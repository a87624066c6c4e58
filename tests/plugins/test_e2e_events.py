"""Hook events and ``ctx.meta`` through the whole path: a Celery task (embedded threads
worker) → the gateway → the local endpoint over loopback HTTP, with a recording plugin
configured through the environment. Every observer event the gateway emits is checked here,
with the job's own context (task id and job id), and a failing observer never fails a job."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker

from bridge import errors, keys
from bridge.embedded_redis import EmbeddedRedis
from bridge.gateway import cancel_task
from bridge.gateway.core import reset_gateway
from bridge.hooks import Hooks
from bridge.tasks import job_meta
from bridge.testing import LocalEndpoint
from bridge.testing.waiting import wait_until
from bridge.worker import install

PLUGIN = """
    from bridge import hookimpl

    EVENTS = []

    def _record(event, ctx, **data):
        EVENTS.append((event, ctx.task_id, ctx.job_id, data))

    @hookimpl
    def bridge_lookup(ctx, input):
        if ctx.endpoint_id == "hit":
            ctx.meta["cache"] = "hit"
            ctx.meta["api_key"] = "rpa_SHOULDNOTBESHOWN0123456789"
            return ["cached", "chunks"]

    @hookimpl
    def bridge_on_submitted(ctx, input):
        _record("submitted", ctx, input=input)

    @hookimpl
    def bridge_on_status_changed(ctx, status, previous):
        _record("status_changed", ctx, status=status, previous=previous)
        raise RuntimeError("a broken observer must not fail the job")

    @hookimpl
    def bridge_on_completed(ctx, output, delay_ms, execution_ms):
        _record("completed", ctx, output=output, delay_ms=delay_ms, execution_ms=execution_ms)

    @hookimpl
    def bridge_on_failed(ctx, error, delay_ms, execution_ms):
        _record("failed", ctx, error=error)

    @hookimpl
    def bridge_on_cancelled(ctx, reason):
        _record("cancelled", ctx, reason=reason)

    @hookimpl
    def bridge_on_retried(ctx, error, delay):
        _record("retried", ctx, error=error, delay=delay)

    @hookimpl
    def bridge_on_rate_limited(ctx, route, retry_after):
        _record("rate_limited", ctx, route=route, retry_after=retry_after)
"""


async def slow(job: dict[str, Any]) -> Any:
    import asyncio

    await asyncio.sleep(float(job["input"].get("seconds", 1.0)))
    return {"done": job["input"]}


# A GitHub-style token: errors.scrub leaves it, only the redact plugin (bridge_redact) masks it.
LEAK = "ghp_LEAKEDTOKEN0123456789abcdefXYZ"


def fail(job: dict[str, Any]) -> Any:
    return {"error": f"broken with {LEAK} inside"}


async def fail_stream(job: dict[str, Any]) -> Any:
    yield "a"
    raise ValueError(f"stream broke with {LEAK}")


async def tokens(job: dict[str, Any]) -> Any:
    for word in ["a", "b", "c"]:
        yield word


@dataclass
class Rig:
    app: Celery
    endpoint: LocalEndpoint
    redis: redis.Redis
    url: str

    def events(self, task_id: str, name: str | None = None) -> list[tuple[str, str, str, dict[str, Any]]]:
        recorded = sys.modules["events_plugin"].EVENTS
        return [e for e in list(recorded) if e[1] == task_id and (name is None or e[0] == name)]


@pytest.fixture
def clean_plugin_env() -> None:
    """Overrides the package's autouse fixture: this module sets plugin env once for all tests."""


@pytest.fixture(scope="module")
def rig(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("events")
    (root / "events_plugin.py").write_text(textwrap.dedent(PLUGIN))
    url = f"redis://127.0.0.1:{redis_server.port}/8"
    client = redis.Redis.from_url(url)
    client.flushdb()
    ep = LocalEndpoint(slow, endpoint_id="slow", workers=50)
    ep.add_endpoint("fail", fail)
    ep.add_endpoint("fail_stream", fail_stream)
    ep.add_endpoint("tokens", tokens, workers=10)
    ep.add_endpoint("hit", slow)
    env = {
        "BRIDGE_REDIS_URL": url, "RUNPOD_ENDPOINT_BASE_URL": ep.base_url,
        "BRIDGE_SUBMIT_ATTEMPTS": "5", "BRIDGE_LONG_POLL": "0", "BRIDGE_POLL_INTERVAL": "0.2",
        "BRIDGE_POLL_MAX_INTERVAL": "0.5",
        "BRIDGE_DISABLE_PLUGIN_AUTOLOAD": "1", "BRIDGE_PLUGINS": "events=events_plugin",
        "BRIDGE_PLUGIN_REDACT_ENABLED": "1",
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        for key, value in env.items():
            mp.setenv(key, value)
        Hooks.clear_cache()
        reset_gateway()
        app = Celery("bridge-events-e2e", broker=url, backend=url)
        app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                        worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True)
        install(app)
        with start_worker(app, pool="threads", concurrency=20, perform_ping_check=False,
                          loglevel="WARNING", shutdown_timeout=15):
            yield Rig(app, ep, client, url)
        reset_gateway()
        Hooks.clear_cache()
    ep.close()
    client.close()


def test_submitted_status_changed_and_completed_carry_the_jobs_context(rig):
    pending = rig.app.send_task("bridge.run", args=({"seconds": 0.6}, "slow"))
    assert pending.get(timeout=30) == {"done": {"seconds": 0.6}}  # the raising observer changed nothing
    job_id = rig.redis.hget(keys.journal(pending.id), "job_id").decode()
    submitted = rig.events(pending.id, "submitted")
    assert [(e[2], e[3]["input"]) for e in submitted] == [(job_id, {"seconds": 0.6})]
    changes = [(e[3]["previous"], e[3]["status"]) for e in rig.events(pending.id, "status_changed")]
    assert changes[0][0] is None and changes[-1][1] == "COMPLETED"
    assert all(prev != new for prev, new in changes)
    assert all(e[2] == job_id for e in rig.events(pending.id))
    (completed,) = rig.events(pending.id, "completed")
    assert completed[3]["output"] == {"done": {"seconds": 0.6}} and completed[3]["execution_ms"] is not None


def test_429s_on_submit_and_poll_are_reported_as_rate_limited_and_retried(rig):
    rig.endpoint.set_faults(rate_limits={"run": [1, 1.0], "status": [1, 1.0]})
    try:
        first = rig.app.send_task("bridge.run", args=({"seconds": 1.0}, "slow"))
        second = rig.app.send_task("bridge.run", args=({"seconds": 1.0}, "slow"))
        assert first.get(timeout=30) == {"done": {"seconds": 1.0}}
        assert second.get(timeout=30) == {"done": {"seconds": 1.0}}
    finally:
        rig.endpoint.set_faults(rate_limits={})
    limited = rig.events(first.id, "rate_limited") + rig.events(second.id, "rate_limited")
    routes = {e[3]["route"] for e in limited}
    assert "run" in routes and "status" in routes
    assert all(e[3]["retry_after"] and e[3]["retry_after"] > 0 for e in limited)
    retried = rig.events(first.id, "retried") + rig.events(second.id, "retried")
    assert len(retried) >= len(limited)
    assert all(isinstance(e[3]["error"], errors.RateLimited) and e[3]["delay"] > 0 for e in retried)


def test_a_failed_job_is_reported_and_its_error_text_is_redacted(rig):
    pending = rig.app.send_task("bridge.run", args=({}, "fail"))
    with pytest.raises(errors.JobFailed) as info:
        pending.get(timeout=30)
    assert LEAK not in str(info.value) and "broken with" in str(info.value)
    assert LEAK not in str(info.value.args) and LEAK not in str(rig.redis.get(f"celery-task-meta-{pending.id}"))
    (failed,) = rig.events(pending.id, "failed")
    assert isinstance(failed[3]["error"], errors.JobFailed) and failed[2]


def test_a_failed_stream_ends_with_a_redacted_error(rig):
    pending = rig.app.send_task("bridge.stream", args=({}, "fail_stream"))
    with pytest.raises(errors.JobFailed) as info:
        pending.get(timeout=30)
    assert LEAK not in str(info.value)
    entries = rig.redis.xrange(keys.stream(pending.id))
    eof = entries[-1][1]
    assert eof[b"eof"] == b"1" and eof[b"status"] == b"FAILED" and b"stream broke with" in eof[b"error"]
    assert LEAK.encode() not in eof[b"error"]
    (failed,) = rig.events(pending.id, "failed")
    assert isinstance(failed[3]["error"], errors.JobFailed)


def test_a_cancelled_task_is_reported(rig):
    pending = rig.app.send_task("bridge.run", args=({"seconds": 30}, "slow"))
    wait_until(lambda: rig.events(pending.id, "submitted"), 10)
    cancel_task(pending.id, redis_url=rig.url)
    wait_until(lambda: rig.events(pending.id, "cancelled"), 10)
    (cancelled,) = rig.events(pending.id, "cancelled")
    assert cancelled[3]["reason"] == "revoked" and cancelled[2]


def test_a_stream_task_reports_completed_with_the_aggregate(rig):
    pending = rig.app.send_task("bridge.stream", args=({}, "tokens"))
    assert pending.get(timeout=30) == ["a", "b", "c"]
    (completed,) = rig.events(pending.id, "completed")
    assert completed[3]["output"] == ["a", "b", "c"] and completed[2]


def test_a_lookup_hit_on_a_stream_task_still_writes_its_stream_and_meta(rig):
    before = rig.endpoint.submissions("hit")
    pending = rig.app.send_task("bridge.stream", args=({"seconds": 0}, "hit"))
    assert pending.get(timeout=30) == ["cached", "chunks"]
    entries = rig.redis.xrange(keys.stream(pending.id))
    assert [json.loads(f[b"chunk"]) for _, f in entries if b"chunk" in f] == ["cached", "chunks"]
    assert entries[-1][1][b"eof"] == b"1" and entries[-1][1][b"status"] == b"COMPLETED"
    assert rig.endpoint.submissions("hit") == before
    assert job_meta(pending.id, rig.url) == {"cache": "hit", "api_key": "***"}
    (completed,) = rig.events(pending.id, "completed")
    assert completed[3]["output"] == ["cached", "chunks"]


def test_meta_of_a_run_task_is_readable_and_redacted(rig):
    pending = rig.app.send_task("bridge.run", args=({"seconds": 0}, "hit"))
    assert pending.get(timeout=30) == ["cached", "chunks"]
    assert job_meta(pending.id, rig.url) == {"cache": "hit", "api_key": "***"}
    assert "rpa_SHOULDNOT" not in str(rig.redis.hgetall(keys.journal(pending.id)))
    other = rig.app.send_task("bridge.run", args=({"seconds": 0}, "slow"))
    other.get(timeout=30)
    assert job_meta(other.id, rig.url) == {}
