"""``bridge plugins``: list every available plugin, and let plugins add CLI commands."""

from __future__ import annotations

import sys

import click

from bridge.cli._common import EXIT_INVALID, echo_json


def register(group: click.Group) -> None:
    group.add_command(plugins_command)
    _register_plugin_commands(group)


def _register_plugin_commands(group: click.Group) -> None:
    """Commands contributed by plugins (``bridge_register_commands``). A broken plugin must
    not break the whole CLI: warn on stderr and leave ``bridge plugins`` to explain.

    First-party plugins add no commands, and are not started here: a CLI call must not,
    say, open the metrics port a worker on the same host serves."""
    from bridge.errors import BridgeError
    from bridge.hooks import Hooks
    from bridge.plugins import make_plugin_manager

    try:
        hooks = Hooks(make_plugin_manager(first_party=False))
        if hooks.active("bridge_register_commands"):
            hooks.register_commands(group)
    except BridgeError as exc:
        click.echo(f"bridge: plugin commands not loaded: {exc} (run 'bridge plugins')", err=True)


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--all/--enabled", "show_all", default=True, help="List disabled plugins too (default).")
def plugins_command(as_json: bool, show_all: bool) -> None:
    """List available plugins: enabled?, where from, which hooks.

    First-party plugins are listed even when not configured. Exits 7 when a plugin failed
    to load (its row says why).
    """
    from bridge.plugins import make_plugin_manager

    pm = make_plugin_manager(strict=False)
    infos = [i for i in pm.infos.values() if show_all or i.enabled]
    rows = [
        {
            "name": info.name,
            "enabled": info.enabled,
            "source": info.source,
            "ref": info.ref,
            "hooks": info.hooks,
            "status": info.error or info.reason or "enabled",
        }
        for info in infos
    ]
    if as_json:
        echo_json(rows)
    else:
        _print_table(rows)
    if any(info.error for info in pm.infos.values()):
        sys.exit(EXIT_INVALID)


def _print_table(rows: list[dict]) -> None:
    headers = ("name", "enabled", "source", "hooks", "status")
    table = [
        (r["name"], "yes" if r["enabled"] else "no", r["source"],
         ", ".join(h.removeprefix("bridge_") for h in r["hooks"]) or "-", r["status"])
        for r in rows
    ]
    widths = [max(len(h), *(len(str(row[i])) for row in table)) if table else len(h) for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in table:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
