"""The ``bridge`` command line. Each area registers its commands from its own module."""

from __future__ import annotations

import click

from bridge import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bridge")
def main() -> None:
    """bridge: send work from Celery to RunPod-style serverless endpoints."""


def _register() -> None:
    # One line per area; each module exposes register(group).
    from bridge.cli import batch_cmd, client_cmds, demo, gateway_cmd, plugins_cmd, serve

    for module in (serve, client_cmds, batch_cmd, gateway_cmd, plugins_cmd, demo):
        module.register(main)


_register()
