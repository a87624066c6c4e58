"""Fixtures for the plugin tests: a clean plugin environment and a quick ``Hooks`` builder."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bridge.hooks import Hooks
from bridge.plugins import make_plugin_manager


@pytest.fixture(autouse=True)
def clean_plugin_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No plugin settings leak in from the shell or between tests."""
    for key in list(os.environ):
        if key.startswith(("BRIDGE_PLUGIN", "BRIDGE_DISABLE_PLUGIN")):
            monkeypatch.delenv(key)
    Hooks.clear_cache()
    yield
    Hooks.clear_cache()


@pytest.fixture
def make_hooks() -> Iterator[Callable[..., Hooks]]:
    """``make_hooks(name=plugin, ...)``: a Hooks over just these plugins (registered in order)."""
    made: list[Hooks] = []

    def make(_options: dict[str, Any] | None = None, **plugins: Any) -> Hooks:
        pm = make_plugin_manager(
            environ={}, first_party=False, entry_points=False, extra=plugins, options=_options
        )
        hooks = Hooks(pm)
        made.append(hooks)
        return hooks

    yield make
    for hooks in made:
        hooks.close()
