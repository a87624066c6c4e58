"""Webhooks and the request-body options, through both clients: the endpoint POSTs the
status-shaped body to the job's webhook on every terminal state."""

from __future__ import annotations

import pytest

from bridge import errors

from . import handlers


def test_webhook_gets_the_completed_job(local_endpoint, client, webhook_receiver):
    local = local_endpoint(handlers.work)
    receiver = webhook_receiver()
    ep = client(local)
    job = ep.run({"x": 1}, webhook=receiver.url)
    assert job.output(timeout=10) == {"echo": {"x": 1}}
    (body,) = receiver.wait(1)
    assert body["id"] == job.job_id
    assert body["status"] == "COMPLETED"
    assert body["output"] == {"echo": {"x": 1}}
    assert body["input"] == {"x": 1}


def test_webhook_on_failure_and_in_the_sdk_body_form(local_endpoint, client, webhook_receiver):
    local = local_endpoint(handlers.work, webhook_retry_delay=0.05)
    receiver = webhook_receiver(fail_first=1)  # the endpoint retries a failed delivery
    ep = client(local)
    job = ep.run({"input": {"fail": "nope"}, "webhook": receiver.url})
    with pytest.raises(errors.JobFailed):
        job.output(timeout=10)
    (body,) = receiver.wait(1)
    assert body["status"] == "FAILED" and "nope" in body["error"]
    assert receiver.hits == 2


def test_run_sync_passes_webhook_and_policy(local_endpoint, client, webhook_receiver):
    local = local_endpoint(handlers.work)
    receiver = webhook_receiver()
    ep = client(local)
    assert ep.run_sync({"y": 1}, timeout=10, webhook=receiver.url, policy={"ttl": 60000}) == {"echo": {"y": 1}}
    (body,) = receiver.wait(1)
    state = local.job_state(body["id"])
    assert state["ttlMs"] == 60000 and state["sync"] is True


def test_s3_config_reaches_the_handler_only(local_endpoint, client):
    seen = {}

    def handler(job):
        seen.update(job)
        return {"ok": True}

    local = local_endpoint(handler)
    ep = client(local)
    s3 = {"accessId": "a", "accessSecret": "s", "bucketName": "b", "endpointUrl": "http://127.0.0.1:1"}
    job = ep.run({"x": 1}, s3_config=s3)
    assert job.output(timeout=10) == {"ok": True}
    assert seen["s3Config"] == s3
    assert "s3Config" not in job.fetch()
