"""schema: JSON Schema per endpoint, input vetoed before submit with the bad field's path."""

from __future__ import annotations

import json

import pytest

from bridge.errors import ConfigurationError, JobRejected, MalformedResponse
from bridge.hooks import Hooks, JobContext
from bridge.plugins import make_plugin_manager

INPUT = {
    "type": "object", "required": ["prompt"],
    "properties": {"prompt": {"type": "string"},
                   "sampling": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}},
}
OUTPUT = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}


@pytest.fixture
def hooks(tmp_path) -> Hooks:
    (tmp_path / "llm.input.json").write_text(json.dumps(INPUT))
    (tmp_path / "llm.output.json").write_text(json.dumps(OUTPUT))
    return Hooks(make_plugin_manager(environ={"BRIDGE_PLUGIN_SCHEMA_DIR": str(tmp_path)}, entry_points=False))


def test_a_valid_input_and_output_pass_unchanged(hooks):
    ctx = JobContext("llm")
    value = {"prompt": "hi", "sampling": {"n": 2}}
    assert hooks.transform_input(ctx, value) is value
    assert hooks.transform_output(ctx, {"text": "ok"}) == {"text": "ok"}


def test_a_bad_input_is_rejected_with_the_path_of_the_field(hooks):
    with pytest.raises(JobRejected) as info:
        hooks.transform_input(JobContext("llm", task_id="t1"), {"prompt": "hi", "sampling": {"n": 0}})
    message = str(info.value)
    assert "at $.sampling.n: 0 is less than the minimum of 1" in message
    assert "schema" in message and info.value.endpoint_id == "llm"


def test_a_missing_field_and_a_bad_output(hooks):
    with pytest.raises(JobRejected, match=r"at \$: 'prompt' is a required property"):
        hooks.transform_input(JobContext("llm"), {})
    with pytest.raises(MalformedResponse, match=r"output schema: at \$.text: 5 is not of type 'string'"):
        hooks.transform_output(JobContext("llm", job_id="j"), {"text": 5})


def test_endpoints_without_a_schema_are_not_checked(hooks):
    assert hooks.transform_input(JobContext("other"), 12) == 12


def test_inline_schemas_from_the_options_file(tmp_path):
    config = tmp_path / "plugins.json"
    config.write_text(json.dumps({"schema": {"endpoints": {"ep": {"input": {"type": "array", "maxItems": 1}}}}}))
    hooks = Hooks(make_plugin_manager(environ={"BRIDGE_PLUGINS_CONFIG": str(config)}, entry_points=False))
    with pytest.raises(JobRejected, match=r"at \$: \[1, 2\] is too long"):
        hooks.transform_input(JobContext("ep"), [1, 2])


def test_an_invalid_schema_fails_at_load_naming_plugin_and_file(tmp_path):
    (tmp_path / "ep.input.json").write_text(json.dumps({"type": "no-such-type"}))
    with pytest.raises(ConfigurationError, match=r"plugin 'schema'.*ep.input.json is not a valid JSON Schema"):
        make_plugin_manager(environ={"BRIDGE_PLUGIN_SCHEMA_DIR": str(tmp_path)}, entry_points=False)
    with pytest.raises(ConfigurationError, match="plugin 'schema'.*not a directory"):
        make_plugin_manager(environ={"BRIDGE_PLUGIN_SCHEMA_DIR": str(tmp_path / "nope")}, entry_points=False)
