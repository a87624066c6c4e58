"""Testing helpers users get too: a local endpoint on 127.0.0.1 and a pytest fixture.

- :class:`LocalEndpoint`: RunPod's endpoint API served in a background thread.
- :class:`AppServer`: any aiohttp app on 127.0.0.1 in a background thread (webhook receivers).
- :func:`wait_until`: poll a condition with a deadline (no sleeps for synchronisation).
- :class:`StubTransport` / :class:`AsyncStubTransport` and :func:`reply`: socket-free
  transports answering from a script per route, recording every call (unit tests of the
  lifecycle and the gateway).
- ``bridge.testing.pytest_plugin``: the ``local_endpoint`` factory fixture
  (``pytest_plugins = ["bridge.testing.pytest_plugin"]``).
"""

from __future__ import annotations

from bridge.testing.app_server import AppServer
from bridge.testing.endpoint import LocalEndpoint
from bridge.testing.stub_transport import AsyncStubTransport, StubTransport, reply
from bridge.testing.waiting import wait_until

__all__ = ["AppServer", "AsyncStubTransport", "LocalEndpoint", "StubTransport", "reply", "wait_until"]
