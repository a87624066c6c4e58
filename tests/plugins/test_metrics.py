"""metrics: read back from the plugin's registry, over HTTP, and summed across forked
processes in prometheus_client's multiprocess mode."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import urllib.request

import pytest

from bridge.errors import ConfigurationError, JobFailed, JobRejected, JobTimedOut, RateLimited
from bridge.hooks import Hooks, JobContext
from bridge.plugins import make_plugin_manager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def metrics_hooks() -> tuple[Hooks, object]:
    pm = make_plugin_manager(environ={"BRIDGE_PLUGIN_METRICS_ENABLED": "1"}, entry_points=False)
    return Hooks(pm), pm.get_plugin("metrics")


def value(plugin, name: str, **labels: str) -> float:
    return plugin.registry.get_sample_value(name, labels) or 0.0


def test_jobs_latency_and_outcomes_per_endpoint(metrics_hooks):
    hooks, plugin = metrics_hooks
    ok = JobContext("ep")
    hooks.notify("submitted", ok, input={})
    hooks.notify("status_changed", ok, status="IN_PROGRESS", previous="IN_QUEUE")
    hooks.notify("completed", ok, output=1, delay_ms=1500, execution_ms=250)
    for error in (JobFailed("x"), JobTimedOut("y"), JobRejected("z")):
        c = JobContext("ep")
        hooks.notify("submitted", c, input={})
        hooks.notify("failed", c, error=error)
    hooks.notify("completed", JobContext("other"), output=1)

    assert value(plugin, "bridge_jobs_submitted_total", endpoint="ep") == 4
    for outcome in ("completed", "failed", "timed_out", "rejected"):
        assert value(plugin, "bridge_jobs_total", endpoint="ep", outcome=outcome) == 1
    assert value(plugin, "bridge_jobs_total", endpoint="other", outcome="completed") == 1
    assert value(plugin, "bridge_job_queue_seconds_sum", endpoint="ep") == 1.5
    assert value(plugin, "bridge_job_execution_seconds_sum", endpoint="ep") == 0.25
    assert value(plugin, "bridge_job_queue_seconds_count", endpoint="ep") == 1
    assert value(plugin, "bridge_job_duration_seconds_count", endpoint="ep", outcome="completed") == 1


def test_retries_cancels_rate_limits_and_cache_hits(metrics_hooks):
    hooks, plugin = metrics_hooks
    c = JobContext("ep")
    hooks.notify("retried", c, error=RateLimited("429"), delay=1.0)
    hooks.notify("retried", c, error=RateLimited("429"), delay=2.0)
    hooks.notify("rate_limited", c, route="run", retry_after=1.0)
    hooks.notify("cancelled", JobContext("ep"), reason="revoked")
    hit = JobContext("ep", meta={"cache": "hit"})
    hooks.notify("completed", hit, output=1)
    assert value(plugin, "bridge_retries_total", endpoint="ep") == 2
    assert value(plugin, "bridge_rate_limited_total", endpoint="ep", route="run") == 1
    assert value(plugin, "bridge_cancels_total", endpoint="ep") == 1
    assert value(plugin, "bridge_jobs_total", endpoint="ep", outcome="cancelled") == 1
    assert value(plugin, "bridge_cache_hits_total", endpoint="ep") == 1
    assert value(plugin, "bridge_jobs_total", endpoint="ep", outcome="cached") == 1


def test_metrics_are_served_on_the_configured_port():
    port = free_port()
    pm = make_plugin_manager(environ={"BRIDGE_PLUGIN_METRICS_PORT": str(port)}, entry_points=False)
    Hooks(pm).notify("completed", JobContext("served-ep"), output=1)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    assert 'bridge_jobs_total{endpoint="served-ep",outcome="completed"} 1.0' in body


def test_a_busy_port_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"plugin 'metrics' cannot listen on 127.0.0.1:{port}"):
            make_plugin_manager(environ={"BRIDGE_PLUGIN_METRICS_PORT": str(port)}, entry_points=False)


MULTIPROCESS = """
    import os, sys, urllib.request
    from bridge.hooks import Hooks, JobContext

    # loaded once in the parent, before forking, like a prefork Celery worker
    hooks = Hooks.from_settings()
    children = []
    for i in range(3):
        pid = os.fork()
        if pid == 0:
            hooks.notify("submitted", JobContext("mp"), input={})
            hooks.notify("completed", JobContext("mp"), output=i, delay_ms=100, execution_ms=100)
            os._exit(0)
        children.append(pid)
    for pid in children:
        assert os.waitpid(pid, 0)[1] == 0
    port = int(os.environ["BRIDGE_PLUGIN_METRICS_PORT"])
    print(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
"""


def test_prefork_children_are_summed_in_multiprocess_mode(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "BRIDGE_PLUGIN_METRICS_PORT": str(free_port()),
        "BRIDGE_DISABLE_PLUGIN_AUTOLOAD": "1",
    }
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(MULTIPROCESS)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert 'bridge_jobs_total{endpoint="mp",outcome="completed"} 3.0' in done.stdout
    assert 'bridge_jobs_submitted_total{endpoint="mp"} 3.0' in done.stdout
    assert 'bridge_job_queue_seconds_count{endpoint="mp"} 3.0' in done.stdout
    assert len(list(tmp_path.glob("*.db"))) >= 3  # one file set per child


def test_multiprocess_dir_set_too_late_is_a_clear_error(monkeypatch, tmp_path):
    import prometheus_client  # noqa: F401  (already imported in single-process mode)

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with pytest.raises(ConfigurationError, match="PROMETHEUS_MULTIPROC_DIR was set after prometheus_client"):
        make_plugin_manager(environ={"BRIDGE_PLUGIN_METRICS_ENABLED": "1"}, entry_points=False)
