"""RequestsTransport and AiohttpTransport against real loopback peers: the same behaviour
from both (each test runs once per transport through the ``sender`` fixture)."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import pickle
import socket
import warnings
from collections.abc import Iterator

import pytest

from bridge import __version__, errors
from bridge.transport import AiohttpTransport, AsyncTransport, Reply, RequestsTransport, Transport
from bridge.wire import Call, Wire

from .conftest import REDIRECT_TO, ForwardProxy, Origin


def wire_for(base: str) -> Wire:
    return Wire("ep", base_url=f"{base}/v2")


def test_both_transports_satisfy_their_protocol() -> None:
    assert isinstance(RequestsTransport(), Transport)
    assert isinstance(AiohttpTransport(), AsyncTransport)


def test_a_redirect_is_a_reply_not_followed_and_the_wire_names_its_location(origin: Origin, sender) -> None:
    wire = wire_for(origin.url)
    call = wire.run({"x": 1})
    reply = sender().send(call)
    assert isinstance(reply, Reply) and reply.status == 302
    assert reply.headers["location"] == REDIRECT_TO  # case-insensitive, as the library gave it
    assert origin.paths() == ["/v2/ep/run"]  # nothing went where it pointed
    with pytest.raises(errors.EndpointError) as info:
        wire.response(call, reply.status, reply.headers, reply.body)
    err = info.value
    assert type(err) is errors.EndpointError and err.status_code == 302 and err.endpoint_id == "ep"
    assert "127.0.0.1:9/elsewhere/v2/ep/run" in str(err) and "does not follow redirects" in str(err)
    assert "hunter2secret" not in repr(err.args)
    assert "does not redirect" in err.hint and "base URL" in err.hint
    assert str(pickle.loads(pickle.dumps(err))) == str(err)  # survives a result backend


def test_the_environment_proxy_is_used_once_resolved_and_no_proxy_bypasses_it(
    origin: Origin, forward_proxy: ForwardProxy, sender, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    monkeypatch.setenv("http_proxy", forward_proxy.url)
    call = wire_for(origin.url).health()
    proxied = sender()
    assert proxied.send(call).status == 200
    assert forward_proxy.seen == [("GET", f"{origin.url}/v2/ep/health")]
    # Resolved once per scheme and host: a later change of the environment is not re-read.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert proxied.send(call).status == 200
    assert len(forward_proxy.seen) == 2
    # A transport made now reads NO_PROXY and goes straight to the origin.
    assert sender().send(call).status == 200
    assert len(forward_proxy.seen) == 2 and origin.paths() == ["/v2/ep/health"] * 3


def test_all_proxy_is_ignored_by_both(origin: Origin, forward_proxy: ForwardProxy, sender,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALL_PROXY", forward_proxy.url)
    monkeypatch.setenv("all_proxy", forward_proxy.url)
    assert sender().send(wire_for(origin.url).health()).status == 200
    assert forward_proxy.seen == [] and origin.paths() == ["/v2/ep/health"]


def test_a_borrowed_session_keeps_its_own_proxy_settings_and_stays_open(
    origin: Origin, forward_proxy: ForwardProxy, sender, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    monkeypatch.setenv("http_proxy", forward_proxy.url)
    borrowing = sender("borrow")  # a session that does not trust the environment
    assert borrowing.send(wire_for(origin.url).health()).status == 200
    assert forward_proxy.seen == [] and origin.paths() == ["/v2/ep/health"]
    if borrowing.loop is None:
        borrowing.transport.close()
        assert borrowing.send(wire_for(origin.url).health()).status == 200  # still usable
    else:
        borrowing.loop.run_until_complete(borrowing.transport.aclose())
        assert not borrowing.session.closed


def refused_port() -> Iterator[int]:
    """A port bound but not listening: connecting is refused, and no one else can take it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> Iterator[int]:
    yield from refused_port()


def test_connection_refused_is_the_same_transport_error_from_both(closed_port: int, sender) -> None:
    call = Wire("ep", base_url=f"http://127.0.0.1:{closed_port}/v2").status("job-1")
    with pytest.raises(errors.TransportError) as info:
        sender().send(call)
    err = info.value
    assert str(err) == (
        f"GET /status to http://127.0.0.1:{closed_port}/v2 failed: connection refused "
        f"[endpoint ep, job job-1]. Check: {errors.TransportError.default_hint}"
    )
    assert (err.job_id, err.endpoint_id) == ("job-1", "ep")
    assert str(pickle.loads(pickle.dumps(err))) == str(err)


def test_a_read_timeout_is_the_same_transport_error_from_both(origin: Origin, sender) -> None:
    call = dataclasses.replace(wire_for(origin.url).status("job-2"), read_timeout=0.3)
    with pytest.raises(errors.TransportError) as info:
        sender().send(call)
    assert str(info.value) == (
        f"GET /status to {origin.url}/v2 failed: no answer within 0.3 s (read timeout) "
        f"[endpoint ep, job job-2]. Check: {errors.TransportError.default_hint}"
    )
    assert origin.paths() == ["/v2/ep/status/job-2"]  # it was reached: the answer was late


def test_a_connection_closed_without_an_answer_is_the_same_transport_error_from_both(
    origin: Origin, sender
) -> None:
    with pytest.raises(errors.TransportError) as info:
        sender().send(wire_for(origin.url).cancel("job-3"))
    assert str(info.value).startswith(
        f"POST /cancel to {origin.url}/v2 failed: the connection closed before the answer [endpoint ep, job job-3]"
    )


def test_no_cookies_are_kept_and_the_user_agent_is_bridges(origin: Origin, sender) -> None:
    # By name: aiohttp's jar would keep no cookie for an IP address anyway.
    base = origin.url.replace("127.0.0.1", "localhost")
    bare = Call("GET", f"{base}/v2/ep/health", "health", {"Accept": "application/json"})
    one = sender()
    assert one.send(bare).headers["Set-Cookie"].startswith("session=abc123")
    assert one.send(bare).status == 200
    assert one.send(wire_for(base).health()).status == 200
    sent = [headers for _, _, headers in origin.seen]
    assert all("Cookie" not in headers for headers in sent)
    assert [h["User-Agent"] for h in sent] == [f"bridge/{__version__}"] * 3


def test_tls_is_verified_and_a_ca_bundle_from_the_environment_is_trusted(
    tls_origin: Origin, self_signed, sender, monkeypatch: pytest.MonkeyPatch
) -> None:
    call = wire_for(tls_origin.url).health()
    with pytest.raises(errors.TransportError) as info:
        sender().send(call)
    assert f"GET /health to {tls_origin.url}/v2 failed: TLS failed:" in str(info.value)
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    assert tls_origin.seen == []
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        with monkeypatch.context() as env:
            env.setenv(name, str(self_signed[0]))
            assert sender().send(call).status == 200
    assert tls_origin.paths() == ["/v2/ep/health"] * 2


def test_an_owned_aiohttp_session_follows_the_loop_and_closes_with_it(origin: Origin) -> None:
    """One transport across two asyncio.run calls (a Celery task per call): a session per
    loop, each closed as its loop shuts down, with no "Unclosed client session" warning."""
    transport = AiohttpTransport()
    call = wire_for(origin.url).health()
    sessions = []

    async def use() -> int:
        reply = await transport.send(call)
        sessions.append(transport.session)
        return reply.status

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert asyncio.run(use()) == 200
        assert asyncio.run(use()) == 200
        gc.collect()
    assert sessions[0] is not sessions[1]
    assert all(session.closed for session in sessions)
    assert not [w for w in caught if "Unclosed" in str(w.message)]
