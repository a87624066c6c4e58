"""The public surface is a tested artifact: every name in ``bridge.__all__`` resolves."""

from __future__ import annotations

import bridge


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert bridge.__all__ == sorted(bridge.__all__)
    for name in bridge.__all__:
        assert hasattr(bridge, name), name


def test_sdk_names_are_importable_from_bridge() -> None:
    from bridge import AsyncioEndpoint, AsyncioJob, Endpoint, Job  # noqa: F401

    assert bridge.api_key is None or isinstance(bridge.api_key, str)


def test_unknown_attribute_raises_attribute_error() -> None:
    try:
        bridge.does_not_exist  # noqa: B018
    except AttributeError as exc:
        assert "does_not_exist" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_the_chainable_tasks_are_bridge_attributes() -> None:
    from celery import Celery, chain

    app = Celery("chains", broker="memory://", set_as_current=False)
    bridge.install(app)
    assert {"bridge.run", "bridge.run_sync", "bridge.stream", "bridge.status", "bridge.cancel",
            "bridge.purge_queue", "bridge.health"} <= set(app.tasks)
    assert bridge.run.name == "bridge.run"
    assert bridge.run_sync.name == "bridge.run_sync"
    assert bridge.stream.name == "bridge.stream"
    sig = bridge.run.s("ep")
    assert sig.task == "bridge.run" and sig.args == ("ep",)
    flow = chain(app.signature("prep", args=(1,)), sig)
    assert [s.task for s in flow.tasks] == ["prep", "bridge.run"]


def test_the_job_status_module_keeps_its_old_import_path() -> None:
    import pickle

    from bridge import errors, job_status
    from bridge.status import FAILURE_ERRORS, TERMINAL, JobStatus, is_terminal

    assert JobStatus is job_status.JobStatus is bridge.JobStatus
    assert (TERMINAL, is_terminal, FAILURE_ERRORS) == (
        job_status.TERMINAL, job_status.is_terminal, job_status.FAILURE_ERRORS)
    # pickle.dumps(JobStatus.FAILED) as made when the module was bridge/status.py
    old = b"\x80\x04\x95,\x00\x00\x00\x00\x00\x00\x00\x8c\rbridge.status\x94\x8c\tJobStatus\x94\x93\x94\x8c\x06FAILED\x94\x85\x94R\x94."
    assert pickle.loads(old) is JobStatus.FAILED
    assert {status: cls.__name__ for status, cls in FAILURE_ERRORS.items()} == {
        "FAILED": "JobFailed", "CANCELLED": "JobCancelled", "TIMED_OUT": "JobTimedOut"}
    assert FAILURE_ERRORS["TIMED_OUT"] is errors.JobTimedOut and "COMPLETED" not in FAILURE_ERRORS


def test_job_context_keeps_its_import_path() -> None:
    from bridge import hook_context, hooks

    assert hooks.JobContext is hook_context.JobContext
    assert hooks.EndpointSpec is hook_context.EndpointSpec
