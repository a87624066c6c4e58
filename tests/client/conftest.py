"""Fixtures for the client tests.

``client`` is parametrised over the sync and the asyncio client so that one test body
covers both: the asyncio endpoint runs on a real event loop in a background thread and
is driven through :class:`~tests.client.util.AsyncFacade`, which turns each awaitable into
a blocking call and each async iterator into an iterator. The code under test is the real
one either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bridge.client import AsyncioEndpoint, Endpoint
from bridge.testing import LocalEndpoint

from .util import FAST_RETRY, AsyncFacade, EdgeProxy, LoopThread, WebhookReceiver


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(params=["sync", "async"])
def client(request: pytest.FixtureRequest, loop_thread: LoopThread) -> Iterator[Callable[..., Any]]:
    """``client(local, endpoint_id=None, **kwargs)``: our sync or asyncio client for a LocalEndpoint."""
    made: list[Any] = []

    def make(local: LocalEndpoint | str, endpoint_id: str | None = None, **kwargs: Any) -> Any:
        base_url = local if isinstance(local, str) else local.base_url
        eid = endpoint_id or ("test" if isinstance(local, str) else local.endpoint_id)
        kwargs.setdefault("retry", FAST_RETRY)
        kwargs.setdefault("base_url", base_url)
        if request.param == "sync":
            ep = Endpoint(eid, **kwargs)
            made.append(ep)
            return ep
        aep = AsyncioEndpoint(eid, **kwargs)
        made.append(aep)
        return AsyncFacade(aep, loop_thread)

    make.kind = request.param  # type: ignore[attr-defined]
    yield make
    for ep in made:
        if isinstance(ep, AsyncioEndpoint):
            loop_thread.run(ep.close())
        else:
            ep.close()


@pytest.fixture
def webhook_receiver() -> Iterator[Callable[..., WebhookReceiver]]:
    made: list[WebhookReceiver] = []

    def make(fail_first: int = 0) -> WebhookReceiver:
        receiver = WebhookReceiver(fail_first)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def edge_proxy() -> Iterator[Callable[..., EdgeProxy]]:
    """``edge_proxy(local, **EdgeProxy options)``: a proxy producing edges the endpoint can't."""
    made: list[EdgeProxy] = []

    def make(local: LocalEndpoint, **kwargs: Any) -> EdgeProxy:
        proxy = EdgeProxy(local.base_url, **kwargs)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()
