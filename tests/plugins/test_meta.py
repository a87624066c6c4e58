"""Governance (after datasette): every hook in bridge.hookspecs is documented in
docs/plugins.md with its full signature, and has a ``test_hook_<name>`` test."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bridge.plugins import make_plugin_manager

ROOT = Path(__file__).resolve().parents[2]
HOOKS = sorted(
    (name, caller.spec.argnames)
    for name, caller in vars(make_plugin_manager(environ={}, entry_points=False).hook).items()
    if name.startswith("bridge_") and caller.spec is not None
)


def test_there_are_hooks():
    assert len(HOOKS) >= 15


@pytest.mark.parametrize("name, argnames", HOOKS, ids=[h[0] for h in HOOKS])
def test_hook_is_documented(name, argnames):
    docs = (ROOT / "docs" / "plugins.md").read_text()
    assert f"#### `{name}({', '.join(argnames)})`" in docs


@pytest.mark.parametrize("name", [h[0] for h in HOOKS])
def test_hook_is_tested(name):
    tests = set()
    for path in Path(__file__).parent.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                tests.add(node.name)
    assert f"test_hook_{name}" in tests


def test_every_hook_is_marked_with_its_kind_and_run_by_hooks():
    from bridge import hookspecs
    from bridge.hooks import Hooks

    specs = Hooks.empty().specs
    for name, _ in HOOKS:
        kind = getattr(getattr(hookspecs, name), hookspecs.KIND, None)
        assert kind in ("transform", "first_answer", "observer", "registration"), name
        assert specs[name].kind == kind
    assert sorted(specs) == [name for name, _ in HOOKS]
