"""`vmlab images [ls|rm]`: the images vmlab baked."""

from __future__ import annotations

import click

from vmlab.cli.options import open_provider, provider_option, region_option
from vmlab.cli.output import Output, handle_errors, json_option


@click.group(invoke_without_command=True)
@provider_option
@region_option
@json_option
@click.pass_context
def images(ctx: click.Context, provider_name: str | None, region: str | None, json_mode: bool) -> None:
    """List (default; the options here apply to that listing) or remove vmlab images.

    \b
    Example:
      vmlab images ls --provider local
      vmlab images rm limg-1a2b3c4d
      vmlab images --provider ec2 --region eu-west-1 --json
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(ls_images, provider_name=provider_name, region=region, json_mode=json_mode)
    elif provider_name or region or json_mode:
        raise click.UsageError("put --provider, --region and --json after the subcommand: vmlab images ls --json")


@images.command(name="ls")
@provider_option
@region_option
@json_option
@handle_errors
def ls_images(provider_name: str | None = None, region: str | None = None, json_mode: bool = False) -> None:
    """List vmlab images (newest first)."""

    out = Output(json_mode)
    found = sorted(open_provider(provider_name, region).list_images({"vmlab:recipe-hash": "*"}),
                   key=lambda i: i.created or "", reverse=True)
    if not found:
        out.say("no images; bake one with `vmlab bake`")
    for i in found:
        size = f"{i.size_bytes / 2**20:.0f} MiB" if i.size_bytes else "-"
        out.say(f"{i.id:<24} {i.state:<10} {size:>9}  {i.created or '-':<26} {i.name}")
    out.emit({"images": [{"id": i.id, "name": i.name, "state": i.state, "created": i.created,
                          "size_bytes": i.size_bytes, "tags": dict(i.tags), "shared_with": list(i.shared_with)}
                         for i in found]})


@images.command(name="rm")
@click.argument("image_ids", nargs=-1, required=True, metavar="IMAGE...")
@provider_option
@region_option
@json_option
@handle_errors
def rm_images(image_ids: tuple[str, ...], provider_name: str | None, region: str | None, json_mode: bool) -> None:
    """Delete images (and their snapshots or disk files). Only images vmlab made (in this account, on EC2);
    all are checked before the first is deleted."""
    from vmlab.errors import BadInput
    from vmlab.providers.base import GuardsImages

    out = Output(json_mode)
    provider = open_provider(provider_name, region)
    resolved = []
    for ident in image_ids:
        image = provider.describe_image(ident)
        if image is None:
            raise BadInput(f"image {ident!r} not found", "list images with `vmlab images`")
        if isinstance(provider, GuardsImages):
            provider.check_delete_image(image.id)
        resolved.append(image)
    for image in resolved:
        provider.delete_image(image.id)
        out.say(f"removed image {image.name} ({image.id})")
    out.emit({"removed": [i.id for i in resolved]})
