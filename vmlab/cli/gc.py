"""`vmlab gc`: find vmlab-tagged leftovers in an EC2 region and remove them after confirmation."""

from __future__ import annotations

import sys
from typing import Any

import click

from vmlab.cli.options import open_provider, region_option
from vmlab.cli.output import Output, handle_errors, json_option


@click.command()
@region_option
@click.option("--yes", is_flag=True, help="Remove without asking.")
@click.option("--labs", is_flag=True, help="Also remove lab instances this machine has no record of.")
@json_option
@handle_errors
def gc(region: str | None, yes: bool, labs: bool, json_mode: bool) -> None:
    """Sweep EC2 for what vmlab left behind: builders still alive, key pairs and security groups whose instance
    is gone, unattached vmlab volumes, vmlab snapshots no image uses, failed images. Lists them, then removes them
    after a prompt (or with --yes; without a terminal and without --yes it only lists). Images and the labs
    recorded on this machine are never removed.

    \b
    Example:
      vmlab gc --region eu-west-1
      vmlab gc --yes --json
    """
    from vmlab.providers.ec2.sweep import Sweep
    from vmlab.state import LabStore

    out = Output(json_mode)
    provider = open_provider("ec2", region)
    sweep = Sweep(provider)  # type: ignore[arg-type]
    found = sweep.find({r.instance_id for r in LabStore().all() if r.provider == "ec2"}, labs=labs)
    doomed = [f for f in found if f.removable]
    here = getattr(provider, "region")  # noqa: B009
    if not found:
        out.say(f"nothing left over in {here}")
    for f in found:
        out.say(f"{'remove' if f.removable else 'keep':<7} {f.kind:<15} {f.id:<26} {f.name[:30]:<30} {f.reason}")
    removed: list[Any] = []
    failed: list[tuple[Any, str]] = []
    if doomed:
        go = yes or (sys.stdin.isatty() and not json_mode and click.confirm(f"remove {len(doomed)} resource(s)?"))
        if go:
            removed, failed = sweep.remove(doomed)
            from vmlab.transport.hostkeys import forget

            for item in removed:
                if item.kind in ("instance", "lab"):
                    forget(f"vmlab-{item.id}")  # the host key vmlab pinned for it
            out.say(f"removed {len(removed)} resource(s)" + (f", {len(failed)} failed" if failed else ""))
            for item, why in failed:
                out.say(f"could not remove {item.kind} {item.id}: {why}", "red")
        else:
            out.say("nothing removed (pass --yes to remove them)")
    out.emit({"region": here, "leftovers": [f.to_json() for f in found],
              "removed": [f.id for f in removed], "failed": [{"id": f.id, "error": why} for f, why in failed]})
    if failed:
        sys.exit(1)
