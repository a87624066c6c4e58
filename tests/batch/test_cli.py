"""``bridge batch`` as a subprocess against the local endpoint with injected faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import FAULTS, flaky_handler, is_failing, journal_counts, slow_handler, wait_until

BRIDGE = [str(Path(sys.executable).with_name("bridge"))]


def cli(args: list[str], base_url: str, **kw: object) -> subprocess.Popen[str]:
    env = dict(os.environ, RUNPOD_ENDPOINT_BASE_URL=base_url)
    return subprocess.Popen([*BRIDGE, "batch", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)  # type: ignore[call-overload]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_output(out: Path, n: int) -> None:
    rows = read_jsonl(out)
    assert [r["index"] for r in rows] == list(range(n))
    for r in rows:
        if is_failing(r["index"]):
            assert r["status"] == "FAILED", r
            assert "is bad" in json.dumps(r["error"])
        else:
            assert r["status"] == "COMPLETED", r
            assert r["output"] == {"y": 2 * r["index"]}
            assert r["id"]
    failures = read_jsonl(out.with_name("out.failures.jsonl"))
    assert [f["index"] for f in failures] == [i for i in range(n) if is_failing(i)]


@pytest.mark.slow
def test_cli_batch_with_faults_then_resume_after_kill_9(local_endpoint, input_file, tmp_path):
    n = 2000
    ep = local_endpoint(flaky_handler, endpoint_id="ep", faults=FAULTS)
    inp, out = input_file(n), tmp_path / "out.jsonl"
    journal = f"{out}.journal"
    args = [str(inp), "-o", str(out), "-e", "ep", "--concurrency", "50", "--progress-interval", "0.5"]

    first = cli(args, ep.base_url)
    try:
        wait_until(lambda: first.poll() is not None or journal_counts(journal).get("done", 0) >= 300, 60,
                   "300 inputs done")
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
    finally:
        first.kill()  # SIGKILL: no cleanup at all
        first.wait()
    assert not out.exists()  # the output is only ever written whole

    second = cli(args, ep.base_url)
    stdout, stderr = second.communicate(timeout=120)
    assert second.returncode == 1, stderr  # some inputs FAILED
    assert "batch " in stdout and "in flight" in stdout  # plain progress lines (not a tty)
    assert "completed" in stdout  # the summary table
    check_output(out, n)
    # Every input was created exactly once: an input in flight at the kill was resumed, and a
    # resubmission after a lost journal write reused its idempotency key.
    assert ep.submissions() == n
    assert ep.stats()["run"] > n  # 429s and 5xx were absorbed by retrying

    # A third run finds everything done and submits nothing.
    third = cli(args, ep.base_url)
    third.communicate(timeout=60)
    assert ep.submissions() == n
    check_output(out, n)


def test_ctrl_c_cancels_remote_jobs_and_rerun_resubmits_them(local_endpoint, input_file, tmp_path):
    ep = local_endpoint(slow_handler, endpoint_id="slow")
    inp, out = input_file(30), tmp_path / "out.jsonl"
    args = [str(inp), "-o", str(out), "-e", "slow", "--concurrency", "10"]
    proc = cli(args, ep.base_url)
    wait_until(lambda: ep.health()["jobs"]["inProgress"] == 10, 30, "10 jobs running")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    rows = read_jsonl(out)  # valid JSONL, one line per input, in order
    assert [r["index"] for r in rows] == list(range(30))
    cancelled = [r for r in rows if r["status"] == "CANCELLED"]
    assert len(cancelled) == 10
    for r in cancelled:
        assert ep.job_state(r["id"])["status"] == "CANCELLED"
    assert all(r["status"] == "PENDING" for r in rows if r["status"] != "CANCELLED")
    assert ep.submissions() == 10

    # The re-run resubmits the cancelled inputs with fresh keys (new remote jobs).
    proc = cli(args, ep.base_url)
    wait_until(lambda: ep.submissions() == 20, 30, "resubmission")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    rows = read_jsonl(out)
    new_ids = {r["id"] for r in rows if r["status"] == "CANCELLED"}
    assert len(new_ids) == 10 and not new_ids & {r["id"] for r in cancelled}
