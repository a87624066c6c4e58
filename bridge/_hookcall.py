"""How ``bridge.hooks.Hooks`` finds and calls implementations: the table of hooks read from
the specs' marks (``bridge.hookspecs``: transform / first_answer / observer / registration),
the call-order snapshot of each hook, adapters for impls taking a subset of the arguments,
and errors that name the plugin. Internal to the hooks runner; plugins never import it.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import logging
from collections.abc import Callable, Container, Iterable
from typing import Any, NamedTuple

import pluggy

from bridge import hookspecs
from bridge.errors import BridgeError, ConfigurationError, scrub

logger = logging.getLogger("bridge.hooks")

OBSERVER_PREFIX = "bridge_on_"


class Spec(NamedTuple):
    """One hook as its spec declares it."""

    name: str
    kind: hookspecs.Kind
    argnames: tuple[str, ...]
    #: transforms: what a plugin's non-bridge exception becomes (naming the plugin)
    failure: type[BridgeError]

    @property
    def event(self) -> str:
        """An observer's event name: ``bridge_on_completed`` → ``completed``."""
        return self.name[len(OBSERVER_PREFIX):]


class Impl(NamedTuple):
    plugin: str
    call: Callable[..., Any]  # takes the hook's spec arguments positionally, in spec order
    function: Callable[..., Any]
    argnames: tuple[str, ...]
    is_async: bool


def spec_table(pm: pluggy.PluginManager | None) -> dict[str, Spec]:
    """Every marked spec: bridge's own (``bridge.hookspecs``, in definition order), then any
    other marked spec ``pm`` was given with ``pm.add_hookspecs(...)``."""
    table = dict(_bridge_specs())
    if pm is not None:
        table.update(_specs_from(vars(pm.hook).values(), skip=table))
    return table


@functools.cache
def _bridge_specs() -> tuple[tuple[str, Spec], ...]:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    found = _specs_from(vars(pm.hook).values(), skip={})
    order = list(vars(hookspecs))  # definition order: EVENTS keeps the documented order
    return tuple(sorted(found.items(), key=lambda item: order.index(item[0])))


def _specs_from(callers: Iterable[Any], skip: Container[str]) -> dict[str, Spec]:
    found: dict[str, Spec] = {}
    for caller in callers:
        spec = getattr(caller, "spec", None)
        kind = getattr(getattr(spec, "function", None), hookspecs.KIND, None)
        if spec is None or kind is None or spec.name in skip:
            continue
        found[spec.name] = _checked(Spec(
            spec.name, kind, tuple(spec.argnames) + tuple(spec.kwargnames),
            getattr(spec.function, hookspecs.FAILURE, BridgeError),
        ))
    return found


def _checked(spec: Spec) -> Spec:
    """The calling conventions the runner relies on (a malformed spec fails at once)."""
    if spec.kind in ("transform", "first_answer") and (len(spec.argnames) != 2 or spec.argnames[0] != "ctx"):
        raise TypeError(f"{spec.kind} hook {spec.name} must take (ctx, <value>), not {spec.argnames}")
    if spec.kind == "observer" and (not spec.name.startswith(OBSERVER_PREFIX) or "ctx" not in spec.argnames):
        raise TypeError(f"observer hook {spec.name} must be named {OBSERVER_PREFIX}<event> and take ctx")
    return spec


def observer_events() -> tuple[str, ...]:
    """The events of bridge's own observer hooks, in definition order."""
    return tuple(spec.event for _, spec in _bridge_specs() if spec.kind == "observer")


def log_observer_error(impl: Impl, event: str) -> None:
    logger.warning("plugin %r failed in %s%s (ignored)", impl.plugin, OBSERVER_PREFIX, event, exc_info=True)


def close_loops(loops: list[asyncio.AbstractEventLoop]) -> None:
    while loops:
        loop = loops.pop()
        if not loop.is_running():
            loop.close()


def plugin_error(spec: Spec, plugin: str, ctx: Any, exc: Exception) -> BridgeError:
    """Name the plugin in whatever it raised; other exceptions become ``spec.failure``."""
    if isinstance(exc, BridgeError):
        if plugin in exc.message:
            return exc
        # Same class and fields, message prefixed with the plugin, so a veto says who vetoed.
        try:
            named = copy.copy(exc)
        except Exception:
            return exc
        named.message = f"plugin {plugin!r}: {exc.message}"
        named.job_id = exc.job_id or ctx.job_id
        named.endpoint_id = exc.endpoint_id or ctx.endpoint_id
        return named
    text = f"plugin {plugin!r} failed in {spec.name}: {type(exc).__name__}: {scrub(str(exc))}"
    hint = "the plugin's options and logs, or disable it with BRIDGE_DISABLE_PLUGINS"
    return spec.failure(text, ctx.job_id, ctx.endpoint_id, hint)


def registration_error(spec: Spec, impl: Impl, exc: Exception) -> ConfigurationError:
    return ConfigurationError(
        f"plugin {impl.plugin!r} failed in {spec.name}: {type(exc).__name__}: {scrub(str(exc))}",
        None, None, "the plugin's options, or disable it with BRIDGE_DISABLE_PLUGINS",
    )


def collect(pm: pluggy.PluginManager, spec: Spec) -> tuple[Impl, ...]:
    caller = getattr(pm.hook, spec.name, None)
    if caller is None:
        return ()
    adapt = spec.kind in ("transform", "first_answer")
    impls = []
    # get_hookimpls() is in reverse call order (pluggy calls reversed(...)): trylast first.
    for hookimpl in reversed(caller.get_hookimpls()):
        if hookimpl.wrapper or hookimpl.hookwrapper:
            raise ConfigurationError(
                f"plugin {hookimpl.plugin_name!r} implements {spec.name} as a wrapper, which bridge does not run",
                None, None, "use tryfirst/trylast to order pipeline steps instead of wrapper=True",
            )
        function = hookimpl.function
        argnames = tuple(hookimpl.argnames) + tuple(hookimpl.kwargnames)
        impls.append(Impl(
            hookimpl.plugin_name,
            _adapter(function, argnames, spec.argnames) if adapt else function,
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
