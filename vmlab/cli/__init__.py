"""The `vmlab` command. Subcommands are imported only when used, so `vmlab --help` stays fast."""

from __future__ import annotations

import importlib
from typing import Any

import click

from vmlab import __version__

# name -> ("module:attribute", one-line help); the plain dict is the whole registry, and `vmlab --help` reads
# the help from here instead of importing every command
COMMANDS: dict[str, tuple[str, str]] = {
    "bake": ("vmlab.cli.bake:bake", "Apply a recipe on a builder VM and save it as an image."),
    "images": ("vmlab.cli.images:images", "List, show, export or remove vmlab images."),
    "push": ("vmlab.cli.push:push", "Push an image to a container registry (container provider)."),
    "share-ami": ("vmlab.cli.share:share_ami", "Share an EC2 image with accounts, an organization or OU; copy it "
                                                "to regions."),
    "up": ("vmlab.cli.labs:up", "Launch (or resume) a lab from an image with a fresh token."),
    "tunnel": ("vmlab.cli.tunnel:tunnel", "Forward localhost to a lab's JupyterLab and print its URL."),
    "ls": ("vmlab.cli.labs:ls", "List labs and their state."),
    "status": ("vmlab.cli.labs:status", "Show a lab's settings and its data sync status."),
    "ssh": ("vmlab.cli.labs:ssh", "Open a shell on a lab."),
    "run": ("vmlab.cli.run:run", "Send a folder to a lab, run a command there to completion, fetch its outputs."),
    "ssh-config": ("vmlab.cli.sshconfig:ssh_config", "Write SSH Host entries for the labs (`ssh NAME`)."),
    "stop": ("vmlab.cli.labs:stop", "Stop a lab (disk kept)."),
    "start": ("vmlab.cli.labs:start", "Start a stopped lab."),
    "down": ("vmlab.cli.labs:down", "Terminate a lab and delete its disk."),
    "gc": ("vmlab.cli.gc:gc", "Find and remove what vmlab left behind in an EC2 region."),
    "provision": ("vmlab.cli.provision:provision", "Apply a recipe to the SSH hosts of an inventory."),
    "inventory": ("vmlab.cli.inventory:inventory", "Show an inventory as ansible-inventory would (--list, "
                                                   "--host, --graph)."),
    "local": ("vmlab.cli.local:local", "Manage the local QEMU provider (base image)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        entry = COMMANDS.get(name)
        if entry is None:
            return None
        module, _, attr = entry[0].partition(":")
        command: Any = getattr(importlib.import_module(module), attr)
        return command  # type: ignore[no-any-return]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, help_) in COMMANDS.items()])


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
