"""The error tree: picklable, rebuilt by Celery's JSON result serialisation, secret-free."""

from __future__ import annotations

import inspect
import json
import pickle

import pytest
from celery import Celery

from bridge import errors

ALL_ERRORS = [
    obj
    for obj in vars(errors).values()
    if inspect.isclass(obj) and issubclass(obj, errors.BridgeError)
]


def _sample(cls: type[errors.BridgeError]) -> errors.BridgeError:
    if issubclass(cls, errors.UnknownStatus):
        return cls("status 'WEIRD' for 300 s", "job-1", "ep", None, None, "WEIRD", 300.0)
    if issubclass(cls, errors.RateLimited):
        return cls("too many requests", "job-1", "ep", None, 429, 2.5)
    if issubclass(cls, errors.EndpointError):
        return cls("endpoint said no", "job-1", "ep", None, 503)
    if issubclass(cls, errors.Timeout):
        return cls("waited too long", "job-1", "ep", None, 1.5)
    if issubclass(cls, errors.JobError):
        return cls("job ended badly", "job-1", "ep", None, "boom")
    return cls("something happened", "job-1", "ep")


def test_the_tree_has_one_root_and_is_documented() -> None:
    assert len(ALL_ERRORS) >= 18
    for cls in ALL_ERRORS:
        assert issubclass(cls, errors.BridgeError)
        assert cls.__name__ in (errors.__doc__ or ""), f"{cls.__name__} missing from the docstring tree"
        assert cls.__name__ in errors.__all__


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_pickle_round_trip_keeps_every_field(cls: type[errors.BridgeError]) -> None:
    err = _sample(cls)
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is cls
    assert copy.args == err.args
    assert vars(copy) == vars(err)
    assert str(copy) == str(err)


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_celery_json_result_serialisation_rebuilds_the_error(cls: type[errors.BridgeError]) -> None:
    app = Celery("t", backend="cache+memory://", set_as_current=False)
    app.conf.result_serializer = "json"
    err = _sample(cls)
    wire = json.loads(json.dumps(app.backend.prepare_exception(err)))
    back = app.backend.exception_to_python(wire)
    assert type(back) is cls
    assert back.job_id == "job-1"
    assert str(back) == str(err)


def test_message_says_what_to_check() -> None:
    err = errors.AuthenticationError("401 Unauthorized", None, "ep", None, 401)
    assert "Check:" in str(err) and "RUNPOD_API_KEY" in str(err)


def test_timeout_is_a_builtin_timeout_and_invalid_request_a_value_error() -> None:
    assert issubclass(errors.Timeout, TimeoutError)
    assert issubclass(errors.PayloadTooLarge, ValueError)
    assert set(errors.RETRYABLE) == {errors.RateLimited, errors.ServerError, errors.TransportError}


def test_scrub_removes_given_secrets_and_key_shapes() -> None:
    text = 'Authorization: Bearer rpa_ABCDEF1234567890 and {"api_key": "sekrit-value"} also mykey123'
    out = errors.scrub(text, "mykey123")
    assert "rpa_ABCDEF1234567890" not in out
    assert "sekrit-value" not in out
    assert "mykey123" not in out


def test_unknown_status_keeps_its_fields_through_celery() -> None:
    app = Celery("t", backend="cache+memory://", set_as_current=False)
    app.conf.result_serializer = "json"
    err = errors.UnknownStatus("status 'WEIRD' for 300 s", "job-1", "ep", None, None, "WEIRD", 300.0)
    back = app.backend.exception_to_python(json.loads(json.dumps(app.backend.prepare_exception(err))))
    assert isinstance(back, errors.MalformedResponse)
    assert (back.status, back.waited, back.job_id) == ("WEIRD", 300.0, "job-1")
    assert "BRIDGE_UNKNOWN_STATUS_TIMEOUT" in str(back)
