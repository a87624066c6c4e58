"""The whole path with real parts: a Celery task (embedded threads worker) → input hooks →
the local endpoint over loopback HTTP → output/chunk hooks → the task's result, with the
first-party plugins configured through the environment like a deployment would."""

from __future__ import annotations

import json
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
from bridge.gateway.core import get_gateway, reset_gateway
from bridge.hooks import Hooks
from bridge.testing import LocalEndpoint
from bridge.worker import install

WORDS = ["Paris", " is", " the", " capital", "."]


def echo(job: dict[str, Any]) -> Any:
    return job["input"]


async def vllm(job: dict[str, Any]) -> Any:
    """A stand-in for worker-vllm's legacy native mode: batches of token deltas."""
    inp = job["input"]
    if not isinstance(inp.get("messages"), list) or not isinstance(inp.get("sampling_params"), dict):
        raise ValueError(f"not a native worker-vllm input: {sorted(inp)}")
    prompt = sum(len(m["content"].split()) for m in inp["messages"])
    for i in range(0, len(WORDS), 2):
        yield {"choices": [{"tokens": WORDS[i:i + 2]}], "usage": {"input": prompt, "output": min(i + 2, len(WORDS))}}


PLUGIN = """
    from bridge import hookimpl

    @hookimpl
    def bridge_transform_input(ctx, input):
        if ctx.endpoint_id == "echo":
            return {**input, "tagged": ctx.process}

    @hookimpl
    def bridge_transform_output(ctx, output):
        if ctx.endpoint_id == "echo":
            return {"wrapped": output, "job_id_known": bool(ctx.job_id)}
"""


@dataclass
class E2E:
    app: Celery
    endpoint: LocalEndpoint
    redis: redis.Redis
    hooks: Hooks

    def metric(self, name: str, **labels: str) -> float:
        plugin = self.hooks.pm.get_plugin("metrics")  # type: ignore[union-attr]
        return plugin.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def clean_plugin_env() -> None:
    """Overrides the package's autouse fixture: this module sets plugin env once for all tests."""


@pytest.fixture(scope="module")
def e2e(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    root = tmp_path_factory.mktemp("e2e")
    (root / "e2e_plugin.py").write_text(textwrap.dedent(PLUGIN))
    schemas = root / "schemas"
    schemas.mkdir()
    (schemas / "echo.input.json").write_text(json.dumps(
        {"type": "object", "required": ["prompt"], "properties": {"prompt": {"type": "string"}}}))
    url = f"redis://127.0.0.1:{redis_server.port}/7"
    client = redis.Redis.from_url(url)
    client.flushdb()
    ep = LocalEndpoint(echo, endpoint_id="echo", workers=50)
    ep.add_endpoint("cached", echo, workers=50)
    ep.add_endpoint("vllm", vllm, workers=50, return_aggregate_stream=True)
    env = {
        "BRIDGE_REDIS_URL": url, "RUNPOD_ENDPOINT_BASE_URL": ep.base_url,
        "BRIDGE_SUBMIT_ATTEMPTS": "3", "BRIDGE_LONG_POLL": "5",
        "BRIDGE_DISABLE_PLUGIN_AUTOLOAD": "1",
        "BRIDGE_PLUGINS": "e2e=e2e_plugin",
        "BRIDGE_PLUGIN_SCHEMA_DIR": str(schemas),
        "BRIDGE_PLUGIN_OPENAI_CHAT_ENDPOINTS": "vllm",
        "BRIDGE_PLUGIN_OPENAI_CHAT_DEFAULT_MAX_TOKENS": "32",
        "BRIDGE_PLUGIN_CACHE_URL": url, "BRIDGE_PLUGIN_CACHE_ENDPOINTS": "cached",
        "BRIDGE_PLUGIN_METRICS_ENABLED": "1",
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        for key, value in env.items():
            mp.setenv(key, value)
        Hooks.clear_cache()
        reset_gateway()
        hooks = get_gateway().hooks  # plugins load here, before any task runs
        app = Celery("bridge-plugin-e2e", broker=url, backend=url)
        app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                        worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True)
        install(app)
        with start_worker(app, pool="threads", concurrency=20, perform_ping_check=False,
                          loglevel="WARNING", shutdown_timeout=15):
            yield E2E(app, ep, client, hooks)
        reset_gateway()
        Hooks.clear_cache()
    ep.close()
    client.close()


def test_the_loaded_plugins(e2e):
    assert e2e.hooks.implementations("bridge_transform_input") == ["openai_chat", "e2e", "schema"]
    assert e2e.hooks.implementations("bridge_transform_output") == ["schema", "cache", "e2e", "openai_chat"]


def test_input_and_output_hooks_wrap_a_celery_task(e2e):
    result = e2e.app.send_task("bridge.run", args=({"prompt": "hi"}, "echo")).get(timeout=30)
    # the endpoint saw the transformed input; the task returned the transformed output
    assert result == {"wrapped": {"prompt": "hi", "tagged": "worker"}, "job_id_known": True}
    assert e2e.metric("bridge_jobs_total", endpoint="echo", outcome="completed") >= 1
    assert e2e.metric("bridge_job_duration_seconds_count", endpoint="echo", outcome="completed") >= 1
    assert e2e.metric("bridge_job_execution_seconds_count", endpoint="echo") >= 1


def test_a_veto_fails_the_task_clearly_and_submits_nothing(e2e):
    before = e2e.endpoint.submissions("echo")
    rejected_before = e2e.metric("bridge_jobs_total", endpoint="echo", outcome="rejected")
    pending = e2e.app.send_task("bridge.run", args=({"prompt": 42}, "echo"))
    with pytest.raises(errors.JobRejected) as info:
        pending.get(timeout=30)
    assert "plugin 'schema'" in str(info.value) and "at $.prompt: 42 is not of type 'string'" in str(info.value)
    assert e2e.endpoint.submissions("echo") == before
    assert e2e.metric("bridge_jobs_total", endpoint="echo", outcome="rejected") == rejected_before + 1


def test_an_openai_request_runs_on_a_vllm_style_worker_and_answers_openai(e2e):
    request = {"model": "llama-3", "messages": [{"role": "user", "content": "Capital of France?"}]}
    pending = e2e.app.send_task("bridge.run", args=(request, "vllm"))
    completion = pending.get(timeout=30)
    assert completion["object"] == "chat.completion" and completion["model"] == "llama-3"
    job_id = e2e.redis.hget(keys.journal(pending.id), "job_id").decode()
    assert completion["id"] == f"chatcmpl-{job_id}"
    assert completion["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Paris is the capital."},
                                      "finish_reason": "stop", "logprobs": None}]
    assert completion["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


def test_streamed_chunks_go_through_the_chunk_hooks(e2e):
    request = {"model": "llama-3", "stream": True, "messages": [{"role": "user", "content": "Capital?"}]}
    pending = e2e.app.send_task("bridge.stream", args=(request, "vllm"))
    returned = pending.get(timeout=30)
    entries = e2e.redis.xrange(keys.stream(pending.id))
    published = [json.loads(f[b"chunk"]) for _, f in entries if b"chunk" in f]
    assert published == returned and len(published) == 3
    assert all(c["object"] == "chat.completion.chunk" for c in published)
    assert published[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Paris is"}
    assert "".join(c["choices"][0]["delta"]["content"] for c in published) == "Paris is the capital."
    assert entries[-1][1][b"eof"] == b"1" and entries[-1][1][b"status"] == b"COMPLETED"


def test_identical_requests_pay_once_with_the_cache(e2e):
    before = e2e.endpoint.submissions("cached")
    first = e2e.app.send_task("bridge.run", args=({"q": "same"}, "cached")).get(timeout=30)
    second = e2e.app.send_task("bridge.run", args=({"q": "same"}, "cached")).get(timeout=30)
    assert first == second == {"q": "same"}
    assert e2e.endpoint.submissions("cached") == before + 1
    assert e2e.metric("bridge_cache_hits_total", endpoint="cached") >= 1
