"""The submit window against a real redis-server and the local endpoint: the journal's claim
is safe to retry after a reply lost to a Redis restart, a claim that lapsed in SUBMITTING
is taken over as a possible double submission (counted and logged), the heartbeat renews
only the leases of requests someone is really running, and a held request whose
completion fails is not left "active"."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from bridge import held, keys
from bridge.gateway.core import Gateway, JobSpec
from bridge.gateway.journal import Journal
from bridge.gateway.journal import read as read_journal
from bridge.testing import LocalEndpoint
from bridge.worker import _waited_on

KEY = "rpa_WINDOWKEY0123456789abcdef"


@pytest.fixture
async def journal(redis_url: str) -> AsyncIterator[Journal]:
    client = aioredis.Redis.from_url(redis_url)
    yield Journal(client, 3600)
    await client.aclose()


async def test_a_claim_retried_with_its_own_token_is_still_claimed(journal: Journal) -> None:
    first = await journal.claim("t-retry", "ep", "http://x/v2", "pid-1", 60)
    again = await journal.claim("t-retry", "ep", "http://x/v2", "pid-1", 60)  # its reply was lost
    other = await journal.claim("t-retry", "ep", "http://x/v2", "pid-2", 60)
    assert (first, again, other) == (("claimed", None), ("claimed", None), ("wait", None))


async def test_a_lapsed_submitting_claim_is_a_takeover_and_a_recorded_job_resumes(journal: Journal) -> None:
    assert await journal.claim("t-lapse", "ep", "http://x/v2", "pid-1", 0) == ("claimed", None)
    # pid-1 died inside the window: its claim lapsed (lease 0) while the state says SUBMITTING
    assert await journal.claim("t-lapse", "ep", "http://x/v2", "pid-2", 0) == ("takeover", None)
    await journal.record("t-lapse", "job-7")
    assert await journal.claim("t-lapse", "ep", "http://x/v2", "pid-3", 0) == ("resume", "job-7")


async def test_a_released_claim_is_claimed_again_without_a_takeover(journal: Journal) -> None:
    await journal.claim("t-release", "ep", "http://x/v2", "pid-1", 0)
    await journal.release("t-release")  # /run was refused: nothing reached the endpoint
    assert await journal.claim("t-release", "ep", "http://x/v2", "pid-2", 0) == ("claimed", None)


@pytest.fixture
def gateway(redis_url: str, local_endpoint: Callable[..., LocalEndpoint],
            monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Gateway, LocalEndpoint]]:
    ep = local_endpoint(lambda job: {"echo": job["input"]}, endpoint_id="ep", api_key=KEY)
    for name, value in {"BRIDGE_REDIS_URL": redis_url, "RUNPOD_API_KEY": KEY,
                        "RUNPOD_ENDPOINT_BASE_URL": ep.base_url, "BRIDGE_SUBMIT_LEASE": "60"}.items():
        monkeypatch.setenv(name, value)
    gw = Gateway()
    yield gw, ep
    gw.close()


def test_a_takeover_is_counted_and_logged_as_a_possible_double_submission(
        gateway: tuple[Gateway, LocalEndpoint], redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    gw, ep = gateway
    client = redis.Redis.from_url(redis_url)
    # A delivery that died after sending /run and before recording its answer left this:
    client.hset(keys.journal("t-dead"), mapping={
        "claim": "dead-0", "claim_at": f"{time.time() - 120:.3f}", "endpoint_id": "ep",
        "base_url": ep.base_url, "state": "SUBMITTING"})
    caplog.set_level(logging.WARNING, logger="bridge.gateway")
    assert gw.run(JobSpec(task_id="t-fresh", endpoint_id="ep", input={"n": 1})) == {"echo": {"n": 1}}
    assert gw.stats["possible_double_submits"] == 0
    assert gw.run(JobSpec(task_id="t-dead", endpoint_id="ep", input={"n": 2})) == {"echo": {"n": 2}}
    assert gw.stats["possible_double_submits"] == 1
    warnings = [r.getMessage() for r in caplog.records if "possible double submission" in r.getMessage()]
    assert len(warnings) == 1 and "t-dead" in warnings[0] and "Idempotency-Key" in warnings[0]
    assert read_journal(client, "t-dead")["state"] == "COMPLETED"
    # each submit measured its window: the /run round trip, then the job id write
    assert len(gw.submit_windows) == 2 and all(run > 0 and write > 0 for run, write in gw.submit_windows)
    client.close()


def test_the_heartbeat_renews_only_requests_someone_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    def request(task_id: str, is_held: bool) -> Any:
        return SimpleNamespace(id=task_id, bridge_held=is_held)

    waiting, parked, stale, older, pooled = (request("a", True), request("b", True), request("c", True),
                                             request("d", True), request("e", False))
    newer = request("d", True)  # a redelivery re-attached: the older delivery is no longer held
    jobs = SimpleNamespace(held={"a": SimpleNamespace(req=waiting), "d": SimpleNamespace(req=newer)},
                           parked=[(parked, None)])
    monkeypatch.setattr(held, "current", lambda: jobs)
    assert _waited_on([waiting, parked, stale, older, newer, pooled]) == [waiting, parked, newer, pooled]


def test_a_held_request_whose_completion_fails_is_not_left_active() -> None:
    from celery.worker import state

    from bridge.held import HeldJobs, Outcome

    class Request:
        id = "t-complete-fails"
        name = "bridge.run"

        def acknowledge(self) -> None:
            raise OSError("the channel is gone")  # e.g. a broker connection lost meanwhile

    req = Request()
    state.active_requests.add(req)
    HeldJobs(cap=1)._store(req, Outcome("done"))
    assert req not in state.active_requests
