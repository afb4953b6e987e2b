"""`vmlab bake`: a recipe baked into a reusable image."""

from __future__ import annotations

from pathlib import Path

import click

from vmlab.cli.options import open_provider, provider_option, region_option
from vmlab.cli.output import Output, handle_errors, json_option, step_reporter
from vmlab.cli.provision import parse_extra_vars


def bundled_recipe(name: str) -> Path:
    """A recipe shipped with vmlab (the wheel carries recipes/ as vmlab/_recipes)."""
    import vmlab

    here = Path(vmlab.__file__).parent
    for folder in (here / "_recipes", here.parent / "recipes"):
        if (folder / name).is_file():
            return folder / name
    return Path("recipes") / name


@click.command()
@click.argument("recipe_file", metavar="[RECIPE]", required=False)
@provider_option
@region_option
@click.option("--base", default=None, metavar="IMAGE",
              help="Base image: debian-12 (local); debian-12 or ubuntu-24.04 (container); "
                   "ubuntu-24.04/ubuntu-22.04/debian-12/dlami or an AMI id (ec2).")
@click.option("--name", default=None, help="Image name (default: vmlab-RECIPE-HASH-TIME).")
@click.option("--builder-type", default=None, metavar="TYPE", help="Instance type of the builder.")
@click.option("-e", "--extra-var", "extra", multiple=True, metavar="NAME=VALUE", help="Set a recipe variable.")
@click.option("--force", is_flag=True, help="Bake even if an image of this recipe and base exists.")
@click.option("--verify", is_flag=True, help="Apply the recipe twice; fail unless the second run changes nothing.")
@click.option("--volume-size", type=click.IntRange(1, 16384), default=None, metavar="GB",
              help="Root disk of the builder (and so of the image) in GB.")
@click.option("--spot", is_flag=True, help="Build on a spot instance (ec2; falls back to on-demand).")
@click.option("--ssh-cidr", default=None, metavar="CIDR",
              help="Who may SSH to the builder (ec2; default: this machine's public IP /32).")
@click.option("--kms-key", default=None, metavar="ARN|alias/NAME",
              help="Encrypt the image with this customer-managed KMS key (ec2; needed to share across accounts).")
@click.option("--dry-run", is_flag=True, help="Check everything, print what would be created and its price; "
                                               "create nothing.")
@json_option
@handle_errors
def bake(recipe_file: str | None, provider_name: str | None, region: str | None, base: str | None, name: str | None,
         builder_type: str | None, extra: tuple[str, ...], force: bool, verify: bool, volume_size: int | None,
         spot: bool, ssh_cidr: str | None, kms_key: str | None, dry_run: bool, json_mode: bool) -> None:
    """Launch a builder VM (or container), apply RECIPE (default: the bundled recipes/lab.py), scrub it and save
    an image.

    The builder, its key and its firewall rules are removed however the bake ends.

    \b
    Example:
      vmlab bake recipes/lab.py --provider local
      vmlab bake recipes/lab.py --provider ec2 --region eu-west-1 --spot --kms-key alias/vmlab
      vmlab bake recipes/lab.py --provider ec2 --builder-type g4dn.xlarge --dry-run
      vmlab bake recipes/lab.py --provider container --base ubuntu-24.04
    """
    from vmlab.cli.quote import launch_options
    from vmlab.engine.loader import load_recipe
    from vmlab.workflows.bake import bake as bake_image

    out = Output(json_mode)
    recipe = load_recipe(recipe_file or bundled_recipe("lab.py"))
    provider = open_provider(provider_name, region, kms_key=kms_key, spot=spot, ssh_cidr=ssh_cidr)
    options = launch_options(provider, spot, None, volume_size, ssh_cidr)
    if dry_run:
        from vmlab.workflows.bake import check_bake
        from vmlab.workflows.preflight import plan_bake

        checks = check_bake(recipe, provider, base=base or provider.default_base, name=name,
                            variables=parse_extra_vars(extra), force=force, instance_type=builder_type,
                            options=options)
        plan = plan_bake(provider, checks)
        for line in plan.lines():
            out.say(line)
        out.emit(plan.to_json())
        return
    result = bake_image(recipe, provider, base=base or provider.default_base, name=name,
                 variables=parse_extra_vars(extra), force=force, verify=verify, instance_type=builder_type,
                 say=out.say, report=step_reporter(out), options=options)
    if not result.reused:
        t = result.timings
        out.say(f"image {result.image.name} ({result.image.id}) ready in {t.get('total', 0):.0f}s "
                f"(boot to SSH {t.get('boot_to_ssh', 0):.0f}s, recipe {t.get('apply', 0):.0f}s, "
                f"image {t.get('image', 0):.0f}s)", "bold green")
    out.emit(result.to_json())
