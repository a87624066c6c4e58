"""kill -9 of a worker while it submits, five times, with a second worker, on RabbitMQ: the
broker keeps every delivered message until it is acked, so nothing is lost and every task
ends with exactly one remote job (the local endpoint honours Idempotency-Key)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from celery_helpers import Stack, WorkerProcess, kill_during_submission


@pytest.mark.slow
def test_kill_9_during_submission_five_times_loses_nothing(
    rabbit_stack: Stack, rabbit_workers: Callable[..., WorkerProcess]
) -> None:
    report = kill_during_submission(rabbit_stack, rabbit_workers)
    print(f"\nkill -9 during submission x5 (RabbitMQ): {report}")
    assert report.lost == [] and report.unfinished_with_job == []
    assert report.results == report.tasks
    assert report.jobs_created == report.tasks
