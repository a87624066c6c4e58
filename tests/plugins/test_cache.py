"""cache against the real redis-server: hit/miss in ctx.meta, TTL, normalised keys, outages
as misses, in-flight de-duplication, and ordering with schema and openai_chat."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
import redis
from bridge_plugins.cache import cache_key

from bridge.errors import ConfigurationError, JobFailed, MalformedResponse
from bridge.hooks import Hooks, JobContext
from bridge.plugins import make_plugin_manager


def cache_hooks(url: str, **extra: str) -> Hooks:
    env = {"BRIDGE_PLUGIN_CACHE_URL": url, "BRIDGE_PLUGIN_CACHE_TTL": "120", **extra}
    return Hooks(make_plugin_manager(environ=env, entry_points=False))


def run_job(hooks: Hooks, endpoint: str, input, output, **ctx_fields):
    """What the gateway does around one job, minus the HTTP: lookup, then store on completion."""
    ctx = JobContext(endpoint, base_url="http://127.0.0.1:1/v2", **ctx_fields)
    payload = hooks.transform_input(ctx, input)
    hit, cached = hooks.lookup(ctx, payload)
    result = hooks.transform_output(ctx, cached if hit else output)
    return ctx, hit, result


def test_miss_then_hit_visible_in_meta_with_a_ttl(redis_url):
    hooks = cache_hooks(redis_url)
    ctx, hit, result = run_job(hooks, "ep", {"b": 1, "a": [1, 2]}, {"text": "computed"})
    assert (hit, result, ctx.meta) == (False, {"text": "computed"}, {"cache": "miss"})
    # same input with keys in another order: one key
    ctx2, hit2, result2 = run_job(hooks, "ep", {"a": [1, 2], "b": 1}, {"text": "NOT USED"})
    assert (hit2, result2, ctx2.meta) == (True, {"text": "computed"}, {"cache": "hit"})
    client = redis.Redis.from_url(redis_url)
    key = cache_key("ep", {"a": [1, 2], "b": 1}, "http://127.0.0.1:1/v2")
    assert key is not None and key.startswith("bridge:cache:ep:")
    assert 0 < client.ttl(key) <= 120
    assert json.loads(client.get(key)) == {"output": {"text": "computed"}}


def test_other_endpoints_and_inputs_do_not_share_entries(redis_url):
    hooks = cache_hooks(redis_url)
    run_job(hooks, "ep", {"q": 1}, "one")
    assert run_job(hooks, "other", {"q": 1}, "two")[1:] == (False, "two")
    assert run_job(hooks, "ep", {"q": 2}, "three")[1:] == (False, "three")


def test_endpoints_option_limits_the_cache(redis_url):
    hooks = cache_hooks(redis_url, BRIDGE_PLUGIN_CACHE_ENDPOINTS="cached-ep")
    run_job(hooks, "plain", {"q": 1}, "one")
    ctx, hit, _ = run_job(hooks, "plain", {"q": 1}, "two")
    assert not hit and "cache" not in ctx.meta


def test_a_redis_outage_is_a_miss_not_a_failure():
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hooks = cache_hooks(f"redis://127.0.0.1:{port}/0")
    ctx, hit, result = run_job(hooks, "ep", {"q": 1}, "fresh")
    assert (hit, result, ctx.meta) == (False, "fresh", {"cache": "error"})


def test_no_url_is_a_clear_error():
    with pytest.raises(ConfigurationError, match="plugin 'cache' needs a Redis URL"):
        make_plugin_manager(environ={"BRIDGE_PLUGIN_CACHE_TTL": "5"}, entry_points=False)


def test_an_identical_job_in_flight_is_awaited_not_resubmitted(redis_url):
    hooks = cache_hooks(redis_url, BRIDGE_PLUGIN_CACHE_WAIT="30")
    leader = JobContext("ep", task_id="t-leader")
    assert hooks.lookup(leader, {"q": 1}) == (False, None)  # leads: marks the key pending
    results: list = []
    twin = threading.Thread(target=lambda: results.append(hooks.lookup(JobContext("ep", task_id="t2"), {"q": 1})))
    twin.start()
    hooks.transform_output(leader, "the answer")  # the leader completes and stores
    twin.join(10)
    assert results == [(True, "the answer")]
    assert not redis.Redis.from_url(redis_url).exists(leader.state["cache_key"] + ":pending")


def test_a_failed_leader_releases_its_twins_at_once(redis_url):
    hooks = cache_hooks(redis_url, BRIDGE_PLUGIN_CACHE_WAIT="60")
    leader = JobContext("ep", task_id="t-leader")
    hooks.lookup(leader, {"q": 1})
    results: list = []
    started = time.monotonic()
    twin = threading.Thread(target=lambda: results.append(hooks.lookup(JobContext("ep"), {"q": 1})))
    twin.start()
    hooks.notify("failed", leader, error=JobFailed("boom"))
    twin.join(10)
    assert results == [(False, None)]  # the twin submits itself
    assert time.monotonic() - started < 10  # long before the 60 s wait (liveness only)


def test_outputs_failing_the_schema_are_not_cached(redis_url, tmp_path):
    (tmp_path / "ep.output.json").write_text(json.dumps({"type": "string"}))
    hooks = cache_hooks(redis_url, BRIDGE_PLUGIN_SCHEMA_DIR=str(tmp_path))
    assert hooks.implementations("bridge_transform_output") == ["schema", "cache"]
    with pytest.raises(MalformedResponse):
        run_job(hooks, "ep", {"q": 1}, {"not": "a string"})
    assert run_job(hooks, "ep", {"q": 1}, "valid")[1] is False  # nothing was stored


def test_the_cache_stores_raw_outputs_and_hits_are_transformed_again(redis_url):
    hooks = cache_hooks(redis_url, BRIDGE_PLUGIN_OPENAI_CHAT_MODEL="m")
    request = {"messages": [{"role": "user", "content": "hi"}]}
    raw = [{"choices": [{"tokens": ["hello"]}], "usage": {"input": 1, "output": 1}}]
    ctx, hit, first = run_job(hooks, "ep", request, raw, job_id="j1")
    assert first["object"] == "chat.completion" and first["id"] == "chatcmpl-j1"
    ctx2, hit2, second = run_job(hooks, "ep", request, None, job_id="j2")
    assert hit2 and second["choices"] == first["choices"] and second["id"] == "chatcmpl-j2"
    assert json.loads(redis.Redis.from_url(redis_url).get(ctx.state["cache_key"])) == {"output": raw}


async def test_twins_wait_without_blocking_the_gateways_event_loop(redis_url):
    # The gateway is asyncio: a waiting twin must leave the loop free for the leader to finish.
    hooks = cache_hooks(redis_url, BRIDGE_PLUGIN_CACHE_WAIT="30")
    leader = JobContext("ep", task_id="t-leader")
    assert await hooks.alookup(leader, {"q": 1}) == (False, None)
    twin = asyncio.ensure_future(hooks.alookup(JobContext("ep", task_id="t2"), {"q": 1}))
    assert await hooks.atransform_output(leader, {"a": 1}) == {"a": 1}
    assert await asyncio.wait_for(twin, 10) == (True, {"a": 1})
