"""Fault injection (rate limits, error rate, latency, cold start), API keys and payload limits."""

from __future__ import annotations

import socket
import time

import requests

from .conftest import Client, wait_until
from .test_control import Gate


def test_runpod_profile_rate_limits_purge_queue_with_retry_after(local_endpoint):
    c = Client(local_endpoint(profile="runpod"))
    assert [c.post("purge-queue").status_code for _ in range(2)] == [200, 200]
    r = c.post("purge-queue")
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    assert "rate limit" in r.json()["error"]
    assert c.get("health").status_code == 200  # other routes have their own budgets


def test_runtime_rate_limit_and_recovery(local_endpoint):
    ep = local_endpoint()
    c = Client(ep)
    ep.set_faults(rate_limits={"status": [2, 60]})
    job_id = c.run()
    codes = [c.get("status", job_id).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert c.get("status-sync", job_id, params={"wait": 0}).status_code == 429  # shares status's bucket
    ep.set_faults(rate_limits=None)
    assert c.get("status", job_id).status_code == 200
    ep.add_endpoint("other")
    ep.set_faults(rate_limits={"run": [1, 60]})
    assert c.post("run", json={"input": {}}).status_code == 200
    assert c.post("run", json={"input": {}}).status_code == 429
    assert Client(ep, "other").post("run", json={"input": {}}).status_code == 200  # per endpoint


def test_error_rate_injection_through_test_route(local_endpoint):
    ep = local_endpoint()
    c = Client(ep)
    faults_url = ep.base_url.removesuffix("/v2") + "/_bridge/faults"
    r = requests.post(faults_url, json={"error_rate": {"run": 1.0}, "error_status": 503})
    assert r.status_code == 200 and r.json()["error_rate"] == {"run": 1.0}
    bad = c.post("run", json={"input": {}})
    assert bad.status_code == 503 and "injected" in bad.json()["error"]
    assert c.get("health").status_code == 200  # only the named route
    assert ep.submissions() == 0
    requests.post(faults_url, json={"error_rate": 0})
    assert c.post("run", json={"input": {}}).status_code == 200
    assert requests.post(faults_url, json={"bogus": 1}).status_code == 400
    assert requests.get(faults_url).json()["error_status"] == 503


def test_partial_error_rate_fails_some_requests(local_endpoint):
    ep = local_endpoint(faults={"error_rate": 0.5, "seed": 7})
    codes = {Client(ep).get("health").status_code for _ in range(40)}
    assert codes == {200, 500}


def test_latency_is_added(local_endpoint):
    ep = local_endpoint(faults={"latency": {"health": 0.2}})
    c = Client(ep)
    start = time.monotonic()
    assert c.get("health").status_code == 200
    assert time.monotonic() - start >= 0.2


def test_cold_start_delays_the_first_job_and_shows_initializing(local_endpoint):
    ep = local_endpoint(faults={"cold_start": 0.3})
    c = Client(ep)
    job_id = c.run()
    wait_until(lambda: c.get("health").json()["workers"]["initializing"] == 1)
    assert c.status(job_id)["status"] == "IN_QUEUE"
    body = c.wait(job_id)
    assert body["delayTime"] >= 300
    assert c.wait(c.run())["delayTime"] < 300  # warm now
    ep.set_faults(cold_start=0.3)  # cold again
    assert c.wait(c.run())["delayTime"] >= 300


def test_api_key_bearer_and_raw(local_endpoint):
    ep = local_endpoint(api_key="sekret-key")
    anon = Client(ep)
    r = anon.post("run", json={"input": {}})
    assert r.status_code == 401 and "API key" in r.json()["error"] and "sekret" not in r.text
    assert Client(ep, headers={"Authorization": "Bearer wrong"}).get("health").status_code == 401
    assert anon.get("status", "x").status_code == 401
    assert Client(ep, "unknown-endpoint").get("health").status_code == 401  # no probing without a key
    bearer = Client(ep, headers={"Authorization": "Bearer sekret-key"})
    raw = Client(ep, headers={"Authorization": "sekret-key"})
    job_id = bearer.run({"k": 1})
    assert raw.wait(job_id)["output"] == {"k": 1}
    stats_url = ep.base_url.removesuffix("/v2") + "/_bridge/stats"
    assert requests.get(stats_url).status_code == 401
    assert requests.get(stats_url, headers={"Authorization": "Bearer sekret-key"}).status_code == 200


def test_oversized_payloads_get_413(local_endpoint):
    ep = local_endpoint()
    c = Client(ep)
    big = b'{"input": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    r = c.post("run", data=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "10 MB" in r.json()["error"]
    assert ep.submissions() == 0
    ok = c.post("runsync", data=big, headers={"Content-Type": "application/json"})
    assert ok.status_code == 200 and len(ok.json()["output"]) == 10 * 1024 * 1024  # /runsync takes 20 MB
    bigger = b'{"input": "' + b"x" * (20 * 1024 * 1024) + b'"}'
    r = c.post("runsync", data=bigger, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "20 MB" in r.json()["error"]


def test_oversized_chunked_body_without_content_length(local_endpoint):
    ep = local_endpoint(max_run_bytes=1024 * 1024)

    def body():
        yield b'{"input": "'
        for _ in range(3):
            yield b"x" * (512 * 1024)
        yield b'"}'

    r = Client(ep).post("run", data=body(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert ep.submissions() == 0


def test_binds_loopback_by_default(local_endpoint):
    ep = local_endpoint()
    assert ep.base_url.startswith("http://127.0.0.1:")
    listening = _listening_addresses(ep.port)
    assert listening == {"0100007F"}, listening


def _listening_addresses(port: int) -> set[str]:
    found = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":  # LISTEN
                found.add(address)
    return found


def test_gate_helper_is_cancellable(local_endpoint):
    # A handler blocked in asyncio must not stop the server from answering others.
    gate = Gate()
    c = Client(local_endpoint(gate))
    job_id = c.run()
    c.wait_status(job_id, "IN_PROGRESS")
    assert socket.create_connection(("127.0.0.1", c.ep.port), timeout=2)
    c.post("cancel", job_id)
    assert gate.cancelled.wait(5)
