"""Fixtures for the lifecycle tests.

``parity_rig`` (module scope, used by test_parity.py only): one local endpoint serving every
parity scenario's endpoint, the recording proxy in front of it, the recording plugin
configured through the environment for every driver in this process, and an embedded
threads Celery worker with ``bridge.install`` on its own Redis database.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from bridge.embedded_redis import EmbeddedRedis

    from .parity_drivers import Rig


@pytest.fixture(scope="module")
def parity_rig(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    # Imported here: the other lifecycle tests need none of this (nor its import cost).
    import redis
    from celery import Celery
    from celery.contrib.testing.worker import start_worker

    from bridge.gateway.core import reset_gateway
    from bridge.hooks import Hooks
    from bridge.testing import LocalEndpoint
    from bridge.worker import install

    from .parity_drivers import API_KEY, Rig
    from .parity_proxy import ParityProxy
    from .parity_table import SCENARIOS, plugin_options

    root = tmp_path_factory.mktemp("parity")
    events = root / "events.jsonl"
    config = root / "plugins.json"
    config.write_text(json.dumps({"recorder": plugin_options(str(events))}))
    url = f"redis://127.0.0.1:{redis_server.port}/11"
    client = redis.Redis.from_url(url)
    client.flushdb()
    first, *rest = SCENARIOS
    endpoint = LocalEndpoint(first.handler, endpoint_id=first.endpoint, api_key=API_KEY, **first.endpoint_options)
    for s in rest:
        endpoint.add_endpoint(s.endpoint, s.handler, **s.endpoint_options)
    proxy = ParityProxy(endpoint.base_url)
    env = {
        "RUNPOD_ENDPOINT_BASE_URL": proxy.base_url, "RUNPOD_API_KEY": API_KEY, "BRIDGE_REDIS_URL": url,
        "BRIDGE_DISABLE_PLUGIN_AUTOLOAD": "1", "BRIDGE_PLUGINS": "recorder=lifecycle.parity_plugin:ParityRecorder",
        "BRIDGE_PLUGINS_CONFIG": str(config),
    }
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key in list(os.environ):  # no plugin settings leak in from the shell
                if key.startswith(("BRIDGE_PLUGIN", "BRIDGE_DISABLE_PLUGIN")):
                    mp.delenv(key)
            for key, value in env.items():
                mp.setenv(key, value)
            Hooks.clear_cache()
            reset_gateway()
            app = Celery("bridge-parity", broker=url, backend=url)
            app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                            worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True)
            install(app)
            with start_worker(app, pool="threads", concurrency=20, perform_ping_check=False,
                              loglevel="WARNING", shutdown_timeout=15):
                yield Rig(endpoint, proxy, app, events)
            reset_gateway()
            Hooks.clear_cache()
    finally:
        proxy.close()
        endpoint.close()
        client.close()
