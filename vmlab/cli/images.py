"""`vmlab images [ls|show|rm]`: the images vmlab baked, and what each holds."""

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
    """List (default; the options here apply to that listing), show or remove vmlab images.

    \b
    Example:
      vmlab images ls --provider local
      vmlab images show limg-1a2b3c4d
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
        out.say(f"{i.id:<24} {i.state:<10} {size:>9}  {i.created or '-':<26} {i.tags.get('vmlab:base', '-'):<14} "
                f"{i.name}")
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


@images.command(name="show")
@click.argument("image_id", metavar="IMAGE")
@provider_option
@region_option
@json_option
@handle_errors
def show_image(image_id: str, provider_name: str | None, region: str | None, json_mode: bool) -> None:
    """Show an image's tags and what it holds: Debian, Python and conda packages with their versions.

    \b
    Example:
      vmlab images show limg-1a2b3c4d
      vmlab images show ami-0123456789abcdef0 --provider ec2 --json | jq '.packages.python'
    """
    from vmlab.errors import BadInput
    from vmlab.workflows import packages

    out = Output(json_mode)
    image = open_provider(provider_name, region).describe_image(image_id)
    if image is None:
        raise BadInput(f"image {image_id!r} not found", "list images with `vmlab images`")
    listed = packages.load_local(image.id)
    out.say(f"{image.id}  {image.name}  {image.state}  {image.created or '-'}")
    for key, value in sorted(image.tags.items()):
        out.say(f"  {key} = {value}")
    if listed is None:
        out.say(f"package list: not kept on this machine (baked elsewhere?); every vmlab image holds it in "
                f"{packages.IMAGE_FILE}: `vmlab ssh LAB cat {packages.IMAGE_FILE}`")
    else:
        for name, version in sorted(listed.get("apt", {}).items()):
            out.say(f"apt     {name} {version}")
        for section in ("python", "conda"):
            for prefix, found in sorted(listed.get(section, {}).items()):
                for name, version in sorted(found.items(), key=lambda kv: kv[0].lower()):
                    out.say(f"{section:<7} {prefix} {name} {version}")
    out.emit({"id": image.id, "name": image.name, "state": image.state, "created": image.created,
              "tags": dict(image.tags), "packages": listed, "packages_in_image": packages.IMAGE_FILE})


@images.command(name="export")
@click.argument("image_id", metavar="IMAGE")
@click.option("--oci", "oci_dir", default=None, metavar="DIR", help="Write an OCI image layout folder (new).")
@click.option("--docker-archive", "archive", default=None, metavar="FILE",
              help="Write a docker-archive tar (`docker load -i FILE`).")
@provider_option
@json_option
@handle_errors
def export_image(image_id: str, oci_dir: str | None, archive: str | None, provider_name: str | None,
                 json_mode: bool) -> None:
    """Write an image to an OCI layout folder or a docker-archive tar (providers that ship images: container).

    \b
    Example:
      vmlab images export vmlab-lab-1a2b3c4d --provider container --oci ./lab-oci
      vmlab images export vmlab-lab-1a2b3c4d --provider container --docker-archive lab.tar
    """
    from pathlib import Path

    from vmlab.errors import BadInput
    from vmlab.providers import require
    from vmlab.providers.capabilities import ShipsImages

    out = Output(json_mode)
    if (oci_dir is None) == (archive is None):
        raise BadInput("give exactly one of --oci DIR and --docker-archive FILE", "e.g. --oci ./lab-oci")
    shipper = require(open_provider(provider_name), ShipsImages, "export images")
    kind, dest = ("oci", Path(oci_dir)) if oci_dir is not None else ("docker-archive", Path(archive or ""))
    written = shipper.export_image(image_id, kind, dest)
    out.say(f"wrote {image_id} to {written} ({kind})")
    out.emit({"image": image_id, "format": kind, "path": str(written)})
