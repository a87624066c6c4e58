"""Failures on the wire, through both clients: 429 and 5xx injection with recovery,
Retry-After, exhausted retries, unreachable endpoints, 401 without leaking the key,
payload checks before sending, lost /run answers with Idempotency-Key, endpoints
without the /status-sync long poll or without a ``stream`` key, and a status outside
RunPod's set (BRIDGE_UNKNOWN_STATUS_TIMEOUT)."""

from __future__ import annotations

import logging
import pickle
import socket
import threading
import time
import uuid

import pytest

from bridge import errors
from bridge.client import PollPolicy, RetryPolicy
from bridge.config import unknown_status_timeout
from bridge.testing import wait_until

from . import handlers


def test_429_on_run_and_status_is_retried_until_it_succeeds(local_endpoint, client):
    local = local_endpoint(handlers.work)
    ep = client(local)
    local.set_faults(rate_limits={"run": [3, 0.3], "status": [3, 0.3]})
    jobs = [ep.run({"i": i}) for i in range(5)]
    assert all(j.status() for j in jobs)
    assert [j.output(timeout=10) for j in jobs] == [{"echo": {"i": i}} for i in range(5)]
    assert local.submissions() == 5  # every retried /run made exactly one job
    assert local.stats()["run"] > 5  # some were answered 429 first


def test_retry_after_is_honoured(local_endpoint, client):
    local = local_endpoint(handlers.work)
    ep = client(local, retry=RetryPolicy(attempts=10, deadline=20, base=0.01, max_backoff=0.05))
    local.set_faults(rate_limits={"health": [1, 1.0]})
    ep.health()
    started = time.monotonic()
    ep.health()
    # Our own back-off alone would have retried within ~0.05 s, many times over.
    assert time.monotonic() - started >= 0.5
    assert local.stats()["health"] <= 4


def test_5xx_injection_recovers(local_endpoint, client):
    local = local_endpoint(handlers.work)
    ep = client(local)
    local.set_faults(error_rate={"*": 0.4}, seed=7)
    results = [ep.run_sync({"i": i}, timeout=20) for i in range(5)]
    results += [ep.run({"i": i}).output(timeout=20) for i in range(5, 10)]
    assert results == [{"echo": {"i": i}} for i in range(10)]
    assert local.submissions() == 10


def test_exhausted_retries_raise_the_last_error(local_endpoint, client):
    local = local_endpoint(handlers.work)
    ep = client(local, retry=RetryPolicy(attempts=3, base=0.01, deadline=30.0))
    local.set_faults(error_rate={"health": 1.0}, error_status=503)
    with pytest.raises(errors.ServerError) as info:
        ep.health()
    assert info.value.status_code == 503
    assert local.stats()["health"] == 3
    local.set_faults(error_rate={}, rate_limits={"health": [1, 60.0]})
    ep.health()
    with pytest.raises(errors.RateLimited) as limited:
        ep.health()  # Retry-After of a minute is past the retry deadline: give up at once
    assert limited.value.retry_after and limited.value.retry_after > 10


def test_unreachable_endpoint_is_a_transport_error(client):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    ep = client(f"http://127.0.0.1:{port}/v2", retry=RetryPolicy(attempts=3, base=0.01))
    started = time.monotonic()
    with pytest.raises(errors.TransportError) as info:
        ep.run({"x": 1})
    assert time.monotonic() - started < 5
    assert ep.requests_sent == 3
    assert str(port) in str(info.value)


def test_401_is_an_authentication_error_without_the_key(local_endpoint, client):
    local = local_endpoint(handlers.work, api_key="rpa_SERVERSECRET12345")
    wrong = client(local, api_key="rpa_WRONGKEY99999999")
    with pytest.raises(errors.AuthenticationError) as info:
        wrong.run({"x": 1})
    err = info.value
    assert err.status_code == 401
    for text in (str(err), repr(err), repr(err.args), str(pickle.loads(pickle.dumps(err)))):
        assert "WRONGKEY" not in text and "SERVERSECRET" not in text
    assert local.submissions() == 0
    right = client(local, api_key="rpa_SERVERSECRET12345")
    assert right.run_sync({"x": 1}, timeout=10) == {"echo": {"x": 1}}
    assert "SERVERSECRET" not in repr(right)


def test_payloads_are_checked_before_sending(local_endpoint, client):
    local = local_endpoint(handlers.size)
    ep = client(local)
    eleven_mb = {"blob": "x" * (11 * 1024 * 1024)}
    with pytest.raises(errors.PayloadTooLarge):
        ep.run(eleven_mb)
    assert ep.run_sync(eleven_mb, timeout=30) == {"len": 11 * 1024 * 1024}  # /runsync allows 20 MB
    with pytest.raises(errors.PayloadTooLarge):
        ep.run_sync({"blob": "x" * (21 * 1024 * 1024)}, timeout=30)
    with pytest.raises(errors.InvalidRequest):
        ep.run({"when": object()})
    with pytest.raises(ValueError):  # InvalidRequest is a ValueError, NaN is not JSON
        ep.run({"x": float("nan")})
    assert local.stats() == {"runsync": 1}


def test_lost_run_answer_is_retried_without_a_second_job(local_endpoint, edge_proxy, client):
    local = local_endpoint(handlers.work)
    proxy = edge_proxy(local, status_sync=None, drop_runs=1)
    ep = client(proxy.base_url, endpoint_id=local.endpoint_id)
    job = ep.run({"x": 1})
    assert proxy.dropped == 1
    assert local.stats()["run"] == 2
    assert local.submissions() == 1  # the retry carried the same Idempotency-Key
    assert job.output(timeout=10) == {"echo": {"x": 1}}


@pytest.mark.parametrize("code", [404, 405])
def test_endpoint_without_status_sync_falls_back_to_backed_off_polls(local_endpoint, edge_proxy, client, code):
    local = local_endpoint(handlers.work)
    proxy = edge_proxy(local, status_sync=code)
    ep = client(proxy.base_url, endpoint_id=local.endpoint_id)
    job = ep.run({"sleep": 1.0})
    assert job.output(timeout=10) == {"echo": {"sleep": 1.0}}
    assert ep.long_poll is False
    polls = local.stats()["status"]
    # Backed-off polls over ~1 s: a handful, not one per 10 ms (and not the SDK's fixed 1 s).
    assert 2 <= polls <= 10
    # Remembered: the next wait goes straight to /status.
    assert ep.run({"x": 2}).output(timeout=10) == {"echo": {"x": 2}}
    with pytest.raises(errors.NotFound):
        ep.job("nope").output(timeout=5)


def test_fetch_wait_on_endpoint_without_status_sync(local_endpoint, edge_proxy, client):
    local = local_endpoint(handlers.work)
    proxy = edge_proxy(local, status_sync=404)
    ep = client(proxy.base_url, endpoint_id=local.endpoint_id)
    job = ep.run({"x": 1})
    body = job.fetch(wait=2)
    assert body["id"] == job.job_id and body["status"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    assert local.stats()["status"] == 1


def test_stream_without_stream_key_ends(local_endpoint, edge_proxy, client):
    local = local_endpoint(handlers.sync_gen)
    proxy = edge_proxy(local, status_sync=404, drop_stream_key=True)
    ep = client(proxy.base_url, endpoint_id=local.endpoint_id, poll=PollPolicy(long_poll=0))
    assert list(ep.run({"n": 2}).stream()) == [{"i": 0}, {"i": 1}]


def _unknown_status_lines(caplog: pytest.LogCaptureFixture, job_id: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and job_id in r.getMessage() and "not one of RunPod's" in r.getMessage()]


def test_an_unknown_status_ends_the_wait_after_the_setting(local_endpoint, client, caplog, monkeypatch):
    monkeypatch.setenv("BRIDGE_UNKNOWN_STATUS_TIMEOUT", "1")
    local = local_endpoint(handlers.work)
    ep = client(local, poll=PollPolicy(long_poll=1.0))
    gate = f"g-{uuid.uuid4()}"
    local.set_faults(status_override={"*": "WEIRD"})
    job = ep.run({"gate": gate})
    try:
        with caplog.at_level(logging.WARNING, logger="bridge.client"):
            with pytest.raises(errors.UnknownStatus) as info:
                job.output(timeout=60)  # our own deadline is far: this is not a Timeout
            err = info.value
            assert isinstance(err, errors.MalformedResponse) and not isinstance(err, errors.Timeout)
            assert (err.job_id, err.endpoint_id, err.status, err.waited) == (job.job_id, local.endpoint_id, "WEIRD", 1.0)
            assert "'WEIRD'" in str(err) and "BRIDGE_UNKNOWN_STATUS_TIMEOUT" in str(err)
            assert local.job_state(job.job_id)["status"] == "IN_PROGRESS"  # not cancelled
            with pytest.raises(errors.UnknownStatus):
                job.output(timeout=60)  # a second wait on the same job gives up too...
        lines = _unknown_status_lines(caplog, job.job_id)
        assert len(lines) == 1 and "'WEIRD'" in lines[0]  # ...and the warning came once per job
    finally:
        handlers.gate(gate).set()


def test_an_unknown_status_ends_a_stream_too(local_endpoint, client, monkeypatch):
    monkeypatch.setenv("BRIDGE_UNKNOWN_STATUS_TIMEOUT", "0.5")
    local = local_endpoint(handlers.work)
    ep = client(local, poll=PollPolicy(long_poll=0, initial=0.05))
    gate = f"g-{uuid.uuid4()}"
    job = ep.run({"gate": gate})
    local.set_faults(status_override={job.job_id: "BOOTING"})
    try:
        with pytest.raises(errors.UnknownStatus) as info:
            list(job.stream(timeout=60))
        assert info.value.status == "BOOTING"
    finally:
        handlers.gate(gate).set()


def test_a_passing_unknown_status_does_not_end_the_wait(local_endpoint, client, caplog, monkeypatch):
    monkeypatch.setenv("BRIDGE_UNKNOWN_STATUS_TIMEOUT", "60")
    local = local_endpoint(handlers.work)
    ep = client(local, poll=PollPolicy(long_poll=0, initial=0.05, max_interval=0.2))
    gate = f"g-{uuid.uuid4()}"
    local.set_faults(status_override={"*": "WEIRD"})
    job = ep.run({"gate": gate})

    def release_once_warned() -> None:
        wait_until(lambda: _unknown_status_lines(caplog, job.job_id), timeout=30)
        local.set_faults(status_override=None)
        handlers.gate(gate).set()

    with caplog.at_level(logging.WARNING, logger="bridge.client"):
        helper = threading.Thread(target=release_once_warned)
        helper.start()
        try:
            assert job.output(timeout=30) == {"echo": {"gate": gate}}
        finally:
            handlers.gate(gate).set()
            helper.join(30)


def test_unknown_status_timeout_setting_is_checked(monkeypatch):
    monkeypatch.delenv("BRIDGE_UNKNOWN_STATUS_TIMEOUT", raising=False)
    assert unknown_status_timeout() == 300.0
    monkeypatch.setenv("BRIDGE_UNKNOWN_STATUS_TIMEOUT", "2.5")
    assert unknown_status_timeout() == 2.5
    for bad in ("-1", "soon", "nan"):
        monkeypatch.setenv("BRIDGE_UNKNOWN_STATUS_TIMEOUT", bad)
        with pytest.raises(errors.ConfigurationError, match="BRIDGE_UNKNOWN_STATUS_TIMEOUT"):
            unknown_status_timeout()
