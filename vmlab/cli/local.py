"""`vmlab local`: the local QEMU provider's one-time setup."""

from __future__ import annotations

import time

import click

from vmlab.cli.output import Output, handle_errors, json_option


@click.group()
def local() -> None:
    """The local provider: QEMU VMs on this machine (KVM when it works, TCG otherwise).

    \b
    Example:
      vmlab local init
    """


@local.command()
@json_option
@handle_errors
def init(json_mode: bool) -> None:
    """Build the Debian 12 base image once (debootstrap; needs root), or say where it is.

    \b
    Example:
      sudo vmlab local init
    """
    from vmlab.providers import get_provider, name_for, require
    from vmlab.providers.capabilities import BuildsBaseImage

    out = Output(json_mode)
    builder = require(get_provider(name_for(BuildsBaseImage, None)), BuildsBaseImage, "build a base image")
    started = time.monotonic()
    last = [""]

    def progress(message: str, fraction: float | None) -> None:
        if message != last[0]:
            last[0] = message
            out.say(message if fraction is None else f"{message} ({fraction:.0%})")

    image = builder.build_base_image(progress)
    size = f"{image.size_bytes / 2**20:.0f} MiB" if image.size_bytes else "?"
    out.say(f"base image {image.id} ready ({size}, {time.monotonic() - started:.0f}s)", "bold green")
    out.emit({"image": image.id, "name": image.name, "size_bytes": image.size_bytes, "created": image.created})
