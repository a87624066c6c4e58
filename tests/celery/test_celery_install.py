"""``bridge.install(app)`` gives a fresh app every bridge task, ``bridge.batch_item`` too, and
the bundled config imports it; the warm-shutdown flag is named in bridge.keys. Checked in a
fresh interpreter: in this one other tests already imported the modules that register them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from celery_helpers import ROOT

from bridge import keys
from bridge.tasks import TASK_NAMES
from bridge.worker import handoff_key

PROBE = """
import celery, bridge
app = celery.Celery("fresh")
bridge.install(app)
print(",".join(sorted(n for n in app.tasks if n.startswith("bridge."))))
import celeryconfig
print(",".join(celeryconfig.imports))
"""


def test_install_registers_every_bridge_task_including_batch_item():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.splitlines()
    assert set(out[0].split(",")) == set(TASK_NAMES) | {"bridge.batch_item"}
    assert "bridge.batch.celery" in out[1].split(",") and "bridge.tasks" in out[1].split(",")


def test_the_handoff_flag_is_named_in_bridge_keys(monkeypatch):
    monkeypatch.setenv("BRIDGE_KEY_PREFIX", "tenant7")
    assert handoff_key(4242) == keys.handoff(socket.gethostname(), 4242) == f"tenant7:handoff:{socket.gethostname()}:4242"
