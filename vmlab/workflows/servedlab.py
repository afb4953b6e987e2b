"""`vmlab up` of a lab the provider serves itself (`ServesLabs`: a container whose agent runs JupyterLab,
published on this machine's 127.0.0.1): no SSH key, no host key, the token given at launch.

A new lab gets a fresh token; `up` of a stopped one starts it (same token: it is in the container's
configuration). The record keeps the token (0600, as for every provider), host 127.0.0.1 and the published port.

Example::

    result = up_served(provider, checks, lab_timeout=120, say=print)   # checks from workflows.labs.check_up
    print(lab_url(result.record))
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from vmlab import lab
from vmlab.agent.status import AgentStatus
from vmlab.errors import BadInput, HostError
from vmlab.interrupts import deferred_signals
from vmlab.providers.base import Instance, Provider
from vmlab.providers.capabilities import LabLaunch, ServesLabs
from vmlab.state import LabRecord
from vmlab.syncurl import redact
from vmlab.workflows.cleanup import Cleanup

if TYPE_CHECKING:
    from vmlab.workflows.labs import UpChecks
    from vmlab.workflows.labserver import Stopwatch

Say = Callable[[str], None]
LOCAL = "127.0.0.1"


@runtime_checkable
class ServedServer(Protocol):
    """What a served lab runs instead of JupyterLab with a token (vmlab.hub.served: jupyterhub-singleuser):
    `hub_env` goes to the lab at launch (LabLaunch.hub_env), `wait` returns once the server answers (HostError
    when it cannot)."""

    hub_env: Mapping[str, str]

    def wait(self, record: LabRecord, inst: Instance, provider: Provider, timeout: float) -> None: ...


def lab_url(record: LabRecord) -> str:
    """The lab's URL with its token (127.0.0.1: the only address it is published on)."""
    return f"http://{LOCAL}:{record.port}/lab?token={record.token}"


def wait_answers(record: LabRecord, inst: Instance, provider: Provider, timeout: float) -> None:
    """Until JupyterLab answers 200 to the token on the published port; HostError when it refuses the token,
    the container stopped or the time ran out."""
    from vmlab.workflows.tunnel import lab_status

    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status = lab_status(record.port, record.token, timeout=2.0)
            if status == 200:
                return
            if status in (401, 403):
                raise HostError(f"JupyterLab of lab {record.name} refuses its recorded token (HTTP {status})",
                                f"`vmlab down {record.name}`, then `vmlab up {record.name}`")
            last = f"HTTP {status}"
        except OSError as exc:  # nothing answers yet (JupyterLab starting), or the lab stopped
            last = str(exc)
            current = provider.describe(inst.id)
            if current is None or current.state != "running":
                raise HostError(f"lab {record.name} stopped while starting ({current.state if current else 'gone'})",
                                f"see its log: podman logs {inst.name} (with vmlab's engine settings)") from exc
        time.sleep(0.2)
    raise HostError(f"JupyterLab of lab {record.name} did not answer on {LOCAL}:{record.port} ({last})",
                    f"`vmlab ssh {record.name}` and look around, or `vmlab down {record.name}`")


def up_served(provider: ServesLabs, checks: UpChecks, watch: Stopwatch, lab_timeout: float, say: Say,
              server: ServedServer | None = None) -> LabRecord:
    """Start or launch the lab `checks` describe and wait until it answers with its token (or `server`'s wait);
    returns its record (stored). A failed or interrupted new launch leaves nothing (the provider removes what it
    made; the container is removed if the wait fails, and its data unless it was there before)."""
    base: Provider = provider  # type: ignore[assignment]  # a ServesLabs provider is a Provider
    store, settings, name = checks.store, checks.settings, checks.name
    if checks.existing is not None and checks.record is not None:
        record, inst = checks.record, checks.existing
        if inst.state in ("stopped", "stopping"):
            say(f"starting lab {name} ({inst.id})")
            with watch.lap("launch"):
                inst = base.start(inst.id)
        with watch.lap("jupyter_start"):
            wait_answers(record, inst, base, lab_timeout)
        store.put(record)
        return record
    assert checks.spec and checks.image  # set for a new launch
    token = "" if server else secrets.token_urlsafe(32)  # a hub's server checks visitors with the hub
    launch = LabLaunch(token, settings.sync_url, settings.idle_minutes, settings.max_hours,
                       hub_env=server.hub_env if server else {})
    kept_data = provider.lab_data_tags(name) is not None  # a failed launch leaves data that was there before
    with Cleanup(say) as cleanup:
        say(f"launching lab {name} from {checks.image.name} ({checks.image.id})")
        with watch.lap("launch"), deferred_signals():  # a signal right after the launch waits for the undo
            inst = provider.launch_lab(checks.spec, launch)
            cleanup.on_failure(f"lab container {inst.id}" + (" (its data kept)" if kept_data else ""),
                               lambda: provider.undo_lab_launch(inst.id))
        record = LabRecord(name=name, provider=base.name, instance_id=inst.id, image=checks.image.id,
                           user=inst.user, key_file="", host_key="", token=token, host=inst.host, port=inst.port,
                           created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                           instance_type=inst.instance_type, hourly_price=checks.prices[0])
        record.agent = settings.section()
        say("waiting for the lab's server to answer" if server else "waiting for JupyterLab to answer")
        with watch.lap("jupyter_start"):
            (server.wait if server else wait_answers)(record, inst, base, lab_timeout)
        store.put(record)
    return record


def served_status(provider: ServesLabs, record: LabRecord, inst: Instance | None, path: str,
                  flush: bool) -> AgentStatus | None:
    """The agent's status file of a served lab; None when it has none. With `flush`: the lab is stopped if it
    runs (its agent pushes what is pending on SIGTERM), then the agent pushes whatever is still left from the
    state it keeps with the lab's data (ServesLabs.flush_lab_data: this works for a lab whose instance is gone
    too), and that final status is returned (nothing left of the lab: nothing to lose). `path` is where a read
    looks; a flush reports the status the agent writes in its own state, so another `path` is refused there."""
    base: Provider = provider  # type: ignore[assignment]  # a ServesLabs provider is a Provider
    if not flush:
        data = provider.read_file(inst.id, path) if inst is not None else None
        return AgentStatus.parse(data.decode(errors="replace")) if data is not None else None
    if path != lab.AGENT_STATUS_FILE:
        raise BadInput(f"lab {record.name} is served: its agent's status is at {lab.AGENT_STATUS_FILE}, not {path}",
                       "leave the status path out")
    if inst is not None and inst.state == "running":
        base.stop(inst.id)
    if inst is None and provider.lab_data_tags(record.name) is None:
        return AgentStatus(url=redact(record.agent.sync_url or ""), stopped=True)
    return provider.flush_lab_data(record.name, record.agent.sync_url or "", record.image)
