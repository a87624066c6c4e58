"""Testing helpers users get too: a local endpoint on 127.0.0.1 and a pytest fixture.

- :class:`LocalEndpoint`: RunPod's endpoint API served in a background thread.
- ``bridge.testing.pytest_plugin``: the ``local_endpoint`` factory fixture
  (``pytest_plugins = ["bridge.testing.pytest_plugin"]``).
"""

from __future__ import annotations

from bridge.testing.endpoint import LocalEndpoint

__all__ = ["LocalEndpoint"]
