"""The parity test's drivers: one small adapter per way of running a job, each turning a
scenario into an :class:`Outcome` through that driver's public surface, and
:func:`observe`, which runs one (scenario, driver) pair and gathers what the endpoint, the
plugin and the remote job store saw.

Adapters report what the driver did, whatever it was: any exception a driver raises becomes
the outcome (its class name and message), so a driver that cannot do something yet shows
up as a difference in the failure report rather than as an error in the test.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from celery import Celery
from click.testing import CliRunner

import bridge
from bridge.testing import LocalEndpoint, wait_until

from .parity_proxy import ParityProxy, collapse
from .parity_table import Scenario

API_KEY = "rpa_PARITYKEY0123456789abcdef"
#: How long to wait for a Celery result or a batch without a deadline of its own (the
#: clients and ``bridge run`` are given none: a deadline changes the requests they send;
#: pytest-timeout bounds them).
GIVE_UP = 30.0
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")


@dataclass
class Rig:
    """The parts every driver shares: the endpoint, the recording proxy in front of it, the
    Celery app with its embedded worker, and the file the recording plugin writes."""

    endpoint: LocalEndpoint
    proxy: ParityProxy
    app: Celery
    events_path: Path


@dataclass(frozen=True)
class Outcome:
    output: Any = None
    error: str | None = None
    message: str | None = None

    @classmethod
    def of(cls, exc: BaseException) -> Outcome:
        return cls(error=type(exc).__name__, message=str(exc))


@dataclass(frozen=True)
class Observation:
    outcome: Outcome
    requests: tuple[str, ...]
    events: tuple[str, ...]
    remote: tuple[str, ...]  # final status of each remote job created, in creation order
    remote_inputs: tuple[Any, ...]


# -- the adapters -------------------------------------------------------------------------------


def run_celery(rig: Rig, s: Scenario) -> Outcome:
    """``bridge.run`` (``bridge.stream`` for a stream) through the embedded Celery worker."""
    kwargs = {"timeout": s.timeout} if s.timeout is not None else {}
    pending = rig.app.send_task("bridge.stream" if s.stream else "bridge.run",
                                args=(s.input, s.endpoint), kwargs=kwargs)
    try:
        return Outcome(output=pending.get(timeout=GIVE_UP))
    except Exception as exc:
        return Outcome.of(exc)


def run_batch(rig: Rig, s: Scenario) -> Outcome:
    """The in-process batch of one input, with the scenario's per-job deadline (the job is
    cancelled at the endpoint past it) and stream reading; an input's outcome is its result."""
    try:
        with bridge.batch([s.input], s.endpoint, concurrency=1, base_url=rig.proxy.base_url, api_key=API_KEY,
                          timeout=s.timeout, stream=s.stream) as handle:
            (result,) = handle.results(timeout=GIVE_UP)
    except Exception as exc:
        return Outcome.of(exc)
    if result.ok:
        return Outcome(output=result.output)
    error = result.error if isinstance(result.error, dict) else {"type": result.status, "message": result.error}
    return Outcome(error=str(error.get("type")), message=str(error.get("message")))


def run_cli(rig: Rig, s: Scenario) -> Outcome:
    """``bridge run`` in this process (click's runner): its stdout JSON, or its stderr error."""
    from bridge.cli import main

    args = ["run", "-e", s.endpoint, json.dumps(s.input), "--base-url", rig.proxy.base_url,
            "--api-key", API_KEY]
    if s.stream:
        args.append("--stream")
    if s.timeout is not None:
        args += ["--timeout", str(s.timeout), "--cancel-on-timeout"]
    result = CliRunner().invoke(main, args, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return Outcome.of(result.exception)
    if result.exit_code != 0:
        body = _error_line(result.stderr)
        if body is None:
            return Outcome(error=f"exit {result.exit_code}", message=result.stderr[-500:])
        return Outcome(error=body.get("error"), message=body.get("message"))
    try:
        documents = _json_documents(result.stdout)
    except ValueError:
        return Outcome(error="unreadable stdout", message=result.stdout[-500:])
    return Outcome(output=documents[:-1] if s.stream else documents[-1].get("output"))


def run_sync_client(rig: Rig, s: Scenario) -> Outcome:
    """``Endpoint(..., plugins=True)``: run(), then output() or stream(), the SDK's way to
    run a job over /run as every other driver does (run_sync() sends /runsync instead)."""
    try:
        endpoint = bridge.Endpoint(s.endpoint, api_key=API_KEY, base_url=rig.proxy.base_url, plugins=True)
        with endpoint:
            job = endpoint.run(s.input)
            if s.stream:
                return Outcome(output=list(job.stream(s.timeout)))
            return Outcome(output=job.output(s.timeout, cancel_on_timeout=s.timeout is not None))
    except Exception as exc:
        return Outcome.of(exc)


def run_asyncio_client(rig: Rig, s: Scenario) -> Outcome:
    """``AsyncioEndpoint(..., plugins=True)`` on a loop of its own."""

    async def drive() -> Outcome:
        endpoint = bridge.AsyncioEndpoint(s.endpoint, api_key=API_KEY, base_url=rig.proxy.base_url,
                                          plugins=True)
        async with endpoint:
            job = await endpoint.run(s.input)
            if s.stream:
                return Outcome(output=[chunk async for chunk in job.stream(s.timeout)])
            return Outcome(output=await job.output(s.timeout, cancel_on_timeout=s.timeout is not None))

    try:
        return asyncio.run(drive())
    except Exception as exc:
        return Outcome.of(exc)


DRIVERS: dict[str, Callable[[Rig, Scenario], Outcome]] = {
    "celery": run_celery,
    "batch": run_batch,
    "cli": run_cli,
    "asyncio": run_asyncio_client,
    "sync": run_sync_client,
}


# -- one observed run ---------------------------------------------------------------------------


def observe(rig: Rig, s: Scenario, driver: str) -> Observation:
    """Run ``s`` through ``driver`` against a fresh request log and event file, then wait
    for the remote jobs it created to end (a deadline's cancel may trail the error)."""
    rig.proxy.begin(list(s.faults))
    rig.events_path.write_text("")
    canceller = _cancel_once_submitted(rig, s) if s.cancel_externally else None
    outcome = DRIVERS[driver](rig, s)
    if canceller is not None:
        canceller.join(GIVE_UP)
    jobs = rig.proxy.jobs()
    states = [_settled(rig, job_id) for job_id in jobs]
    return Observation(
        outcome=_normalised(outcome, jobs, rig.proxy.base_url),
        requests=tuple(collapse(rig.proxy.seen(s.endpoint))),
        events=tuple(chunks_first(event_lines(_events(rig.events_path, s.endpoint)))),
        remote=tuple(str(state.get("status")) for state in states),
        remote_inputs=tuple(state.get("input") for state in states),
    )


def _cancel_once_submitted(rig: Rig, s: Scenario) -> threading.Thread:
    """Another client: once the job exists, POST /cancel straight to the endpoint (not
    through the proxy, so it is not one of the driver's requests)."""

    def cancel() -> None:
        (job_id,) = wait_until(rig.proxy.jobs, timeout=GIVE_UP)
        requests.post(rig.endpoint.url("cancel", job_id, endpoint_id=s.endpoint),
                      headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)

    thread = threading.Thread(target=cancel, name="parity-canceller", daemon=True)
    thread.start()
    return thread


def _settled(rig: Rig, job_id: str) -> dict[str, Any]:
    """The job's state once terminal; after 3 s, as it is (a deadline's job left running)."""

    def terminal() -> dict[str, Any] | None:
        state = rig.endpoint.job_state(job_id) or {"status": "GONE"}
        return state if state["status"] in (*TERMINAL, "GONE") else None

    try:
        return dict(wait_until(terminal, timeout=3.0, interval=0.02))
    except AssertionError:
        return rig.endpoint.job_state(job_id) or {"status": "GONE"}


def _events(path: Path, endpoint: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [e for e in lines if e.pop("endpoint") == endpoint]


def event_lines(records: list[dict[str, Any]]) -> list[str]:
    """The hook calls as the table writes them (:func:`event_line`), with a line of its own
    wherever ``status_changed`` broke its rule: each call names a status other than the last
    one seen, and ``previous`` is that last one (the first call's: None, or the IN_QUEUE
    that /run answered)."""
    out: list[str] = []
    last: str | None = None
    first = True
    for e in records:
        if e["hook"] == "status_changed":
            allowed = (None, "IN_QUEUE") if first else (last,)
            if e["previous"] not in allowed or e["status"] == e["previous"]:
                seen = "nothing" if first else repr(last)
                out.append(f"status_changed {e['previous']!r}->{e['status']!r} after {seen}: broken chain")
            last, first = e["status"], False
        line = event_line(e)
        if line is not None:
            out.append(line)
    return out


def event_line(e: dict[str, Any]) -> str | None:
    """One hook call as the table writes it: ``hook`` plus what matters of its arguments.

    Only a change to a terminal status is kept, without the status before it: whether a
    driver saw IN_QUEUE or IN_PROGRESS on the way depends on when it happened to look
    (:func:`event_lines` checks the chain of them). ``submitted`` shows the input as sent."""
    hook = e["hook"]
    if hook == "status_changed":
        return f"status_changed ->{e['status']}" if e["status"] in TERMINAL else None
    if hook in ("failed", "retried"):
        return f"{hook} {e['error']}"
    if hook == "rate_limited":
        return f"rate_limited {e['route']}"
    if hook in ("transform_output", "completed"):
        return f"{hook} {e['output']}"
    if hook == "transform_chunk":
        return f"transform_chunk {e['chunk']}"
    if hook == "submitted":
        return f"submitted {e['input']}" + ("" if e["job"] else " (no job id yet)")
    return str(hook)


def chunks_first(lines: list[str]) -> list[str]:
    """A stream's last chunks and its end arrive in one /stream body or in two, as it
    happens: within a stretch of chunks and status changes, chunks go first."""
    out: list[str] = []
    stretch: list[str] = []
    for line in [*lines, ""]:
        if line.startswith(("transform_chunk", "status_changed")):
            stretch.append(line)
            continue
        out += sorted(stretch, key=lambda x: x.startswith("status_changed"))
        stretch = []
        if line:
            out.append(line)
    return out


_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_HEX = re.compile(r"\b[0-9a-f]{16,32}\b")


def _normalised(outcome: Outcome, jobs: list[str], base_url: str) -> Outcome:
    """Ids and addresses out of the message, so that drivers can be compared."""
    if outcome.message is None:
        return outcome
    text = outcome.message
    for job_id in jobs:
        text = text.replace(job_id, "<job>")
    text = text.replace(base_url, "<base>")
    text = _HEX.sub("<id>", _UUID.sub("<id>", text))
    return Outcome(outcome.output, outcome.error, text)


def _error_line(stderr: str) -> dict[str, Any] | None:
    """The CLI's error, the last JSON line with an ``error`` key (log lines may follow it)."""
    for line in reversed(stderr.splitlines()):
        try:
            body = json.loads(line)
        except ValueError:
            continue
        if isinstance(body, dict) and "error" in body:
            return body
    return None


def _json_documents(text: str) -> list[Any]:
    """Every JSON document printed one after another (chunk lines, then the result)."""
    decoder = json.JSONDecoder()
    out: list[Any] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        value, i = decoder.raw_decode(text, i)
        out.append(value)
