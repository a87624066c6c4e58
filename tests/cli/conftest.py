"""The ``bridge`` console script as a real subprocess against a real local endpoint on
127.0.0.1. ``cli`` starts commands with the endpoint's base URL and key in the environment;
``jobs`` reads what the endpoint received."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bridge.testing import LocalEndpoint

from .serving import BRIDGE, ROOT

KEY = "rpa_CLITESTKEY00000001"


async def work(job: dict[str, Any]) -> Any:
    """``{"seconds": s}`` sleeps (cancellable); anything else is echoed."""
    data = job["input"]
    if isinstance(data, dict) and "seconds" in data:
        await asyncio.sleep(float(data["seconds"]))
        return {"slept": data["seconds"]}
    return data


class Cli:
    def __init__(self, local: LocalEndpoint) -> None:
        self.local = local
        self.env = {**os.environ, "RUNPOD_ENDPOINT_BASE_URL": local.base_url, "RUNPOD_API_KEY": KEY}
        self.env.pop("BRIDGE_ENDPOINT_ID", None)
        self.started: list[subprocess.Popen[str]] = []

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([BRIDGE, *args], cwd=ROOT, env={**self.env, **env}, text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.started.append(proc)
        return proc

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([BRIDGE, *args], cwd=ROOT, env={**self.env, **env}, text=True,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=60)

    def jobs(self, endpoint_id: str = "ep") -> dict[str, str]:
        """{job id: status} of every job the endpoint holds."""

        async def read() -> dict[str, str]:
            return {jid: job.status for jid, job in self.local.endpoint(endpoint_id).store.jobs.items()}

        return self.local.run_in_loop(read()).result(10)

    def only_job(self, status: str, endpoint_id: str = "ep") -> str | None:
        """The id of the one job in ``status``, once there is exactly one such job."""
        found = [jid for jid, s in self.jobs(endpoint_id).items() if s == status]
        return found[0] if len(found) == 1 else None


@pytest.fixture
def cli(local_endpoint: Callable[..., LocalEndpoint]) -> Iterator[Cli]:
    made = Cli(local_endpoint(work, endpoint_id="ep", api_key=KEY))
    yield made
    for proc in made.started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
