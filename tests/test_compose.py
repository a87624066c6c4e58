"""compose.yaml: Redis (append-only, no eviction), a bridge.app worker from the Dockerfile, the
local endpoint serving examples/handlers.py, and Flower.

``docker compose config`` validates the file where the compose plugin exists; everywhere,
the services, their environment and healthchecks are checked from the YAML, and the Redis
and endpoint services' own commands (and the endpoint's healthcheck) are run for real on
127.0.0.1.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from bridge.embedded_redis import free_port
from bridge.testing.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
BRIDGE = str(Path(sys.executable).parent / "bridge")
_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def _interpolate(value: Any) -> Any:
    """Compose's ``${VAR:-default}`` with an empty environment (what a fresh clone gets)."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: m.group(2) or "", value).replace("$$", "$")
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _interpolate(yaml.safe_load(COMPOSE.read_text()))


def _docker_compose() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


def test_the_file_is_a_valid_compose_file(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "worker", "endpoint", "flower"}
    if (cmd := _docker_compose()) is not None:
        out = subprocess.run([*cmd, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True,
                             cwd=ROOT, timeout=60)
        assert out.returncode == 0, out.stderr
    # the structural rules `docker compose config` enforces that matter here
    assert set(compose) <= {"name", "services", "volumes", "networks", "configs", "secrets", "x-bridge-env"}
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            assert source in compose.get("volumes", {}) or source.startswith((".", "/")), mount
        for key in ("command", "entrypoint"):
            assert isinstance(svc.get(key, []), list), f"{name}.{key}: exec form, no shell"


def test_every_service_has_a_healthcheck_and_publishes_on_loopback_only(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        check = svc["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name
        assert check["retries"] >= 1, name
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    deps = compose["services"]["worker"]["depends_on"]
    assert deps == {"redis": {"condition": "service_healthy"}, "endpoint": {"condition": "service_healthy"}}
    assert compose["services"]["flower"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_redis_is_append_only_without_eviction_and_its_command_runs(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    svc = compose["services"]["redis"]
    command = svc["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(m.endswith(":/data") for m in svc["volumes"])  # the AOF survives a restart
    assert svc["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    # the same command on this machine's redis-server, on a free loopback port
    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", *command[1:], "--port", str(port),
                             "--bind", "127.0.0.1", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        wait_until(lambda: _pings(client), 10)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.close()
    finally:
        proc.terminate()
        proc.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_worker_runs_the_dockerfile_app_against_redis_and_the_endpoint(compose: dict[str, Any]) -> None:
    services = compose["services"]
    worker, endpoint = services["worker"], services["endpoint"]
    assert worker["build"] == "." and worker["image"] == endpoint["image"] and endpoint["build"] == "."
    assert "entrypoint" not in worker  # the Dockerfile's: celery -A bridge.app worker
    assert '"celery", "-A", "bridge.app", "worker"' in (ROOT / "Dockerfile").read_text()
    env = worker["environment"]
    assert env["CELERY_BROKER_URL"] == "redis://redis:6379/0"
    assert env["CELERY_RESULT_BACKEND"].startswith("redis://redis:6379/")
    port = endpoint["command"][endpoint["command"].index("--port") + 1]
    assert env["RUNPOD_ENDPOINT_BASE_URL"] == f"http://endpoint:{port}/v2"
    # the worker sends the key the endpoint requires
    assert env["RUNPOD_API_KEY"] and env["RUNPOD_API_KEY"] == endpoint["environment"]["BRIDGE_SERVE_API_KEY"]
    assert "celery -A bridge.app inspect ping" in worker["healthcheck"]["test"][1]
    flower = services["flower"]
    assert flower["image"].startswith("mher/flower:")
    assert flower["environment"]["CELERY_BROKER_URL"] == env["CELERY_BROKER_URL"]


def test_endpoint_serves_the_example_handlers_and_its_healthcheck_passes(compose: dict[str, Any]) -> None:
    endpoint = compose["services"]["endpoint"]
    assert endpoint["entrypoint"] == ["bridge", "serve"]
    args = list(endpoint["command"])
    assert args[args.index("--host") + 1] == "0.0.0.0"  # inside the compose network only
    handlers = ast.parse((ROOT / "examples" / "handlers.py").read_text())
    defined = {n.name for n in handlers.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    specs = [a.split("=")[-1] for a in args if a.startswith(("examples/", "echo=", "tokens="))]
    assert specs and all(s.split(":")[0] == "examples/handlers.py" and s.split(":")[1] in defined for s in specs)
    assert "COPY examples ./examples" in (ROOT / "Dockerfile").read_text()  # the image has them

    # run the service's command here (loopback, a free port) and its healthcheck against it
    port = free_port()
    args[args.index("--host") + 1], args[args.index("--port") + 1] = "127.0.0.1", str(port)
    key = endpoint["environment"]["BRIDGE_SERVE_API_KEY"]
    env = {**os.environ, "BRIDGE_SERVE_API_KEY": key}
    proc = subprocess.Popen([BRIDGE, "serve", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"127.0.0.1:{port}/v2" in first and "API key required" in first, first
        check = [a.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for a in endpoint["healthcheck"]["test"][1:]]
        assert check[0] == "python"  # the image's; here this venv's
        check[0] = sys.executable
        assert subprocess.run(check, env=env, capture_output=True, timeout=30).returncode == 0
        wrong = subprocess.run(check, env={**env, "BRIDGE_SERVE_API_KEY": "wrong"}, capture_output=True,
                               timeout=30)
        assert wrong.returncode != 0 and b"401" in wrong.stderr
    finally:
        proc.terminate()
        proc.wait(15)
