"""Packaging: every sub-package ships in the wheel; the console script and py.typed exist."""

from __future__ import annotations

import pathlib

import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_directory_is_listed_for_the_wheel() -> None:
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "bridge").rglob("__init__.py")
    }
    assert found <= listed, f"not packaged: {sorted(found - listed)}"
    assert "bridge_plugins" in listed  # plugins/ ships under a name that cannot collide
    assert _pyproject()["tool"]["setuptools"]["package-dir"]["bridge_plugins"] == "plugins"


def test_console_script_and_typing_marker() -> None:
    assert _pyproject()["project"]["scripts"]["bridge"] == "bridge.cli:main"
    assert (ROOT / "bridge" / "py.typed").exists()
    assert _pyproject()["project"]["requires-python"] == ">=3.10"
