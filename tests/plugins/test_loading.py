"""make_plugin_manager: first-party plugins inert until configured, options from env and
file, BRIDGE_PLUGINS, BRIDGE_DISABLE_PLUGINS, and typed errors that name a broken plugin."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from bridge.errors import ConfigurationError
from bridge.hooks import Hooks, JobContext
from bridge.plugins import FIRST_PARTY, make_plugin_manager


def write_module(root: Path, name: str, body: str) -> None:
    (root / f"{name}.py").write_text(textwrap.dedent(body))


@pytest.fixture
def mods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path for plugin modules written by the test."""
    root = tmp_path / "mods"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return root


GOOD = """
    from bridge import hookimpl

    @hookimpl
    def bridge_transform_input(ctx, input):
        return {**input, "tagged_by": ctx.options_for(OPTION_NAME).get("tag", "none")}

    OPTION_NAME = "{name}"

    class Plugin:
        def __init__(self, options):
            self.tag = options.get("tag", "default")

        @hookimpl
        def bridge_transform_output(self, output):
            return [output, self.tag]
"""


def test_first_party_plugins_are_available_but_inert_by_default():
    pm = make_plugin_manager(environ={}, entry_points=False)
    assert list(pm.infos) == list(FIRST_PARTY)
    assert all(not info.enabled and "not configured" in info.reason for info in pm.infos.values())
    assert pm.get_plugins() == set()
    assert not Hooks(pm).enabled
    # their hooks are still listed, read from the class without instantiating it
    assert pm.infos["cache"].hooks == ["bridge_lookup", "bridge_on_cancelled", "bridge_on_failed",
                                       "bridge_transform_output"]


def test_an_env_option_enables_a_first_party_plugin_and_reaches_it():
    pm = make_plugin_manager(
        environ={"BRIDGE_PLUGIN_REDACT_FIELDS": "ssn,email", "BRIDGE_PLUGIN_OPENAI_CHAT_MODE": "openai",
                 "BRIDGE_PLUGIN_OPENAI_CHAT_DEFAULT_MAX_TOKENS": "64"},
        entry_points=False,
    )
    assert pm.infos["redact"].enabled and pm.infos["openai_chat"].enabled
    # the longest plugin name wins: OPENAI_CHAT_MODE is openai_chat's "mode"; JSON values parse
    assert pm.options["openai_chat"] == {"mode": "openai", "default_max_tokens": 64}
    assert Hooks(pm).redact(JobContext("ep"), {"ssn": "1", "ok": 2}) == {"ssn": "***", "ok": 2}


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_options_file_json_or_toml_with_env_on_top(tmp_path, suffix):
    path = tmp_path / f"plugins{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps({"redact": {"fields": ["ssn"], "mask": "[x]"}}))
    else:
        path.write_text('[redact]\nfields = ["ssn"]\nmask = "[x]"\n')
    pm = make_plugin_manager(
        environ={"BRIDGE_PLUGINS_CONFIG": str(path), "BRIDGE_PLUGIN_REDACT_MASK": "##"}, entry_points=False
    )
    assert pm.options["redact"] == {"fields": ["ssn"], "mask": "##"}


def test_bad_options_file_is_a_clear_configuration_error(tmp_path):
    path = tmp_path / "p.json"
    path.write_text("{not json")
    with pytest.raises(ConfigurationError, match="p.json is not valid"):
        make_plugin_manager(environ={"BRIDGE_PLUGINS_CONFIG": str(path)}, entry_points=False)


def test_enabled_false_turns_a_configured_plugin_off():
    pm = make_plugin_manager(
        environ={"BRIDGE_PLUGIN_REDACT_FIELDS": "x", "BRIDGE_PLUGIN_REDACT_ENABLED": "false"}, entry_points=False
    )
    assert not pm.infos["redact"].enabled and "enabled" in pm.infos["redact"].reason


def test_bridge_plugins_lists_modules_and_classes_with_names(mods):
    write_module(mods, "tagger", GOOD.replace("{name}", "tagger"))
    pm = make_plugin_manager(
        environ={"BRIDGE_PLUGINS": "tagger, cls=tagger:Plugin", "BRIDGE_PLUGIN_TAGGER_TAG": "t1",
                 "BRIDGE_PLUGIN_CLS_TAG": "t2"},
        entry_points=False, first_party=False,
    )
    assert pm.infos["tagger"].source == "BRIDGE_PLUGINS" and pm.infos["tagger"].enabled
    hooks = Hooks(pm)
    assert hooks.transform_input(hooks.context("ep"), {}) == {"tagged_by": "t1"}
    assert hooks.transform_output(hooks.context("ep"), "o") == ["o", "t2"]  # class built with its options


def test_disable_plugins_skips_even_a_broken_plugin_before_import(mods):
    write_module(mods, "broken_mod", "raise ImportError('missing dependency: numpy')\n")
    env = {"BRIDGE_PLUGINS": "broken_mod"}
    with pytest.raises(ConfigurationError) as info:
        make_plugin_manager(environ=env, entry_points=False)
    assert "plugin 'broken_mod' (BRIDGE_PLUGINS) failed to load: ImportError: missing dependency: numpy" in str(info.value)
    pm = make_plugin_manager(environ={**env, "BRIDGE_DISABLE_PLUGINS": "broken_mod"}, entry_points=False)
    assert pm.infos["broken_mod"].reason == "disabled by BRIDGE_DISABLE_PLUGINS"


def test_a_misspelt_hook_fails_loudly_naming_plugin_and_hook(mods):
    write_module(mods, "typo", """
        from bridge import hookimpl

        @hookimpl
        def bridge_transfrom_input(ctx, input):
            return input
    """)
    with pytest.raises(ConfigurationError, match="plugin 'typo'.*unknown hook.*bridge_transfrom_input"):
        make_plugin_manager(environ={"BRIDGE_PLUGINS": "typo"}, entry_points=False)


def test_an_argument_not_in_the_spec_fails_naming_the_plugin(mods):
    write_module(mods, "badarg", """
        from bridge import hookimpl

        @hookimpl
        def bridge_transform_input(ctx, payload):
            return payload
    """)
    with pytest.raises(ConfigurationError, match="plugin 'badarg'.*does not fit.*payload"):
        make_plugin_manager(environ={"BRIDGE_PLUGINS": "badarg"}, entry_points=False)


def test_a_plugin_rejecting_its_options_is_named():
    with pytest.raises(ConfigurationError, match="plugin 'openai_chat'.*mode 'chat'"):
        make_plugin_manager(environ={"BRIDGE_PLUGIN_OPENAI_CHAT_MODE": "chat"}, entry_points=False)


def test_two_plugins_with_one_name_is_an_error(mods):
    write_module(mods, "redact", GOOD.replace("{name}", "redact"))
    with pytest.raises(ConfigurationError, match="two plugins are named 'redact'"):
        make_plugin_manager(environ={"BRIDGE_PLUGINS": "redact"}, entry_points=False)


def test_non_strict_loading_records_the_error_and_keeps_the_rest(mods):
    write_module(mods, "broken_mod", "raise RuntimeError('boom')\n")
    write_module(mods, "tagger", GOOD.replace("{name}", "tagger"))
    pm = make_plugin_manager(environ={"BRIDGE_PLUGINS": "broken_mod,tagger"}, entry_points=False, strict=False)
    assert "RuntimeError: boom" in pm.infos["broken_mod"].error
    assert pm.infos["tagger"].enabled


def test_an_unconfigured_first_party_plugin_with_a_missing_dependency_is_listed_not_fatal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "jsonschema", None)  # as if the extra were not installed
    monkeypatch.delitem(sys.modules, "bridge_plugins.schema", raising=False)
    pm = make_plugin_manager(environ={})
    info = pm.infos["schema"]
    assert not info.enabled
    assert "jsonschema" in info.error
    with pytest.raises(ConfigurationError, match="schema"):
        make_plugin_manager(environ={"BRIDGE_PLUGIN_SCHEMA_DIR": "/nonexistent"})
