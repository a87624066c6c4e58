"""Helpers for the local endpoint's own tests (HTTP over real loopback with ``requests``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from bridge.testing import wait_until

__all__ = ["TERMINAL", "Client", "wait_until"]

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")


class Client:
    """Tiny raw HTTP helper bound to one LocalEndpoint (no bridge client involved)."""

    def __init__(self, ep: Any, endpoint_id: str | None = None, headers: dict[str, str] | None = None) -> None:
        self.ep = ep
        self.endpoint_id = endpoint_id or ep.endpoint_id
        self.session = requests.Session()
        self.session.headers.update(headers or {})

    def url(self, op: str, job_id: str | None = None) -> str:
        return self.ep.url(op, job_id, endpoint_id=self.endpoint_id)

    def post(self, op: str, job_id: str | None = None, **kw: Any) -> requests.Response:
        return self.session.post(self.url(op, job_id), timeout=30, **kw)

    def get(self, op: str, job_id: str | None = None, **kw: Any) -> requests.Response:
        return self.session.get(self.url(op, job_id), timeout=30, **kw)

    def run(self, input: Any = None, **body: Any) -> str:
        response = self.post("run", json={"input": input if input is not None else {}, **body})
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "IN_QUEUE"
        return str(response.json()["id"])

    def status(self, job_id: str) -> dict[str, Any]:
        response = self.get("status", job_id)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait(self, job_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """Long-poll status-sync until the job is terminal."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.get("status-sync", job_id, params={"wait": 2000})
            assert response.status_code == 200, response.text
            body = dict(response.json())
            if body["status"] in TERMINAL:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {body['status']} after {timeout} s")

    def wait_status(self, job_id: str, status: str, timeout: float = 5.0) -> dict[str, Any]:
        return wait_until(lambda: (b := self.status(job_id))["status"] == status and b, timeout)


@pytest.fixture
def client_for() -> Callable[..., Client]:
    return Client
