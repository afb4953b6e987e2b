"""`vmlab gc`: find vmlab-tagged leftovers (in an EC2 region) and remove them after confirmation."""

from __future__ import annotations

import sys

import click

from vmlab.cli.options import capable_provider_option, open_provider, region_option
from vmlab.cli.output import Output, handle_errors, json_option


@click.command()
@capable_provider_option("sweeps")
@region_option
@click.option("--yes", is_flag=True, help="Remove without asking.")
@click.option("--labs", is_flag=True, help="Also remove lab instances this machine has no record of.")
@json_option
@handle_errors
def gc(provider_name: str | None, region: str | None, yes: bool, labs: bool, json_mode: bool) -> None:
    """Sweep EC2 for what vmlab left behind: builders still alive, key pairs and security groups whose instance
    is gone, unattached vmlab volumes, vmlab snapshots no image uses, failed images. Lists them, then removes them
    after a prompt (or with --yes; without a terminal and without --yes it only lists). Images and the labs
    recorded on this machine are never removed. Without --provider: the first provider that can sweep.

    \b
    Example:
      vmlab gc --region eu-west-1
      vmlab gc --yes --json
    """
    from vmlab.providers import name_for
    from vmlab.providers.capabilities import SweepsLeftovers
    from vmlab.workflows import gc as sweep

    out = Output(json_mode)
    provider = open_provider(name_for(SweepsLeftovers, provider_name), region)
    result = sweep.find(provider, labs=labs)
    if not result.leftovers:
        out.say(f"nothing left over in {result.region or provider.name}")
    for f in result.leftovers:
        out.say(f"{'remove' if f.removable else 'keep':<7} {f.kind:<15} {f.id:<26} {f.name[:30]:<30} {f.reason}")

    def confirm(count: int) -> bool:
        return yes or (sys.stdin.isatty() and not json_mode and click.confirm(f"remove {count} resource(s)?"))

    if result.removable:
        sweep.remove(provider, result, confirm)
        if result.ran:
            out.say(f"removed {len(result.removed)} resource(s)"
                    + (f", {len(result.failed)} failed" if result.failed else ""))
            for item, why in result.failed:
                out.say(f"could not remove {item.kind} {item.id}: {why}", "red")
        else:
            out.say("nothing removed (pass --yes to remove them)")
    out.emit(result.to_json())
    if result.failed:
        sys.exit(1)
