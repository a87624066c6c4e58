"""``bridge run`` and the other one-shot commands through the real console script (issue 12
items 3, 4 and 7): Ctrl+C cancels the job the command started, every option is checked
before anything is sent, ``--sync`` prints the id, and the hints say the right thing."""

from __future__ import annotations

import json
import signal

import pytest

from bridge.testing import wait_until

from .conftest import KEY, Cli, work


def error_line(stderr: str) -> dict:  # type: ignore[type-arg]
    """The JSON error line, the last line on stderr."""
    return dict(json.loads(stderr.strip().splitlines()[-1]))


# -- item 3: Ctrl+C --------------------------------------------------------------------------


def test_ctrl_c_while_waiting_cancels_the_remote_job_and_exits_130(cli: Cli) -> None:
    proc = cli.start("run", "-e", "ep", '{"seconds": 60}')
    job_id = wait_until(lambda: cli.only_job("IN_PROGRESS"), timeout=30)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert out == ""
    line = error_line(err)
    assert line["error"] == "KeyboardInterrupt" and line["job_id"] == job_id and line["cancelled"] is True
    assert job_id in line["message"] and "CANCELLED" in line["message"]
    assert cli.jobs() == {job_id: "CANCELLED"}
    assert cli.local.health("ep")["jobs"]["inProgress"] == 0


def test_ctrl_c_while_run_is_in_flight_cancels_the_job_once_its_id_arrives(cli: Cli) -> None:
    cli.local.set_faults(latency={"run": 2.0})  # /run is held: the Ctrl+C lands before the id is known
    proc = cli.start("run", "-e", "ep", '{"seconds": 60}')
    wait_until(lambda: cli.local.stats("ep").get("run", 0) >= 1, timeout=30)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert out == ""
    jobs = cli.jobs()
    assert len(jobs) == 1 and list(jobs.values()) == ["CANCELLED"]
    line = error_line(err)
    assert line["job_id"] == next(iter(jobs)) and line["cancelled"] is True
    assert "cancelled as soon as /run answers" in err


def test_ctrl_c_while_streaming_cancels_the_job(cli: Cli) -> None:
    proc = cli.start("run", "-e", "ep", '{"seconds": 60}', "--stream")
    job_id = wait_until(lambda: cli.only_job("IN_PROGRESS"), timeout=30)
    wait_until(lambda: cli.local.stats("ep").get("stream", 0) >= 1, timeout=30)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and out == ""
    assert error_line(err)["job_id"] == job_id and cli.jobs() == {job_id: "CANCELLED"}


def test_ctrl_c_during_runsync_says_the_job_could_not_be_cancelled(cli: Cli) -> None:
    proc = cli.start("run", "-e", "ep", '{"seconds": 60}', "--sync")
    job_id = wait_until(lambda: cli.only_job("IN_PROGRESS"), timeout=30)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and out == ""
    line = error_line(err)
    assert line["cancelled"] is False and "could not be cancelled" in line["message"]
    assert "Without --sync" in line["message"]
    assert cli.jobs() == {job_id: "IN_PROGRESS"}  # what the message says: it runs on


def test_no_wait_prints_the_id_and_leaves_the_job_running(cli: Cli) -> None:
    done = cli.run("run", "-e", "ep", '{"seconds": 60}', "--no-wait")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["status"] == "IN_QUEUE"
    wait_until(lambda: cli.jobs().get(body["id"]) == "IN_PROGRESS", timeout=30)
    cancel = cli.run("cancel", "-e", "ep", body["id"])
    assert json.loads(cancel.stdout) == {"id": body["id"], "status": "CANCELLED"}


def test_ctrl_c_on_a_one_shot_status_wait_exits_130(cli: Cli) -> None:
    job = json.loads(cli.run("run", "-e", "ep", '{"seconds": 60}', "--no-wait").stdout)["id"]
    proc = cli.start("status", "-e", "ep", job, "--wait", "60")
    wait_until(lambda: cli.local.stats("ep").get("status-sync", 0) >= 1, timeout=30)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and out == ""
    assert error_line(err) == {"error": "KeyboardInterrupt", "message": "interrupted (Ctrl+C)"}
    cli.run("cancel", "-e", "ep", job)


# -- item 4: options checked before anything is sent -----------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--policy", '"abc"'), "--policy must be a JSON object"),
        (("--policy", "[1, 2]"), "--policy must be a JSON object"),
        (("--policy", '{"executionTimeout": "soon"}'), "executionTimeout must be a positive number"),
        (("--policy", "{not json"), "--policy is not valid JSON"),
        (("--webhook", "not-a-url"), "--webhook 'not-a-url' is not an http(s) URL"),
        (("--webhook", "ftp://example.com/x"), "is not an http(s) URL"),
        (("--timeout", "-1"), "--timeout must be a finite number of seconds"),
        (("--timeout", "nan"), "--timeout must be a finite number of seconds"),
        (("--idempotency-key", "two words"), "--idempotency-key"),
        (("--sync", "--stream"), "cannot be combined with --sync"),
        (("--sync", "--no-wait"), "cannot be combined with --no-wait"),
        (("--cancel-on-timeout",), "--cancel-on-timeout needs --timeout"),
        (("--no-wait", "--timeout", "5"), "means nothing with --no-wait"),
        (("--api-key", "bad key\n"), "--api-key"),
        (("--base-url", "127.0.0.1:1/v2"), "is not an http(s) URL"),
    ],
)
def test_a_bad_option_exits_7_with_one_line_and_sends_nothing(cli: Cli, args: tuple[str, ...], says: str) -> None:
    done = cli.run("run", "-e", "ep", '{"x": 1}', *args)
    assert done.returncode == 7, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    line = error_line(done.stderr)
    assert line["error"] == "InvalidRequest" or line["error"] == "ConfigurationError"
    assert says in line["message"]
    assert "bad key" not in done.stderr  # an API key is never repeated
    assert cli.local.stats("ep") == {} or sum(cli.local.stats("ep").values()) == 0


def test_status_wait_is_checked_too(cli: Cli) -> None:
    done = cli.run("status", "-e", "ep", "some-job", "--wait", "-5")
    assert done.returncode == 7 and "--wait must be" in error_line(done.stderr)["message"]
    assert sum(cli.local.stats("ep").values()) == 0


@pytest.mark.parametrize("value", ['"abc"', "7", "[1, 2]", "null", "true"])
def test_an_input_may_be_any_json_value(cli: Cli, value: str) -> None:
    done = cli.run("run", "-e", "ep", value)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["output"] == json.loads(value) and cli.jobs()[body["id"]] == "COMPLETED"


def test_a_valid_policy_and_webhook_reach_the_endpoint(cli: Cli) -> None:
    done = cli.run("run", "-e", "ep", '{"x": 1}', "--policy", '{"executionTimeout": 60000, "ttl": 3600000}',
                   "--webhook", "http://127.0.0.1:9/hook")
    assert done.returncode == 0, done.stderr
    state = cli.local.job_state(json.loads(done.stdout)["id"])
    assert state is not None and state["policy"] == {"executionTimeout": 60000, "ttl": 3600000}
    assert state["webhook"] == "http://127.0.0.1:9/hook"


# -- item 7: outputs and hints ---------------------------------------------------------------


def test_run_sync_prints_the_job_id(cli: Cli) -> None:
    done = cli.run("run", "-e", "ep", '{"x": 2}', "--sync")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["status"] == "COMPLETED" and body["output"] == {"x": 2}
    assert cli.jobs() == {body["id"]: "COMPLETED"}


def test_unknown_endpoint_hint_is_about_the_endpoint_not_job_expiry(cli: Cli) -> None:
    done = cli.run("run", "-e", "no-such-endpoint", "{}")
    assert done.returncode == 4
    message = error_line(done.stderr)["message"]
    assert "unknown endpoint" in message and "endpoint id" in message
    assert "expire" not in message and "30 min" not in message


def test_unknown_job_hint_still_mentions_expiry(cli: Cli) -> None:
    done = cli.run("status", "-e", "ep", "no-such-job")
    assert done.returncode == 4 and "expired" in error_line(done.stderr)["message"]


def test_401_hint_shows_the_header_shape_and_never_the_key(cli: Cli) -> None:
    wrong = "rpa_WRONGKEY0000000009"
    done = cli.run("health", "-e", "ep", RUNPOD_API_KEY=wrong)
    assert done.returncode == 3
    message = error_line(done.stderr)["message"]
    assert "Authorization: Bearer <key>" in message
    assert wrong not in done.stderr and KEY not in done.stderr


# -- the one-request commands (cancel, health, purge) ------------------------------------------


def test_health_purge_and_cancel_print_the_endpoints_answer_as_json(cli: Cli) -> None:
    cli.local.add_endpoint("one", work, workers=1)  # one job runs, the next two queue
    submit = ("run", "-e", "one", "--no-wait", '{"seconds": 60}')
    running = json.loads(cli.run(*submit).stdout)["id"]
    wait_until(lambda: cli.only_job("IN_PROGRESS", "one"), timeout=30)
    queued = [json.loads(cli.run(*submit).stdout)["id"] for _ in range(2)]
    health = cli.run("health", "-e", "one")
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout)["jobs"] == {**cli.local.health("one")["jobs"], "inQueue": 2, "inProgress": 1}
    purge = cli.run("purge", "-e", "one")
    assert purge.returncode == 0, purge.stderr
    assert json.loads(purge.stdout) == {"removed": 2, "status": "completed"}
    assert not set(queued) & {jid for jid, status in cli.jobs("one").items() if status == "IN_QUEUE"}
    cancel = cli.run("cancel", "-e", "one", running)
    assert cancel.returncode == 0, cancel.stderr
    assert json.loads(cancel.stdout)["status"] == "CANCELLED"
    assert cli.jobs("one")[running] == "CANCELLED"


def test_the_one_request_commands_list_the_endpoint_their_arguments_then_the_connection(cli: Cli) -> None:
    for command, usage in (("cancel", "[OPTIONS] JOB_ID"), ("health", "[OPTIONS]"), ("purge", "[OPTIONS]")):
        text = cli.run(command, "--help").stdout
        assert f"Usage: bridge {command} {usage}\n" in text
        options = [word for word in text.split() if word in ("--endpoint-id", "--base-url", "--api-key")]
        assert options == ["--endpoint-id", "--base-url", "--api-key"], text
