"""`vmlab push IMAGE REGISTRY/REPO:TAG`: an image to a registry, its digest printed."""

from __future__ import annotations

import click

from vmlab.cli.options import open_provider, provider_option
from vmlab.cli.output import Output, handle_errors, json_option


@click.command()
@click.argument("image_id", metavar="IMAGE")
@click.argument("dest", metavar="HOST[:PORT]/REPO[:TAG]")
@provider_option
@json_option
@handle_errors
def push(image_id: str, dest: str, provider_name: str | None, json_mode: bool) -> None:
    """Push IMAGE to a registry and print the digest it stored (pull it by `REPO@DIGEST`). TLS is verified, except
    for a registry on 127.0.0.1/localhost.

    \b
    Example:
      vmlab push vmlab-lab-1a2b3c4d ghcr.io/me/lab:v1 --provider container
      vmlab push vmlab-lab-1a2b3c4d 127.0.0.1:5000/lab:v1 --provider container
    """
    from vmlab.providers import require
    from vmlab.providers.capabilities import ShipsImages

    out = Output(json_mode)
    shipper = require(open_provider(provider_name), ShipsImages, "push images")
    digest = shipper.push_image(image_id, dest)
    out.say(f"pushed {image_id} to {dest}: {digest}")
    repo = dest.rsplit(":", 1)[0] if dest.rfind(":") > dest.find("/") else dest
    out.emit({"image": image_id, "destination": dest, "digest": digest, "pull": f"{repo}@{digest}"})
