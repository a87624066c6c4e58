"""How a failed exchange becomes a :class:`bridge.errors.TransportError`: refused, DNS,
connect or read timeout, TLS and hang-up failures of either transport (requests or aiohttp)
read the same, naming the request, the base URL and what to check. The one mapping
:mod:`bridge.transport` uses (re-exported by :mod:`bridge.wire`)."""

from __future__ import annotations

import errno
import socket
import ssl
import sys
from http.client import RemoteDisconnected
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from bridge import errors
from bridge.known_keys import safe_text as _text

if TYPE_CHECKING:
    from bridge.wire import Call

__all__ = ["transport_error"]


def transport_error(
    call: Call, exc: BaseException, *, base_url: str | None = None, endpoint_id: str | None = None
) -> errors.TransportError:
    """The TransportError for ``exc``, which an HTTP library raised sending ``call``. Every
    transport comes here, so a refused connection or a read timeout reads the same whichever
    library met it. Without ``base_url``, it and the endpoint id are read back from the URL
    the Wire built."""
    if base_url is None:
        base_url, endpoint_id = _where(call)
    return errors.TransportError(
        f"{call.method} /{call.route} to {_text(base_url)} failed: {_failure(call, exc)}",
        call.job_id, endpoint_id,
    )


def _where(call: Call) -> tuple[str, str | None]:
    """(base URL, endpoint id) of a URL shaped ``{base}/{id}/{route}[/{job}][?query]`` (a
    job id is quoted: it holds no slash); else the URL's origin and no id."""
    path = call.url.split("?", 1)[0]
    if call.job_id is not None:
        path = path.rsplit("/", 1)[0]
    prefix, _, route = path.rpartition("/")
    base, _, quoted = prefix.rpartition("/")
    if route == call.route and quoted and "://" in base and not base.endswith("/"):
        return base, unquote(quoted)
    parts = urlsplit(call.url)
    return f"{parts.scheme}://{parts.netloc}", None


def _failure(call: Call, exc: BaseException) -> str:
    """What went wrong, in words that do not depend on the library: requests wraps urllib3
    wraps the socket error, aiohttp has its own classes, so the whole chain is searched."""
    chain = _chain(exc)
    if any(isinstance(e, OSError) and e.errno == errno.ECONNREFUSED for e in chain):
        return "connection refused"
    if any(isinstance(e, socket.gaierror) or _is(e, "aiohttp", "ClientConnectorDNSError") for e in chain):
        return "host name not resolved"
    if any(_is(e, "requests.exceptions", "ConnectTimeout") or _is(e, "aiohttp", "ConnectionTimeoutError")
           for e in chain):
        from bridge.wire import CONNECT_TIMEOUT  # here: bridge.wire imports this module

        return f"no connection within {CONNECT_TIMEOUT:g} s (connect timeout)"
    if any(isinstance(e, TimeoutError) or _is(e, "requests.exceptions", "ReadTimeout") for e in chain):
        return f"no answer within {call.read_timeout:g} s (read timeout)"
    tls = next((e for e in chain if isinstance(e, ssl.SSLError)), None)
    if tls is not None:
        return f"TLS failed: {_text(str(tls))}"
    if any(isinstance(e, (ConnectionResetError, BrokenPipeError, RemoteDisconnected))
           or _is(e, "aiohttp", "ServerDisconnectedError") for e in chain):
        return "the connection closed before the answer"
    return _text(f"{type(exc).__name__}: {exc}")


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it wraps (causes, contexts, urllib3's ``reason``,
    aiohttp's ``os_error``, exceptions passed as arguments)."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 32:
        e = todo.pop()
        if any(e is s for s in seen):
            continue
        seen.append(e)
        inner = [e.__cause__, e.__context__, getattr(e, "reason", None), getattr(e, "os_error", None), *e.args]
        todo.extend(x for x in inner if isinstance(x, BaseException))
    return seen


def _is(exc: BaseException, module: str, name: str) -> bool:
    """``isinstance(exc, module.name)`` without importing ``module``: a library not loaded
    raised nothing (wire stays free of HTTP libraries)."""
    cls = getattr(sys.modules.get(module), name, None)
    return isinstance(cls, type) and isinstance(exc, cls)
