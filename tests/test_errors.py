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


# ------------------------------------------------------------------ keyword fields

def test_setting_a_field_updates_args_so_rebuilds_keep_it() -> None:
    err = errors.RateLimited("429 Too Many Requests", None, "ep", None, 429, None)
    err.job_id = "job-9"
    err.retry_after = 4.0
    err.message = "slow down"
    assert err.args == ("slow down", "job-9", "ep", None, 429, 4.0)
    for back in (pickle.loads(pickle.dumps(err)), errors.RateLimited(*err.args)):
        assert (back.message, back.job_id, back.retry_after) == ("slow down", "job-9", 4.0)
        assert str(back) == str(err)


def test_fields_can_be_set_on_every_error_and_survive_celery() -> None:
    app = Celery("t", backend="cache+memory://", set_as_current=False)
    app.conf.result_serializer = "json"
    for cls in ALL_ERRORS:
        err = _sample(cls)
        err.job_id, err.endpoint_id = "job-2", "ep-2"
        back = app.backend.exception_to_python(json.loads(json.dumps(app.backend.prepare_exception(err))))
        assert (type(back), back.job_id, back.endpoint_id) == (cls, "job-2", "ep-2"), cls


def test_keyword_construction_and_positional_give_the_same_error() -> None:
    by_kw = errors.RateLimited("too many", job_id="j", retry_after=3)
    assert by_kw.args == errors.RateLimited("too many", "j", None, None, 429, 3).args
    assert (by_kw.job_id, by_kw.retry_after, by_kw.status_code) == ("j", 3, 429)
    failed = errors.JobFailed("job FAILED", endpoint_id="ep", error={"boom": 1})
    assert failed.args == ("job FAILED", None, "ep", None, {"boom": 1})
    timeout = errors.Timeout("late", job_id="j", timeout=2.0)
    assert timeout.args == ("late", "j", None, None, 2.0) and timeout.timeout == 2.0


def test_hint_reads_the_class_default_until_set() -> None:
    err = errors.NotFound("404", "j", "ep", None, 404)
    assert err.hint == errors.NotFound.default_hint and err.args[3] is None
    err.hint = errors.NotFound.endpoint_hint
    assert err.args[3] == errors.NotFound.endpoint_hint and "base URL" in str(err)
    err.hint = None
    assert err.hint == errors.NotFound.default_hint


# Celery result meta as bridge 0.x (before the keyword fields) stored it, produced by that
# code with app.backend.prepare_exception(...) and json.dumps: they must load unchanged.
STORED_JSON = [
    '{"exc_type": "BridgeError", "exc_message": ["something happened", "job-1", "ep", null], "exc_module": "bridge.errors"}',
    '{"exc_type": "ConfigurationError", "exc_message": ["no API key", null, null, null], "exc_module": "bridge.errors"}',
    '{"exc_type": "JobRejected", "exc_message": ["plugin \'schema\': input is not an object", "job-1", "ep", "the plugin named in the message and its options"], "exc_module": "bridge.errors"}',
    '{"exc_type": "TransportError", "exc_message": ["connection refused", null, "ep", null], "exc_module": "bridge.errors"}',
    '{"exc_type": "BadRequest", "exc_message": ["400 Bad Request", "job-1", "ep", null, 400], "exc_module": "bridge.errors"}',
    '{"exc_type": "NotFound", "exc_message": ["404 Not Found", "job-1", "ep", null, 404], "exc_module": "bridge.errors"}',
    '{"exc_type": "RateLimited", "exc_message": ["429 Too Many Requests", "job-1", "ep", null, 429, 2.5], "exc_module": "bridge.errors"}',
    '{"exc_type": "ServerError", "exc_message": ["503 Service Unavailable", "job-1", "ep", null, 503], "exc_module": "bridge.errors"}',
    '{"exc_type": "UnknownStatus", "exc_message": ["status \'WEIRD\' for 300 s", "job-1", "ep", null, null, "WEIRD", 300.0], "exc_module": "bridge.errors"}',
    '{"exc_type": "Timeout", "exc_message": ["waited too long", "job-1", "ep", null, 1.5], "exc_module": "bridge.errors"}',
    '{"exc_type": "RedisUnavailable", "exc_message": ["redis down", null, null, null, "redis://:***@h:6379/0", 300.0], "exc_module": "bridge.errors"}',
    '{"exc_type": "JobFailed", "exc_message": ["job failed", "job-1", "ep", null, "boom"], "exc_module": "bridge.errors"}',
    '{"exc_type": "JobCancelled", "exc_message": ["job cancelled", "job-1", "ep", null, null], "exc_module": "bridge.errors"}',
    '{"exc_type": "JobTimedOut", "exc_message": ["job timed out", "job-1", "ep", null, null], "exc_module": "bridge.errors"}',
    '{"exc_type": "PayloadTooLarge", "exc_message": ["body is 11 MB", null, "ep", null], "exc_module": "bridge.errors"}',
]

#: Fields some stored forms must read back as (what the storing code had set).
STORED_FIELDS: dict[str, dict[str, object]] = {
    "RateLimited": {"status_code": 429, "retry_after": 2.5, "job_id": "job-1"},
    "UnknownStatus": {"status": "WEIRD", "waited": 300.0, "status_code": None},
    "Timeout": {"timeout": 1.5, "endpoint_id": "ep"},
    "RedisUnavailable": {"url": "redis://:***@h:6379/0", "outage": 300.0, "job_id": None},
    "JobFailed": {"error": "boom", "message": "job failed"},
    "JobRejected": {"hint": "the plugin named in the message and its options"},
    "NotFound": {"status_code": 404, "hint": errors.NotFound.default_hint},
}


@pytest.mark.parametrize("stored", STORED_JSON, ids=lambda s: json.loads(s)["exc_type"])
def test_errors_stored_by_the_previous_version_still_load(stored: str) -> None:
    app = Celery("t", backend="cache+memory://", set_as_current=False)
    app.conf.result_serializer = "json"
    meta = json.loads(stored)
    back = app.backend.exception_to_python(meta)
    assert type(back) is getattr(errors, meta["exc_type"])
    assert list(back.args) == meta["exc_message"]
    assert back.message == meta["exc_message"][0] and back.job_id == meta["exc_message"][1]
    for name, value in STORED_FIELDS.get(meta["exc_type"], {}).items():
        assert getattr(back, name) == value, name
    # ...and what the new code stores for it is the very same meta
    assert json.loads(json.dumps(app.backend.prepare_exception(back))) == meta


# pickle.dumps(err, protocol=4) by the previous version, whose fields were instance
# attributes (so the pickle carries a __dict__ state next to the args).
STORED_PICKLES = {
    "RateLimited": b"\x80\x04\x95\x02\x01\x00\x00\x00\x00\x00\x00\x8c\rbridge.errors\x94\x8c\x0bRateLimited\x94\x93\x94(\x8c\x15429 Too Many Requests\x94\x8c\x05job-1\x94\x8c\x02ep\x94NM\xad\x01G@\x04\x00\x00\x00\x00\x00\x00t\x94R\x94}\x94(\x8c\x07message\x94h\x03\x8c\x06job_id\x94h\x04\x8c\x0bendpoint_id\x94h\x05\x8c\x04hint\x94\x8cLyour request rate against the endpoint's limits; bridge retries with backoff\x94\x8c\x0bstatus_code\x94M\xad\x01\x8c\x0bretry_after\x94G@\x04\x00\x00\x00\x00\x00\x00ub.",  # noqa: E501
    "UnknownStatus": b"\x80\x04\x95E\x01\x00\x00\x00\x00\x00\x00\x8c\rbridge.errors\x94\x8c\rUnknownStatus\x94\x93\x94(\x8c\x18status 'WEIRD' for 300 s\x94\x8c\x05job-1\x94\x8c\x02ep\x94NN\x8c\x05WEIRD\x94G@r\xc0\x00\x00\x00\x00\x00t\x94R\x94}\x94(\x8c\x07message\x94h\x03\x8c\x06job_id\x94h\x04\x8c\x0bendpoint_id\x94h\x05\x8c\x04hint\x94\x8c\x80that the base URL points at a RunPod-compatible endpoint; BRIDGE_UNKNOWN_STATUS_TIMEOUT sets how long such a status is waited on\x94\x8c\x0bstatus_code\x94N\x8c\x06status\x94h\x06\x8c\x06waited\x94G@r\xc0\x00\x00\x00\x00\x00ub.",  # noqa: E501
    "Timeout": b"\x80\x04\x95\xe0\x00\x00\x00\x00\x00\x00\x00\x8c\rbridge.errors\x94\x8c\x07Timeout\x94\x93\x94(\x8c\x0fwaited too long\x94\x8c\x05job-1\x94\x8c\x02ep\x94NG?\xf8\x00\x00\x00\x00\x00\x00t\x94R\x94}\x94(\x8c\x07message\x94h\x03\x8c\x06job_id\x94h\x04\x8c\x0bendpoint_id\x94h\x05\x8c\x04hint\x94\x8cLthe timeout you passed; the remote job may still be running unless cancelled\x94\x8c\x07timeout\x94G?\xf8\x00\x00\x00\x00\x00\x00ub.",  # noqa: E501
    "JobFailed": b"\x80\x04\x95\xb1\x00\x00\x00\x00\x00\x00\x00\x8c\rbridge.errors\x94\x8c\tJobFailed\x94\x93\x94(\x8c\njob failed\x94\x8c\x05job-1\x94\x8c\x02ep\x94N\x8c\x04boom\x94t\x94R\x94}\x94(\x8c\x07message\x94h\x03\x8c\x06job_id\x94h\x04\x8c\x0bendpoint_id\x94h\x05\x8c\x04hint\x94\x8c+the error text above and the handler's logs\x94\x8c\x05error\x94h\x06ub.",  # noqa: E501
    "RedisUnavailable": b"\x80\x04\x95V\x01\x00\x00\x00\x00\x00\x00\x8c\rbridge.errors\x94\x8c\x10RedisUnavailable\x94\x93\x94(\x8c\nredis down\x94NNN\x8c\x15redis://:***@h:6379/0\x94G@r\xc0\x00\x00\x00\x00\x00t\x94R\x94}\x94(\x8c\x07message\x94h\x03\x8c\x06job_id\x94N\x8c\x0bendpoint_id\x94N\x8c\x04hint\x94\x8c\xacthat Redis is running and reachable at that URL (BRIDGE_REDIS_URL or the result backend), and BRIDGE_REDIS_OUTAGE, how long bridge retries through an outage (default 300 s)\x94\x8c\x03url\x94h\x04\x8c\x06outage\x94G@r\xc0\x00\x00\x00\x00\x00ub.",  # noqa: E501
}

#: The args each pickle above was made from.
PICKLED_ARGS = {
    "RateLimited": ("429 Too Many Requests", "job-1", "ep", None, 429, 2.5),
    "UnknownStatus": ("status 'WEIRD' for 300 s", "job-1", "ep", None, None, "WEIRD", 300.0),
    "Timeout": ("waited too long", "job-1", "ep", None, 1.5),
    "JobFailed": ("job failed", "job-1", "ep", None, "boom"),
    "RedisUnavailable": ("redis down", None, None, None, "redis://:***@h:6379/0", 300.0),
}


@pytest.mark.parametrize("name", sorted(STORED_PICKLES))
def test_pickles_of_the_previous_version_still_load(name: str) -> None:
    back = pickle.loads(STORED_PICKLES[name])
    cls = getattr(errors, name)
    assert type(back) is cls
    assert back.args == PICKLED_ARGS[name]
    fresh = cls(*PICKLED_ARGS[name])
    assert str(back) == str(fresh) and back.hint == cls.default_hint
    for field in ("message", "job_id", "endpoint_id", "status_code", "retry_after", "status",
                  "waited", "timeout", "url", "outage", "error"):
        assert getattr(back, field, None) == getattr(fresh, field, None), field
