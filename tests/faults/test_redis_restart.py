"""Redis killed (-9) and restarted on its port 3 s later with 300 x 5 s jobs in flight, on
prefork and threads, for ``bridge.run`` and for ``bridge batch --celery`` (whose CLI rides
the outage): every task ends with its correct result, none is left unfinished 60 s after
Redis is back, no job is submitted twice, and the worker lives on. Its own redis-server
(AOF, ``appendfsync always``), the local endpoint and a ``celery -A bridge.app worker``
subprocess whose broker, result backend and bridge keys are that Redis, so kombu's
reconnect and Celery's result-store retries are part of what is tested. The long outage
(60 s) is ``python -m bench.faults``."""

from __future__ import annotations

import pytest
from fault_harness import run_batch_outage, run_outage


@pytest.mark.slow
@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_300_jobs_survive_a_redis_kill_and_restart(pool: str) -> None:
    figures = run_outage(pool, jobs=300, seconds=5.0, outage=3.0, settle=60.0)
    assert figures.worker_alive, "the worker exited during the outage"
    assert figures.unfinished == 0, f"unfinished 60 s after Redis was back: {figures.stuck}"
    assert figures.failed == {}, f"tasks failed: {list(figures.failed.values())[:3]}"
    assert figures.correct == 300
    assert figures.run_requests == 300, "a task sent /run more than once"
    assert figures.jobs_created == 300
    assert figures.double_submits_logged == 0


@pytest.mark.slow
@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_bridge_batch_celery_survives_a_redis_kill_and_restart(pool: str) -> None:
    figures = run_batch_outage(pool, items=300, seconds=5.0, outage=3.0, settle=60.0)
    assert figures.exit_code == 0, f"the CLI failed: {figures.stderr}"
    assert figures.worker_alive, "the worker exited during the outage"
    assert figures.lines == 300 and figures.correct == 300, figures.line()
    assert figures.run_requests == 300, "an item sent /run more than once"
    assert figures.jobs_created == 300
    assert "Traceback" not in figures.stderr
