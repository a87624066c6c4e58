"""``bridge serve`` as a real subprocess, for the CLI tests of every area (tests/cli,
tests/local, tests/workers): started with ``--port 0``, usable once it printed its base URL.

stderr goes to a temporary file rather than a pipe: a server that logs more than a pipe
holds would otherwise block on a pipe nobody reads."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = str(Path(sys.executable).parent / "bridge")  # this environment's console script


class ServeProcess:
    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
        self.proc = subprocess.Popen(
            [BRIDGE, "serve", "--port", "0", *args], cwd=ROOT, text=True, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=self._stderr, env={**os.environ, **(env or {})},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until the server printed its URL (or died)
        match = re.search(r"(http://\S+/v2)", line)
        if match is None:
            self.kill()
            raise AssertionError(f"no base URL printed: {line!r} {self.stderr}")
        self.base_url = match.group(1)
        self.port = int(self.base_url.rsplit(":", 1)[1].split("/")[0])

    @property
    def stderr(self) -> str:
        """Everything the server wrote to stderr so far."""
        self._stderr.seek(0)
        return self._stderr.read()

    def health(self, endpoint_id: str) -> dict[str, Any]:
        return dict(requests.get(f"{self.base_url}/{endpoint_id}/health", timeout=10).json())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` and return the exit code."""
        self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout=timeout)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(10)
        self._stderr.close()


def serve_processes() -> Iterator[list[ServeProcess]]:
    """Body of a fixture: yields a list to append to; kills whatever is still running after."""
    made: list[ServeProcess] = []
    yield made
    for s in made:
        s.kill()
