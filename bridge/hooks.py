"""The hook pipeline runner the gateway, the batch runner and the local endpoint call.

``Hooks`` snapshots, once, the implementations of every hook in call order, and runs them
itself instead of through ``pm.hook.*``: transforms are a pipeline (pluggy would return a
list), observers are isolated from each other (pluggy would stop at the first exception),
and a hook with no implementations costs one look-up. Which hooks exist and how each
runs comes from the specs' kind marks (``bridge.hookspecs``, plus any marked spec added to
the plugin manager), so a new hook needs no edit here: its call site uses the generic
``pipeline``/``first_answer``/``notify``/``call_registration`` (and async twins).

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
import weakref
from collections.abc import Mapping
from typing import Any, get_args

import pluggy

from bridge import hookspecs
from bridge._hookcall import (
    Impl,
    Spec,
    close_loops,
    collect,
    log_observer_error,
    observer_events,
    plugin_error,
    registration_error,
    spec_table,
)
from bridge.errors import BridgeError, ConfigurationError
from bridge.hook_context import EndpointSpec, JobContext

__all__ = ["EVENTS", "EndpointSpec", "Hooks", "JobContext"]

logger = logging.getLogger("bridge.hooks")

#: Observer events of bridge's own hooks (``Hooks.notify``); each is the hook ``bridge_on_<event>``.
EVENTS: tuple[str, ...] = observer_events()

_MISS: tuple[bool, Any] = (False, None)
_cache_lock = threading.Lock()
_from_settings_cache: dict[tuple[tuple[str, str], ...], Hooks] = {}


class Hooks:
    """Runs plugins' hooks for one plugin manager (``Hooks(pm)``); see the module docstring."""

    def __init__(self, pm: pluggy.PluginManager | None) -> None:
        self.pm = pm
        #: plugin name → options, as given to each plugin (``JobContext.options``).
        self.options: Mapping[str, Mapping[str, Any]] = getattr(pm, "options", None) or {}
        #: hook name → its spec, as marked in ``bridge.hookspecs`` (or a spec added to ``pm``).
        self.specs: dict[str, Spec] = spec_table(pm)
        self._impls: dict[str, tuple[Impl, ...]] = {
            name: collect(pm, spec) if pm is not None else () for name, spec in self.specs.items()
        }
        # One table per kind, so a call checks the hook's kind in the same look-up.
        self._kinds: dict[str, dict[str, tuple[Spec, tuple[Impl, ...]]]] = {
            kind: {} for kind in get_args(hookspecs.Kind)
        }
        for name, spec in self.specs.items():
            key = spec.event if spec.kind == "observer" else name
            self._kinds[spec.kind][key] = (spec, self._impls[name])
        self._transforms = self._kinds["transform"]
        self._events = {event: impls for event, (_, impls) in self._kinds["observer"].items()}
        #: Known events nobody observes: notify returns at once (unknown events still raise).
        self._unobserved = frozenset(event for event, impls in self._events.items() if not impls)
        # bridge's own hooks: (spec, impls) split, so that a hook nobody implements costs
        # one attribute test (these run per job and per chunk)
        self._input_spec, self._input = self._transforms["bridge_transform_input"]
        self._lookup_spec, self._lookup = self._kinds["first_answer"]["bridge_lookup"]
        self._output_spec, self._output = self._transforms["bridge_transform_output"]
        self._chunk_spec, self._chunk = self._transforms["bridge_transform_chunk"]
        self._redact_spec, self._redact = self._transforms["bridge_redact"]
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

    # ---------------------------------------------------------------- generic runners

    def pipeline(self, hook: str, ctx: JobContext, value: Any) -> Any:
        """Run the transform ``hook`` (full name): each impl gets the previous result, ``None``
        keeps it. A plugin's error is raised naming the plugin (``bridge.hookspecs``)."""
        spec, impls = self._entry(self._transforms, hook, "transform")
        return self._pipeline(spec, impls, ctx, value) if impls else value

    async def apipeline(self, hook: str, ctx: JobContext, value: Any) -> Any:
        """:meth:`pipeline` from async code: awaits ``async def`` impls, calls others inline."""
        spec, impls = self._entry(self._transforms, hook, "transform")
        return await self._apipeline(spec, impls, ctx, value) if impls else value

    def first_answer(self, hook: str, ctx: JobContext, value: Any) -> tuple[bool, Any]:
        """``(True, answer)`` from the first impl of ``hook`` answering non-``None``, else
        ``(False, None)``; later impls are not called."""
        spec, impls = self._entry(self._kinds["first_answer"], hook, "first_answer")
        return self._first(spec, impls, ctx, value) if impls else _MISS

    async def afirst_answer(self, hook: str, ctx: JobContext, value: Any) -> tuple[bool, Any]:
        spec, impls = self._entry(self._kinds["first_answer"], hook, "first_answer")
        return await self._afirst(spec, impls, ctx, value) if impls else _MISS

    def call_registration(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call every impl of the registration ``hook`` with the arguments it takes from
        ``kwargs``: ``[(plugin, result), ...]`` in call order. A plugin's error is a
        ``ConfigurationError`` naming it."""
        spec, impls = self._entry(self._kinds["registration"], hook, "registration")
        return [(impl.plugin, self._call_registration(spec, impl, kwargs)) for impl in impls]

    # ------------------------------------------------- bridge's own hooks, by name
    # (each reads its table entry directly: no hook takes more than one attribute test
    # when no plugin implements it)

    def transform_input(self, ctx: JobContext, input: Any) -> Any:
        """Run the input pipeline. Raises ``JobRejected`` (naming the plugin) on a veto."""
        if not self._input:
            return input
        return self._pipeline(self._input_spec, self._input, ctx, input)

    def lookup(self, ctx: JobContext, input: Any) -> tuple[bool, Any]:
        """``(True, output)`` from the first implementation that answers, else ``(False, None)``."""
        if not self._lookup:
            return _MISS
        return self._first(self._lookup_spec, self._lookup, ctx, input)

    def transform_output(self, ctx: JobContext, output: Any) -> Any:
        if not self._output:
            return output
        return self._pipeline(self._output_spec, self._output, ctx, output)

    def transform_chunk(self, ctx: JobContext, chunk: Any) -> Any:
        if not self._chunk:
            return chunk
        return self._pipeline(self._chunk_spec, self._chunk, ctx, chunk)

    def redact(self, ctx: JobContext, value: Any) -> Any:
        """A copy of ``value`` safe for logs and meta. Never raises: if a redactor fails,
        the error is logged with its name and ``"***"`` is returned (fail closed)."""
        if not self._redact:
            return value
        try:
            return self._pipeline(self._redact_spec, self._redact, ctx, value)
        except Exception:
            logger.exception("redaction failed; the value was replaced by '***'")
            return "***"

    async def atransform_input(self, ctx: JobContext, input: Any) -> Any:
        if not self._input:
            return input
        return await self._apipeline(self._input_spec, self._input, ctx, input)

    async def alookup(self, ctx: JobContext, input: Any) -> tuple[bool, Any]:
        if not self._lookup:
            return _MISS
        return await self._afirst(self._lookup_spec, self._lookup, ctx, input)

    async def atransform_output(self, ctx: JobContext, output: Any) -> Any:
        if not self._output:
            return output
        return await self._apipeline(self._output_spec, self._output, ctx, output)

    async def atransform_chunk(self, ctx: JobContext, chunk: Any) -> Any:
        if not self._chunk:
            return chunk
        return await self._apipeline(self._chunk_spec, self._chunk, ctx, chunk)

    async def aredact(self, ctx: JobContext, value: Any) -> Any:
        if not self._redact:
            return value
        try:
            return await self._apipeline(self._redact_spec, self._redact, ctx, value)
        except Exception:
            logger.exception("redaction failed; the value was replaced by '***'")
            return "***"

    # ---------------------------------------------------------------- observers

    def notify(self, event: str, ctx: JobContext, **data: Any) -> None:
        """Tell observers ``bridge_on_<event>`` what happened. A plugin's exception is logged
        with its name and swallowed. An unknown ``event`` is a bug in the caller: ValueError.
        Arguments an observer takes but the caller left out arrive as ``None``."""
        if event in self._unobserved:  # the common case, kept to one test
            return
        for impl in self._observing(event, ctx, data):
            try:
                result = impl.function(*[data.get(name) for name in impl.argnames])
                if impl.is_async:
                    self._run_coroutine(impl, result)
            except Exception:
                log_observer_error(impl, event)

    async def anotify(self, event: str, ctx: JobContext, **data: Any) -> None:
        if event in self._unobserved:
            return
        for impl in self._observing(event, ctx, data):
            try:
                result = impl.function(*[data.get(name) for name in impl.argnames])
                if impl.is_async:
                    await result
            except Exception:
                log_observer_error(impl, event)

    def _observing(self, event: str, ctx: JobContext, data: dict[str, Any]) -> tuple[Impl, ...]:
        """The observers of ``event``, with ``ctx`` bound and put in ``data`` when there are any."""
        impls = self._events.get(event)
        if impls is None:
            self._observers(event)  # raises: an unknown event is a bug in the caller
        elif impls:
            if not ctx.options and self.options:  # _bind, inlined: this runs per event
                ctx.options = self.options
            data["ctx"] = ctx
        return impls or ()

    def _observers(self, event: str) -> tuple[Impl, ...]:
        impls = self._events.get(event)
        if impls is None:
            raise ValueError(f"unknown hook event {event!r}; known: {', '.join(self._events)}")
        return impls

    # ---------------------------------------------------------------- registration

    def endpoints(self) -> dict[str, EndpointSpec]:
        """Endpoints contributed by plugins: name → :class:`EndpointSpec`."""
        found: dict[str, EndpointSpec] = {}
        spec, impls = self._entry(self._kinds["registration"], "bridge_register_endpoints", "registration")
        for impl in impls:

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

            # each plugin gets its own register(), which knows whose endpoint it records
            self._call_registration(spec, impl, {"register": register, "options": self.options})
        return found

    def celery_config(self) -> dict[str, Any]:
        """Celery settings from plugins, merged; one key set differently by two is an error."""
        merged: dict[str, Any] = {}
        owner: dict[str, str] = {}
        for plugin, result in self.call_registration("bridge_celery_config", options=self.options):
            for key, value in (result or {}).items():
                if key in merged and merged[key] != value:
                    raise ConfigurationError(
                        f"Celery setting {key!r} is set differently by plugins {owner[key]!r} and {plugin!r}",
                        None, None, "the plugins' options, or disable one with BRIDGE_DISABLE_PLUGINS",
                    )
                merged[key] = value
                owner[key] = plugin
        return merged

    def register_commands(self, cli: Any) -> None:
        """Let plugins add commands to the click group ``cli``."""
        self.call_registration("bridge_register_commands", cli=cli, options=self.options)

    # ---------------------------------------------------------------- machinery

    @staticmethod
    def _entry(
        table: dict[str, tuple[Spec, tuple[Impl, ...]]], hook: str, kind: str
    ) -> tuple[Spec, tuple[Impl, ...]]:
        entry = table.get(hook)
        if entry is None:
            raise ValueError(f"{hook!r} is not a {kind} hook; known: {', '.join(table)}")
        return entry

    def _bind(self, ctx: JobContext) -> None:
        # A context made directly (not via Hooks.context) still lets plugins see options.
        if not ctx.options and self.options:
            ctx.options = self.options

    def _pipeline(self, spec: Spec, impls: tuple[Impl, ...], ctx: JobContext, value: Any) -> Any:
        self._bind(ctx)
        for impl in impls:
            result = self._call_transform(spec, impl, ctx, value)
            if result is not None:
                value = result
        return value

    async def _apipeline(self, spec: Spec, impls: tuple[Impl, ...], ctx: JobContext, value: Any) -> Any:
        self._bind(ctx)
        for impl in impls:
            # inlined rather than awaiting _acall_transform: one coroutine less per plugin
            try:
                result = impl.call(ctx, value)
                if impl.is_async:
                    result = await result
            except Exception as exc:
                raise plugin_error(spec, impl.plugin, ctx, exc) from exc
            if result is not None:
                value = result
        return value

    def _first(self, spec: Spec, impls: tuple[Impl, ...], ctx: JobContext, value: Any) -> tuple[bool, Any]:
        self._bind(ctx)
        for impl in impls:
            result = self._call_transform(spec, impl, ctx, value)
            if result is not None:
                return True, result
        return _MISS

    async def _afirst(self, spec: Spec, impls: tuple[Impl, ...], ctx: JobContext, value: Any) -> tuple[bool, Any]:
        self._bind(ctx)
        for impl in impls:
            result = await self._acall_transform(spec, impl, ctx, value)
            if result is not None:
                return True, result
        return _MISS

    def _call_transform(self, spec: Spec, impl: Impl, ctx: JobContext, value: Any) -> Any:
        try:
            result = impl.call(ctx, value)
            if impl.is_async:
                result = self._run_coroutine(impl, result)
            return result
        except Exception as exc:
            raise plugin_error(spec, impl.plugin, ctx, exc) from exc

    async def _acall_transform(self, spec: Spec, impl: Impl, ctx: JobContext, value: Any) -> Any:
        try:
            result = impl.call(ctx, value)
            if impl.is_async:
                result = await result
            return result
        except Exception as exc:
            raise plugin_error(spec, impl.plugin, ctx, exc) from exc

    def _call_registration(self, spec: Spec, impl: Impl, kwargs: dict[str, Any]) -> Any:
        try:
            result = impl.function(*[kwargs.get(name) for name in impl.argnames])
            if impl.is_async:
                result = self._run_coroutine(impl, result)
            return result
        except BridgeError:
            raise
        except Exception as exc:
            raise registration_error(spec, impl, exc) from exc

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
