"""The hook contract between bridge and its plugins (pluggy project name ``bridge``).

Plugin authors write ``from bridge import hookimpl`` and implement any of the functions
below, taking any *subset* of each hook's arguments (pluggy's opt-in arguments, so adding an
argument later never breaks a plugin). Call them only through :class:`bridge.hooks.Hooks`.

Each spec below is marked with its kind, and the kind is all :class:`bridge.hooks.Hooks`
needs to run it (its tables are built from these marks):

* ``@transform`` (``bridge_transform_*``, ``bridge_redact``): an ordered pipeline. Each
  implementation receives the previous one's result; returning ``None`` means "unchanged".
  Order is pluggy's call order: ``tryfirst`` implementations, then the others (the plugin
  registered last runs first: ``BRIDGE_PLUGINS``, then entry points, then first-party), then
  ``trylast``. A plugin's exception becomes the spec's ``failure`` class (default
  ``BridgeError``) naming the plugin; a bridge error keeps its class. Run with
  ``Hooks.pipeline(name, ctx, value)`` / ``apipeline``.
* ``@first_answer`` (``bridge_lookup``): a short-circuit: the first non-``None`` wins.
  Run with ``Hooks.first_answer(name, ctx, value)`` / ``afirst_answer``.
* ``@observer`` (``bridge_on_<event>``): told what happened; they can never fail a job. An
  exception is logged with the plugin's name and swallowed, and the next observer still
  runs. Run with ``Hooks.notify(event, ctx, **data)`` / ``anotify``.
* ``@registration`` (``bridge_register_*``, ``bridge_celery_config``): called once when
  asked (CLI start, app configuration), not per job. Run with
  ``Hooks.call_registration(name, **kwargs)``.

So a new hook is one spec here plus its call site. Transform and first-answer specs take
``(ctx, <value>)``; observer specs are named ``bridge_on_<event>`` and take ``ctx`` first.

Every per-job hook receives one :class:`bridge.hooks.JobContext` (``ctx``): endpoint, remote
job id, Celery task id, attempt, plugin options, ``meta`` (what plugins want shown, e.g.
``{"cache": "hit"}``: the gateway redacts it and stores it in the task's journal entry,
read back with ``bridge.tasks.job_meta(task_id)``) and ``state`` (private per-job scratch,
never stored). Any implementation may be ``async def``: see ``docs/plugins.md`` ("Sync and
async") for how the sync and async callers run them.

The process a hook runs in is named in each docstring: *producer* (where ``bridge.run.delay``
or ``bridge batch`` is called), *worker* (the Celery worker or batch runner driving the
gateway) and *endpoint* (``bridge serve``, the local endpoint). ``ctx.process`` says which.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar, overload

import pluggy

from bridge.errors import BridgeError, JobRejected

PROJECT = "bridge"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Mark plugin functions: ``@hookimpl``, ``@hookimpl(tryfirst=True)``, ``@hookimpl(trylast=True)``.
hookimpl = pluggy.HookimplMarker(PROJECT)

Kind = Literal["transform", "first_answer", "observer", "registration"]
#: The attribute naming a spec's kind (read by ``bridge._hookcall.spec_table``).
KIND = "bridge_hook_kind"
#: On a transform spec: the error class a plugin's non-bridge exception becomes.
FAILURE = "bridge_hook_failure"

F = TypeVar("F", bound=Callable[..., Any])


def _mark(function: F, kind: Kind, failure: type[BridgeError] = BridgeError) -> F:
    setattr(function, KIND, kind)
    setattr(function, FAILURE, failure)
    return hookspec(function)


@overload
def transform(function: F) -> F: ...
@overload
def transform(*, failure: type[BridgeError] = ...) -> Callable[[F], F]: ...
def transform(function: F | None = None, *, failure: type[BridgeError] = BridgeError) -> Any:
    """A pipeline spec: ``@transform`` or ``@transform(failure=JobRejected)``."""
    if function is None:
        return lambda f: _mark(f, "transform", failure)
    return _mark(function, "transform", failure)


def first_answer(function: F) -> F:
    """A short-circuit spec: the first implementation to return non-``None`` answers."""
    return _mark(function, "first_answer")


def observer(function: F) -> F:
    """An observer spec ``bridge_on_<event>``: exceptions are logged and swallowed."""
    return _mark(function, "observer")


def registration(function: F) -> F:
    """A spec called once when asked (not per job); exceptions are ``ConfigurationError``."""
    return _mark(function, "registration")


# --------------------------------------------------------------------------- transforms


@transform(failure=JobRejected)
def bridge_transform_input(ctx: Any, input: Any) -> Any:
    """Reshape or validate a job's input before it is submitted.

    Called in the worker (gateway), once per task delivery before submit. A redelivered task
    runs it again before it finds and resumes its recorded remote job (nothing is sent then),
    so it must be deterministic. Receives the input as the previous implementation left it.
    Return the new input, or ``None`` to leave it unchanged (in-place mutation is allowed).
    Raise :class:`bridge.JobRejected` to veto: the task fails with that error and nothing is
    sent. Any other exception also rejects the job, as ``JobRejected`` naming the plugin.
    """


@first_answer
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


@transform
def bridge_transform_output(ctx: Any, output: Any) -> Any:
    """Reshape or check the output of a COMPLETED job before it becomes the task's result.

    Called in the worker once per completed job (and once per ``bridge_lookup`` hit), with
    the endpoint's ``output`` as the previous implementation left it. Return the new output,
    or ``None`` for unchanged. Exceptions fail the task with a ``BridgeError`` naming the
    plugin (bridge errors, e.g. ``MalformedResponse``, propagate unchanged).
    """


@transform
def bridge_transform_chunk(ctx: Any, chunk: Any) -> Any:
    """Reshape one streamed chunk before it is published to the task's Redis stream.

    Called in the worker for every chunk of a streaming job (``/stream``), in order, with
    the chunk's ``output`` value. Return the new chunk or ``None`` for unchanged. Keep it
    cheap: it runs per chunk. Exceptions fail the task like ``bridge_transform_output``.
    """


@transform
def bridge_redact(ctx: Any, value: Any) -> Any:
    """Remove secrets from a value about to be shown or stored outside the job.

    Called through ``Hooks.redact`` by whatever writes such a value; today the gateway, on
    ``ctx.meta`` before it goes into the journal and on a failed job's error text before
    the task raises it. Never on the job's input as sent or its result. Return a redacted copy, or ``None`` for unchanged.
    Do not mutate ``value`` in place: it may be the live input or output.
    """


# ---------------------------------------------------------------------------- observers


@observer
def bridge_on_submitted(ctx: Any, input: Any) -> None:
    """The remote job was accepted; ``ctx.job_id`` is set. Worker. ``input`` as sent."""


@observer
def bridge_on_status_changed(ctx: Any, status: str, previous: str | None) -> None:
    """A poll saw a new remote status (``IN_QUEUE`` → ``IN_PROGRESS`` ...). Worker."""


@observer
def bridge_on_completed(
    ctx: Any, output: Any, delay_ms: float | None, execution_ms: float | None
) -> None:
    """The job COMPLETED (or was answered by ``bridge_lookup``; then ``ctx.meta`` says so).

    Worker. ``output`` is the final, transformed output. ``delay_ms``/``execution_ms`` are the
    endpoint's ``delayTime``/``executionTime`` (queue wait and run time) when it reported them.
    """


@observer
def bridge_on_failed(
    ctx: Any, error: BaseException, delay_ms: float | None, execution_ms: float | None
) -> None:
    """The task failed for good: FAILED, TIMED_OUT, a veto (``JobRejected``), an error
    after retries ran out. Worker. ``error`` is the bridge error the task raises.
    A cancelled job is reported to ``bridge_on_cancelled`` only, not here."""


@observer
def bridge_on_cancelled(ctx: Any, reason: str | None) -> None:
    """The job was cancelled (revoke, ``bridge cancel``, timeout with cancel). Worker."""


@observer
def bridge_on_retried(ctx: Any, error: BaseException, delay: float | None) -> None:
    """A request or the task will be retried after ``delay`` seconds because of ``error``.
    Worker; ``ctx.attempt`` is the attempt that failed."""


@observer
def bridge_on_rate_limited(ctx: Any, route: str | None, retry_after: float | None) -> None:
    """The endpoint answered 429 to a request bridge will send again (the gateway's submit
    and its status polls; ``bridge_on_retried`` follows). Worker. ``route`` is the API
    operation (``run``, ``status`` ...); ``retry_after`` the server's Retry-After, if any.
    A wait on bridge's own rate budgets (``BRIDGE_RATE_LIMITS``, the adaptive submit rate)
    does not fire it."""


# ------------------------------------------------------------------------- registration


@registration
def bridge_register_endpoints(register: Any, options: Any) -> None:
    """Contribute named endpoints. Called by ``Hooks.endpoints()`` in any process.

    Call ``register(name, endpoint_id, base_url=None, api_key_env=None, policy=None)`` once
    per endpoint; ``api_key_env`` names the environment variable holding the key (never the
    key itself). ``options`` maps plugin name → its options. A name registered twice is an
    error naming both plugins.
    """


@registration
def bridge_register_commands(cli: Any, options: Any) -> None:
    """Add click commands to the ``bridge`` CLI group ``cli`` (``cli.add_command(...)`` or
    ``@cli.command()``). Called once when the CLI starts."""


@registration
def bridge_celery_config(options: Any) -> Any:
    """Return a dict of Celery settings to merge into the app's configuration
    (``bridge.install(app)``), or ``None``. Two plugins setting one key differently is an
    error naming both."""
