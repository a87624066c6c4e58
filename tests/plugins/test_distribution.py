"""A third-party plugin shipped as a distribution (a ``.dist-info`` with ``entry_points.txt``
on sys.path): discovered, listed by ``bridge plugins``, used; a broken one is named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge.errors import ConfigurationError
from bridge.hooks import Hooks
from bridge.plugins import make_plugin_manager


def make_distribution(site: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    info = site / f"{dist}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {ref}" for name, ref in entry_points.items())
    (info / "entry_points.txt").write_text(f"[bridge]\n{lines}\n")
    for name, body in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(body))


SHOUT = """
    from bridge import hookimpl

    class Shout:
        def __init__(self, options):
            self.suffix = options.get("suffix", "!")

        @hookimpl
        def bridge_transform_input(self, ctx, input):
            return {"text": input["text"].upper() + self.suffix}

        @hookimpl
        def bridge_register_commands(self, cli):
            import click

            @cli.command("shout")
            @click.argument("text")
            def shout(text):
                click.echo(text.upper())
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return root


def run_cli(args: list[str], env: dict[str, str] | None = None):
    from bridge.cli import main

    return CliRunner().invoke(main, args, env=env or {}, catch_exceptions=False)


def test_a_distribution_plugin_is_discovered_listed_and_used(site, monkeypatch):
    make_distribution(site, "bridge_shout", "1.2.0", {"shout": "bridge_shout_mod:Shout"},
                      {"bridge_shout_mod": SHOUT})
    monkeypatch.setenv("BRIDGE_PLUGIN_SHOUT_SUFFIX", "?!")

    pm = make_plugin_manager()
    info = pm.infos["shout"]
    assert (info.enabled, info.source, info.ref) == (True, "entry point bridge_shout 1.2.0", "bridge_shout_mod:Shout")
    assert info.hooks == ["bridge_register_commands", "bridge_transform_input"]

    hooks = Hooks.from_settings()
    assert hooks.transform_input(hooks.context("ep"), {"text": "hi"}) == {"text": "HI?!"}

    listed = run_cli(["plugins", "--json"], env={"BRIDGE_PLUGIN_SHOUT_SUFFIX": "?!"})
    assert listed.exit_code == 0
    rows = {row["name"]: row for row in json.loads(listed.output)}
    assert rows["shout"]["source"] == "entry point bridge_shout 1.2.0" and rows["shout"]["enabled"]
    assert rows["cache"]["enabled"] is False and rows["cache"]["source"] == "first-party"

    table = run_cli(["plugins"]).output
    assert "shout" in table and "entry point bridge_shout 1.2.0" in table and "transform_input" in table

    # its CLI command is registered on the group
    from bridge.cli import main

    group = type(main)("bridge")
    hooks.register_commands(group)
    assert CliRunner().invoke(group, ["shout", "hey"]).output == "HEY\n"


def test_autoload_can_be_turned_off(site):
    make_distribution(site, "bridge_shout", "1.2.0", {"shout": "bridge_shout_mod:Shout"},
                      {"bridge_shout_mod": SHOUT})
    pm = make_plugin_manager(environ={"BRIDGE_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert "shout" not in pm.infos


def test_a_broken_distribution_plugin_fails_with_an_error_naming_it(site):
    make_distribution(site, "bridge_broken", "0.1", {"brokenplug": "bridge_broken_mod:plugin"},
                      {"bridge_broken_mod": "import a_module_that_does_not_exist\n"})
    with pytest.raises(ConfigurationError) as info:
        make_plugin_manager(environ={})
    message = str(info.value)
    assert "plugin 'brokenplug' (entry point bridge_broken 0.1) failed to load" in message
    assert "ModuleNotFoundError" in message and "BRIDGE_DISABLE_PLUGINS" in message

    result = run_cli(["plugins"])
    assert result.exit_code == 7
    assert "brokenplug" in result.output and "failed to load" in result.output

    assert run_cli(["plugins"], env={"BRIDGE_DISABLE_PLUGINS": "brokenplug"}).exit_code == 0


def test_a_plugin_command_is_on_the_real_cli(site):
    make_distribution(site, "bridge_shout", "1.2.0", {"shout": "bridge_shout_mod:Shout"},
                      {"bridge_shout_mod": SHOUT})
    bridge = Path(sys.executable).parent / "bridge"
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([str(bridge), "shout", "plugged in"], env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "PLUGGED IN\n"), done.stderr
