"""Placeholder: filled in by its owner."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    pass
