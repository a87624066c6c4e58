"""The hook contract between bridge and its plugins (pluggy project name ``bridge``).

Plugin authors write ``from bridge import hookimpl`` and implement any of the functions
below, taking any *subset* of each hook's arguments (pluggy's opt-in arguments, so adding an
argument later never breaks a plugin). Call them only through :class:`bridge.hooks.Hooks`.

Three kinds of hook:

* **transforms** (``bridge_transform_*``, ``bridge_redact``): an ordered pipeline. Each
  implementation receives the previous one's result; returning ``None`` means "unchanged".
  Order is pluggy's call order: ``tryfirst`` implementations, then the others (the plugin
  registered last runs first: ``BRIDGE_PLUGINS``, then entry points, then first-party), then
  ``trylast``. ``bridge_lookup`` is the one short-circuit: the first non-``None`` wins.
* **observers** (``bridge_on_*``): told what happened; they can never fail a job. An
  exception is logged with the plugin's name and swallowed, and the next observer still runs.
* **registration** (``bridge_register_*``, ``bridge_celery_config``): called once when asked
  (CLI start, app configuration), not per job.

Every per-job hook receives one :class:`bridge.hooks.JobContext` (``ctx``): endpoint, remote
job id, Celery task id, attempt, plugin options, ``meta`` (copied into Celery task meta) and
``state`` (private per-job scratch). Any implementation may be ``async def``: see
``docs/plugins.md`` ("Sync and async") for how the sync and async callers run them.

The process a hook runs in is named in each docstring: *producer* (where ``bridge.run.delay``
or ``bridge batch`` is called), *worker* (the Celery worker or batch runner driving the
gateway) and *endpoint* (``bridge serve``, the local endpoint). ``ctx.process`` says which.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "bridge"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Mark plugin functions: ``@hookimpl``, ``@hookimpl(tryfirst=True)``, ``@hookimpl(trylast=True)``.
hookimpl = pluggy.HookimplMarker(PROJECT)

# --------------------------------------------------------------------------- transforms


@hookspec
def bridge_transform_input(ctx: Any, input: Any) -> Any:
    """Reshape or validate a job's input before it is submitted.

    Called in the worker (gateway), once per task delivery before submit. A redelivered task
    runs it again before it finds and resumes its recorded remote job (nothing is sent then),
    so it must be deterministic. Receives the input as the previous implementation left it.
    Return the new input, or ``None`` to leave it unchanged (in-place mutation is allowed).
    Raise :class:`bridge.JobRejected` to veto: the task fails with that error and nothing is
    sent. Any other exception also rejects the job, as ``JobRejected`` naming the plugin.
    """


@hookspec
def bridge_lookup(ctx: Any, input: Any) -> Any:
    """Answer a job without submitting it (a cache hit).

    Called in the worker after ``bridge_transform_input`` and before submit, with the final
    input. Return the output the endpoint would have returned (its raw ``output``, before
    ``bridge_transform_output``) to short-circuit the job, or ``None`` for "not found".
    The first non-``None`` answer wins; later implementations are not called. A hit then goes
    through ``bridge_transform_output`` like a real output. Set ``ctx.meta`` to say why
    (e.g. ``ctx.meta["cache"] = "hit"``). Exceptions become a failed task naming the plugin,
    so a best-effort lookup (a cache) should swallow its own errors and return ``None``.
    """


@hookspec
def bridge_transform_output(ctx: Any, output: Any) -> Any:
    """Reshape or check the output of a COMPLETED job before it becomes the task's result.

    Called in the worker once per completed job (and once per ``bridge_lookup`` hit), with
    the endpoint's ``output`` as the previous implementation left it. Return the new output,
    or ``None`` for unchanged. Exceptions fail the task with a ``BridgeError`` naming the
    plugin (bridge errors, e.g. ``MalformedResponse``, propagate unchanged).
    """


@hookspec
def bridge_transform_chunk(ctx: Any, chunk: Any) -> Any:
    """Reshape one streamed chunk before it is published to the task's Redis stream.

    Called in the worker for every chunk of a streaming job (``/stream``), in order, with
    the chunk's ``output`` value. Return the new chunk or ``None`` for unchanged. Keep it
    cheap: it runs per chunk. Exceptions fail the task like ``bridge_transform_output``.
    """


@hookspec
def bridge_redact(ctx: Any, value: Any) -> Any:
    """Remove secrets from a value about to be logged or stored in task/result meta.

    Called in any process by whatever writes logs or meta (``Hooks.redact``); never on the
    job's input as sent or its result. Return a redacted copy, or ``None`` for unchanged.
    Do not mutate ``value`` in place: it may be the live input or output.
    """


# ---------------------------------------------------------------------------- observers


@hookspec
def bridge_on_submitted(ctx: Any, input: Any) -> None:
    """The remote job was accepted; ``ctx.job_id`` is set. Worker. ``input`` as sent."""


@hookspec
def bridge_on_status_changed(ctx: Any, status: str, previous: str | None) -> None:
    """A poll saw a new remote status (``IN_QUEUE`` → ``IN_PROGRESS`` ...). Worker."""


@hookspec
def bridge_on_completed(
    ctx: Any, output: Any, delay_ms: float | None, execution_ms: float | None
) -> None:
    """The job COMPLETED (or was answered by ``bridge_lookup``; then ``ctx.meta`` says so).

    Worker. ``output`` is the final, transformed output. ``delay_ms``/``execution_ms`` are the
    endpoint's ``delayTime``/``executionTime`` (queue wait and run time) when it reported them.
    """


@hookspec
def bridge_on_failed(
    ctx: Any, error: BaseException, delay_ms: float | None, execution_ms: float | None
) -> None:
    """The task failed for good: FAILED, TIMED_OUT, a veto (``JobRejected``), an error
    after retries ran out. Worker. ``error`` is the bridge error the task raises.
    A cancelled job is reported to ``bridge_on_cancelled`` only, not here."""


@hookspec
def bridge_on_cancelled(ctx: Any, reason: str | None) -> None:
    """The job was cancelled (revoke, ``bridge cancel``, timeout with cancel). Worker."""


@hookspec
def bridge_on_retried(ctx: Any, error: BaseException, delay: float | None) -> None:
    """A request or the task will be retried after ``delay`` seconds because of ``error``.
    Worker; ``ctx.attempt`` is the attempt that failed."""


@hookspec
def bridge_on_rate_limited(ctx: Any, route: str | None, retry_after: float | None) -> None:
    """The endpoint answered 429 (or bridge's own rate budget made a request wait).
    Worker or producer. ``route`` is the API operation (``run``, ``status`` ...)."""


# ------------------------------------------------------------------------- registration


@hookspec
def bridge_register_endpoints(register: Any, options: Any) -> None:
    """Contribute named endpoints. Called by ``Hooks.endpoints()`` in any process.

    Call ``register(name, endpoint_id, base_url=None, api_key_env=None, policy=None)`` once
    per endpoint; ``api_key_env`` names the environment variable holding the key (never the
    key itself). ``options`` maps plugin name → its options. A name registered twice is an
    error naming both plugins.
    """


@hookspec
def bridge_register_commands(cli: Any, options: Any) -> None:
    """Add click commands to the ``bridge`` CLI group ``cli`` (``cli.add_command(...)`` or
    ``@cli.command()``). Called once when the CLI starts."""


@hookspec
def bridge_celery_config(options: Any) -> Any:
    """Return a dict of Celery settings to merge into the app's configuration
    (``bridge.install(app)``), or ``None``. Two plugins setting one key differently is an
    error naming both."""
