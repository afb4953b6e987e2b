"""`vmlab stop / start / down` and what reads a lab's agent: the life of a lab once it is launched (launching is
vmlab.workflows.labs). A lab is found by its record, or by its tags when this machine has none (an `up` killed
before it wrote one); `down` removes the instance and every local trace of it, and refuses while the lab's agent
reports data not yet in its bucket.

Example::

    record = require_record(LabStore(), "gpu")
    power(provider_for(record), LabStore(), record, "stop")
    down(provider_for(record), "gpu", say=print)        # ["instance i-0abc", "record and key of lab gpu"]
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from vmlab import keys, lab
from vmlab.agent.status import AgentStatus
from vmlab.errors import BadInput, HostError, LabNotStopped
from vmlab.providers.base import Instance, Provider
from vmlab.providers.capabilities import ServesLabs
from vmlab.state import LabRecord, LabStore, check_name
from vmlab.workflows import labagent, sentfiles, sshconfig, tunnel_bg
from vmlab.workflows.connect import connect_instance
from vmlab.workflows.preflight import where

Say = Callable[[str], None]
#: on a lab launched with --sync: a `down` without the lab's record must not assume its data is safe
SYNC_TAG = "vmlab:sync"


def find_lab_instance(provider: Provider, name: str) -> Instance | None:
    """The live instance tagged as lab `name`; refuses when there are several."""
    live = [i for i in provider.list_instances({"vmlab:lab": name}) if i.state != "terminated"]
    if len(live) > 1:
        raise HostError(f"{len(live)} instances are tagged as lab {name}: {', '.join(i.id for i in live)}",
                        "remove the extra ones with `vmlab down` or `vmlab gc`")
    return live[0] if live else None


def terminate(provider: Provider, instance_id: str) -> None:
    from vmlab.transport.hostkeys import forget

    provider.terminate(instance_id)
    forget(f"vmlab-{instance_id}")


def power(provider: Provider, store: LabStore, record: LabRecord, action: str) -> Instance:
    """`stop` or `start` the lab of `record`; its new address is recorded (and the SSH config rewritten)."""
    inst = provider.stop(record.instance_id) if action == "stop" else provider.start(record.instance_id)
    record.host, record.port = inst.host, inst.port
    store.put(record)
    sshconfig.refresh(store)
    return inst


def require_record(store: LabStore, name: str) -> LabRecord:
    record = store.get(check_name(name))
    if record is None:
        known = ", ".join(r.name for r in store.all()) or "none"
        raise BadInput(f"no lab named {name!r} on this machine (labs: {known})", "start one with `vmlab up NAME`")
    return record


def agent_status(provider: Provider, record: LabRecord, timeout: float = 10.0, flush: bool = False,
                 status_path: str = lab.AGENT_STATUS_FILE) -> AgentStatus | None:
    """The lab agent's status read over SSH (with `flush`: after stopping the sync daemon, which pushes what is
    pending); None when the lab is not running or has no status file. Raises HostError (ConnectError) when the
    lab runs but cannot be reached."""
    from pathlib import Path

    inst = provider.describe(record.instance_id)
    if isinstance(provider, ServesLabs):  # its files are readable running or stopped, or with no instance left
        from vmlab.workflows.servedlab import served_status

        return served_status(provider, record, inst, status_path, flush)
    if inst is None or inst.state != "running":
        return None
    with connect_instance(provider, inst, Path(record.key_file), record.host_key, timeout=timeout) as conn:
        if not flush:
            return labagent.read_status(conn, status_path)
        status = labagent.flush_and_read(conn, status_path)
        if status is not None and status.unsynced:
            labagent.restart_agent(conn)  # the lab stays: keep syncing
        return status


def down(provider: Provider, name: str, *, store: LabStore | None = None, force: bool = False,
         say: Say = lambda _m: None, status_path: str = lab.AGENT_STATUS_FILE) -> list[str]:
    """Terminate lab `name` (its disk goes too), forget its key and record. Returns what was removed. Refuses
    while the lab's agent reports data not yet in its bucket (its status file, `status_path` on the lab),
    unless `force`."""
    store = store or LabStore()
    record = store.get(check_name(name))
    if record is None:
        return _adopt_down(provider, name, store, force, say)
    with provider.lab_lock(name) if isinstance(provider, ServesLabs) else contextlib.nullcontext():
        return _down(provider, record, store, force, say, status_path)


def _down(provider: Provider, record: LabRecord, store: LabStore, force: bool, say: Say,
          status_path: str) -> list[str]:
    """`down` of a lab with a record (a served lab's under its lab_lock): the check, then the removal."""
    name = record.name
    if not force and record.agent.sync_url:
        say(f"pushing lab {name}'s pending changes to its bucket")
        try:
            status = agent_status(provider, record, flush=True, status_path=status_path)
        except LabNotStopped:
            raise
        except HostError as e:
            retry = relaunch_hint(provider, record) if isinstance(provider, ServesLabs) else "try again"
            raise HostError(f"cannot read lab {name}'s sync status, so its data may not be in its bucket: {e}",
                            f"{retry}, or `vmlab down {name} --force` to lose what is not synced") from e
        if status is None:
            # a stopped lab (idle stop, time limit) or an agent that never ran: nothing says the data is safe
            raise HostError(f"lab {name} syncs ~/{lab.DATA_DIR} but reports no sync status (stopped, or its agent "
                            "never ran)", f"`vmlab start {name}` and try again, or `vmlab down {name} --force` "
                            "to lose what is not synced")
        labagent.check_can_remove(name, status, force,
                                  served=relaunch_hint(provider, record) if isinstance(provider, ServesLabs) else "")
    removed = []
    if provider.describe(record.instance_id) is not None:
        terminate(provider, record.instance_id)
        removed.append(f"instance {record.instance_id}")
    if isinstance(provider, ServesLabs) and provider.lab_data_tags(name) is not None:  # its instance was gone
        provider.remove_lab_data(name)
        removed.append(f"data of lab {name}")
    removed += _forget(store, name)
    for r in removed:
        say(f"removed {r}")
    return removed


def relaunch_hint(provider: Provider, record: LabRecord) -> str:
    """How to get a served lab's agent syncing again: start its instance, or relaunch one on its kept data."""
    if provider.describe(record.instance_id) is not None:
        return f"`vmlab start {record.name}` so it syncs"
    return (f"`vmlab up {record.name} --image {record.image}` (relaunches on its kept volumes), then "
            f"`vmlab down {record.name}`")


def _adopt_down(provider: Provider, name: str, store: LabStore, force: bool, say: Say) -> list[str]:
    """`down` of a lab this machine has no record of (an `up` killed before it wrote one): the instance tagged
    as lab `name` is terminated (with its key pair and security group), then any local leftovers are removed."""
    inst = find_lab_instance(provider, name)
    if inst is None:
        known = ", ".join(r.name for r in store.all()) or "none"
        raise BadInput(f"no lab named {name!r} on this machine (labs: {known}) nor an instance tagged as lab {name} "
                       f"in {provider.name}{where(provider)}", "see `vmlab ls`; add --provider/--region where it runs")
    if inst.tags.get(SYNC_TAG) and not force:
        raise HostError(f"lab {name} ({inst.id}) syncs ~/{lab.DATA_DIR} but this machine has no record (and no key) "
                        "to check that its data is in its bucket", f"`vmlab down {name} --force` to remove it anyway")
    say(f"lab {name} has no record on this machine; removing instance {inst.id}, found by its tags")
    terminate(provider, inst.id)
    removed = [f"instance {inst.id}", *_forget(store, name)]
    for r in removed:
        say(f"removed {r}")
    return removed


def _forget(store: LabStore, name: str) -> list[str]:
    """Remove lab `name`'s local traces: background tunnel, key, known_hosts, record, SSH config entry, the
    records of what `vmlab run` sent it."""
    removed = []
    pid = tunnel_bg.stop(name)
    if pid is not None:
        removed.append(f"background tunnel (pid {pid})")
    keys.remove(store.key_path(name))
    store.known_hosts_path(name).unlink(missing_ok=True)
    sentfiles.forget(store, name)
    store.delete(name)
    sshconfig.refresh(store)
    removed.append(f"record and key of lab {name}")
    return removed
