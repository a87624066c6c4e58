"""The parity scenarios, as data: what the endpoint does, which faults the proxy answers, what
the recording plugin plays, and what every driver must then show.

Each scenario has an endpoint id of its own on one local endpoint server, so its requests,
jobs and hook records are told apart by that id. ``expect`` is what the one lifecycle must do
(issue #10): the outcome (output, or error class and a fragment of its message), the requests
the endpoint saw (``parity_proxy.collapse`` form), the hook calls the plugin saw
(``parity_drivers.event_line`` form) and the final status of every remote job created.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from lifecycle.parity_proxy import Fault

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
    message: str | None = None  # a fragment the (id-normalised) message contains
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


def _done(output: Any, *waiting: str) -> tuple[str, ...]:
    return (*BEFORE, "submitted", *waiting, "status_changed ->COMPLETED", f"transform_output {output}",
            f"completed {output}")


def _failed(status: str, error: str) -> tuple[str, ...]:
    return (*BEFORE, "submitted", f"status_changed ->{status}", f"failed {error}")


_ECHO = {"echo": {"seconds": 0.2}}

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "completed", work, {"seconds": 0.2},
        Expected(output=_ECHO, requests=(RUN, LONG_POLL), events=_done(_ECHO), remote=("COMPLETED",)),
    ),
    Scenario(
        "failed", fail, {},
        Expected(error="JobFailed", message="the model ran out of memory", requests=(RUN, LONG_POLL),
                 events=_failed("FAILED", "JobFailed"), remote=("FAILED",)),
    ),
    Scenario(
        "timed_out", work, {"seconds": 5}, endpoint_options={"execution_timeout": 0.3},
        expect=Expected(error="JobTimedOut", message="executionTimeout of 300 ms", requests=(RUN, LONG_POLL),
                        events=_failed("TIMED_OUT", "JobTimedOut"), remote=("TIMED_OUT",)),
    ),
    Scenario(
        # hookspecs: "a cancelled job is reported to bridge_on_cancelled only", not as failed.
        "cancelled", work, {"seconds": 5}, cancel_externally=True,
        expect=Expected(error="JobCancelled", message="job CANCELLED", requests=(RUN, LONG_POLL),
                        events=(*BEFORE, "submitted", "status_changed ->CANCELLED", "cancelled"),
                        remote=("CANCELLED",)),
    ),
    Scenario(
        "rate_limited", work, {"seconds": 0.2},
        faults=(Fault(("run",), 1, 429, headers={"Retry-After": "1"}),),
        expect=Expected(output=_ECHO, requests=("POST run -> 429", RUN, LONG_POLL),
                        events=(*BEFORE, "rate_limited run", "retried RateLimited", *_done(_ECHO)[2:]),
                        remote=("COMPLETED",)),
    ),
    Scenario(
        "server_errors", work, {"seconds": 0.2},
        faults=(Fault(("status", "status-sync"), 2, 503),),
        expect=Expected(output=_ECHO,
                        requests=(RUN, "GET status-sync?wait=20s -> 503 (1+)", LONG_POLL),
                        events=_done(_ECHO, "retried ServerError", "retried ServerError"),
                        remote=("COMPLETED",)),
    ),
    Scenario(
        "malformed", work, {"seconds": 0.2},
        faults=(Fault(("status", "status-sync"), 1, 200, b"<html>502 upstream oops</html>", "text/html"),),
        # Not a passing fault but a server that is not RunPod-compatible: no retry. The job,
        # left alone, completes.
        expect=Expected(error="MalformedResponse", message="not a JSON object",
                        requests=(RUN, LONG_POLL),
                        events=(*BEFORE, "submitted", "failed MalformedResponse"), remote=("COMPLETED",)),
    ),
    Scenario(
        "veto", work, {"seconds": 0.2}, plugin={"veto": True},
        expect=Expected(error="JobRejected", message="plugin 'recorder': inputs to parity-veto are refused today",
                        events=("transform_input", "failed JobRejected")),
    ),
    Scenario(
        "input_transform", work, {"seconds": 0.2}, plugin={"transform": {"added": "by the plugin"}},
        expect=Expected(
            output={"echo": {"seconds": 0.2, "added": "by the plugin"}}, requests=(RUN, LONG_POLL),
            events=_done({"echo": {"seconds": 0.2, "added": "by the plugin"}}),
            remote=("COMPLETED",)),
    ),
    Scenario(
        "cache_hit", work, {"seconds": 0.2}, plugin={"lookup": {"cached": "answer"}},
        expect=Expected(output={"cached": "answer"},
                        events=(*BEFORE, "transform_output {'cached': 'answer'}",
                                "completed {'cached': 'answer'}")),
    ),
    Scenario(
        # Held /stream reads (?wait=, as bridge.lifecycle reads a stream), chunks through
        # bridge_transform_chunk, then completed with every chunk.
        "stream", tokens, {}, endpoint_options={"return_aggregate_stream": True}, stream=True,
        expect=Expected(output=["a", "b", "c"], requests=(RUN, "GET stream?wait=20s -> 200 (1+)"),
                        events=(*BEFORE, "submitted", "transform_chunk a", "transform_chunk b",
                                "transform_chunk c", "status_changed ->COMPLETED", "completed ['a', 'b', 'c']"),
                        remote=("COMPLETED",)),
    ),
    Scenario(
        # Under a second left, plain /status looks (bridge.lifecycle's WaitClock: RunPod's
        # wait= floor is 1 s); a timeout with cancel is reported as cancelled (hookspecs).
        "deadline", work, {"seconds": 5}, timeout=0.6,
        expect=Expected(error="Timeout", message="was cancelled",
                        requests=(RUN, "GET status -> 200 (1+)", "POST cancel -> 200"),
                        events=(*BEFORE, "submitted", "cancelled"),
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
