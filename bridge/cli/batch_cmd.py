"""``bridge batch INPUT.jsonl -o OUTPUT.jsonl -e ID``: run an endpoint over a JSONL file.

Each INPUT line is one job input (any JSON value). OUTPUT gets one line per input, in input
order: ``{"index", "id", "status", "output" | "error"}``; failed inputs also go to
``OUTPUT.failures.jsonl``. Both are written whole to a temporary file and renamed, so they are
always valid JSONL, even after Ctrl+C. The journal (``OUTPUT.journal``, SQLite; Redis with
``--celery``) makes a re-run of the same command resume: inputs COMPLETED or in flight are
never submitted again; inputs cancelled (Ctrl+C) or ended by a bridge-side error are resubmitted
with fresh idempotency keys, and inputs the endpoint FAILED only with ``--retry-failed``.

Every option is checked before anything is sent (exit 7). A wrong key, an unknown endpoint or
an unreachable base URL stops the batch (exit 3, 4 or 5, one line on stderr) instead of
failing every input; nothing is recorded against the inputs, so a re-run runs them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import click

from bridge import errors
from bridge.cli._common import EXIT_INTERRUPTED, EXIT_JOB_FAILED, EXIT_OK, endpoint_option, handle_errors
from bridge.config import env_int


def scan_inputs(path: str, endpoint_id: str) -> tuple[str, int]:
    """Validate every line and return (batch id, number of inputs). The batch id is derived
    from the file's bytes and the endpoint, so re-running the same command finds its journal."""
    digest = hashlib.sha256(endpoint_id.encode() + b"\0")
    count = 0
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            digest.update(line)
            if not line.strip():
                continue
            try:
                json.loads(line)
            except ValueError as exc:
                raise errors.InvalidRequest(
                    f"{path} line {lineno} is not JSON: {exc}", None, endpoint_id,
                    "that INPUT has one JSON value per line",
                ) from exc
            count += 1
    return digest.hexdigest()[:16], count


def read_inputs(path: str) -> Iterator[Any]:
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def write_outputs(handle: Any, output: str) -> tuple[int, str]:
    """Write OUTPUT and OUTPUT.failures.jsonl atomically; returns (failures, failures path)."""
    failures_path = failures_file(output)
    tmp_out, tmp_fail = f"{output}.tmp", f"{failures_path}.tmp"
    failed = 0
    with open(tmp_out, "w", encoding="utf-8") as out, open(tmp_fail, "w", encoding="utf-8") as fail:
        for result in handle.iter_results():
            line = json.dumps(result.to_json(), separators=(",", ":")) + "\n"
            out.write(line)
            if result.status not in ("COMPLETED", "PENDING") and not _batch_cancelled(result):
                fail.write(line)
                failed += 1
        for fh in (out, fail):
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp_out, output)
    os.replace(tmp_fail, failures_path)
    return failed, failures_path


def _batch_cancelled(result: Any) -> bool:
    return isinstance(result.error, dict) and result.error.get("type") == "BatchCancelled"


def failures_file(output: str) -> str:
    base = output[:-6] if output.endswith(".jsonl") else output
    return f"{base}.failures.jsonl"


@click.command("batch")
@click.argument("input_path", metavar="INPUT.jsonl", type=click.Path(exists=True, dir_okay=False))
@click.option("--output", "-o", "output", required=True, type=click.Path(dir_okay=False),
              help="Where results go, one JSON line per input in input order.")
@endpoint_option
@click.option("--concurrency", "-c", type=int, default=None,
              help="Jobs in flight at once (default 200, env BRIDGE_BATCH_CONCURRENCY).")
@click.option("--max-queue-depth", type=int, default=None,
              help="Jobs allowed to wait in the endpoint's queue (default: --concurrency).")
@click.option("--rate", default=None,
              help="/run budget to pace to, LIMIT/SECONDS (default: RunPod's 1000/10 on RunPod, "
                   "none elsewhere; env BRIDGE_BATCH_RUN_RATE).")
@click.option("--policy", default=None, help="Job policy JSON, e.g. '{\"executionTimeout\": 60000}'.")
@click.option("--journal", default=None, type=click.Path(dir_okay=False),
              help="Journal file to resume from (default OUTPUT.journal).")
@click.option("--celery", "use_celery", is_flag=True,
              help="Run through Celery workers (broker: --broker or CELERY_BROKER_URL).")
@click.option("--broker", default=None, help="Celery broker URL (implies --celery).")
@click.option("--app", "app_path", default=None, help="Your Celery app as module:attribute (implies --celery).")
@click.option("--webhooks", "webhook_url", default=None, envvar="BRIDGE_WEBHOOK_URL",
              help="Public URL of a running webhook receiver (bridge relay --webhooks): jobs report "
                   "their end there instead of being polled (env BRIDGE_WEBHOOK_URL; needs BRIDGE_REDIS_URL).")
@click.option("--progress-interval", type=float, default=10.0, show_default=True,
              help="Seconds between progress lines when stdout is not a terminal.")
@click.option("--base-url", default=None, envvar="RUNPOD_ENDPOINT_BASE_URL",
              help="Endpoint base URL (env RUNPOD_ENDPOINT_BASE_URL).")
@click.option("--retry-failed", is_flag=True,
              help="On a re-run, also run again the inputs the endpoint FAILED (costs GPU time again).")
@handle_errors
def batch_command(
    input_path: str, output: str, endpoint_id: str, concurrency: int | None, max_queue_depth: int | None,
    rate: str | None, policy: str | None, journal: str | None, use_celery: bool, broker: str | None,
    app_path: str | None, webhook_url: str | None, progress_interval: float, base_url: str | None,
    retry_failed: bool,
) -> None:
    """Run ENDPOINT over every line of INPUT.jsonl; resumable, with progress."""
    from bridge.batch import open_journal
    from bridge.batch.options import check_url
    from bridge.batch.progress import Display, print_summary

    # Every option is checked before anything is read, enqueued or sent.
    options = _options(concurrency, max_queue_depth, rate, policy, base_url, retry_failed)
    if webhook_url:
        check_url(webhook_url, "--webhooks", "the public URL of a running receiver (bridge relay --webhooks)")
    if progress_interval <= 0:
        raise errors.ConfigurationError(f"--progress-interval must be positive, not {progress_interval}",
                                        None, None, "--progress-interval SECONDS")
    batch_id, total = scan_inputs(input_path, endpoint_id)
    app = _celery_app(use_celery, broker, app_path)
    started = time.monotonic()
    handle: Any
    if app is not None:
        from bridge.batch.producer import CeleryBatch

        # The journal is the batch's Redis store, keyed by the same deterministic batch id.
        handle = CeleryBatch(app, batch_id, endpoint_id, read_inputs(input_path), options, total=total)
    else:
        from bridge.batch.local import LocalBatch

        store, batch_id = open_journal(journal or f"{output}.journal", batch_id, endpoint_id)
        waiter = None
        if webhook_url:
            from bridge.webhooks import WebhookReceiver

            waiter = WebhookReceiver(webhook_url).waiter()
        handle = LocalBatch(batch_id, endpoint_id, read_inputs(input_path), store, options, total=total,
                            waiter=waiter)
    display = Display(total, batch_id, interval=progress_interval, tty=sys.stdout.isatty())
    interrupted = False
    try:
        with display:
            while not _ended(handle):
                display.update(handle.progress())
            display.update(handle.progress())
    except KeyboardInterrupt:
        interrupted = True
        click.echo(f"interrupted: cancelling the {handle.progress().in_flight} jobs in flight "
                   "(Ctrl+C again to leave them running)", err=True)
        try:
            handle.cancel(wait=True, timeout=120)
        except KeyboardInterrupt:
            click.echo("left the remaining jobs running; a re-run resumes them", err=True)
    final = handle.progress()
    failed, failures_path = write_outputs(handle, output)
    stopped_by = handle.stopped_by
    resumed = handle.resumed_counts()
    handle.close()
    print_summary(final, total, failed, output, failures_path, time.monotonic() - started, interrupted,
                  resumed=resumed, stopped=stopped_by is not None)
    if stopped_by is not None:
        raise stopped_by  # one line on stderr, and the exit code of its class (3/4/5)
    if interrupted:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(EXIT_JOB_FAILED if failed else EXIT_OK)


def _ended(handle: Any) -> bool:
    """Wait a moment for the batch to end; an endpoint-wide stop also ends it."""
    try:
        return bool(handle.wait(0.25))
    except errors.BridgeError:
        return True  # handle.stopped_by: reported once the outputs are written


def _options(concurrency: int | None, max_queue_depth: int | None, rate: str | None, policy: str | None,
             base_url: str | None, retry_failed: bool) -> Any:
    from bridge.batch.admission import Rate
    from bridge.batch.options import Options

    if concurrency is None:
        concurrency = env_int("BRIDGE_BATCH_CONCURRENCY", 200)
    return Options(concurrency=concurrency, max_queue_depth=max_queue_depth,
                   run_rate=Rate.parse(rate) if rate else None, policy=_json_option(policy, "--policy"),
                   base_url=base_url, retry_failed=retry_failed).validate()


def _json_option(text: str | None, name: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise errors.ConfigurationError(f"{name} is not JSON: {exc}", None, None, name) from exc


def _celery_app(use_celery: bool, broker: str | None, app_path: str | None) -> Any:
    if not (use_celery or broker or app_path):
        return None
    if app_path:
        import importlib

        module, _, attr = app_path.partition(":")
        try:
            return getattr(importlib.import_module(module), attr or "app")
        except (ImportError, AttributeError) as exc:
            raise errors.ConfigurationError(f"cannot load the Celery app {app_path!r}: {exc}", None, None,
                                            "--app module:attribute") from exc
    from bridge.batch.celery import default_app

    return default_app(broker)


def register(group: click.Group) -> None:
    group.add_command(batch_command)
