"""A container lab's two named volumes, and the check that their data is in the lab's bucket before they go.

- `vmlab-LAB-data` at /root/data: the user's files (what the agent syncs).
- `vmlab-LAB-agent` at the agent's state folder (vmlab.lab.AGENT_STATE_DIR): its manifest (what the bucket holds),
  its journal of changes not yet uploaded, held deletes and status.json. On a volume rather than in the
  container's layer so that it outlives the container: a relaunched lab (a hub's start, which makes a new
  container on the kept volumes) resumes and uploads what the last one could not, and a lab whose container is
  gone can still be proved synced. A volume of its own rather than a folder in the data volume: the user never
  sees (or deletes, or syncs) the agent's files in ~/data, and neither volume depends on the other's layout.

Both carry the launch's tags as labels (`vmlab:lab`, `vmlab:run`, a hub's `vmlab:class`), so listings and leak
checks find them; `terminate` (`vmlab down`) removes both with the container.

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
from collections.abc import Mapping

from vmlab import lab
from vmlab.agent.status import AgentStatus
from vmlab.errors import HostError
from vmlab.interrupts import ctrl_c_ignored
from vmlab.providers.container import labcontainer
from vmlab.providers.container.engine import Podman, missing, tail
from vmlab.syncurl import redact

#: the label on a flush container (removed with it; found by it when vmlab is interrupted during the run)
FLUSH_LABEL = "vmlab:flush-of"
#: how long the agent's push may take (a large change over a slow link)
FLUSH_TIMEOUT = 900.0
# a fixed script, its variable parts as arguments ($1: the agent, $2: its status file). The agent's log goes to
# stderr; stdout is the status it wrote
FLUSH = r"""
"$1" sync --once >&2
rc=$?
cat "$2" 2>/dev/null
exit $rc
"""


def names(name: str) -> tuple[str, str]:
    """Lab `name`'s volumes: (data, agent state)."""
    return labcontainer.volume_name(name), labcontainer.agent_volume_name(name)


def exists(engine: Podman, volume: str) -> bool:
    proc = engine.call("volume", "exists", volume)
    if proc.returncode not in (0, 1):
        raise HostError(f"podman volume exists {volume} failed: {tail(proc.stderr)}")
    return proc.returncode == 0


def create_missing(engine: Podman, name: str, labels: Mapping[str, str]) -> list[str]:
    """Create lab `name`'s volumes that do not exist yet, labelled with `labels`; returns those it made (the
    caller removes them when its launch fails)."""
    made = []
    for volume in names(name):
        if not exists(engine, volume):
            engine.text("volume", "create", *(a for k, v in labels.items() for a in ("--label", f"{k}={v}")),
                        volume, what=f"creating volume {volume}")
            made.append(volume)
    return made


def remove(engine: Podman, *volumes: str) -> None:
    """Remove volumes (a missing one is a no-op; podman refuses one a container uses)."""
    for volume in volumes:
        proc = engine.call("volume", "rm", "-f", volume)
        if proc.returncode != 0 and not missing(proc):
            raise HostError(f"removing volume {volume} failed: {tail(proc.stderr)}")


def flush_argv(name: str, image: str, sync_url: str,
               environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """`podman run` words of the flush container, and the variables to add to podman's environment (the sync URL
    and storage credentials, passed by name as for the lab itself: never on a command line)."""
    env = labcontainer.store_env(sync_url, environ)
    network = "slirp4netns:allow_host_loopback=true" if labcontainer.host_loopback(environ) else "slirp4netns"
    plain = {"VMLAB_DATA_DIR": labcontainer.DATA, "VMLAB_AGENT_STATE_DIR": lab.AGENT_STATE_DIR,
             "PATH": labcontainer.PATH}
    argv = ["run", "--rm", "--pull", "never", "--network", network, "--label", f"{FLUSH_LABEL}={name}",
            "-v", f"{names(name)[0]}:{labcontainer.DATA}", "-v", f"{names(name)[1]}:{lab.AGENT_STATE_DIR}",
            *(arg for key, value in plain.items() for arg in ("-e", f"{key}={value}")),
            *(arg for key in sorted(env) for arg in ("-e", key)),
            "--entrypoint", "/bin/sh", image, "-c", FLUSH, "sh", labcontainer.AGENT, lab.AGENT_STATUS_FILE]
    return argv, env


def flush(engine: Podman, name: str, image: str, sync_url: str,
          environ: Mapping[str, str] | None = None) -> AgentStatus:
    """Run the agent's `sync --once` on lab `name`'s volumes (see the module docstring) and return the status it
    wrote. HostError when it leaves no status that says what is unsynced (the image cannot run, the agent failed
    before it could look: an unreachable store with nothing recorded as pending is no proof either)."""
    argv, env = flush_argv(name, image, sync_url, os.environ if environ is None else environ)
    try:
        proc = engine.tool("podman", *argv, env=env, timeout=FLUSH_TIMEOUT)
    except BaseException:  # an interrupt (Ctrl-C, SIGTERM) or a timeout: the container must not outlive this call
        with ctrl_c_ignored():
            found = engine.call("ps", "-a", "-q", "--filter", f"label={FLUSH_LABEL}={name}")
            for cid in found.stdout.decode().split():
                engine.call("rm", "-f", "-t", "0", cid)
        raise
    status = AgentStatus.parse(proc.stdout.decode(errors="replace"))
    if proc.returncode == 0 and status is not None:
        return status
    why = tail(proc.stderr, 2) or f"exit {proc.returncode}"
    if status is not None and status.unsynced:
        status.last_error = status.last_error or why
        return status
    raise HostError(f"the agent could not push lab {name}'s data to {redact(sync_url)} (exit {proc.returncode}: "
                    f"{why})")
