"""The Dockerfile, checked statically (no Docker engine here): a slim base, a non-root
USER, every COPY source exists, and the entrypoint runs the bundled worker app, whose
settings module is copied next to it."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_base_image_is_slim_and_user_is_not_root() -> None:
    steps = _instructions()
    assert steps[0][0] == "FROM" and "slim" in steps[0][1]
    users = [rest for word, rest in steps if word == "USER"]
    assert users, "no USER instruction: the worker would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    # the user is created before it is used
    assert any(word == "RUN" and "useradd" in rest and users[-1] in rest for word, rest in steps)


def test_every_copied_path_exists() -> None:
    for word, rest in _instructions():
        if word == "COPY":
            *sources, _dest = shlex.split(rest)
            for src in sources:
                assert (ROOT / src).exists(), src


def test_entrypoint_runs_the_bundled_worker_with_its_config() -> None:
    steps = dict(_instructions())
    entry = json.loads(steps["ENTRYPOINT"])
    assert entry[:4] == ["celery", "-A", "bridge.app", "worker"]
    assert (ROOT / "bridge" / "app.py").exists()
    copied = [shlex.split(rest) for word, rest in _instructions() if word == "COPY"]
    assert any("celeryconfig.py" in c[:-1] for c in copied)
    workdir = steps["WORKDIR"]
    assert any(c[-1] in ("./", workdir, workdir + "/") and "celeryconfig.py" in c for c in copied)
