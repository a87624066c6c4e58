"""Where a batch keeps its per-input state and results: one row per input, never one big list.

Two stores share one small interface:

- :class:`SqliteStore` (the default, and the CLI's resumable journal): a single SQLite file in
  WAL mode. Writes are grouped into short transactions (``flush_interval``) so a 10,000-job
  batch costs a few hundred commits, and a ``kill -9`` loses at most the last interval, which
  the deterministic Idempotency-Key makes harmless (resubmitting returns the same remote job).
- :class:`RedisStore` (Celery mode): a hash ``index -> JSON`` per batch plus a completion
  counter and a completion-order list, written by the workers; see ``bridge.keys.batch``.

An item's ``state`` is one of ``submitted`` (remote job id known, not finished), ``done``,
``failed`` or ``cancelled`` (cancelled by a whole-batch cancel or Ctrl+C: resubmitted on resume
with the next ``attempt``, so with a fresh key). Inputs without a row are pending.

A ``failed`` row's error type tells what a re-run does with it (:attr:`Item.outcome`): the
endpoint's own FAILED / TIMED_OUT (``failed``: kept, since running it again costs GPU time,
unless ``--retry-failed``), a job cancelled remotely (``cancelled``) and any error on bridge's
side, a 5xx it gave up on, a veto, a crash (``error``): both resubmitted with a fresh key.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.errors import ConfigurationError

SUBMITTED = "submitted"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
FINISHED = (DONE, FAILED)

#: Error types of inputs the endpoint itself ran and failed (re-run only with --retry-failed).
ENDPOINT_FAILURES = ("JobFailed", "JobTimedOut")
#: What a re-run does with a finished row, by :attr:`Item.outcome`.
OUTCOMES = ("completed", "failed", "cancelled", "error")


@dataclass(frozen=True)
class Item:
    """One input's journal row. ``result`` is the output (done) or the error dict (failed)."""

    index: int
    state: str
    attempt: int = 0
    job_id: str | None = None
    result: Any = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def outcome(self) -> str:
        """``completed``, ``failed`` (the endpoint's FAILED/TIMED_OUT), ``cancelled`` (by a
        batch cancel or remotely), ``error`` (bridge-side) or ``in_flight``."""
        if self.state == DONE:
            return "completed"
        if self.state == CANCELLED:
            return "cancelled"
        if self.state != FAILED:
            return "in_flight"
        kind = self.result.get("type") if isinstance(self.result, dict) else None
        if kind in ENDPOINT_FAILURES:
            return "failed"
        return "cancelled" if kind == "JobCancelled" else "error"


class Store(Protocol):
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def submitted(self, index: int, attempt: int, job_id: str) -> None: ...
    def finished(self, index: int, state: str, attempt: int, job_id: str | None, result: Any) -> None: ...
    def cancelled(self, index: int, attempt: int, job_id: str | None) -> None: ...
    def get(self, index: int) -> Item | None: ...
    def items(self, start: int = 0) -> Iterator[Item]: ...
    def completed_since(self, seq: int, limit: int = 1000) -> tuple[int, list[Item]]:
        """Items finished after position ``seq`` of the completion order, and the new position."""
        ...
    def counts(self) -> dict[str, int]: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    idx INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    job_id TEXT,
    result TEXT,
    seq INTEGER
);
CREATE INDEX IF NOT EXISTS items_seq ON items (seq);
"""


class SqliteStore:
    """The batch journal in one SQLite file; safe to read from other threads and processes.

    Writes are buffered and committed at most every ``flush_interval`` seconds (or every
    ``flush_rows`` rows) by whichever write comes next, and by :meth:`flush`.
    """

    def __init__(self, path: str, *, flush_interval: float = 0.1, flush_rows: int = 500) -> None:
        self.path = path
        self.flush_interval = flush_interval
        self.flush_rows = flush_rows
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigurationError(
                f"cannot open the batch journal {path!r}: {exc}", None, None,
                "that the journal's directory is writable and the file is a bridge journal",
            ) from exc
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM items").fetchone()
        self._seq = int(row[0])
        self._pending = 0
        self._last_commit = time.monotonic()
        self._in_tx = False

    # -- writes ------------------------------------------------------------------------------
    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            if not self._in_tx:
                self._db.execute("BEGIN")
                self._in_tx = True
            self._db.execute(sql, args)
            self._pending += 1
            if self._pending >= self.flush_rows or time.monotonic() - self._last_commit >= self.flush_interval:
                self._commit()

    def _commit(self) -> None:
        if self._in_tx:
            self._db.execute("COMMIT")
            self._in_tx = False
        self._pending = 0
        self._last_commit = time.monotonic()

    def flush(self) -> None:
        with self._lock:
            self._commit()

    def set_meta(self, key: str, value: str) -> None:
        self._write("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
        self.flush()

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def submitted(self, index: int, attempt: int, job_id: str) -> None:
        self._write(
            "INSERT OR REPLACE INTO items (idx, state, attempt, job_id, result, seq) VALUES (?, ?, ?, ?, NULL, NULL)",
            (index, SUBMITTED, attempt, job_id),
        )

    def finished(self, index: int, state: str, attempt: int, job_id: str | None, result: Any) -> None:
        with self._lock:
            self._seq += 1
            self._write(
                "INSERT OR REPLACE INTO items (idx, state, attempt, job_id, result, seq) VALUES (?, ?, ?, ?, ?, ?)",
                (index, state, attempt, job_id, json.dumps(result), self._seq),
            )

    def cancelled(self, index: int, attempt: int, job_id: str | None) -> None:
        self._write(
            "INSERT OR REPLACE INTO items (idx, state, attempt, job_id, result, seq) VALUES (?, ?, ?, ?, NULL, NULL)",
            (index, CANCELLED, attempt, job_id),
        )

    # -- reads -------------------------------------------------------------------------------
    @staticmethod
    def _item(row: tuple[Any, ...]) -> Item:
        idx, state, attempt, job_id, result = row[:5]
        return Item(int(idx), state, int(attempt), job_id, None if result is None else json.loads(result))

    def get(self, index: int) -> Item | None:
        with self._lock:
            row = self._db.execute(
                "SELECT idx, state, attempt, job_id, result FROM items WHERE idx = ?", (index,)
            ).fetchone()
        return None if row is None else self._item(row)

    def items(self, start: int = 0) -> Iterator[Item]:
        """Rows in index order, fetched in pages so a 100,000-row journal stays out of memory."""
        last = start - 1
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT idx, state, attempt, job_id, result FROM items WHERE idx > ? ORDER BY idx LIMIT 1000",
                    (last,),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield self._item(row)
            last = int(rows[-1][0])

    def completed_since(self, seq: int, limit: int = 1000) -> tuple[int, list[Item]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT idx, state, attempt, job_id, result, seq FROM items WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return (int(rows[-1][5]) if rows else seq), [self._item(row) for row in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall()
        return {str(state): int(n) for state, n in rows}

    def close(self) -> None:
        with self._lock:
            try:
                self._commit()
            finally:
                self._db.close()
