"""A container lab's two named volumes, and the check that their data is in the lab's bucket before they go.

- `vmlab-LAB-data` at /root/data: the user's files (what the agent syncs).
- `vmlab-LAB-agent` at the agent's state folder (vmlab.lab.AGENT_STATE_DIR): its manifest (what the bucket holds),
  its journal of changes not yet uploaded, held deletes and status.json. On a volume rather than in the
  container's layer so that it outlives the container: a relaunched lab (a hub's start, which makes a new
  container on the kept volumes) resumes and uploads what the last one could not, and a lab whose container is
  gone can still be proved synced. A volume of its own rather than a folder in the data volume: the user never
  sees (or deletes, or syncs) the agent's files in ~/data, and neither volume depends on the other's layout.

Both carry the launch's tags as labels (`vmlab:lab`, `vmlab:run`, a hub's `vmlab:class`), so listings and leak
checks find them; `terminate` (`vmlab down`) removes both with the container, the agent volume first (a data
volume left alone gets a fresh agent volume whose restore merges; the reverse would pair a manifest with no
data), never with `-f`. The agent volume also records the data volume it belongs to (create_missing) and the
store settings the lab was launched with (STORE_SETTINGS: endpoint and region, no secret), which a check of a
lab with no container left must use.

`flush`: before a lab that is not running is removed, a short-lived container of the lab's image mounts both
volumes and runs the agent's own `vmlab-agent sync --once` against the bucket (restore, then push what is left),
then prints the status it wrote. That both proves and fixes: what was pending at the stop is uploaded now, and a
lab whose store cannot be reached reports what it still holds. No server of the lab runs.

Example::

    status = flush(engine, "cls-ana", image_id, "s3://bucket/cls/ana")   # AgentStatus; HostError: no proof
    if not status.unsynced:
        remove(engine, *names("cls-ana"))
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from typing import Any

from vmlab import lab
from vmlab.agent.status import AgentStatus
from vmlab.errors import HostError
from vmlab.interrupts import ctrl_c_ignored
from vmlab.providers.container import labcontainer
from vmlab.providers.container.engine import Podman, missing, tail
from vmlab.syncurl import redact

#: the labels on a flush container: the lab, and this flush (an interrupted flush removes its own container only)
FLUSH_LABEL = "vmlab:flush-of"
FLUSH_ID_LABEL = "vmlab:flush-id"
#: on the agent volume: the data volume it belongs to (its CreatedAt), and STORE_LABEL+NAME the store settings
DATA_ID_LABEL = "vmlab:data-volume-created"
STORE_LABEL = "vmlab:store-"
#: the storage variables (labcontainer.STORAGE_ENV) that say which store, not who: recorded at launch
STORE_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
#: how long the agent's push may take (a large change over a slow link)
FLUSH_TIMEOUT = 900.0
# a fixed script, its variable parts as arguments ($1: the agent, $2: its status file). The agent's log goes to
# stderr; stdout is the status it wrote
FLUSH = r"""
rm -f "$2"
"$1" sync --once >&2
rc=$?
cat "$2" 2>/dev/null
exit $rc
"""


def names(name: str) -> tuple[str, str]:
    """Lab `name`'s volumes: (data, agent state)."""
    return labcontainer.volume_name(name), labcontainer.agent_volume_name(name)


def inspect(engine: Podman, volume: str) -> dict[str, Any] | None:
    """`podman volume inspect` of `volume`; None when it does not exist."""
    return engine.inspect("volume", volume)


def store_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The storage variables of `environ` that say which store (no secret): every STORE_SETTINGS name, "" when
    unset."""
    return {key: environ.get(key, "") for key in STORE_SETTINGS}


def recorded_settings(agent: Mapping[str, Any]) -> dict[str, str] | None:
    """The store settings an agent volume's labels recorded at its lab's launch; None when it has none (made
    before they were recorded)."""
    labels = agent.get("Labels") or {}
    if not any(STORE_LABEL + key in labels for key in STORE_SETTINGS):
        return None
    return {key: labels.get(STORE_LABEL + key, "") for key in STORE_SETTINGS}


def create_missing(engine: Podman, name: str, labels: Mapping[str, str], store: Mapping[str, str]) -> list[str]:
    """Create lab `name`'s volumes that do not exist yet, labelled with `labels` (the agent volume also with the
    data volume's identity, DATA_ID_LABEL, and the `store` settings the lab syncs with); returns those it made
    (the caller removes them when its launch fails).

    An agent volume never serves a data volume other than its own: its manifest would read a fresh, empty data
    folder as the user deleting every file, and push those deletes. So a new data volume gets a new agent volume
    (an old one left without its data volume is removed: what its journal holds was in files that are gone, and
    a delete it still held only lets the bucket's copy come back), and an agent volume labelled with another data
    volume's identity is refused."""
    data, agent = names(name)
    made = []
    if inspect(engine, data) is None:
        remove(engine, agent)
        _create(engine, data, labels)
        made.append(data)
    data_id = str((inspect(engine, data) or {}).get("CreatedAt", ""))
    found = inspect(engine, agent)
    if found is None:
        _create(engine, agent, {**labels, DATA_ID_LABEL: data_id,
                                **{STORE_LABEL + key: value for key, value in store.items()}})
        made.append(agent)
    elif (found.get("Labels") or {}).get(DATA_ID_LABEL, data_id) != data_id:
        raise HostError(f"volume {agent} holds the agent state of another data volume than {data}",
                        f"if nothing in it matters, `podman volume rm {agent}` (vmlab's podman root)")
    return made


def _create(engine: Podman, volume: str, labels: Mapping[str, str]) -> None:
    engine.text("volume", "create", *(a for k, v in labels.items() for a in ("--label", f"{k}={v}")), volume,
                what=f"creating volume {volume}")


def remove(engine: Podman, *volumes: str) -> None:
    """Remove volumes in this order (a missing one is a no-op). Never `-f`, which would remove a container using
    the volume with it: a volume some container uses (a lab started again since the check) is a HostError."""
    for volume in volumes:
        proc = engine.call("volume", "rm", volume)
        if proc.returncode != 0 and not missing(proc):
            used = "being used" in proc.stderr.decode(errors="replace")
            raise HostError(f"removing volume {volume} failed: {tail(proc.stderr)}",
                            "a container uses it (the lab was started again): `vmlab down` it again" if used else None)


def flush_argv(name: str, image: str, sync_url: str, environ: Mapping[str, str],
               flush_id: str = "") -> tuple[list[str], dict[str, str]]:
    """`podman run` words of the flush container, and the variables to add to podman's environment (the sync URL
    and storage credentials, passed by name as for the lab itself: never on a command line)."""
    env = labcontainer.store_env(sync_url, environ)
    network = "slirp4netns:allow_host_loopback=true" if labcontainer.host_loopback(environ) else "slirp4netns"
    plain = {"VMLAB_DATA_DIR": labcontainer.DATA, "VMLAB_AGENT_STATE_DIR": lab.AGENT_STATE_DIR,
             "PATH": labcontainer.PATH}
    argv = ["run", "--rm", "--pull", "never", "--network", network, "--label", f"{FLUSH_LABEL}={name}",
            "--label", f"{FLUSH_ID_LABEL}={flush_id}",
            "-v", f"{names(name)[0]}:{labcontainer.DATA}", "-v", f"{names(name)[1]}:{lab.AGENT_STATE_DIR}",
            *(arg for key, value in plain.items() for arg in ("-e", f"{key}={value}")),
            *(arg for key in sorted(env) for arg in ("-e", key)),
            "--entrypoint", "/bin/sh", image, "-c", FLUSH, "sh", labcontainer.AGENT, lab.AGENT_STATUS_FILE]
    return argv, env


def flush(engine: Podman, name: str, image: str, sync_url: str,
          environ: Mapping[str, str] | None = None) -> AgentStatus:
    """Run the agent's `sync --once` on lab `name`'s volumes (see the module docstring) and return the status it
    wrote (flush_result). `environ`: where the storage variables come from (default: this process's)."""
    flush_id = secrets.token_hex(8)
    argv, env = flush_argv(name, image, sync_url, os.environ if environ is None else environ, flush_id)
    try:
        proc = engine.tool("podman", *argv, env=env, timeout=FLUSH_TIMEOUT)
    except BaseException:  # an interrupt (Ctrl-C, SIGTERM) or a timeout: the container must not outlive this call
        with ctrl_c_ignored():
            found = engine.call("ps", "-a", "-q", "--filter", f"label={FLUSH_ID_LABEL}={flush_id}")
            for cid in found.stdout.decode().split():
                engine.call("rm", "-f", "-t", "0", cid)
        raise
    status = AgentStatus.parse(proc.stdout.decode(errors="replace"))
    return flush_result(name, sync_url, proc.returncode, status, tail(proc.stderr, 2))


def flush_result(name: str, sync_url: str, returncode: int, status: AgentStatus | None, stderr: str) -> AgentStatus:
    """What a flush proves, from its exit code, the status the agent wrote (None: none, or not JSON) and its
    last stderr lines: a clean exit with a status is that status; a failed one whose status still counts what is
    unsynced is that status (its error filled in when the agent gave none); anything else proves nothing
    (HostError: the image cannot run, the agent failed before it could look, an unreachable store with nothing
    recorded as pending).

    Example: `flush_result("ana", url, 1, None, "boom")` raises HostError."""
    if returncode == 0 and status is not None:
        return status
    why = stderr or f"exit {returncode}"
    if status is not None and status.unsynced:
        status.last_error = status.last_error or why
        return status
    raise HostError(f"the agent could not push lab {name}'s data to {redact(sync_url)} (exit {returncode}: "
                    f"{why})")
