"""An embedded Redis for the demo and the tests: a ``redis-server`` child process when the
binary exists, else fakeredis's in-process TCP server (the optional ``embedded`` extra).

Both listen on 127.0.0.1 on a free port and are stopped by :meth:`EmbeddedRedis.stop`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from types import TracebackType

from bridge.errors import ConfigurationError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_for_port(host: str, port: int, deadline: float, proc: subprocess.Popen[bytes] | None) -> None:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ConfigurationError(f"redis-server exited with code {proc.returncode} on start")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)  # polling a port that is coming up; bounded by the deadline
    raise ConfigurationError(f"embedded Redis did not listen on {host}:{port} in time")


class EmbeddedRedis:
    """Start with :meth:`start` (or use as a context manager); ``url`` is then set.

    ``require_real=True`` refuses the fakeredis fallback (the integration tests need a real
    server).
    """

    def __init__(self, *, require_real: bool = False, fake: bool = False, port: int | None = None) -> None:
        self.require_real = require_real
        self.fake = fake
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.kind = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._fake: object | None = None
        self._thread: threading.Thread | None = None
        self._dir: str | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        binary = None if self.fake else shutil.which("redis-server")
        if binary:
            self._start_real(binary)
        elif self.require_real:
            raise ConfigurationError(
                "redis-server is not installed", None, None, "apt-get install redis-server"
            )
        else:
            self._start_fake()
        return self

    def _start_real(self, binary: str) -> None:
        self._dir = tempfile.mkdtemp(prefix="bridge-redis-")
        args = [
            binary, "--port", str(self.port), "--bind", self.host, "--save", "",
            "--appendonly", "no", "--dir", self._dir, "--maxmemory-policy", "noeviction",
            "--loglevel", "warning", "--maxclients", "20000",
        ]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.kind = "redis-server"
        _wait_for_port(self.host, self.port, time.monotonic() + 10, self._proc)

    def _start_fake(self) -> None:
        try:
            from fakeredis import TcpFakeServer
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                "no redis-server binary and fakeredis is not installed",
                None, None, "pip install 'bridge-runpod[embedded]' or install redis-server",
            ) from exc
        server = TcpFakeServer((self.host, self.port), server_type="redis")
        server.daemon_threads = True
        self._fake = server
        self._thread = threading.Thread(target=server.serve_forever, name="fakeredis", daemon=True)
        self._thread.start()
        self.kind = "fakeredis"
        _wait_for_port(self.host, self.port, time.monotonic() + 10, None)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._fake is not None:
            self._fake.shutdown()  # type: ignore[attr-defined]
            self._fake.server_close()  # type: ignore[attr-defined]
            self._fake = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()


if os.name != "posix":  # pragma: no cover
    raise ImportError("bridge.embedded_redis needs a POSIX system")
