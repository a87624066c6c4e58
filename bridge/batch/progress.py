"""What ``bridge batch`` shows: a rich progress bar on a terminal, plain periodic lines
otherwise (logs, CI), and a summary table at the end."""

from __future__ import annotations

import time
from typing import Any

import click


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def progress_line(p: Any, total: int, batch_id: str) -> str:
    return (
        f"batch {batch_id}: {p.finished}/{total} ({100.0 * p.finished / max(total, 1):.1f}%)"
        f" done {p.done} failed {p.failed} in flight {p.in_flight}"
        f" rate {p.rate:.1f}/s ETA {_eta(p.eta)}"
    )


class Display:
    """Context manager; ``update(progress)`` as often as you like (it rate-limits itself)."""

    def __init__(self, total: int, batch_id: str, *, interval: float = 10.0, tty: bool = False) -> None:
        self.total = total
        self.batch_id = batch_id
        self.interval = interval
        self.tty = tty
        self._last = 0.0
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Display:
        if self.tty:
            from rich.progress import BarColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("[bold]batch {task.fields[batch]}"),
                BarColumn(),
                TextColumn("{task.completed:>7.0f}/{task.total:.0f}"),
                TextColumn("[green]done {task.fields[done]}"),
                TextColumn("[red]failed {task.fields[failed]}"),
                TextColumn("[cyan]in flight {task.fields[in_flight]}"),
                TextColumn("{task.fields[rate]:.1f}/s"),
                TextColumn("ETA {task.fields[eta]}"),
                refresh_per_second=4,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "batch", total=self.total, batch=self.batch_id, done=0, failed=0, in_flight=0, rate=0.0,
                eta="--:--",
            )
        return self

    def update(self, p: Any) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task, completed=p.finished, done=p.done, failed=p.failed, in_flight=p.in_flight,
                rate=p.rate, eta=_eta(p.eta),
            )
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            click.echo(progress_line(p, self.total, self.batch_id))

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


#: Summary rows for what a re-run found from the earlier run (``BatchHandle.resumed_counts``).
_RESUMED_ROWS = (
    ("kept", "completed", "earlier run: completed, kept"),
    ("kept", "failed", "earlier run: FAILED, kept (--retry-failed runs them)"),
    ("retried", "cancelled", "earlier run: cancelled, run again"),
    ("retried", "error", "earlier run: bridge-side error, run again"),
    ("retried", "failed", "earlier run: FAILED, run again (--retry-failed)"),
)


def print_summary(
    p: Any, total: int, failed: int, output: str, failures_path: str, wall: float, interrupted: bool,
    *, resumed: dict[str, dict[str, int]] | None = None, stopped: bool = False,
) -> None:
    from rich.console import Console
    from rich.table import Table

    title = "bridge batch: stopped" if stopped else "bridge batch: interrupted" if interrupted else "bridge batch"
    table = Table(title=title)
    table.add_column("", style="bold")
    table.add_column("count", justify="right")
    pending = max(0, total - p.done - p.failed)
    rows: list[tuple[str, object]] = [
        ("inputs", total),
        ("completed", p.done),
        ("failed", failed),
        ("cancelled (resubmitted on re-run)", p.cancelled),
        ("not finished", pending),
        ("429s absorbed", p.throttled),
        ("wall time", f"{wall:.1f} s"),
        ("rate", f"{p.rate:.1f}/s"),
    ]
    if resumed and any(resumed.values()):
        rows[5:5] = [(label, resumed.get(group, {}).get(kind, 0)) for group, kind, label in _RESUMED_ROWS]
    for label, value in rows:
        table.add_row(label, str(value))
    # Wide enough that the rows stay whole when stdout is a pipe (80 columns by default).
    console = Console(width=max(100, Console().width))
    console.print(table)
    console.print(f"results: {output}" + (f"   failures: {failures_path}" if failed else ""))
    if interrupted or pending:
        console.print("re-run the same command to resume" + (" once the cause is fixed" if stopped else ""))
