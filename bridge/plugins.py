"""Finding, configuring and registering plugins: :func:`make_plugin_manager`.

Sources, registered in this order (so, by pluggy's LIFO rule, called in the reverse order):

1. first-party plugins, package ``bridge_plugins`` (``plugins/`` in the repository): always
   *available*, *enabled* only when they have options (a cache never starts unasked);
2. entry points in the group ``bridge`` of installed distributions: enabled by default;
3. ``BRIDGE_PLUGINS=module:obj,name=module:obj,...``: enabled by default.

``BRIDGE_DISABLE_PLUGINS=name,...`` (or ``*``) turns any of them off, before import, so it is
also the way around a broken plugin. ``BRIDGE_DISABLE_PLUGIN_AUTOLOAD=1`` skips entry points.

A plugin object is a module or any object with ``@hookimpl`` functions; if a reference names
a *class*, it is instantiated: with one argument, that plugin's options dict, when its
constructor takes one, else with none.

Options: a JSON or TOML file named by ``BRIDGE_PLUGINS_CONFIG`` (``{"cache": {"ttl": 60}}``),
then ``BRIDGE_PLUGIN_<NAME>_<OPTION>=value`` environment variables on top (values parsed as
JSON when they parse, else kept as text; ``<NAME>`` is the plugin name upper-cased with
``-``/``.`` as ``_``). Nothing is read at import time.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pluggy

from bridge import hookspecs
from bridge.errors import ConfigurationError, scrub

__all__ = [
    "FIRST_PARTY",
    "declared_hooks",
    "PluginInfo",
    "PluginManager",
    "make_plugin_manager",
    "read_options",
]

#: First-party plugins: name → ``module:object`` in the ``bridge_plugins`` package.
#: Registration order matters where two are both tryfirst: ``schema`` (registered after
#: ``cache``) checks an output before ``cache`` stores it.
FIRST_PARTY: dict[str, str] = {
    "openai_chat": "bridge_plugins.openai_chat:OpenAIChatPlugin",
    "cache": "bridge_plugins.cache:CachePlugin",
    "schema": "bridge_plugins.schema:SchemaPlugin",
    "metrics": "bridge_plugins.metrics:MetricsPlugin",
    "redact": "bridge_plugins.redact:RedactPlugin",
}

ENTRY_POINT_GROUP = "bridge"
_HINT = "the plugin's package, BRIDGE_PLUGINS, BRIDGE_DISABLE_PLUGINS (to turn it off) and its options"


@dataclass
class PluginInfo:
    """What ``bridge plugins`` shows about one available plugin."""

    name: str
    source: str  # "first-party", "entry point <dist> <version>", "BRIDGE_PLUGINS"
    ref: str  # module:object
    enabled: bool
    reason: str = ""  # why it is disabled
    error: str = ""  # why it failed to load (only with strict=False)
    hooks: list[str] = field(default_factory=list)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus what bridge knows about each plugin (``infos``, ``options``)."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.options: dict[str, dict[str, Any]] = {}


def make_plugin_manager(
    *,
    environ: Mapping[str, str] | None = None,
    first_party: bool = True,
    entry_points: bool | None = None,
    extra: Mapping[str, Any] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    strict: bool = True,
) -> PluginManager:
    """Build a plugin manager from settings: discover, configure, register, ``check_pending()``.

    ``environ`` defaults to ``os.environ``. ``extra`` (name → plugin object or class) and
    ``options`` (name → options, over the settings) are for tests and embedding. Raises
    :class:`~bridge.errors.ConfigurationError` naming the plugin when one cannot be imported,
    instantiated or validated, or implements an unknown hook. With ``strict=False`` (what
    ``bridge plugins`` uses) such a plugin is recorded in ``pm.infos`` with its ``error`` and
    skipped instead.
    """
    env = os.environ if environ is None else environ
    pm = PluginManager()
    disabled = _split(env.get("BRIDGE_DISABLE_PLUGINS", ""))
    if entry_points is None:
        entry_points = env.get("BRIDGE_DISABLE_PLUGIN_AUTOLOAD", "").lower() not in ("1", "true", "yes")

    # (name, ref-or-object, source, enabled-by-default)
    candidates: list[tuple[str, Any, str, bool]] = []
    if first_party:
        candidates += [(name, ref, "first-party", False) for name, ref in FIRST_PARTY.items()]
    if entry_points:
        candidates += _entry_point_candidates()
    for item in _split(env.get("BRIDGE_PLUGINS", "")):
        name, _, ref = item.rpartition("=")
        candidates.append((name or _default_name(ref), ref, "BRIDGE_PLUGINS", True))
    for name, obj in (extra or {}).items():
        candidates.append((name, obj, "extra", True))

    names = [c[0] for c in candidates]
    settings = read_options(env, names)
    for name, opts in (options or {}).items():
        settings[name] = {**settings.get(name, {}), **opts}

    seen: dict[str, str] = {}
    for name, ref, source, default_on in candidates:
        opts = settings.get(name, {})
        ref_text = ref if isinstance(ref, str) else _describe(ref)
        info = PluginInfo(name, source, ref_text, False)
        try:
            if name in seen:
                raise ConfigurationError(
                    f"two plugins are named {name!r} ({seen[name]} and {source})", None, None, _HINT
                )
            seen[name] = source
            pm.infos[name] = info
            explicit = opts.get("enabled")
            if "*" in disabled or name in disabled:
                info.reason = "disabled by BRIDGE_DISABLE_PLUGINS"
            elif explicit is not None and not _truthy(explicit):
                info.reason = "disabled by its 'enabled' option"
            elif not default_on and not opts:
                info.reason = f"not configured (set BRIDGE_PLUGIN_{_env_name(name)}_<OPTION>)"
                if source == "first-party":
                    try:
                        info.hooks = declared_hooks(_load(name, ref, source))
                    except ConfigurationError as exc:
                        # An inert plugin whose optional dependency is missing (the
                        # `plugins` extra) must not stop anything; it is listed as such.
                        info.error = str(exc)
            else:
                info.enabled = True
            if info.enabled:
                _register(pm, name, ref, source, opts, info)
        except ConfigurationError as exc:
            if strict:
                raise
            info.enabled = False
            info.error = str(exc)
            if pm.infos.get(name) is not info:  # a second plugin with a taken name
                pm.infos[f"{name} ({source})"] = info
    pm.check_pending()  # a safety net: _register already checked each plugin
    return pm


def _register(pm: PluginManager, name: str, ref: Any, source: str, opts: dict[str, Any], info: PluginInfo) -> None:
    plugin = _instantiate(name, _load(name, ref, source), source, opts)
    try:
        pm.register(plugin, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        raise ConfigurationError(
            f"plugin {name!r} ({source}) does not fit bridge's hooks: {_one_line(scrub(str(exc)))}",
            None, None, _HINT,
        ) from exc
    callers = pm.get_hookcallers(plugin) or []
    unknown = [
        c.name for c in callers
        if not c.has_spec() and not any(i.optionalhook for i in c.get_hookimpls() if i.plugin is plugin)
    ]
    if unknown:
        pm.unregister(plugin)
        raise ConfigurationError(
            f"plugin {name!r} ({source}) implements unknown hook(s): {', '.join(sorted(unknown))}",
            None, None, "the hook names in docs/plugins.md (a typo?)",
        )
    pm.options[name] = dict(opts)
    info.hooks = sorted(c.name for c in callers)


def declared_hooks(obj: Any) -> list[str]:
    """Hook names ``obj`` (module, class or instance) marks with ``@hookimpl``, without registering it."""
    marker = f"{hookspecs.PROJECT}_impl"
    found = set()
    for attr in dir(obj):
        opts = getattr(getattr(obj, attr, None), marker, None)
        if isinstance(opts, dict):
            found.add(opts.get("specname") or attr)
    return sorted(found)


# ------------------------------------------------------------------------------ options


def read_options(environ: Mapping[str, str], names: list[str]) -> dict[str, dict[str, Any]]:
    """Per-plugin options: the ``BRIDGE_PLUGINS_CONFIG`` file, then ``BRIDGE_PLUGIN_*`` env.

    An env var is attributed to the *longest* known plugin name that prefixes it, so
    ``BRIDGE_PLUGIN_OPENAI_CHAT_MODE`` is option ``mode`` of ``openai_chat``.
    """
    result: dict[str, dict[str, Any]] = {}
    path = environ.get("BRIDGE_PLUGINS_CONFIG")
    if path:
        for name, opts in _read_config_file(path).items():
            if not isinstance(opts, dict):
                raise ConfigurationError(
                    f"{path}: the options of plugin {name!r} must be a table/object", None, None,
                    "BRIDGE_PLUGINS_CONFIG (format in docs/plugins.md)",
                )
            result[name] = dict(opts)
    by_env = sorted(((_env_name(n), n) for n in names), key=lambda p: -len(p[0]))
    for key, raw in environ.items():
        if not key.startswith("BRIDGE_PLUGIN_") or key.startswith("BRIDGE_PLUGINS"):
            continue
        rest = key[len("BRIDGE_PLUGIN_"):]
        for env_name, name in by_env:
            if rest.startswith(env_name + "_") and len(rest) > len(env_name) + 1:
                option = rest[len(env_name) + 1:].lower()
                result.setdefault(name, {})[option] = _parse_value(raw)
                break
    return result


def _read_config_file(path: str) -> dict[str, Any]:
    hint = "BRIDGE_PLUGINS_CONFIG names a JSON (.json) or TOML (.toml) file"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read plugin options file {path}: {exc}", None, None, hint) from exc
    try:
        if path.endswith(".toml"):
            import tomllib

            data: Any = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"plugin options file {path} is not valid: {exc}", None, None, hint) from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"plugin options file {path} must hold an object/table", None, None, hint)
    return data


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _env_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


# ------------------------------------------------------------------------------ loading


def _entry_point_candidates() -> list[tuple[str, Any, str, bool]]:
    found = []
    seen: set[tuple[str, str]] = set()
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        # one distribution reachable twice on sys.path lists its entry points twice
        if (ep.name, ep.value) in seen:
            continue
        seen.add((ep.name, ep.value))
        dist = getattr(ep, "dist", None)
        source = f"entry point {dist.name} {dist.version}" if dist is not None else "entry point"
        found.append((ep.name, ep, source, True))
    return found


def _default_name(ref: str) -> str:
    module, _, attr = ref.partition(":")
    return attr or module.rsplit(".", 1)[-1]


def _describe(obj: Any) -> str:
    if isinstance(obj, metadata.EntryPoint):
        return obj.value
    if inspect.ismodule(obj):
        return obj.__name__
    target = obj if inspect.isclass(obj) else type(obj)
    return f"{target.__module__}:{target.__qualname__}"


def _load(name: str, ref: Any, source: str) -> Any:
    """Import ``ref`` (entry point, ``module:attr`` text or an object); errors name the plugin."""
    try:
        if isinstance(ref, metadata.EntryPoint):
            return ref.load()
        if isinstance(ref, str):
            module_name, _, attr = ref.partition(":")
            obj: Any = importlib.import_module(module_name)
            for part in filter(None, attr.split(".")):
                obj = getattr(obj, part)
            return obj
        return ref
    except Exception as exc:  # import errors of any kind must name the plugin
        raise ConfigurationError(
            f"plugin {name!r} ({source}) failed to load: {type(exc).__name__}: {scrub(str(exc))}",
            None, None, _HINT,
        ) from exc


def _instantiate(name: str, obj: Any, source: str, opts: dict[str, Any]) -> Any:
    """A class is built (with its options when its constructor takes an argument)."""
    if not inspect.isclass(obj):
        return obj
    try:
        takes_options = bool(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        takes_options = True
    try:
        factory: Any = obj
        return factory(dict(opts)) if takes_options else factory()
    except ConfigurationError as exc:
        if name in exc.message:
            raise
        raise ConfigurationError(
            f"plugin {name!r} ({source}) rejected its options: {exc.message}", None, None, exc.hint
        ) from exc
    except Exception as exc:
        raise ConfigurationError(
            f"plugin {name!r} ({source}) failed to start: {type(exc).__name__}: {scrub(str(exc))}",
            None, None, _HINT,
        ) from exc
