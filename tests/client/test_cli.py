"""``bridge run | status | cancel | health | purge`` through click's CliRunner against the
local endpoint: JSON on stdout, JSON errors on stderr, the documented exit codes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bridge.cli import main
from bridge.cli._common import EXIT_AUTH, EXIT_INVALID, EXIT_JOB_FAILED, EXIT_NOT_FOUND, EXIT_TIMEOUT

from . import handlers


@pytest.fixture
def cli(local_endpoint):
    local = local_endpoint(handlers.work, api_key="rpa_CLIKEY0000000001")
    local.add_endpoint("gen", handlers.sync_gen)
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, key: str = "rpa_CLIKEY0000000001"):
        env = {"RUNPOD_ENDPOINT_BASE_URL": local.base_url, "RUNPOD_API_KEY": key}
        return runner.invoke(main, list(args), input=input, env=env)

    invoke.local = local  # type: ignore[attr-defined]
    return invoke


def test_run_waits_and_prints_the_result(cli):
    result = cli("run", "-e", "test", '{"x": 1}')
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["status"] == "COMPLETED" and body["output"] == {"echo": {"x": 1}} and body["id"]


def test_run_reads_stdin_and_sync(cli):
    result = cli("run", "--endpoint-id", "test", "-", "--sync", "--timeout", "10", input='{"s": 2}')
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body.pop("id") and body == {"status": "COMPLETED", "output": {"echo": {"s": 2}}}


def test_run_no_wait_then_status_cancel_health_purge(cli):
    result = cli("run", "-e", "test", '{"sleep": 30}', "--no-wait")
    assert result.exit_code == 0, result.output
    job_id = json.loads(result.stdout)["id"]
    status = cli("status", "-e", "test", job_id)
    assert status.exit_code == 0 and json.loads(status.stdout)["id"] == job_id
    cancel = cli("cancel", "-e", "test", job_id)
    assert json.loads(cancel.stdout) == {"id": job_id, "status": "CANCELLED"}
    waited = cli("status", "-e", "test", job_id, "--wait", "5")
    assert json.loads(waited.stdout)["status"] == "CANCELLED"
    health = cli("health", "-e", "test")
    assert json.loads(health.stdout)["jobs"]["inProgress"] == 0
    purge = cli("purge", "-e", "test")
    assert json.loads(purge.stdout) == {"removed": 0, "status": "completed"}


def test_stream_prints_chunks_as_json_lines(cli):
    result = cli("run", "-e", "gen", '{"n": 2}', "--stream")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert [json.loads(line) for line in lines[:2]] == [{"i": 0}, {"i": 1}]
    assert json.loads("\n".join(lines[2:]))["status"] == "COMPLETED"


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (("run", "-e", "test", '{"fail": "bad"}'), EXIT_JOB_FAILED, "JobFailed"),
        (("run", "-e", "test", '{"sleep": 30}', "--timeout", "0.5", "--cancel-on-timeout"), EXIT_TIMEOUT, "Timeout"),
        (("status", "-e", "test", "no-such-job"), EXIT_NOT_FOUND, "NotFound"),
        (("run", "-e", "test", "{not json"), EXIT_INVALID, "InvalidRequest"),
    ],
)
def test_errors_are_json_on_stderr_with_exit_codes(cli, args, code, error):
    result = cli(*args)
    assert result.exit_code == code, result.output
    body = json.loads(result.stderr)
    assert body["error"] == error and body["message"]


def test_wrong_key_exits_3_without_printing_it(cli):
    result = cli("health", "-e", "test", key="rpa_WRONGKEY00000009")
    assert result.exit_code == EXIT_AUTH
    assert "WRONGKEY" not in result.stderr and "CLIKEY" not in result.stderr
    assert json.loads(result.stderr)["error"] == "AuthenticationError"
