"""A private ``rabbitmq-server`` (the distribution's package) for the broker tests.

Runs as the test user with everything on 127.0.0.1 and free ports: the AMQP listener,
the Erlang distribution port and a private ``epmd`` (so nothing touches a system RabbitMQ
or its epmd), its own Erlang cookie, mnesia and log dirs in a temporary directory, no
plugins (no management UI). ``consumer_timeout`` is a server setting in 3.10, so it is
written to the node's ``rabbitmq.conf``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bridge.embedded_redis import free_port
from bridge.testing.waiting import wait_until

# The Debian wrappers in /usr/sbin switch to the rabbitmq user when run as root; the real
# scripts run as whoever starts them.
_BIN = Path("/usr/lib/rabbitmq/bin")


def _tool(name: str) -> str:
    path = _BIN / name if (_BIN / name).exists() else shutil.which(name)
    if not path:
        raise RuntimeError(
            f"{name} is not installed: `bash scripts/test.sh` installs rabbitmq-server from apt "
            "(or: apt-get install rabbitmq-server)"
        )
    return str(path)


class RabbitMQServer:
    """``start()`` it (or use ``with``); ``url`` is then the broker URL; ``stop()`` ends it.

    ``channel_tick_ms``: how often a channel checks its deliveries against
    ``consumer_timeout``. RabbitMQ's default is 60 s, so a 60 s timeout fires anywhere
    between 60 and 120 s after the delivery; the tests tick every second so the timeout
    fires at 60-61 s and a 90 s job is certainly past it.
    """

    def __init__(self, consumer_timeout_ms: int = 60_000, channel_tick_ms: int = 1_000) -> None:
        self.consumer_timeout_ms = consumer_timeout_ms
        self.channel_tick_ms = channel_tick_ms
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = f"bridge-{os.getpid()}-{secrets.token_hex(3)}@localhost"
        self.dir = Path(tempfile.mkdtemp(prefix="bridge-rabbitmq-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_in = 0.0  # seconds from spawn to await_startup's success

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    @property
    def log_path(self) -> Path:
        return self.dir / "log" / f"{self.node}.log"

    def env(self) -> dict[str, str]:
        """The environment the server and ``rabbitmqctl`` share (node name, cookie, epmd)."""
        loopback = "-kernel inet_dist_use_interface {127,0,0,1}"
        return {
            **os.environ,
            "HOME": str(self.dir),  # the Erlang cookie is $HOME/.erlang.cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),  # not /etc's
            "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": loopback,
            "RABBITMQ_CTL_ERL_ARGS": loopback,
        }

    def _write_config(self) -> None:
        cookie = self.dir / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            f"consumer_timeout = {self.consumer_timeout_ms}\n"
        )
        (self.dir / "advanced.config").write_text(
            f"[{{rabbit, [{{channel_tick_interval, {self.channel_tick_ms}}}]}}].\n"
        )
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq-env.conf").write_text("")

    def start(self, timeout: float = 90.0) -> RabbitMQServer:
        self._write_config()
        began = time.monotonic()
        out = open(self.dir / "server.out", "wb")  # noqa: SIM115 - the child writes it until stop()
        self.proc = subprocess.Popen(
            [_tool("rabbitmq-server")], env=self.env(), cwd=self.dir, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        out.close()
        try:
            wait_until(self._up, timeout, interval=0.2)
        except BaseException as exc:
            tail = self.output()
            self.stop()
            raise RuntimeError(f"rabbitmq-server did not start ({exc}); its log ends:\n{tail}") from None
        self.started_in = time.monotonic() - began
        return self

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"rabbitmq-server exited with {self.proc.returncode}")
        # Fails at once (exit 69) until the node has registered with epmd, then waits for boot.
        done = self.ctl_run("await_startup", "--timeout", "30")
        return done.returncode == 0

    def ctl_run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_tool("rabbitmqctl"), "-n", self.node, *args], env=self.env(), cwd=self.dir,
            capture_output=True, text=True, timeout=timeout,
        )

    def ctl(self, *args: str) -> str:
        """``rabbitmqctl -n NODE ARGS``'s output; raises when it fails."""
        done = self.ctl_run(*args)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done.stdout

    def queues(self) -> dict[str, dict[str, Any]]:
        """Queue name -> {durable, type, messages, messages_unacknowledged, consumers}."""
        cols = ["name", "durable", "type", "messages", "messages_unacknowledged", "consumers"]
        rows = json.loads(self.ctl("list_queues", "-q", "--formatter", "json", *cols) or "[]")
        return {row.pop("name"): row for row in rows}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def output(self) -> str:
        text = (self.dir / "server.out").read_text(errors="replace") if (self.dir / "server.out").exists() else ""
        return (text + self.log())[-4000:]

    def _group_alive(self, pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        if self.proc is not None:
            pgid = self.proc.pid  # start_new_session: the script, beam.smp and its helpers
            if self._group_alive(pgid):
                os.killpg(pgid, signal.SIGTERM)  # beam.smp shuts the node down cleanly
                try:
                    wait_until(lambda: self.proc.poll() is not None and not self._group_alive(pgid), 30, 0.05)
                except AssertionError:
                    os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None
            # epmd daemonises out of the group; ours listens on our private port only
            epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
            subprocess.run([epmd, "-kill"], env=self.env(), capture_output=True, timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RabbitMQServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
