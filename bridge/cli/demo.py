"""``bridge demo``: the README's main job, on embedded defaults, with nothing installed.

Starts an embedded Redis (a ``redis-server`` child when the binary exists, else fakeredis's
TCP server), a local endpoint serving ``examples/handlers.py``, and an embedded Celery
worker (threads pool) with ``bridge.install``; then fans out a few hundred jobs through
``bridge.run``, streams one job through ``bridge.stream`` (chunks read live from its Redis
Stream), revokes one running job (its remote job ends CANCELLED), prints a summary and
stops everything.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import click

from bridge.cli._common import handle_errors
from bridge.testing.waiting import wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "handlers.py"


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    try:
        return wait_until(predicate, timeout, 0.02)
    except AssertionError:
        raise click.ClickException(f"demo: {what} did not happen within {timeout:g} s") from None


@click.command("demo")
@click.option("--jobs", "-n", default=300, show_default=True, help="Jobs in the fan-out.")
@click.option("--seconds", default=1.0, show_default=True, help="Longest job (each sleeps 0..this).")
@click.option("--handlers", "handlers_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Handler file to serve (default: the repository's examples/handlers.py).")
@handle_errors
def demo(jobs: int, seconds: float, handlers_file: str | None) -> None:
    """Fan out jobs through Celery to a local endpoint, stream one, revoke one; all embedded."""
    from celery import Celery, group
    from celery.contrib.testing.worker import start_worker

    from bridge import keys
    from bridge.embedded_redis import EmbeddedRedis
    from bridge.gateway.core import reset_gateway
    from bridge.gateway.journal import read as read_journal
    from bridge.testing import LocalEndpoint
    from bridge.worker import install

    source = handlers_file or str(EXAMPLES)
    if not Path(source).exists():
        raise click.ClickException(f"no handler file at {source}; pass --handlers path/to/handlers.py")
    with EmbeddedRedis() as server:
        click.echo(f"redis      {server.kind} at {server.url}")
        with LocalEndpoint(f"{source}:sleep", endpoint_id="sleep", workers=max(jobs, 64)) as ep:
            ep.add_endpoint("tokens", f"{source}:astream_tokens")
            click.echo(f"endpoint   {ep.base_url} (sleep, tokens)")
            os.environ.update(BRIDGE_REDIS_URL=server.url, RUNPOD_ENDPOINT_BASE_URL=ep.base_url)
            reset_gateway()
            app = Celery("bridge-demo", broker=server.url, backend=server.url)
            app.conf.update(worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True,
                            task_serializer="json", result_serializer="json", accept_content=["json"],
                            result_backend_always_retry=True)
            install(app)
            import redis

            client = redis.Redis.from_url(server.url)
            with start_worker(app, pool="threads", concurrency=8, perform_ping_check=False,
                              loglevel="WARNING", shutdown_timeout=20):
                click.echo("worker     embedded Celery worker, threads pool, bridge.install(app)\n")
                summary = _fan_out(app, group, ep, jobs, seconds)
                summary.update(_stream(app, client, keys))
                summary.update(_revoke(app, ep, client, read_journal))
            client.close()
            reset_gateway()
    click.echo("\nsummary")
    for key, value in summary.items():
        click.echo(f"  {key:<28} {value}")


def _fan_out(app: Any, group: Any, ep: Any, jobs: int, seconds: float) -> dict[str, Any]:
    rng = random.Random(7)
    inputs = [{"seconds": round(rng.uniform(0, seconds), 2), "i": i} for i in range(jobs)]
    click.echo(f"fan-out    {jobs} jobs through bridge.run (sleep 0..{seconds:g} s each) ...")
    started = time.perf_counter()
    result = group(app.signature("bridge.run", args=(inp, "sleep")) for inp in inputs).apply_async()
    outputs = result.get(timeout=300)
    wall = time.perf_counter() - started
    ok = sum(1 for out, inp in zip(outputs, inputs, strict=True) if out == {"slept": inp["seconds"]})
    stats = ep.stats("sleep")
    polls = stats.get("status", 0) + stats.get("status-sync", 0)
    click.echo(f"           {ok}/{jobs} outputs correct in {wall:.1f} s")
    return {
        "fan-out jobs": f"{ok}/{jobs} correct",
        "fan-out wall time": f"{wall:.1f} s (longest job {max(i['seconds'] for i in inputs):g} s)",
        "remote submissions": ep.submissions("sleep"),
        "status requests per job": f"{polls / jobs:.2f}",
    }


def _stream(app: Any, client: Any, keys: Any) -> dict[str, Any]:
    text = "bridge streams chunks into a Redis Stream as the endpoint yields them"
    result = app.send_task("bridge.stream", args=({"text": text, "delay": 0.05}, "tokens"))
    click.echo(f"\nstream     bridge.stream {result.id}: reading {keys.stream(result.id)} live")
    click.echo("           ", nl=False)
    last, chunks, done = "0-0", [], False
    deadline = time.monotonic() + 60
    while not done and time.monotonic() < deadline:
        for _, entries in client.xread({keys.stream(result.id): last}, block=1000) or []:
            for entry_id, fields in entries:
                last = entry_id
                if b"chunk" in fields:
                    chunks.append(json.loads(fields[b"chunk"]))
                    click.echo(f"{chunks[-1]} ", nl=False)
                if fields.get(b"eof") == b"1":
                    done = True
    click.echo("")
    aggregate = result.get(timeout=30)
    return {"stream chunks (live/result)": f"{len(chunks)}/{len(aggregate)}, eof seen: {done}"}


def _revoke(app: Any, ep: Any, client: Any, read_journal: Any) -> dict[str, Any]:
    result = app.send_task("bridge.run", args=({"seconds": 60}, "sleep"))
    job_id = _wait(lambda: read_journal(client, result.id).get("job_id"), 30, "the long job's submission")
    click.echo(f"\nrevoke     bridge.run {result.id} waits on remote job {job_id}; revoking ...")
    started = time.perf_counter()
    result.revoke()
    _wait(lambda: (ep.job_state(job_id) or {}).get("status") == "CANCELLED", 10, "the remote cancel")
    took = time.perf_counter() - started
    _wait(lambda: result.state == "REVOKED", 10, "the REVOKED state")
    click.echo(f"           remote job CANCELLED {took:.2f} s after revoke(); task state {result.state}")
    return {"revoked job": f"remote CANCELLED in {took:.2f} s, task {result.state}"}


def register(group: click.Group) -> None:
    group.add_command(demo)
