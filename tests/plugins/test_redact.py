"""redact: configured fields and key-looking values removed from what goes to logs/meta."""

from __future__ import annotations

from bridge_plugins.redact import redact

from bridge.hooks import Hooks, JobContext
from bridge.plugins import make_plugin_manager


def test_configured_and_credential_fields_are_masked_at_any_depth_without_mutation():
    value = {"input": {"ssn": "123-45-6789", "api_key": "abc", "Authorization": "Bearer xyz123456",
                       "prompt": "hello", "nested": [{"Email": "a@b.c"}]}}
    out = redact(value, ["ssn", "email"])
    assert out == {"input": {"ssn": "***", "api_key": "***", "Authorization": "***", "prompt": "hello",
                             "nested": [{"Email": "***"}]}}
    assert value["input"]["ssn"] == "123-45-6789"


def test_key_looking_strings_are_masked_inside_text():
    text = ("keys: sk-proj-abcdefghijklmnop1234 rpa_ABCDEFGHIJKLMNOPQRSTUV AKIAABCDEFGHIJKLMNOP "
            "eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJSMeKKF2QT4 token=hunter22 and normal words")
    out = redact(text)
    for secret in ("sk-proj-abc", "rpa_ABC", "AKIAABC", "eyJhbGci", "hunter22"):
        assert secret not in out
    assert out.endswith("and normal words")


def test_the_plugin_runs_through_bridge_redact_only_for_its_endpoints():
    pm = make_plugin_manager(
        environ={"BRIDGE_PLUGIN_REDACT_FIELDS": "ssn", "BRIDGE_PLUGIN_REDACT_ENDPOINTS": "a,b",
                 "BRIDGE_PLUGIN_REDACT_MASK": "[removed]"},
        entry_points=False,
    )
    hooks = Hooks(pm)
    assert hooks.redact(JobContext("a"), {"ssn": 1, "x": 2}) == {"ssn": "[removed]", "x": 2}
    assert hooks.redact(JobContext("z"), {"ssn": 1}) == {"ssn": 1}
    # it never touches what is sent or returned
    assert not hooks.active("transform_input") and not hooks.active("transform_output")
