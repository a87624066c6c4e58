"""Where the client's settings come from, what it refuses before sending, and the sync
endpoint shared between threads."""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor

import pytest

import bridge
from bridge import errors
from bridge.client import RetryPolicy
from bridge.client._wire import request_body

from . import handlers


def test_settings_resolution_order(monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", "rpa_FROMENV000000001")
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", "http://127.0.0.1:9/v2/")
    ep = bridge.Endpoint("e")
    assert ep.base_url == "http://127.0.0.1:9/v2"
    assert ep._wire.api_key == "rpa_FROMENV000000001"
    monkeypatch.setattr(bridge, "api_key", "rpa_FROMMODULE00001", raising=False)
    monkeypatch.setattr(bridge, "endpoint_url_base", "http://127.0.0.1:8/v2", raising=False)
    ep = bridge.AsyncioEndpoint("e")
    assert ep.base_url == "http://127.0.0.1:8/v2" and ep._wire.api_key == "rpa_FROMMODULE00001"
    ep = bridge.Endpoint("e", api_key="rpa_FROMARG00000001", base_url="http://127.0.0.1:7/v2")
    assert ep.base_url == "http://127.0.0.1:7/v2" and ep._wire.api_key == "rpa_FROMARG00000001"
    assert "FROMARG" not in repr(ep)
    assert "FROMARG" not in repr(ep._wire.health())  # a request description shown in a traceback


def test_runpod_hosted_api_needs_a_key(monkeypatch):
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    monkeypatch.delenv("RUNPOD_ENDPOINT_BASE_URL", raising=False)
    with pytest.raises(errors.ConfigurationError):
        bridge.Endpoint("e")
    with pytest.raises(errors.ConfigurationError):
        bridge.Endpoint("e", base_url="ftp://127.0.0.1/v2")


@pytest.mark.parametrize(
    ("given", "options", "body"),
    [
        ({}, {}, {"input": {}}),
        ({"input": {}}, {}, {"input": {}}),
        ({"input": {"a": 1}, "webhook": "w"}, {}, {"input": {"a": 1}, "webhook": "w"}),
        ({"input": 1, "extra": 1}, {}, {"input": {"input": 1, "extra": 1}}),
        ("text", {"policy": {"ttl": 1}}, {"input": "text", "policy": {"ttl": 1}}),
        ({"input": 1, "webhook": "a"}, {"webhook": "b"}, {"input": 1, "webhook": "b"}),
    ],
)
def test_request_body_form(given, options, body):
    assert request_body(given, **options) == body


def test_job_errors_pickle_with_their_fields(local_endpoint):
    local = local_endpoint(handlers.work)
    ep = bridge.Endpoint(local.endpoint_id, base_url=local.base_url)
    with pytest.raises(errors.JobFailed) as info:
        ep.run_sync({"fail": "kaput"}, timeout=10)
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.job_id, copy.endpoint_id, copy.status) == (info.value.job_id, local.endpoint_id, "FAILED")
    assert "kaput" in copy.error and str(copy) == str(info.value)


def test_one_sync_endpoint_shared_by_threads(local_endpoint):
    local = local_endpoint(handlers.work, workers=32)
    with bridge.Endpoint(local.endpoint_id, base_url=local.base_url, retry=RetryPolicy(base=0.01)) as ep:
        with ThreadPoolExecutor(16) as pool:
            outputs = list(pool.map(lambda i: ep.run({"i": i, "sleep": 0.05}).output(timeout=30), range(64)))
    assert outputs == [{"echo": {"i": i, "sleep": 0.05}} for i in range(64)]
    assert local.submissions() == 64
    assert ep.requests_sent == sum(local.stats().values())


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_proxy_from_the_environment_is_used(local_endpoint, edge_proxy, monkeypatch, kind):
    """HTTP_PROXY is honoured (resolved when the endpoint is made); NO_PROXY bypasses it."""
    import asyncio

    local = local_endpoint(handlers.work)
    proxy = edge_proxy(local, status_sync=None)
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.base_url.rsplit("/v2", 1)[0])
    monkeypatch.setenv("http_proxy", proxy.base_url.rsplit("/v2", 1)[0])

    def use(**env: str) -> object:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        if kind == "sync":
            with bridge.Endpoint(local.endpoint_id, base_url=local.base_url) as ep:
                return ep.run_sync({"p": 1}, timeout=10)

        async def go() -> object:
            async with bridge.AsyncioEndpoint(local.endpoint_id, base_url=local.base_url) as aep:
                return await aep.run_sync({"p": 1}, timeout=10)

        return asyncio.run(go())

    assert use() == {"echo": {"p": 1}}
    assert len(proxy.seen) == 1 and proxy.seen[0].startswith(local.base_url.rsplit("/v2", 1)[0])
    assert use(NO_PROXY="127.0.0.1", no_proxy="127.0.0.1") == {"echo": {"p": 1}}
    assert len(proxy.seen) == 1


def test_asyncio_endpoint_survives_a_new_event_loop(local_endpoint):
    """Celery tasks often call asyncio.run per task with one long-lived endpoint."""
    import asyncio

    local = local_endpoint(handlers.work)
    ep = bridge.AsyncioEndpoint(local.endpoint_id, base_url=local.base_url)
    assert asyncio.run(ep.run_sync({"a": 1}, timeout=None)) == {"echo": {"a": 1}}
    assert asyncio.run(ep.run_sync({"a": 2})) == {"echo": {"a": 2}}

    async def close() -> None:
        await ep.close()

    asyncio.run(close())
