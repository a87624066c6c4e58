"""``bridge serve`` through the real console script (issue 12 items 6 and 7): a handler that
cannot be loaded exits 7 with one line, a ``--worker-command`` whose workers never come up
gives up with a clear error (unhealthy in /health meanwhile), and SIGINT/SIGTERM are a
normal stop (exit 0)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from bridge.testing import wait_until

from .serving import BRIDGE, ROOT, ServeProcess

BROKEN = {
    "syntax.py": ("def handler(job):\n    return (\n", "SyntaxError: '(' was never closed (syntax.py, line 2)"),
    "imports.py": ("import no_such_module_for_bridge_tests\n\ndef handler(job):\n    return 1\n",
                   "ModuleNotFoundError: No module named 'no_such_module_for_bridge_tests'"),
    "raises.py": ("raise RuntimeError('boom at import')\n", "RuntimeError: boom at import"),
    "exits.py": ("import sys\nsys.exit(3)\n", "sys.exit(3)"),
    "notcallable.py": ("handler = 42\n", "is not callable (it is the int 42)"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_handler_that_cannot_be_loaded_exits_7_with_one_line(tmp_path: Path, name: str) -> None:
    source, says = BROKEN[name]
    (tmp_path / name).write_text(source)
    done = subprocess.run([BRIDGE, "serve", f"{tmp_path / name}:handler", "--port", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 7, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bridge serve: ") and says in lines[0]


def test_a_module_handler_with_a_syntax_error_exits_7_too(tmp_path: Path) -> None:
    (tmp_path / "brokenmod.py").write_text("def handler(job) return 1\n")
    done = subprocess.run([BRIDGE, "serve", "brokenmod:handler", "--port", "0"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(tmp_path), "PATH": str(Path(BRIDGE).parent)})
    assert done.returncode == 7 and "Traceback" not in done.stderr
    assert "importing module 'brokenmod' failed with SyntaxError" in done.stderr


def test_worker_command_with_a_missing_script_exits_7_at_once(tmp_path: Path) -> None:
    missing = tmp_path / "missing_handler.py"
    done = subprocess.run([BRIDGE, "serve", "--port", "0", "--worker-command", f"{sys.executable} {missing}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 7 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert f"worker script '{missing}' does not exist" in done.stderr


def test_worker_command_that_never_starts_gives_up_with_exit_7(tmp_path: Path) -> None:
    worker = tmp_path / "worker_with_a_missing_dependency.py"
    worker.write_text("import no_such_module_for_bridge_tests\n")
    s = ServeProcess("--worker-command", f"{sys.executable} {worker}", "-e", "w")
    try:
        job = requests.post(f"{s.base_url}/w/run", json={"input": {}}, timeout=10).json()["id"]
        # Meanwhile: the crash-looping worker shows as unhealthy, the job waits.
        wait_until(lambda: s.health("w")["workers"]["unhealthy"] >= 1, timeout=30)
        assert s.health("w")["workers"]["ready"] == 0 and s.health("w")["jobs"]["inQueue"] == 1
        assert requests.get(f"{s.base_url}/w/status/{job}", timeout=10).json()["status"] == "IN_QUEUE"
        code, err = s.wait(), s.stderr
    finally:
        s.kill()
    assert code == 7
    last = err.strip().splitlines()[-1]
    assert last.startswith("bridge serve: worker command") and "5 times in a row; gave up" in last
    assert "ModuleNotFoundError: No module named 'no_such_module_for_bridge_tests'" in last and str(worker) in last
    # The only traceback is the worker's own (forwarded, and quoted in the restart warnings);
    # none from bridge itself, which would run through click.
    assert "click/core.py" not in err and "bridge/cli/serve.py" not in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_treats_sigint_and_sigterm_as_a_normal_stop(sig: signal.Signals) -> None:
    s = ServeProcess("examples/handlers.py:echo", "-e", "echo")
    try:
        body = requests.post(f"{s.base_url}/echo/runsync", json={"input": {"a": 1}}, timeout=10).json()
        assert body["output"] == {"a": 1}
        code, err = s.stop(sig), s.stderr
    finally:
        s.kill()
    assert code == 0 and "bridge serve: stopping" in err
