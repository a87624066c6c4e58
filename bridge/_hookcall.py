"""How ``bridge.hooks.Hooks`` finds and calls implementations: the call-order snapshot of
each hook, adapters for impls taking a subset of the arguments, and errors that name the
plugin. Internal to the hooks runner; plugins never import it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import pluggy

from bridge import hookspecs
from bridge.errors import BridgeError, ConfigurationError, JobRejected, scrub

logger = logging.getLogger("bridge.hooks")


class Impl(NamedTuple):
    plugin: str
    call: Callable[..., Any]  # takes the hook's spec arguments positionally, in spec order
    function: Callable[..., Any]
    argnames: tuple[str, ...]
    is_async: bool


TRANSFORM_SPECS = {
    "bridge_transform_input": ("ctx", "input"),
    "bridge_lookup": ("ctx", "input"),
    "bridge_transform_output": ("ctx", "output"),
    "bridge_transform_chunk": ("ctx", "chunk"),
    "bridge_redact": ("ctx", "value"),
}

def log_observer_error(impl: Impl, event: str) -> None:
    logger.warning("plugin %r failed in bridge_on_%s (ignored)", impl.plugin, event, exc_info=True)


def close_loops(loops: list[asyncio.AbstractEventLoop]) -> None:
    while loops:
        loop = loops.pop()
        if not loop.is_running():
            loop.close()


def plugin_error(hook: str, plugin: str, ctx: Any, exc: Exception) -> BridgeError:
    """Name the plugin in whatever it raised; a failing input transform rejects the job."""
    if isinstance(exc, BridgeError):
        if plugin in exc.message:
            return exc
        # Same class and fields, message prefixed with the plugin, so a veto says who vetoed.
        args = list(exc.args)
        args[0] = f"plugin {plugin!r}: {exc.message}"
        args[1] = exc.job_id or ctx.job_id
        args[2] = exc.endpoint_id or ctx.endpoint_id
        try:
            return type(exc)(*args)
        except Exception:
            return exc
    text = f"plugin {plugin!r} failed in {hook}: {type(exc).__name__}: {scrub(str(exc))}"
    hint = "the plugin's options and logs, or disable it with BRIDGE_DISABLE_PLUGINS"
    if hook == "bridge_transform_input":
        return JobRejected(text, ctx.job_id, ctx.endpoint_id, hint)
    return BridgeError(text, ctx.job_id, ctx.endpoint_id, hint)


def hook_names() -> list[str]:
    return [name for name in dir(hookspecs) if name.startswith("bridge_")]


def hook_of(impl: Impl) -> str:
    return getattr(impl.function, "__name__", "a hook")


def collect(pm: pluggy.PluginManager, name: str) -> tuple[Impl, ...]:
    caller = getattr(pm.hook, name, None)
    if caller is None:
        return ()
    spec_args = TRANSFORM_SPECS.get(name)
    impls = []
    # get_hookimpls() is in reverse call order (pluggy calls reversed(...)): trylast first.
    for hookimpl in reversed(caller.get_hookimpls()):
        if hookimpl.wrapper or hookimpl.hookwrapper:
            raise ConfigurationError(
                f"plugin {hookimpl.plugin_name!r} implements {name} as a wrapper, which bridge does not run",
                None, None, "use tryfirst/trylast to order pipeline steps instead of wrapper=True",
            )
        function = hookimpl.function
        argnames = tuple(hookimpl.argnames) + tuple(hookimpl.kwargnames)
        impls.append(Impl(
            hookimpl.plugin_name,
            _adapter(function, argnames, spec_args) if spec_args else function,
            function,
            argnames,
            inspect.iscoroutinefunction(function),
        ))
    return tuple(impls)


def _adapter(function: Callable[..., Any], argnames: tuple[str, ...], spec: tuple[str, ...]) -> Callable[..., Any]:
    """A callable taking the spec's arguments positionally, for impls that take a subset."""
    if argnames == spec:
        return function
    if argnames == spec[1:]:
        return lambda ctx, value: function(value)
    if argnames == spec[:1]:
        return lambda ctx, value: function(ctx)
    if not argnames:
        return lambda ctx, value: function()
    index = [spec.index(name) for name in argnames]
    return lambda *values: function(*[values[i] for i in index])
