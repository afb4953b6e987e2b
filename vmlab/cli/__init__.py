"""The `vmlab` command. Subcommands are imported only when used, so `vmlab --help` stays fast."""

from __future__ import annotations

import importlib
from typing import Any

import click

from vmlab import __version__

# command name -> "module:attribute"; the plain dict is the whole registry
COMMANDS: dict[str, str] = {
    "provision": "vmlab.cli.provision:provision",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        command: Any = getattr(importlib.import_module(module), attr)
        return command  # type: ignore[no-any-return]


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="vmlab")
def cli() -> None:
    """Bake VM images with a recipe, launch JupyterLab VMs from them, and tunnel to them safely.

    \b
    Example:
      vmlab provision recipes/example.py -i inventory.example.yaml --check
    """


def main() -> None:
    cli(prog_name="vmlab")
