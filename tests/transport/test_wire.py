"""bridge.wire's transport_error and redirect mapping, without sockets (the transports'
own tests cover the same over real connections)."""

from __future__ import annotations

import socket
import ssl

import pytest

from bridge import errors
from bridge.client import _wire as old_path
from bridge.wire import Call, Wire, transport_error

WIRE = Wire("my-ep", base_url="http://u:pw@127.0.0.1:5/base/v2")


@pytest.mark.parametrize("call", [
    WIRE.run({"x": 1}), WIRE.runsync({}, 5), WIRE.status("a/b c"), WIRE.status("j", wait=3),
    WIRE.stream("j", wait=2), WIRE.cancel("j"), WIRE.retry("j"), WIRE.purge_queue(), WIRE.health(),
], ids=lambda call: call.route)
def test_the_module_function_reads_base_and_endpoint_back_from_the_url(call: Call) -> None:
    exc = ConnectionRefusedError(111, "Connection refused")
    from_url, from_wire = transport_error(call, exc), WIRE.transport_error(call, exc)
    assert str(from_url) == str(from_wire) and from_url.args == from_wire.args
    assert from_url.endpoint_id == "my-ep" and "//***@127.0.0.1:5/base/v2 failed" in str(from_url)
    assert "pw" not in str(from_url)


def test_a_call_of_another_shape_is_blamed_on_its_origin() -> None:
    err = transport_error(Call("GET", "http://127.0.0.1:7/x/y", "probe", {}), ConnectionResetError())
    assert err.message == "GET /probe to http://127.0.0.1:7 failed: the connection closed before the answer"
    assert err.endpoint_id is None


@pytest.mark.parametrize(("exc", "said"), [
    (socket.gaierror(-2, "Name or service not known"), "host name not resolved"),
    (TimeoutError(), "no answer within 3 s (read timeout)"),
    (ssl.SSLCertVerificationError(1, "certificate verify failed"), "TLS failed: certificate verify failed"),
    (ValueError("odd rpa_ABCDEFGH12345678 thing"), "ValueError: odd *** thing"),
])
def test_failures_are_named_by_what_happened(exc: BaseException, said: str) -> None:
    wrapped = RuntimeError("library wrapper")
    wrapped.__cause__ = exc
    for raised in (exc, wrapped):
        message = transport_error(WIRE.health(), raised).message
        assert message.startswith("GET /health to http://***@127.0.0.1:5/base/v2 failed: ")
        if raised is exc or not isinstance(exc, ValueError):
            assert message.endswith(said)


def test_a_redirect_without_location_is_still_an_error() -> None:
    call = WIRE.status("j1")
    with pytest.raises(errors.EndpointError) as info:
        WIRE.response(call, 301, {}, b"")
    assert type(info.value) is errors.EndpointError and info.value.status_code == 301
    assert "without a Location header" in str(info.value) and info.value.job_id == "j1"


def test_the_old_private_path_is_the_same_module_content() -> None:
    assert old_path.Wire is Wire and old_path.Call is Call and old_path.transport_error is transport_error
