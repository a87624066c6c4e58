"""pytest plugin: the ``local_endpoint`` factory fixture.

Enable it with ``pytest_plugins = ["bridge.testing.pytest_plugin"]`` in a conftest.py, then::

    def test_my_code(local_endpoint):
        ep = local_endpoint(my_handler, endpoint_id="ep")   # LocalEndpoint arguments
        result = my_code(base_url=ep.base_url)
        assert ep.stats()["run"] == 1

Every endpoint the factory made is closed when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bridge.testing.endpoint import LocalEndpoint


@pytest.fixture
def local_endpoint() -> Iterator[Callable[..., LocalEndpoint]]:
    """Factory: ``local_endpoint(handler=None, **LocalEndpoint options) -> LocalEndpoint``."""
    made: list[LocalEndpoint] = []

    def make(handler: Any = None, **kwargs: Any) -> LocalEndpoint:
        endpoint = LocalEndpoint(handler, **kwargs)
        made.append(endpoint)
        return endpoint

    yield make
    for endpoint in reversed(made):
        endpoint.close()
