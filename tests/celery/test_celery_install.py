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


APP_PROBE = """
import os, sys
sys.path.insert(0, os.getcwd())  # as `celery -A` does
from bridge.app import app
print(app.conf.worker_pool, app.conf.task_acks_late, app.conf.worker_concurrency, app.conf.broker_url)
"""


def test_bridge_app_reads_celeryconfig_in_the_working_directory_else_bridge_defaults(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "BRIDGE_"))}
    env["PYTHONPATH"] = ""  # bridge is installed in the venv; the repository is not on the path

    def probe(cwd):  # type: ignore[no-untyped-def]
        return subprocess.run([sys.executable, "-c", APP_PROBE], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=60, check=True).stdout.split()

    # elsewhere (a pip-installed bridge): the packaged defaults
    assert probe(tmp_path) == ["threads", "True", "8", "redis://127.0.0.1:6379/0"]
    # a deployment's own celeryconfig.py in the working directory wins
    (tmp_path / "celeryconfig.py").write_text(
        "from bridge.celery_settings import *  # noqa: F403\nworker_concurrency = 250\n"
    )
    assert probe(tmp_path) == ["threads", "True", "250", "redis://127.0.0.1:6379/0"]
    # the repository's celeryconfig.py gives the same values as the defaults
    assert probe(ROOT) == ["threads", "True", "8", "redis://127.0.0.1:6379/0"]
