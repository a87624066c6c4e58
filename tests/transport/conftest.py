"""Fixtures for the transport tests: real loopback peers and one blocking face over both
transports.

- ``origin``: an endpoint-shaped aiohttp app on 127.0.0.1 that records what it received
  (``/v2/ep/run`` redirects, ``/v2/ep/health`` answers and sets a cookie,
  ``/v2/ep/status/<job>`` holds its answer until the test ends: a read timeout;
  ``/v2/ep/cancel/<job>`` closes the connection without answering);
- ``forward_proxy``: a forwarding HTTP proxy on 127.0.0.1 recording the requests it saw;
- ``sender``: parametrised over ``requests`` and ``aiohttp``; ``sender()`` makes a
  :class:`Sender` (a transport, optionally over a borrowed session), closed at the end.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web

from bridge.testing import AppServer
from bridge.transport import AiohttpTransport, Reply, RequestsTransport
from bridge.wire import Call

PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
              "NO_PROXY", "no_proxy")
CA_VARS = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")
#: A Location with credentials in it: the error must name the place, never the password.
REDIRECT_TO = "http://user:hunter2secret@127.0.0.1:9/elsewhere/v2/ep/run"


class Origin:
    """The recording peer; ``url`` is its base (``http://127.0.0.1:<port>``)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []  # method, path, headers
        self.release: asyncio.Event | None = None
        app = web.Application()
        app.router.add_post("/v2/ep/run", self._redirect)
        app.router.add_get("/v2/ep/health", self._health)
        app.router.add_get("/v2/ep/status/{job}", self._held)
        app.router.add_post("/v2/ep/cancel/{job}", self._hang_up)
        app.router.add_route("*", "/elsewhere/{tail:.*}", self._record_only)
        self.server = _Server(app, ssl_context)
        self.url = self.server.url

    async def _record(self, request: web.Request) -> None:
        self.seen.append((request.method, request.path, dict(request.headers)))

    async def _redirect(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(status=302, headers={"Location": REDIRECT_TO}, text="moved")

    async def _health(self, request: web.Request) -> web.Response:
        await self._record(request)
        response = web.json_response({"workers": {"idle": 1}})
        response.set_cookie("session", "abc123", path="/")
        return response

    async def _held(self, request: web.Request) -> web.Response:
        await self._record(request)
        if self.release is None:
            self.release = asyncio.Event()
        await asyncio.wait_for(self.release.wait(), 60)
        return web.json_response({"id": request.match_info["job"], "status": "COMPLETED"})

    async def _hang_up(self, request: web.Request) -> web.Response:
        await self._record(request)
        assert request.transport is not None
        request.transport.close()  # no answer at all
        return web.Response(status=500)

    async def _record_only(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"id": "followed", "status": "IN_QUEUE"})

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.seen]

    def close(self) -> None:
        def release() -> None:
            if self.release is not None:
                self.release.set()

        self.server.loop.call_soon_threadsafe(release)
        self.server.close()


class _Server(AppServer):
    """AppServer, with TLS when given a context."""

    def __init__(self, app: web.Application, ssl_context: ssl.SSLContext | None) -> None:
        self._ssl_context = ssl_context
        super().__init__(app, access_log_class=None)
        if ssl_context is not None:
            self.url = f"https://{self.host}:{self.port}"

    async def _start(self, port: int) -> int:
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, port, ssl_context=self._ssl_context)
        await site.start()
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]


class ForwardProxy:
    """A forwarding proxy: requests arrive in absolute form (``GET http://host/path``) and
    are sent on; ``seen`` holds each request's method and full URL."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        self.server = AppServer(app)
        self.url = self.server.url

    async def _open(self, app: web.Application) -> None:
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())

    async def _close(self, app: web.Application) -> None:
        await self.session.close()

    async def _forward(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, str(request.url)))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self.session.request(request.method, str(request.url), data=await request.read(),
                                        headers=headers, allow_redirects=False) as resp:
            body = await resp.read()
            kept = {k: v for k, v in resp.headers.items() if k.lower() in ("content-type", "location")}
            return web.Response(status=resp.status, body=body, headers=kept)

    def close(self) -> None:
        self.server.close()


class Sender:
    """One transport behind a blocking ``send``: RequestsTransport directly, AiohttpTransport
    on an event loop of its own (the peers run on other threads)."""

    def __init__(self, kind: str, session: Any = None) -> None:
        self.kind = kind
        self.loop: asyncio.AbstractEventLoop | None = None
        if kind == "requests":
            self.transport: Any = RequestsTransport(session)
        else:
            self.loop = asyncio.new_event_loop()
            if session == "borrow":  # an aiohttp session must be made inside its loop
                session = self.loop.run_until_complete(_aiohttp_session())
            self.transport = AiohttpTransport(session)
        self.session = session

    def send(self, call: Call) -> Reply:
        if self.loop is None:
            return self.transport.send(call)  # type: ignore[no-any-return]
        return self.loop.run_until_complete(self.transport.send(call))  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.loop is None:
            self.transport.close()
            return
        self.loop.run_until_complete(self.transport.aclose())
        if isinstance(self.session, aiohttp.ClientSession):
            self.loop.run_until_complete(self.session.close())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


async def _aiohttp_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()  # trust_env=False: it ignores HTTP_PROXY


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy or CA bundle from the machine running the tests."""
    for name in PROXY_VARS + CA_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def origin() -> Iterator[Origin]:
    peer = Origin()
    yield peer
    peer.close()


@pytest.fixture
def forward_proxy() -> Iterator[ForwardProxy]:
    proxy = ForwardProxy()
    yield proxy
    proxy.close()


@pytest.fixture(params=["requests", "aiohttp"])
def sender(request: pytest.FixtureRequest) -> Iterator[Callable[..., Sender]]:
    """``sender(session=None)``: a Sender of this run's kind; ``session="borrow"`` lends it
    a session of the library's defaults (a ``requests.Session()``, an
    ``aiohttp.ClientSession()``)."""
    made: list[Sender] = []

    def make(session: Any = None) -> Sender:
        if session == "borrow" and request.param == "requests":
            session = requests.Session()
            session.trust_env = False  # its own setting: no proxy from the environment
        made.append(Sender(request.param, session))
        return made[-1]

    make.kind = request.param  # type: ignore[attr-defined]
    yield make
    for one in made:
        one.close()


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1, made by the openssl command line."""
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@pytest.fixture
def tls_origin(self_signed: tuple[Path, Path]) -> Iterator[Origin]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*self_signed)
    peer = Origin(context)
    yield peer
    peer.close()
