"""``bridge demo`` (the README's main job) end to end, as a subprocess: it starts its own
Redis, local endpoint and worker, and its summary reports every part working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BRIDGE = str(Path(sys.executable).parent / "bridge")


@pytest.mark.slow
def test_demo_fans_out_streams_and_revokes() -> None:
    out = subprocess.run([BRIDGE, "demo", "--jobs", "40", "--seconds", "0.3"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "40/40 correct" in text
    assert "remote submissions           40" in text
    assert "eof seen: True" in text
    assert "remote CANCELLED in" in text and "task REVOKED" in text
