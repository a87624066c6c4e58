"""The parity harness's own checks (no endpoint, no Celery): what it folds away as timing
(repeated polls, the order of a stream's last chunk and its end, non-terminal statuses) and
what it must still catch (a broken ``status_changed`` chain, an input missing from
``submitted``)."""

from __future__ import annotations

from typing import Any

from .parity_drivers import chunks_first, event_lines
from .parity_proxy import Seen, collapse


def _changed(status: str, previous: str | None) -> dict[str, Any]:
    return {"hook": "status_changed", "status": status, "previous": previous}


def test_a_consistent_status_chain_keeps_only_its_terminal_change() -> None:
    for first in (None, "IN_QUEUE"):
        records = [_changed("IN_PROGRESS", first), _changed("COMPLETED", "IN_PROGRESS")]
        assert event_lines(records) == ["status_changed ->COMPLETED"]


def test_a_broken_status_chain_shows_where() -> None:
    skipped = event_lines([_changed("IN_PROGRESS", None), _changed("COMPLETED", "IN_QUEUE")])
    assert skipped == ["status_changed 'IN_QUEUE'->'COMPLETED' after 'IN_PROGRESS': broken chain",
                       "status_changed ->COMPLETED"]
    repeated = event_lines([_changed("IN_QUEUE", None), _changed("IN_QUEUE", "IN_QUEUE")])
    assert repeated == ["status_changed 'IN_QUEUE'->'IN_QUEUE' after 'IN_QUEUE': broken chain"]
    late_first = event_lines([_changed("COMPLETED", "IN_PROGRESS")])
    assert late_first == ["status_changed 'IN_PROGRESS'->'COMPLETED' after nothing: broken chain",
                          "status_changed ->COMPLETED"]


def test_submitted_shows_the_input_and_whether_the_job_id_was_known() -> None:
    assert event_lines([{"hook": "submitted", "input": {"a": 1}, "job": True}]) == ["submitted {'a': 1}"]
    assert event_lines([{"hook": "submitted", "input": None, "job": False}]) == ["submitted None (no job id yet)"]


def test_chunks_go_before_the_status_change_they_arrived_with_but_not_past_other_events() -> None:
    lines = ["submitted {}", "transform_chunk a", "status_changed ->COMPLETED", "transform_chunk b",
             "completed ['a', 'b']"]
    assert chunks_first(lines) == ["submitted {}", "transform_chunk a", "transform_chunk b",
                                   "status_changed ->COMPLETED", "completed ['a', 'b']"]


def test_collapse_folds_repeated_polls_only() -> None:
    seen = [Seen("POST", "e", "run", "", 429), Seen("POST", "e", "run", "", 200),
            Seen("GET", "e", "status-sync", "20s", 503), Seen("GET", "e", "status-sync", "20s", 503),
            Seen("GET", "e", "status-sync", "20s", 200), Seen("GET", "e", "status", "short", 200),
            Seen("POST", "e", "cancel", "", 200), Seen("POST", "e", "cancel", "", 200)]
    assert collapse(seen) == ["POST run -> 429", "POST run -> 200", "GET status-sync?wait=20s -> 503 (1+)",
                              "GET status-sync?wait=20s -> 200 (1+)", "GET status?wait=short -> 200 (1+)",
                              "POST cancel -> 200", "POST cancel -> 200"]
