"""The parity scenarios, as data: what the endpoint does, which faults the proxy answers, what
the recording plugin plays, and what every driver must then show.

Each scenario has an endpoint id of its own on one local endpoint server, so its requests,
jobs and hook records are told apart by that id. ``expect`` is what the one lifecycle must do
(issue #10): the outcome (output, or error class and a pattern its message matches), the requests
the endpoint saw (``parity_proxy.collapse`` form), the hook calls the plugin saw
(``parity_drivers.event_line`` form) and the final status of every remote job created.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from .parity_proxy import Fault

# -- handlers (the local endpoint runs them; async so that cancel and timeouts stop them) ------


async def work(job: dict[str, Any]) -> Any:
    """Sleeps ``seconds``, then echoes the input it received."""
    await asyncio.sleep(float(job["input"].get("seconds", 0)))
    return {"echo": job["input"]}


async def fail(job: dict[str, Any]) -> Any:
    await asyncio.sleep(0.1)
    return {"error": "the model ran out of memory"}


async def tokens(job: dict[str, Any]) -> AsyncIterator[Any]:
    for token in ("a", "b", "c"):
        await asyncio.sleep(0.1)
        yield token


# -- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    output: Any = None
    error: str | None = None  # the error class's name; None = completed with ``output``
    message: str | None = None  # a regular expression the (id-normalised) message matches (re.search)
    requests: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    remote: tuple[str, ...] = ()  # final status of each remote job created, in order


@dataclass(frozen=True)
class Scenario:
    name: str
    handler: Callable[..., Any]
    input: dict[str, Any]
    expect: Expected
    endpoint_options: dict[str, Any] = field(default_factory=dict)
    faults: tuple[Fault, ...] = ()
    plugin: dict[str, Any] = field(default_factory=dict)  # veto: True | transform: {...} | lookup: output
    stream: bool = False  # read the job as a stream (bridge.stream, --stream, job.stream())
    timeout: float | None = None  # bridge's own deadline; the remote job is to be cancelled
    cancel_externally: bool = False  # another client POSTs /cancel once the job exists

    @property
    def endpoint(self) -> str:
        return f"parity-{self.name}"


RUN = "POST run -> 200"
LONG_POLL = "GET status-sync?wait=20s -> 200 (1+)"


BEFORE = ("transform_input", "lookup")  # the hooks before anything is sent
SHORT = {"seconds": 0.2}
LONG = {"seconds": 5}


def _sent(input: Any) -> str:
    """``bridge_on_submitted`` with the input as sent (after the input transforms)."""
    return f"submitted {input}"


def _done(sent: Any, output: Any, *waiting: str) -> tuple[str, ...]:
    return (*BEFORE, _sent(sent), *waiting, "status_changed ->COMPLETED", f"transform_output {output}",
            f"completed {output}")


def _failed(sent: Any, status: str, error: str) -> tuple[str, ...]:
    return (*BEFORE, _sent(sent), f"status_changed ->{status}", f"failed {error}")


_ECHO = {"echo": SHORT}
_ADDED = {**SHORT, "added": "by the plugin"}

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "completed", work, SHORT,
        Expected(output=_ECHO, requests=(RUN, LONG_POLL), events=_done(SHORT, _ECHO), remote=("COMPLETED",)),
    ),
    Scenario(
        "failed", fail, {},
        Expected(error="JobFailed", message=r"^job FAILED: the model ran out of memory \[endpoint parity-failed, job <job>\]",
                 requests=(RUN, LONG_POLL), events=_failed({}, "FAILED", "JobFailed"), remote=("FAILED",)),
    ),
    Scenario(
        "timed_out", work, LONG, endpoint_options={"execution_timeout": 0.3},
        expect=Expected(error="JobTimedOut", message=r"^job TIMED_OUT: job exceeded its executionTimeout of 300 ms ",
                        requests=(RUN, LONG_POLL), events=_failed(LONG, "TIMED_OUT", "JobTimedOut"),
                        remote=("TIMED_OUT",)),
    ),
    Scenario(
        # hookspecs: "a cancelled job is reported to bridge_on_cancelled only", not as failed.
        "cancelled", work, LONG, cancel_externally=True,
        expect=Expected(error="JobCancelled", message=r"^job CANCELLED \[endpoint parity-cancelled, job <job>\]",
                        requests=(RUN, LONG_POLL),
                        events=(*BEFORE, _sent(LONG), "status_changed ->CANCELLED", "cancelled"),
                        remote=("CANCELLED",)),
    ),
    Scenario(
        # bridge_on_rate_limited and bridge_on_retried for the refused /run, then the same
        # request again (the same Idempotency-Key: one remote job).
        "rate_limited", work, SHORT,
        faults=(Fault(("run",), 1, 429, headers={"Retry-After": "1"}),),
        expect=Expected(output=_ECHO, requests=("POST run -> 429", RUN, LONG_POLL),
                        events=(*BEFORE, "rate_limited run", "retried RateLimited", *_done(SHORT, _ECHO)[2:]),
                        remote=("COMPLETED",)),
    ),
    Scenario(
        "server_errors", work, SHORT,
        faults=(Fault(("status", "status-sync"), 2, 503),),
        expect=Expected(output=_ECHO,
                        requests=(RUN, "GET status-sync?wait=20s -> 503 (1+)", LONG_POLL),
                        events=_done(SHORT, _ECHO, "retried ServerError", "retried ServerError"),
                        remote=("COMPLETED",)),
    ),
    Scenario(
        "malformed", work, SHORT,
        faults=(Fault(("status", "status-sync"), 1, 200, b"<html>502 upstream oops</html>", "text/html"),),
        # Not a passing fault but a server that is not RunPod-compatible: no retry. The job,
        # left alone, completes.
        expect=Expected(error="MalformedResponse",
                        message=r"^/status-sync answered HTTP 200 with a body that is not a JSON object: "
                                r"'<html>502 upstream oops</html>' \[endpoint parity-malformed, job <job>\]",
                        requests=(RUN, LONG_POLL),
                        events=(*BEFORE, _sent(SHORT), "failed MalformedResponse"), remote=("COMPLETED",)),
    ),
    Scenario(
        # hookspecs: bridge_on_failed hears of "a veto (JobRejected)"; nothing is sent.
        "veto", work, SHORT, plugin={"veto": True},
        expect=Expected(error="JobRejected",
                        message=r"^plugin 'recorder': inputs to parity-veto are refused today",
                        events=("transform_input", "failed JobRejected")),
    ),
    Scenario(
        "input_transform", work, SHORT, plugin={"transform": {"added": "by the plugin"}},
        expect=Expected(output={"echo": _ADDED}, requests=(RUN, LONG_POLL),
                        events=_done(_ADDED, {"echo": _ADDED}), remote=("COMPLETED",)),
    ),
    Scenario(
        "cache_hit", work, SHORT, plugin={"lookup": {"cached": "answer"}},
        expect=Expected(output={"cached": "answer"},
                        events=(*BEFORE, "transform_output {'cached': 'answer'}",
                                "completed {'cached': 'answer'}")),
    ),
    Scenario(
        # Held /stream reads (?wait=, as bridge.lifecycle reads a stream), chunks through
        # bridge_transform_chunk, then completed with the list of chunks.
        "stream", tokens, {}, endpoint_options={"return_aggregate_stream": True}, stream=True,
        expect=Expected(output=["a", "b", "c"], requests=(RUN, "GET stream?wait=20s -> 200 (1+)"),
                        events=(*BEFORE, _sent({}), "transform_chunk a", "transform_chunk b",
                                "transform_chunk c", "status_changed ->COMPLETED", "completed ['a', 'b', 'c']"),
                        remote=("COMPLETED",)),
    ),
    Scenario(
        # Under a second left, plain /status looks (bridge.lifecycle's WaitClock: RunPod's
        # wait= floor is 1 s); a timeout with cancel is reported as cancelled only (hookspecs),
        # in the wire's words.
        "deadline", work, LONG, timeout=0.6,
        expect=Expected(error="Timeout",
                        message=r"^job not finished after 0\.6 s \(last status (IN_QUEUE|IN_PROGRESS)\); "
                                r"the job was cancelled \[endpoint parity-deadline, job <job>\]",
                        requests=(RUN, "GET status -> 200 (1+)", "POST cancel -> 200"),
                        events=(*BEFORE, _sent(LONG), "cancelled"),
                        remote=("CANCELLED",)),
    ),
)

BY_NAME = {s.name: s for s in SCENARIOS}


def plugin_options(path: str) -> dict[str, Any]:
    """The recording plugin's options: where to write, and each scenario's plugin role."""
    options: dict[str, Any] = {"path": path, "veto": [], "transform": {}, "lookup": {}}
    for s in SCENARIOS:
        if s.plugin.get("veto"):
            options["veto"].append(s.endpoint)
        if "transform" in s.plugin:
            options["transform"][s.endpoint] = s.plugin["transform"]
        if "lookup" in s.plugin:
            options["lookup"][s.endpoint] = s.plugin["lookup"]
    return options
