"""The container provider's labs served on this machine (`ServesLabs`): a lab container (labcontainer.py) on its
data and agent volumes (labvolumes.py), relaunched on kept volumes, checked before its volumes go. A mixin of
`ContainerProvider` (provider.py), which holds the engine and the container and image plumbing these use.

Example::

    provider = ContainerProvider()
    with provider.lab_lock("lab1"):
        status = provider.flush_lab_data("lab1", "s3://bucket/lab1/", image)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from vmlab.agent.status import AgentStatus
from vmlab.errors import BadInput, HostError, LabNotStopped
from vmlab.providers.base import Instance, LaunchSpec
from vmlab.providers.capabilities import LabLaunch
from vmlab.providers.container import baseimage, labcontainer, labvolumes
from vmlab.providers.container.engine import missing, tail
from vmlab.state import check_name

if TYPE_CHECKING:
    from vmlab.providers.container.engine import Podman

#: on a lab container: the volumes its launch made (comma-separated), which undo_lab_launch removes
MADE_LABEL = "vmlab:launch-made"
#: podman's states of a container whose processes are all gone (its volumes free for a flush)
FULLY_STOPPED = ("created", "configured", "exited", "stopped")


class _Plumbing(Protocol):
    """What these methods use of ContainerProvider (and of each other)."""

    engine: Podman
    stop_timeout: int

    def _inspect(self, kind: str, ident: str) -> dict[str, Any] | None: ...
    def _image_ref(self, image: str) -> str: ...
    def check_launch(self, spec: LaunchSpec) -> None: ...
    def _remove_launch(self, launch_label: str) -> None: ...
    def _require(self, instance_id: str) -> Instance: ...
    def discard_lab(self, instance_id: str) -> None: ...
    def lab_data_tags(self, name: str) -> dict[str, str] | None: ...
    def lab_lock(self, name: str) -> AbstractContextManager[None]: ...


class ServedLabs:
    """ServesLabs for ContainerProvider."""

    def discard_lab(self: _Plumbing, instance_id: str) -> None:
        """ServesLabs: remove a lab container, keep its data volume (a missing container is a no-op)."""
        proc = self.engine.call("rm", "-f", "-v", "-t", "2", instance_id)
        if proc.returncode != 0 and not missing(proc):
            raise HostError(f"removing container {instance_id} failed: {tail(proc.stderr)}")

    def undo_lab_launch(self: _Plumbing, instance_id: str) -> None:
        """ServesLabs: remove a lab container and the volumes its launch made (the agent volume first); volumes
        that were there before stay (a missing container is a no-op)."""
        found = self._inspect("container", instance_id)
        made = str(((found or {}).get("Config") or {}).get("Labels", {}).get(MADE_LABEL, "")).split(",")
        self.discard_lab(instance_id)
        labvolumes.remove(self.engine, *(v for v in reversed(made) if v))

    def lab_data_tags(self: _Plumbing, name: str) -> dict[str, str] | None:
        """ServesLabs: the labels of lab `name`'s data volume, else of its agent volume when only that is left
        (the tags of the launch that made it); None when it has neither."""
        for volume in labvolumes.names(name):
            found = labvolumes.inspect(self.engine, volume)
            if found is not None:
                return dict(found.get("Labels") or {})
        return None

    def remove_lab_data(self: _Plumbing, name: str) -> None:
        """ServesLabs: remove lab `name`'s agent, then data volume (a HostError, nothing removed from a volume,
        while a container uses it: labvolumes.remove)."""
        labvolumes.remove(self.engine, *reversed(labvolumes.names(name)))

    @contextlib.contextmanager
    def lab_lock(self: _Plumbing, name: str) -> Iterator[None]:
        """ServesLabs: held across `down`'s check and removal of lab `name` and across its launch, so two downs,
        or a down and an up, of one lab never interleave (a file lock in the engine's root)."""
        folder = self.engine.root / "locks"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(folder / f"lab-{check_name(name)}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def flush_lab_data(self: _Plumbing, name: str, sync_url: str, image: str) -> AgentStatus:
        """ServesLabs: the agent's `sync --once` on lab `name`'s volumes, from its container's image (or `image`
        when it has no container), while the container is fully stopped (labvolumes.flush). The store is the
        lab's: its container's storage variables when it has one, else this shell's, refused when they point at
        another store than the lab was launched with (recorded on its agent volume). A lab with only its agent
        volume left has no data to prove: nothing unsynced. BadInput when the image is gone."""
        found = self._inspect("container", name)
        status = str((found or {}).get("State", {}).get("Status", ""))
        if found is not None and status not in FULLY_STOPPED:
            raise LabNotStopped(f"lab {name}'s container is {status}",
                            f"wait until it has stopped (`vmlab stop {name}`), then try again")
        data, agent = labvolumes.names(name)
        if found is None and labvolumes.inspect(self.engine, data) is None:
            return AgentStatus(url=sync_url)
        environ: Mapping[str, str] = os.environ
        if found is not None:
            env = dict(item.partition("=")[::2] for item in (found.get("Config") or {}).get("Env") or [])
            environ = {**{k: v for k, v in env.items() if k in labcontainer.STORAGE_ENV},
                       labcontainer.HOST_LOOPBACK_ENV: os.environ.get(labcontainer.HOST_LOOPBACK_ENV, "")}
        else:
            _check_store(name, labvolumes.inspect(self.engine, agent))
        ref = str(found.get("Image") or image) if found is not None else image
        if self._inspect("image", ref) is None:
            raise BadInput(f"lab {name}'s image {ref} is gone, so no agent can check its data is in its bucket",
                           f"bake it again (`vmlab bake`), or `vmlab down {name} --force` to lose what is not "
                           "synced")
        labvolumes.create_missing(self.engine, name, self.lab_data_tags(name) or {},  # labelled as the lab's
                                  labvolumes.store_settings(environ))
        return labvolumes.flush(self.engine, name, ref, sync_url, environ)


    def check_lab_image(self: _Plumbing, image: str) -> None:
        """BadInput unless `image` has the vmlab agent, which runs a container lab (labcontainer.py)."""
        ref = self._image_ref(image) if image not in baseimage.BASES else ""
        proc = self.engine.call("run", "--rm", "--pull", "never", "--network", "none", "--entrypoint",
                                "/usr/bin/test", ref, "-x", labcontainer.AGENT) if ref else None
        if proc is None or proc.returncode != 0:
            raise BadInput(f"container image {image!r} has no vmlab agent ({labcontainer.AGENT}), which runs a "
                           "container lab", "bake one from recipes/lab.py (or a recipe that includes "
                           "recipes/agent.py and recipes/jupyterlab.py)")

    def launch_lab(self: _Plumbing, spec: LaunchSpec, lab: LabLaunch) -> Instance:
        """ServesLabs: the lab container (labcontainer.py), JupyterLab on 127.0.0.1:PORT of this machine. A
        failure or an interrupt removes the container, and the volumes this launch made."""
        self.check_launch(spec)
        ref = self._image_ref(spec.image)
        launch_label = secrets.token_hex(6)
        labels = {**spec.tags, "vmlab:launch": launch_label}
        made: list[str] = []
        with self.lab_lock(spec.name):
            try:
                made = labvolumes.create_missing(self.engine, spec.name, labels, labvolumes.store_settings(os.environ))
                argv, env = labcontainer.run_argv(spec.name, ref, labcontainer.free_port(), lab,
                                                  {**labels, MADE_LABEL: ",".join(made)}, self.stop_timeout + 5)
                cid = self.engine.text(*argv, env=env, what=f"starting lab container {spec.name}").strip()
                return self._require(cid)
            except BaseException:
                self._remove_launch(launch_label)
                for volume in made:  # no -f: a container of another launch on it stays (and so does the volume)
                    self.engine.call("volume", "rm", volume)
                raise

    def read_file(self: _Plumbing, instance_id: str, path: str) -> bytes | None:
        """ServesLabs: a file of the container, running or stopped (`podman cp`); None when it has none."""
        import io
        import tarfile

        proc = self.engine.call("cp", f"{instance_id}:{path}", "-")
        if proc.returncode != 0:
            return None
        with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
            member = next((m for m in tar.getmembers() if m.isfile()), None)
            extracted = tar.extractfile(member) if member else None
            return extracted.read() if extracted else None

    def shell(self: _Plumbing, instance_id: str, command: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
        """ServesLabs: `podman exec -it` a login shell (or `command`) in the running lab, as root."""
        inst = self._require(instance_id)
        if inst.state != "running":
            raise HostError(f"container {inst.name} is {inst.state}", f"start it first: `vmlab start {inst.name}`")
        return ["podman", "exec", "-it", inst.id, *(command or ("bash", "-l"))], self.engine.env()


def _check_store(name: str, agent: Mapping[str, Any] | None) -> None:
    """BadInput when this shell's store settings differ from those lab `name` was launched with."""
    recorded = labvolumes.recorded_settings(agent or {})
    here = labvolumes.store_settings(os.environ)
    for key, value in (recorded or {}).items():
        if here[key] != value:
            raise BadInput(f"lab {name} syncs through {key}={value or '(unset)'}; this shell has "
                           f"{here[key] or '(unset)'}", f"set {key}={value} (or unset it) and try again")
