"""Fixtures for the batch, streaming and webhook tests: handlers and input files."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.testing.waiting import wait_until as _wait_until


def flaky_handler(job: dict[str, Any]) -> dict[str, Any]:
    """Fails deterministically for every 20th input (5% FAILED jobs)."""
    x = job["input"]["x"]
    if x % 20 == 7:
        raise ValueError(f"input {x} is bad")
    return {"y": x * 2}


async def slow_handler(job: dict[str, Any]) -> dict[str, Any]:
    """Runs until cancelled (the cancel tests stop it long before the minute is up)."""
    await asyncio.sleep(60)
    return {"late": True}


def is_failing(x: int) -> bool:
    return x % 20 == 7


FAULTS = {
    # 5% 5xx on every route the batch uses, and a /run budget well below the batch's pace
    "error_rate": {"run": 0.05, "status": 0.05, "status-sync": 0.05},
    "rate_limits": {"run": [300, 1.0]},
    "seed": 7,
}


@pytest.fixture
def input_file(tmp_path: Path) -> Callable[[int], Path]:
    def make(n: int) -> Path:
        path = tmp_path / "in.jsonl"
        path.write_text("".join(json.dumps({"x": i}) + "\n" for i in range(n)))
        return path

    return make


def journal_counts(path: str) -> dict[str, int]:
    """Read a CLI's journal from outside (the CLI may be writing it)."""
    if not os.path.exists(path):
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return dict(db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
    except sqlite3.OperationalError:
        return {}  # schema not created yet
    finally:
        db.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    try:
        return _wait_until(predicate, timeout, 0.05)
    except AssertionError:
        raise AssertionError(f"{what} not reached within {timeout} s") from None
