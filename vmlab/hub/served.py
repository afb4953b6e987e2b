"""`LabSpawner` on a provider that serves labs itself (`ServesLabs`: the container provider): no SSH, no tunnel.

- start: the user's lab container is launched from the class image with the hub's environment for this spawn
  (`LabLaunch.hub_env`, secrets passed as the provider passes every secret); its agent restores `~/data` from the
  user's own prefix, then runs `jupyterhub-singleuser`, published on this machine's 127.0.0.1:PORT, where the
  hub's proxy reaches it. The hub makes a new API token at every spawn and a container's environment is fixed
  when it is made, so a stopped lab is not restarted: its container is removed, its data volume kept, and a new
  container is launched on that volume (the agent's restore then merges the bucket in; nothing local is deleted),
  with the agent's state volume too, so it uploads what the last container left pending.
- stop: the container stops (the agent pushes on SIGTERM); delete: container and volumes go once the agent's
  push proves the data is in the bucket (else they stay, and the hub logs why).

Example::

    server = HubServer(spawner.get_env(), tick=check_not_cancelled)
    discard_previous(provider, store, "cls-ana", stop=stop_and_charge)
    record = up(provider, "cls-ana", image=image, server=server).record   # the hub's target: 127.0.0.1:record.port
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

from vmlab.errors import BadInput, HostError
from vmlab.hub.singleuser import ENV_KEY, env_text
from vmlab.providers.base import Instance, Provider
from vmlab.providers.capabilities import ServesLabs
from vmlab.state import LabRecord, LabStore

#: JupyterHub's readiness path under the server's prefix: answers 200 without credentials
READY = "api"


def check_hub_env(env: Mapping[str, str]) -> dict[str, str]:
    """The hub's environment, checked as for a VM lab (plain names, one-line values), and without VMLAB_ names:
    those are the agent's settings (sync URL, data folder), which the spawner sets itself."""
    env_text(env)
    ours = sorted(k for k in env if k.startswith("VMLAB_") or not ENV_KEY.fullmatch(k))
    if ours:
        raise BadInput(f"environment name {ours[0]} is vmlab's own", "remove it from c.Spawner.environment")
    return dict(env)


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return None


class HubServer:
    """jupyterhub-singleuser in a served lab (a ServedServer for vmlab.workflows.labs.up). `tick` runs between
    the checks of `wait` (the spawner raises there when the hub gave up)."""

    def __init__(self, env: Mapping[str, str], tick: Callable[[], None]) -> None:
        self.hub_env: Mapping[str, str] = check_hub_env(env)
        self.prefix = env.get("JUPYTERHUB_SERVICE_PREFIX", "/")
        self.tick = tick

    def wait(self, record: LabRecord, inst: Instance, provider: Provider, timeout: float) -> None:
        """Until the server answers its readiness path on the published port; HostError when the container
        stopped (its agent or the server failed) or the time ran out."""
        url = f"http://127.0.0.1:{record.port}{self.prefix}{READY}"
        deadline = time.monotonic() + timeout
        last: int | None = None
        while time.monotonic() < deadline:
            self.tick()
            last = _status(url)
            if last == 200:
                return
            current = provider.describe(inst.id)
            if current is None or current.state != "running":
                raise HostError(f"lab {record.name} stopped while its server was starting "
                                f"({current.state if current else 'gone'})",
                                f"see the container's log: podman logs {inst.name} (with vmlab's engine settings)")
            time.sleep(0.2)
        raise HostError(f"the server of lab {record.name} did not answer on 127.0.0.1:{record.port} "
                        f"({f'HTTP {last}' if last else 'no answer'})", "see the container's log (podman logs)")


def check_relaunch(provider: ServesLabs, name: str, owner: Mapping[str, str], image: str | None,
                   idle: str | None, max_hours: float | None, sync: str | None) -> None:
    """What a relaunch checks before `discard_previous` touches the user's previous lab: the lab's flags and
    image (as `up` does: a bad config must not cost the user their container), and that lab `name`'s container
    and data belong to this class and user (`owner`: the hub's tags). Two classes can make one name (class
    `intro` with user `ml-ana`, class `intro-ml` with user `ana`), and a `vmlab up` lab can have it too: their
    container and data are never taken."""
    from vmlab.state import check_name
    from vmlab.workflows.labagent import AgentSettings
    from vmlab.workflows.labpower import find_lab_instance
    from vmlab.workflows.labs import resolve_image

    base: Provider = provider  # type: ignore[assignment]  # a ServesLabs provider is a Provider
    check_name(name)
    AgentSettings.from_flags(idle, max_hours, sync, None)
    provider.check_lab_image(resolve_image(base, image).id)
    inst = find_lab_instance(base, name)
    for what, tags in (("container", inst.tags if inst else None), ("data volume", provider.lab_data_tags(name))):
        if tags is not None and any(tags.get(key) != value for key, value in owner.items()):
            held = ", ".join(f"{key}={tags.get(key, '')}" for key in owner)
            raise BadInput(f"lab {name}'s {what} belongs to another lab of the same name ({held})",
                           "rename the class (lab names are CLASS-USER), or remove that lab first")


def discard_previous(provider: ServesLabs, store: LabStore, name: str, stop: Callable[[LabRecord], None]) -> None:
    """Before a start: lab `name`'s container from an earlier start is removed (a running one is first stopped
    with `stop`, so its agent pushes), its record forgotten; its data volume stays for the new container."""
    base: Provider = provider  # type: ignore[assignment]  # a ServesLabs provider is a Provider
    from vmlab.workflows.labpower import find_lab_instance

    record = store.get(name)
    inst = find_lab_instance(base, name)
    if inst is not None:
        if inst.state == "running" and record is not None and record.instance_id == inst.id:
            stop(record)
        provider.discard_lab(inst.id)
    if record is not None:
        store.delete(name)


def remove_data(provider: Provider, name: str, sync_url: str | None, image: str | None) -> None:
    """After a user's lab is removed: its data volumes too, when no container held them (a failed relaunch).
    With a sync URL, only once the agent's push from the state kept with them (from `image`, the class image)
    proves everything is in the bucket: HostError (or BadInput: no such image) otherwise, and they stay."""
    if not isinstance(provider, ServesLabs):
        return
    with provider.lab_lock(name):
        if provider.lab_data_tags(name) is not None:
            _check_and_remove(provider, name, sync_url, image)


def _check_and_remove(provider: ServesLabs, name: str, sync_url: str | None, image: str | None) -> None:
    from vmlab.workflows.labagent import check_can_remove
    from vmlab.workflows.labs import resolve_image

    if sync_url:
        status = provider.flush_lab_data(name, sync_url, resolve_image(provider, image).id)  # type: ignore[arg-type]
        check_can_remove(name, status, force=False,
                         served="relaunch it on its kept volumes (its agent syncs), then remove it")
    provider.remove_lab_data(name)


def target(record: LabRecord) -> int:
    """The port the hub's proxy reaches a served lab at (on 127.0.0.1); HostError when it has none."""
    if not record.port:
        raise HostError(f"lab {record.name} has no published port")
    return record.port
