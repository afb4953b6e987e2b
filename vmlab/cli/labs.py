"""`vmlab up / down / stop / start / ls / ssh`: day-to-day life of a lab."""

from __future__ import annotations

import os

import click

from vmlab.cli.options import open_provider, provider_option, region_option
from vmlab.cli.output import Output, handle_errors, json_option
from vmlab.providers import provider_for


@click.command()
@click.argument("name", default="lab")
@provider_option
@click.option("--image", default=None, help="Image name or id (default: the newest vmlab image).")
@click.option("--type", "instance_type", default=None, metavar="TYPE",
              help="Instance type, e.g. g4dn.xlarge, or a size and GPU resolved to the cheapest type that fits, "
                   "e.g. m+t4, l+a10g, gpu=t4, cpu=8,mem=32 (ec2).")
@click.option("--spot", is_flag=True, help="Use a spot instance (ec2; falls back to on-demand).")
@click.option("--max-price", type=float, default=None, metavar="USD",
              help="Highest spot price per hour (ec2, with --spot; default: the on-demand price).")
@click.option("--volume-size", type=click.IntRange(1, 16384), default=None, metavar="GB",
              help="Root disk in GB (default: the image's).")
@click.option("--ssh-cidr", default=None, metavar="CIDR",
              help="Who may SSH to the lab (ec2; default: this machine's public IP /32).")
@click.option("--idle", default=None, metavar="DURATION",
              help="Power off after this long unused, e.g. 30m, 2h; 0 = never (default 30m, or the lab's last).")
@click.option("--max-hours", type=float, default=None, metavar="HOURS",
              help="Power off this many hours after this `up`, used or not; 0 = never (default 24).")
@click.option("--sync", default=None, metavar="URL",
              help="Keep ~/data synced with s3://bucket/prefix (on EC2 an instance profile allows that prefix "
                   "only); '' = stop syncing.")
@region_option
@click.option("--dry-run", is_flag=True, help="Check everything, print what would be created and its price; "
                                               "create nothing.")
@json_option
@handle_errors
def up(name: str, provider_name: str | None, image: str | None, instance_type: str | None, spot: bool,
       max_price: float | None, volume_size: int | None, ssh_cidr: str | None, idle: str | None,
       max_hours: float | None, sync: str | None, region: str | None, dry_run: bool, json_mode: bool) -> None:
    """Launch lab NAME from an image (or resume it) with a fresh Jupyter token, and wait until it answers.

    \b
    Example:
      vmlab up lab --provider local
      vmlab up gpu --provider ec2 --region us-west-2 --type g4dn.xlarge --spot --max-price 0.3 \\
        --idle 30m --max-hours 12 --sync s3://my-bucket/alice
      vmlab up gpu --provider ec2 --type m+t4 --spot --dry-run
    """
    from vmlab.cli.quote import launch_checks, resolve_type
    from vmlab.workflows.labs import up as launch_lab

    out = Output(json_mode)
    provider = open_provider(provider_name, region, spot=spot, max_price=max_price, ssh_cidr=ssh_cidr)
    instance_type, choice = resolve_type(provider, out, instance_type, spot)
    options, quote = launch_checks(provider, out, instance_type, spot, max_price, volume_size, ssh_cidr)
    if dry_run:
        from vmlab.workflows.preflight import plan_up

        plan = plan_up(provider, name, image=image, instance_type=instance_type, idle=idle, max_hours=max_hours,
                       sync=sync, options=options)
        for line in plan.lines():
            out.say(line)
        out.emit({**plan.to_json(), "type_choice": choice.to_json() if choice else None})
        return
    result = launch_lab(provider, name, image=image, instance_type=instance_type, idle=idle, max_hours=max_hours,
                 sync=sync, say=out.say, options=options, quote=quote)
    t = result.timings
    if result.record.hourly_price is not None:
        market = "spot" if result.record.spot else "on-demand"
        out.say(f"{market}, about ${result.record.hourly_price:.4g}/h (estimate) until `vmlab stop {name}`")
    boot = f"boot to SSH {t['boot_to_ssh']:.0f}s, " if "boot_to_ssh" in t else ""  # none for a container lab
    out.say(f"lab {name} is up ({result.record.instance_id}) in {t['total']:.0f}s ({boot}JupyterLab start "
            f"{t.get('jupyter_start', 0):.0f}s, vmlab {t['overhead']:.1f}s); open it with: {result.tunnel_hint}",
            "bold green")
    out.emit({**result.to_json(), "offer": quote.offer if quote else None,
              "type_choice": choice.to_json() if choice else None})


@click.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Terminate even while the lab's agent reports unsynced data.")
@provider_option
@region_option
@json_option
@handle_errors
def down(name: str, force: bool, provider_name: str | None, region: str | None, json_mode: bool) -> None:
    """Terminate lab NAME and delete its disk, key and record. A lab that syncs ~/data is terminated only once
    its agent reports nothing pending (or with --force). A lab this machine has no record of (an `up` that was
    killed) is found by its tags with --provider/--region and removed too.

    \b
    Example:
      vmlab down lab
      vmlab down gpu --provider ec2 --region eu-west-1
    """
    from vmlab.state import LabStore, check_name
    from vmlab.workflows.labs import down as remove_lab

    out = Output(json_mode)
    store = LabStore()
    record = store.get(check_name(name))
    provider = provider_for(record) if record is not None else open_provider(provider_name, region)
    removed = remove_lab(provider, name, store=store, force=force, say=out.say)
    out.emit({"lab": name, "removed": removed})


def _power(name: str, json_mode: bool, action: str) -> None:
    from vmlab.state import LabStore
    from vmlab.workflows.labs import power, require_record

    out = Output(json_mode)
    store = LabStore()
    record = require_record(store, name)
    inst = power(provider_for(record), store, record, action)
    out.say(f"lab {name} is {inst.state}")
    out.emit({"lab": name, "state": inst.state})


@click.command()
@click.argument("name")
@json_option
@handle_errors
def stop(name: str, json_mode: bool) -> None:
    """Stop lab NAME (its disk is kept; `vmlab up NAME` or `vmlab start NAME` resumes it).

    \b
    Example:
      vmlab stop lab
    """
    _power(name, json_mode, "stop")


@click.command()
@click.argument("name")
@json_option
@handle_errors
def start(name: str, json_mode: bool) -> None:
    """Start a stopped lab NAME (then `vmlab up NAME` gives it a fresh token).

    \b
    Example:
      vmlab start lab
    """
    _power(name, json_mode, "start")


@click.command(name="ls")
@provider_option
@region_option
@click.option("--class", "class_name", metavar="NAME",
              help="only the labs of a JupyterHub class (vmlab.hub.LabSpawner's class_name): per student")
@json_option
@handle_errors
def ls(provider_name: str | None, region: str | None, class_name: str | None, json_mode: bool) -> None:
    """List labs: this machine's records joined with what the provider reports, with state, type, uptime,
    spot or on-demand and an estimate of the cost so far (hourly price x time since the last start).

    \b
    Example:
      vmlab ls --json
      vmlab ls --provider ec2 --region eu-west-1
      VMLAB_STATE_DIR=/srv/jupyterhub/vmlab vmlab ls --class intro-ml    # a class's labs, on the hub host
    """
    from vmlab.cli.lstable import render_rows
    from vmlab.state import LabStore
    from vmlab.workflows.listing import list_labs

    out = Output(json_mode)
    if class_name is not None:
        from vmlab.hub.names import check_class

        check_class(class_name, "--class")
    result = list_labs(LabStore().all(), provider_name, region, opener=open_provider, class_name=class_name)
    document = result.to_json()
    render_rows(out, document["labs"])
    out.emit(document)


@click.command()
@click.argument("name")
@json_option
@handle_errors
def status(name: str, json_mode: bool) -> None:
    """Show lab NAME's state, its agent settings and its sync status (read from the lab over SSH).

    \b
    Example:
      vmlab status lab
    """
    import time

    from vmlab.errors import VmlabError
    from vmlab.state import LabStore
    from vmlab.syncurl import redact
    from vmlab.workflows.labs import agent_status, require_record

    out = Output(json_mode)
    record = require_record(LabStore(), name)
    provider = provider_for(record)
    inst = provider.describe(record.instance_id)
    settings = record.agent
    unreachable = ""
    try:
        agent = agent_status(provider, record) if inst is not None and inst.state == "running" else None
    except VmlabError as e:
        agent, unreachable = None, str(e)
    out.say(f"lab {name}: {inst.state if inst else 'missing'} ({record.provider} {record.instance_id}, "
            f"{record.host}:{record.port})")
    out.say(f"  idle stop: {_or_dash(settings.idle_minutes)} min, time limit: {_or_dash(settings.max_hours)} h, "
            f"sync: {redact(settings.sync_url) if settings.sync_url else 'off'}")
    if unreachable:
        out.say(f"  agent: unreachable ({unreachable})")
    if agent is not None:
        now = time.time()
        out.say(f"  agent: {agent.summary(now)}")
        out.say(f"  pending: {agent.pending} files, {agent.pending_bytes} bytes; held deletes: {agent.held_deletes}")
        last = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(agent.last_sync)) if agent.last_sync else "never"
        stopped = " (agent stopped)" if agent.stopped else ""
        out.say(f"  last sync: {last}; status written {now - agent.updated:.0f}s ago{stopped}")
        if agent.last_error:
            out.say(f"  last error: {agent.last_error}")
        if agent.interruption:
            out.say(f"  EC2 notice: {agent.interruption}")
        for line in agent.details():
            out.say(f"  {line}")
    shown = {**settings.to_json(), "sync_url": redact(settings.sync_url) if settings.sync_url else None}
    out.emit({"lab": name, "state": inst.state if inst else "missing", "settings": shown,
              "agent": agent.to_json() if agent else None})


def _or_dash(value: float | None) -> str:
    return "-" if value is None else str(value)


@click.command()
@click.argument("name")
@click.argument("command", nargs=-1)
@handle_errors
def ssh(name: str, command: tuple[str, ...]) -> None:
    """Open a shell on lab NAME (or run COMMAND there) with its key and pinned host key (a container lab:
    `podman exec -it`, no SSH).

    \b
    Example:
      vmlab ssh lab -- journalctl -u jupyterlab -n 50
    """
    from vmlab.providers.base import ServesLabs
    from vmlab.state import LabStore
    from vmlab.workflows.labs import require_record
    from vmlab.workflows.tunnel import known_hosts_for

    record = require_record(LabStore(), name)
    provider = provider_for(record)
    if isinstance(provider, ServesLabs):  # no sshd: the provider's own shell (a container: `podman exec -it`)
        shell, env = provider.shell(record.instance_id, command)
        os.execvpe(shell[0], shell, env)
    argv = ["ssh", "-p", str(record.port), "-i", record.key_file, "-l", record.user, "-F", "none",
            "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts_for(record)}",
            "-o", f"HostKeyAlias=vmlab-{record.instance_id}", str(record.host), *command]
    os.execvp("ssh", argv)
