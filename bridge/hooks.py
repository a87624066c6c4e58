"""The hook pipeline runner the gateway, the batch runner and the local endpoint call.

``Hooks`` snapshots, once, the implementations of every hook in ``bridge.hookspecs`` in call
order, and runs them itself instead of through ``pm.hook.*``: transforms are a pipeline
(pluggy would return a list), observers are isolated from each other (pluggy would stop at
the first exception), and a hook with no implementations costs one attribute test.

Sync and async: ``transform_input`` & co. run ``async def`` implementations to completion
on a private event loop kept per thread (and refuse, naming the plugin, when called inside
a running loop); ``atransform_input`` & co. await ``async def`` implementations and call
plain ones inline. So both kinds of plugin work from both kinds of caller.

Plugins are loaded when the ``Hooks`` is built: ``Hooks.from_settings()`` (cached per
settings) in the producer, in the worker before the pool forks, and in the local endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pluggy

from bridge._hookcall import (
    Impl,
    close_loops,
    collect,
    hook_names,
    hook_of,
    log_observer_error,
    plugin_error,
)
from bridge.errors import BridgeError, ConfigurationError, scrub

__all__ = ["EVENTS", "EndpointSpec", "Hooks", "JobContext"]

logger = logging.getLogger("bridge.hooks")

#: Observer events ``Hooks.notify`` accepts; each is the hook ``bridge_on_<event>``.
EVENTS: tuple[str, ...] = (
    "submitted", "status_changed", "completed", "failed", "cancelled", "retried", "rate_limited",
)

Process = Literal["producer", "worker", "endpoint"]


@dataclass(slots=True)
class JobContext:
    """Everything a per-job hook may want to know, in one object (fields may be added).

    ``options`` maps plugin name → that plugin's options (``Hooks`` fills it when empty).
    ``meta`` is what plugins want shown (e.g. ``{"cache": "hit"}``): the gateway redacts it
    and stores it with the task's journal entry, read by ``bridge.tasks.job_meta(task_id)``. ``state`` is private per-job scratch, never persisted.
    """

    endpoint_id: str
    base_url: str | None = None
    job_id: str | None = None
    task_id: str | None = None
    attempt: int = 0
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    process: Process = "worker"
    state: dict[str, Any] = field(default_factory=dict)
    #: ``time.monotonic()`` when the context was made (the job's start, in this process).
    started: float = field(default_factory=time.monotonic)

    def options_for(self, plugin: str) -> Mapping[str, Any]:
        """The options of one plugin (empty when it has none)."""
        return self.options.get(plugin, {})


@dataclass(frozen=True)
class EndpointSpec:
    """A named endpoint contributed by a plugin's ``bridge_register_endpoints``."""

    name: str
    endpoint_id: str
    base_url: str | None = None
    api_key_env: str | None = None  # the name of an environment variable, never a key
    policy: Mapping[str, Any] | None = None
    plugin: str = ""


_MISS: tuple[bool, Any] = (False, None)
_cache_lock = threading.Lock()
_from_settings_cache: dict[tuple[tuple[str, str], ...], Hooks] = {}


class Hooks:
    """Runs plugins' hooks for one plugin manager (``Hooks(pm)``); see the module docstring."""

    def __init__(self, pm: pluggy.PluginManager | None) -> None:
        self.pm = pm
        #: plugin name → options, as given to each plugin (``JobContext.options``).
        self.options: Mapping[str, Mapping[str, Any]] = getattr(pm, "options", None) or {}
        self._impls: dict[str, tuple[Impl, ...]] = {}
        for name in hook_names():
            self._impls[name] = collect(pm, name) if pm is not None else ()
        self._input = self._impls["bridge_transform_input"]
        self._lookup = self._impls["bridge_lookup"]
        self._output = self._impls["bridge_transform_output"]
        self._chunk = self._impls["bridge_transform_chunk"]
        self._redact = self._impls["bridge_redact"]
        self._events = {event: self._impls[f"bridge_on_{event}"] for event in EVENTS}
        self._loops = threading.local()
        self._all_loops: list[asyncio.AbstractEventLoop] = []
        weakref.finalize(self, close_loops, self._all_loops)

    # ---------------------------------------------------------------- construction

    @classmethod
    def empty(cls) -> Hooks:
        """A ``Hooks`` with no plugins: every call returns its argument unchanged."""
        return cls(None)

    @classmethod
    def from_settings(cls, *, refresh: bool = False) -> Hooks:
        """Plugins from the environment (``BRIDGE_PLUGINS``, ``BRIDGE_PLUGIN_*`` ...), built once
        per distinct plugin settings in this process (children of a fork inherit it)."""
        key = tuple(sorted(
            (k, v) for k, v in os.environ.items()
            if k.startswith(("BRIDGE_PLUGIN", "BRIDGE_DISABLE_PLUGIN"))
        ))
        with _cache_lock:
            hooks = None if refresh else _from_settings_cache.get(key)
            if hooks is None:
                from bridge.plugins import make_plugin_manager

                hooks = cls(make_plugin_manager())
                _from_settings_cache[key] = hooks
        return hooks

    @staticmethod
    def clear_cache() -> None:
        """Forget every ``from_settings`` result (tests; after changing installed plugins)."""
        with _cache_lock:
            _from_settings_cache.clear()

    def close(self) -> None:
        """Close the private event loops used to run async implementations from sync code."""
        close_loops(self._all_loops)

    def context(self, endpoint_id: str, **fields: Any) -> JobContext:
        """A :class:`JobContext` carrying this ``Hooks``' plugin options."""
        fields.setdefault("options", self.options)
        return JobContext(endpoint_id, **fields)

    # ---------------------------------------------------------------- introspection

    @property
    def enabled(self) -> bool:
        """True when at least one plugin implements at least one hook."""
        return any(self._impls.values())

    def active(self, hook: str) -> bool:
        """True when ``hook`` (``"bridge_transform_chunk"`` or ``"transform_chunk"``) has impls."""
        name = hook if hook.startswith("bridge_") else f"bridge_{hook}"
        return bool(self._impls.get(name))

    def implementations(self, hook: str) -> list[str]:
        """Plugin names implementing ``hook``, in call order."""
        return [impl.plugin for impl in self._impls.get(hook, ())]

    # ---------------------------------------------------------------- sync transforms

    def transform_input(self, ctx: JobContext, input: Any) -> Any:
        """Run the input pipeline. Raises ``JobRejected`` (naming the plugin) on a veto."""
        if not self._input:
            return input
        return self._pipeline("bridge_transform_input", self._input, ctx, input)

    def lookup(self, ctx: JobContext, input: Any) -> tuple[bool, Any]:
        """``(True, output)`` from the first implementation that answers, else ``(False, None)``."""
        if not self._lookup:
            return _MISS
        self._bind(ctx)
        for impl in self._lookup:
            result = self._call_transform("bridge_lookup", impl, ctx, input)
            if result is not None:
                return True, result
        return _MISS

    def transform_output(self, ctx: JobContext, output: Any) -> Any:
        if not self._output:
            return output
        return self._pipeline("bridge_transform_output", self._output, ctx, output)

    def transform_chunk(self, ctx: JobContext, chunk: Any) -> Any:
        if not self._chunk:
            return chunk
        return self._pipeline("bridge_transform_chunk", self._chunk, ctx, chunk)

    def redact(self, ctx: JobContext, value: Any) -> Any:
        """A copy of ``value`` safe for logs and meta. Never raises: if a redactor fails,
        the error is logged with its name and ``"***"`` is returned (fail closed)."""
        if not self._redact:
            return value
        try:
            return self._pipeline("bridge_redact", self._redact, ctx, value)
        except Exception:
            logger.exception("redaction failed; the value was replaced by '***'")
            return "***"

    # ---------------------------------------------------------------- async transforms

    async def atransform_input(self, ctx: JobContext, input: Any) -> Any:
        if not self._input:
            return input
        return await self._apipeline("bridge_transform_input", self._input, ctx, input)

    async def alookup(self, ctx: JobContext, input: Any) -> tuple[bool, Any]:
        if not self._lookup:
            return _MISS
        self._bind(ctx)
        for impl in self._lookup:
            result = await self._acall_transform("bridge_lookup", impl, ctx, input)
            if result is not None:
                return True, result
        return _MISS

    async def atransform_output(self, ctx: JobContext, output: Any) -> Any:
        if not self._output:
            return output
        return await self._apipeline("bridge_transform_output", self._output, ctx, output)

    async def atransform_chunk(self, ctx: JobContext, chunk: Any) -> Any:
        if not self._chunk:
            return chunk
        return await self._apipeline("bridge_transform_chunk", self._chunk, ctx, chunk)

    async def aredact(self, ctx: JobContext, value: Any) -> Any:
        if not self._redact:
            return value
        try:
            return await self._apipeline("bridge_redact", self._redact, ctx, value)
        except Exception:
            logger.exception("redaction failed; the value was replaced by '***'")
            return "***"

    # ---------------------------------------------------------------- observers

    def notify(self, event: str, ctx: JobContext, **data: Any) -> None:
        """Tell observers ``bridge_on_<event>`` what happened. A plugin's exception is logged
        with its name and swallowed. An unknown ``event`` is a bug in the caller: ValueError."""
        impls = self._observers(event)
        if not impls:
            return
        self._bind(ctx)
        data["ctx"] = ctx
        for impl in impls:
            try:
                result = impl.function(*[data.get(name) for name in impl.argnames])
                if impl.is_async:
                    self._run_coroutine(impl, result)
            except Exception:
                log_observer_error(impl, event)

    async def anotify(self, event: str, ctx: JobContext, **data: Any) -> None:
        impls = self._observers(event)
        if not impls:
            return
        self._bind(ctx)
        data["ctx"] = ctx
        for impl in impls:
            try:
                result = impl.function(*[data.get(name) for name in impl.argnames])
                if impl.is_async:
                    await result
            except Exception:
                log_observer_error(impl, event)

    def _observers(self, event: str) -> tuple[Impl, ...]:
        impls = self._events.get(event)
        if impls is None:
            raise ValueError(f"unknown hook event {event!r}; known: {', '.join(EVENTS)}")
        return impls

    # ---------------------------------------------------------------- registration

    def endpoints(self) -> dict[str, EndpointSpec]:
        """Endpoints contributed by plugins: name → :class:`EndpointSpec`."""
        found: dict[str, EndpointSpec] = {}
        for impl in self._impls["bridge_register_endpoints"]:

            def register(
                name: str, endpoint_id: str, base_url: str | None = None,
                api_key_env: str | None = None, policy: Mapping[str, Any] | None = None,
                *, _plugin: str = impl.plugin,
            ) -> None:
                if name in found:
                    raise ConfigurationError(
                        f"endpoint {name!r} is registered by plugins {found[name].plugin!r} and {_plugin!r}",
                        None, None, "disable one of them with BRIDGE_DISABLE_PLUGINS",
                    )
                found[name] = EndpointSpec(name, endpoint_id, base_url, api_key_env, policy, _plugin)

            self._call_registration(impl, {"register": register, "options": self.options})
        return found

    def celery_config(self) -> dict[str, Any]:
        """Celery settings from plugins, merged; one key set differently by two is an error."""
        merged: dict[str, Any] = {}
        owner: dict[str, str] = {}
        for impl in self._impls["bridge_celery_config"]:
            result = self._call_registration(impl, {"options": self.options})
            for key, value in (result or {}).items():
                if key in merged and merged[key] != value:
                    raise ConfigurationError(
                        f"Celery setting {key!r} is set differently by plugins {owner[key]!r} and {impl.plugin!r}",
                        None, None, "the plugins' options, or disable one with BRIDGE_DISABLE_PLUGINS",
                    )
                merged[key] = value
                owner[key] = impl.plugin
        return merged

    def register_commands(self, cli: Any) -> None:
        """Let plugins add commands to the click group ``cli``."""
        for impl in self._impls["bridge_register_commands"]:
            self._call_registration(impl, {"cli": cli, "options": self.options})

    # ---------------------------------------------------------------- machinery

    def _bind(self, ctx: JobContext) -> None:
        # A context made directly (not via Hooks.context) still lets plugins see options.
        if not ctx.options and self.options:
            ctx.options = self.options

    def _pipeline(self, hook: str, impls: tuple[Impl, ...], ctx: JobContext, value: Any) -> Any:
        self._bind(ctx)
        for impl in impls:
            result = self._call_transform(hook, impl, ctx, value)
            if result is not None:
                value = result
        return value

    async def _apipeline(self, hook: str, impls: tuple[Impl, ...], ctx: JobContext, value: Any) -> Any:
        self._bind(ctx)
        for impl in impls:
            # inlined rather than awaiting _acall_transform: one coroutine less per plugin
            try:
                result = impl.call(ctx, value)
                if impl.is_async:
                    result = await result
            except Exception as exc:
                raise plugin_error(hook, impl.plugin, ctx, exc) from exc
            if result is not None:
                value = result
        return value

    def _call_transform(self, hook: str, impl: Impl, ctx: JobContext, value: Any) -> Any:
        try:
            result = impl.call(ctx, value)
            if impl.is_async:
                result = self._run_coroutine(impl, result)
            return result
        except Exception as exc:
            raise plugin_error(hook, impl.plugin, ctx, exc) from exc

    async def _acall_transform(self, hook: str, impl: Impl, ctx: JobContext, value: Any) -> Any:
        try:
            result = impl.call(ctx, value)
            if impl.is_async:
                result = await result
            return result
        except Exception as exc:
            raise plugin_error(hook, impl.plugin, ctx, exc) from exc

    def _call_registration(self, impl: Impl, kwargs: dict[str, Any]) -> Any:
        try:
            result = impl.function(*[kwargs[name] for name in impl.argnames])
            if impl.is_async:
                result = self._run_coroutine(impl, result)
            return result
        except BridgeError:
            raise
        except Exception as exc:
            raise ConfigurationError(
                f"plugin {impl.plugin!r} failed in {hook_of(impl)}: {type(exc).__name__}: {scrub(str(exc))}",
                None, None, "the plugin's options, or disable it with BRIDGE_DISABLE_PLUGINS",
            ) from exc

    def _run_coroutine(self, impl: Impl, coro: Any) -> Any:
        """Run an async implementation from sync code on this thread's private loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise ConfigurationError(
                f"plugin {impl.plugin!r} has an async hook, called from sync code inside a running event loop",
                None, None, "call the async twin (atransform_input, anotify, ...) from async code",
            )
        loop = getattr(self._loops, "loop", None)
        if loop is None or loop.is_closed():
            loop = asyncio.new_event_loop()
            self._loops.loop = loop
            self._all_loops.append(loop)
        return loop.run_until_complete(coro)
