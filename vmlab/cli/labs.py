"""`vmlab up / down / stop / start / ls / ssh`: day-to-day life of a lab."""

from __future__ import annotations

import os

import click

from vmlab.cli.options import open_provider, provider_option, region_option
from vmlab.cli.output import Output, handle_errors, json_option
from vmlab.cli.upflags import UpFlags, up_flag_options
from vmlab.providers import provider_for


@click.command()
@click.argument("name", default="lab")
@up_flag_options
@click.option("--dry-run", is_flag=True, help="Check everything, print what would be created and its price; "
                                               "create nothing.")
@json_option
@handle_errors
def up(name: str, flags: UpFlags, dry_run: bool, json_mode: bool) -> None:
    """Launch lab NAME from an image (or resume it) with a fresh Jupyter token, and wait until it answers.

    \b
    Example:
      vmlab up lab --provider local
      vmlab up gpu --provider ec2 --region us-west-2 --type g4dn.xlarge --spot --max-price 0.3 \\
        --idle 30m --max-hours 12 --sync s3://my-bucket/alice
      vmlab up gpu --provider ec2 --type m+t4 --spot --dry-run
    """
    from vmlab.cli.upflags import launch, prepare, up_document

    out = Output(json_mode)
    ready = prepare(name, flags, out)
    if dry_run:
        from vmlab.workflows.preflight import plan_up

        plan = plan_up(ready.provider, name, image=flags.image, instance_type=ready.instance_type, idle=flags.idle,
                       max_hours=flags.max_hours, sync=flags.sync, options=ready.options)
        for line in plan.lines():
            out.say(line)
        out.emit({**plan.to_json(), "type_choice": ready.choice.to_json() if ready.choice else None})
        return
    out.emit(up_document(ready, launch(ready, out)))


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
    from vmlab.workflows.labpower import down as remove_lab

    out = Output(json_mode)
    store = LabStore()
    record = store.get(check_name(name))
    provider = provider_for(record) if record is not None else open_provider(provider_name, region)
    removed = remove_lab(provider, name, store=store, force=force, say=out.say)
    out.emit({"lab": name, "removed": removed})


def _power(name: str, json_mode: bool, action: str) -> None:
    from vmlab.state import LabStore
    from vmlab.workflows.labpower import power, require_record

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
    from vmlab.workflows.labpower import agent_status, require_record

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
    from vmlab.providers.capabilities import ServesLabs
    from vmlab.state import LabStore
    from vmlab.workflows.labpower import require_record
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
