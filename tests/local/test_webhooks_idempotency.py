"""Webhooks on every terminal state (with retries) and Idempotency-Key on /run and /runsync."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from .conftest import Client, wait_until
from .test_control import Gate


class Receiver:
    """A webhook receiver on 127.0.0.1 answering from a script of status codes (then 200)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.codes: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.bodies.append(body)
                code = receiver.codes.pop(0) if receiver.codes else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_webhook_gets_status_shaped_body_on_completion(local_endpoint, receiver):
    c = Client(local_endpoint(webhook_retry_delay=0.05))
    job_id = c.run({"a": 1}, webhook=receiver.url)
    wait_until(lambda: receiver.bodies)
    body = receiver.bodies[0]
    assert body["id"] == job_id and body["status"] == "COMPLETED"
    assert body["output"] == {"a": 1} and body["input"] == {"a": 1} and body["webhook"] == receiver.url
    assert "delayTime" in body and "executionTime" in body


def test_webhook_fires_on_failed_and_cancelled(local_endpoint, receiver):
    gate = Gate()

    async def handler(job):
        if job["input"] == "fail":
            return {"error": "nope"}
        return await gate(job)

    c = Client(local_endpoint(handler))
    failed = c.run("fail", webhook=receiver.url)
    running = c.run("wait", webhook=receiver.url)
    c.wait_status(running, "IN_PROGRESS")
    c.post("cancel", running)
    wait_until(lambda: len(receiver.bodies) == 2)
    by_id = {b["id"]: b for b in receiver.bodies}
    assert by_id[failed]["status"] == "FAILED" and by_id[failed]["error"] == "nope"
    assert by_id[running]["status"] == "CANCELLED"


def test_webhook_retries_twice_on_a_failing_receiver(local_endpoint, receiver):
    ep = local_endpoint(webhook_retry_delay=0.05)
    c = Client(ep)
    receiver.codes = [500, 503]
    job_id = c.run({}, webhook=receiver.url)
    wait_until(lambda: ep.job_state(job_id)["webhookAttempts"] == [500, 503, 200])
    assert len(receiver.bodies) == 3 and all(b["id"] == job_id for b in receiver.bodies)
    receiver.codes = [500, 500, 500, 500]
    gives_up = c.run({}, webhook=receiver.url)
    wait_until(lambda: ep.all_stats()["webhooks"]["failed"] == 1)
    assert ep.job_state(gives_up)["webhookAttempts"] == [500, 500, 500]


def test_idempotency_key_returns_the_same_job(local_endpoint):
    ep = local_endpoint()
    c = Client(ep)
    headers = {"Idempotency-Key": "task-123"}
    first = c.post("run", json={"input": {"n": 1}}, headers=headers).json()
    second = c.post("run", json={"input": {"n": 1}}, headers=headers).json()
    assert first["id"] == second["id"]
    other = c.post("run", json={"input": {"n": 1}}, headers={"Idempotency-Key": "task-456"}).json()
    plain = c.run({"n": 1})
    assert len({first["id"], other["id"], plain}) == 3
    assert ep.submissions() == 3
    c.wait(first["id"])
    assert c.post("run", json={"input": {}}, headers=headers).json() == {"id": first["id"], "status": "COMPLETED"}
    sync1 = c.post("runsync", json={"input": 5}, headers={"Idempotency-Key": "s"}).json()
    sync2 = c.post("runsync", json={"input": 5}, headers={"Idempotency-Key": "s"}).json()
    assert sync1 == sync2 and sync1["output"] == 5
    assert ep.submissions() == 4


def test_idempotency_key_forgotten_after_retention(local_endpoint):
    ep = local_endpoint(retention=0.2)
    c = Client(ep)
    headers = {"Idempotency-Key": "k"}
    first = c.post("run", json={"input": 1}, headers=headers).json()["id"]
    c.wait(first)
    wait_until(lambda: c.get("status", first).status_code == 404)
    second = c.post("run", json={"input": 1}, headers=headers).json()["id"]
    assert second != first
