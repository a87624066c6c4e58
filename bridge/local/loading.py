"""Turning a handler spec (``path/to/file.py:function`` or ``package.module:function``) into a callable."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

from bridge import errors

Handler = Callable[[dict[str, Any]], Any]

#: How a handler is run; RunPod's worker tells the same four kinds apart with ``inspect``.
SYNC, ASYNC, SYNC_GEN, ASYNC_GEN = "sync", "async", "sync-generator", "async-generator"


def echo(job: dict[str, Any]) -> Any:
    """The default handler: returns the job's input unchanged."""
    return job["input"]


def load_handler(spec: str | Handler | None) -> Handler:
    """A callable handler from a callable, a spec string, or None (the echo handler)."""
    if spec is None:
        return echo
    if callable(spec):
        return spec
    target, sep, name = str(spec).rpartition(":")
    if not sep or not target or not name:
        raise errors.ConfigurationError(
            f"handler spec {spec!r} is not 'path/to/file.py:function' or 'package.module:function'",
            None, None, "the HANDLER argument of bridge serve / LocalEndpoint",
        )
    if target.endswith(".py") or os.sep in target or "/" in target:
        module = _load_file(target, str(spec))
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (target == exc.name or target.startswith(exc.name + ".")):
                raise _import_failed(target, spec, exc) from None  # it imports a missing one
            raise errors.ConfigurationError(
                f"cannot import module {target!r} for handler {spec!r}: {errors.scrub(str(exc))}",
                None, None, "that the module is importable (PYTHONPATH, virtualenv)",
            ) from None
        except (Exception, SystemExit) as exc:  # noqa: BLE001 (any failure of user code at import)
            raise _import_failed(target, spec, exc) from None
    handler = getattr(module, name, None)
    if handler is None:
        raise errors.ConfigurationError(
            f"{target!r} has no callable named {name!r}", None, None, "the function name after ':'"
        )
    if not callable(handler):
        raise errors.ConfigurationError(
            f"{target}:{name} is not callable (it is the {type(handler).__name__} {handler!r:.40})", None, None,
            "the function name after ':' (a function taking the job dict)",
        )
    return handler  # type: ignore[no-any-return]


def _import_failed(target: str, spec: str, exc: BaseException, file: bool = False) -> errors.ConfigurationError:
    """One line for a handler module that raised while being imported (a SyntaxError, a
    missing dependency, an exception at module level, a sys.exit)."""
    if isinstance(exc, SyntaxError):
        where = f" ({os.path.basename(exc.filename or '?')}, line {exc.lineno})" if exc.lineno else ""
        detail = f"SyntaxError: {exc.msg}{where}"
    elif isinstance(exc, SystemExit):
        detail = f"it called sys.exit({exc.code!r})"
    else:
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    what, check = (f"file {target!r}", f"that `python {target}` runs") if file else (
        f"module {target!r}", f"that `python -c 'import {target}'` works")
    return errors.ConfigurationError(
        f"cannot load handler {spec!r}: importing {what} failed with {errors.scrub(detail)}",
        None, None, f"{check} in this environment",
    )


def _load_file(path: str, handler_spec: str) -> Any:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise errors.ConfigurationError(
            f"handler file {path!r} does not exist", None, None, "the path (relative to the current directory)"
        )
    name = "bridge_handler_" + os.path.splitext(os.path.basename(full))[0]
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise errors.ConfigurationError(f"cannot load {path!r} as Python", None, None, "the file")
    module = importlib.util.module_from_spec(spec)
    # The file's directory goes on sys.path so it can import its neighbours, as
    # `python file.py` would allow.
    directory = os.path.dirname(full)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 (any failure of user code at import)
        del sys.modules[name]
        raise _import_failed(path, handler_spec, exc, file=True) from None
    return module


def handler_kind(handler: Handler) -> str:
    target = handler
    if not (inspect.isfunction(handler) or inspect.ismethod(handler)) and hasattr(handler, "__call__"):  # noqa: B004
        target = handler.__call__  # type: ignore[operator]
    if inspect.isasyncgenfunction(target):
        return ASYNC_GEN
    if inspect.iscoroutinefunction(target):
        return ASYNC
    if inspect.isgeneratorfunction(target):
        return SYNC_GEN
    return SYNC
