"""Moving one request's bytes: the :class:`Transport` / :class:`AsyncTransport` protocols
(``send(call) -> Reply``) and their two implementations, :class:`RequestsTransport` and
:class:`AiohttpTransport`, which behave the same:

- a :class:`Reply` for every HTTP status, 3xx included: redirects are never followed (RunPod's
  API does not redirect; :meth:`bridge.wire.Wire.response` turns one into an error naming its
  Location);
- :class:`bridge.errors.TransportError` (from :func:`bridge.wire.transport_error`) when the
  endpoint could not be reached or the answer did not come within ``call.read_timeout``;
- ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` honoured, ``REQUESTS_CA_BUNDLE`` /
  ``SSL_CERT_FILE`` / ``CURL_CA_BUNDLE`` too (a passed-in session keeps its own settings);
- connect timeout :data:`bridge.wire.CONNECT_TIMEOUT`, no cookies, ``User-Agent:
  bridge/<version>`` unless the call sets one.

What a request means is decided elsewhere (:mod:`bridge.wire`); these only move bytes.
``bridge.testing`` has socket-free stand-ins (:class:`bridge.testing.StubTransport`).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import aiohttp
import requests
from aiohttp.helpers import get_env_proxy_for_url
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies
from yarl import URL

from bridge import __version__
from bridge.wire import CONNECT_TIMEOUT, Call, transport_error

__all__ = ["AiohttpTransport", "AsyncTransport", "Reply", "RequestsTransport", "Transport", "ca_bundle"]

#: Sent when a call sets no User-Agent, by both transports alike.
USER_AGENT = f"bridge/{__version__}"


@dataclass(frozen=True)
class Reply:
    """An HTTP answer, whatever its status. ``headers`` is case-insensitive as the library
    gave it."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@runtime_checkable
class Transport(Protocol):
    """Sends calls synchronously. ``send`` returns a :class:`Reply` for any HTTP status and
    raises :class:`bridge.errors.TransportError` when no answer came."""

    def send(self, call: Call) -> Reply: ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncTransport(Protocol):
    """The asyncio twin of :class:`Transport`."""

    async def send(self, call: Call) -> Reply: ...

    async def aclose(self) -> None: ...


def ca_bundle() -> str | None:
    """The CA bundle the environment names (``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE``,
    ``CURL_CA_BUNDLE``, first set wins), or None for each library's default verification."""
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        if os.environ.get(name):
            return os.environ[name]
    return None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


class RequestsTransport:
    """A :class:`Transport` on a pooled ``requests.Session``, safe to share between threads.

    ``RequestsTransport(session=None, *, pool_size=256)``. An owned session ignores
    ``trust_env``: left on, requests re-reads the proxy variables (and ~/.netrc) on every
    request, a quarter of the client's CPU; the proxy is resolved once per scheme and host
    instead. A passed-in session is borrowed: its own settings apply and ``close()`` leaves it.
    """

    def __init__(self, session: requests.Session | None = None, *, pool_size: int = 256) -> None:
        self._owned = session is None
        self.session = session if session is not None else self._new_session(pool_size)
        self._proxies: dict[tuple[str, str], dict[str, str]] = {}

    @staticmethod
    def _new_session(pool_size: int) -> requests.Session:
        session = requests.Session()
        # Retries are the caller's (its retry policy), so urllib3's are off; threads beyond
        # pool_size still work, on throw-away connections.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.trust_env = False
        session.verify = ca_bundle() or True
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # keep none
        session.headers["User-Agent"] = USER_AGENT
        return session

    def _proxy_for(self, url: str) -> dict[str, str]:
        key = _origin(url)
        proxies = self._proxies.get(key)
        if proxies is None:
            # http/https only, as aiohttp reads them: ALL_PROXY would route one of the two alone.
            found = get_environ_proxies(url)
            proxies = self._proxies[key] = {k: v for k, v in found.items() if k in ("http", "https")}
        return proxies

    def send(self, call: Call) -> Reply:
        try:
            resp = self.session.request(
                call.method, call.url, data=call.body, headers=call.headers,  # type: ignore[arg-type]
                timeout=(CONNECT_TIMEOUT, call.read_timeout), allow_redirects=False,
                proxies=self._proxy_for(call.url) if self._owned else None,
            )
        except requests.RequestException as exc:
            raise transport_error(call, exc) from None
        return Reply(resp.status_code, resp.headers, resp.content)

    def close(self) -> None:
        if self._owned:
            self.session.close()

    def __enter__(self) -> RequestsTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AiohttpTransport:
    """An :class:`AsyncTransport` on an ``aiohttp.ClientSession``.

    ``AiohttpTransport(session=None, *, limit=0, **connector_options)``: the owned session's
    ``TCPConnector`` gets ``limit`` (0: no cap, since each waiting job holds one long poll)
    and any other ``TCPConnector`` option (the gateway: ``limit=12000, ttl_dns_cache=300,
    enable_cleanup_closed=True``). The owned session is made on first use inside the running
    loop and made again for a new loop (one transport reused across ``asyncio.run`` calls);
    ``aclose()`` closes it, or else it closes as its loop shuts down, so it never warns
    "Unclosed client session". A passed-in session is borrowed: its own proxy settings
    (``trust_env``) apply and ``aclose()`` leaves it open.
    """

    def __init__(self, session: aiohttp.ClientSession | None = None, *, limit: int = 0,
                 **connector_options: Any) -> None:
        self._borrowed = session
        self._connector_options = {"limit": limit, **connector_options}
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._keeper: AsyncGenerator[None, None] | None = None
        self._proxies: dict[tuple[str, str], tuple[str | None, aiohttp.BasicAuth | None]] = {}
        self._ssl: ssl.SSLContext | bool = True
        bundle = ca_bundle()
        if bundle:
            self._ssl = ssl.create_default_context(cafile=bundle)

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session to use now (in a running loop)."""
        if self._borrowed is not None:
            return self._borrowed
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(**{"ssl": self._ssl, **self._connector_options}),
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": USER_AGENT},
                timeout=aiohttp.ClientTimeout(total=None),
            )
            self._loop = loop
            self._keeper = _park(self._session)
        return self._session

    def _proxy_for(self, url: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
        key = _origin(url)
        found = self._proxies.get(key)
        if found is None:
            # aiohttp's own trust_env=True would look these (and .netrc) up in a thread on
            # every request, which halved throughput.
            try:
                proxy, auth = get_env_proxy_for_url(URL(url))
                found = (str(proxy), auth)
            except LookupError:
                found = (None, None)
            self._proxies[key] = found
        return found

    async def send(self, call: Call) -> Reply:
        session = self.session
        proxy, proxy_auth = (None, None) if self._borrowed is not None else self._proxy_for(call.url)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=call.read_timeout)
        try:
            async with session.request(
                call.method, call.url, data=call.body, headers=call.headers, timeout=timeout,
                allow_redirects=False, proxy=proxy, proxy_auth=proxy_auth,
            ) as resp:
                return Reply(resp.status, resp.headers, await resp.read())
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise transport_error(call, exc) from None

    async def aclose(self) -> None:
        session, keeper = self._session, self._keeper
        self._session = self._keeper = None
        if session is None or session.closed:
            return
        # A session of another (finished) loop cannot be closed from this one; its loop
        # closed it at shutdown already.
        if self._loop is asyncio.get_running_loop():
            await session.close()
            if keeper is not None:
                await keeper.aclose()  # its session is closed already

    async def __aenter__(self) -> AiohttpTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _closes_at_loop_shutdown(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    """Parks until the loop finalises open async generators, then closes ``session``.

    ``asyncio.run`` (and any loop runner calling ``loop.shutdown_asyncgens()``) closes every
    async generator still open in the loop before closing the loop, which is the one
    documented hook at loop shutdown; a generator dropped earlier is finalised on its loop
    too. That lets an owned session close gracefully without the caller's ``aclose()``."""
    try:
        yield
    finally:
        await session.close()


def _park(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    """Start :func:`_closes_at_loop_shutdown` for ``session`` in the running loop, synchronously.

    Its first step awaits nothing, so one ``send(None)`` runs it to its ``yield``; the
    loop's first-iteration hook, called by that step, registers it for shutdown."""
    keeper = _closes_at_loop_shutdown(session)
    step = keeper.__anext__()
    try:
        step.send(None)
    except StopIteration:
        pass
    return keeper
