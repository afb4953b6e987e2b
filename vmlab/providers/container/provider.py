"""The `container` provider: instances are podman containers with systemd as PID 1, images are podman images in
vmlab's own storage (vmlab/providers/container/engine.py). No SSH: commands go through `podman exec`
(`Executes`), so a bake needs no key or port.

- launch: `podman run -d --systemd=always --network slirp4netns --pull never`, the spec's tags as labels; it
  returns once systemd has finished starting (`systemctl is-system-running --wait`). slirp4netns gives the
  container its own network namespace with outbound NAT (like QEMU's user networking): apt and pip reach their
  mirrors, nothing on the host's network is joined or bridged, and nothing listens on this machine.
- create_image: the container is stopped (systemd shuts down cleanly), then `podman commit`ted to
  `localhost/vmlab/NAME:HASH-BASE` (HASH: the first 12 characters of `vmlab:recipe-hash`, BASE: `vmlab:base`),
  its tags and provenance
  (vmlab's version, the creation time) as image labels.
- launch_lab (ServesLabs, `vmlab up`): a lab container whose agent runs JupyterLab, published on 127.0.0.1 only,
  the data folder on the volume `vmlab-NAME-data`, the agent's state on `vmlab-NAME-agent` (labcontainer.py,
  labvolumes.py); `terminate` removes both volumes too.

Example::

    provider = ContainerProvider()
    inst = provider.launch(LaunchSpec(name="b1", image="debian-12", ssh_public_key="", tags={"vmlab:run": "r"}))
    provider.exec_host(inst.id).execute(Command("systemctl", "is-system-running"))
    img = provider.create_image(inst.id, "small", {"vmlab:recipe-hash": "ab12" * 16})
    provider.terminate(inst.id)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vmlab.agent.status import AgentStatus
from vmlab.errors import BadInput, HostError, LabNotStopped
from vmlab.providers.base import Image, Instance, LabLaunch, LaunchPlan, LaunchSpec, Progress, StorageGrant, match_tags
from vmlab.providers.container import baseimage, labcontainer, labvolumes, shipping
from vmlab.providers.container.engine import Podman, default_root, missing, tail, utc_time
from vmlab.providers.container.exechost import ExecHost
from vmlab.safetext import check_text
from vmlab.state import check_name

NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
IMAGE_NAME_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
LABEL_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
ID_RE = re.compile(r"[0-9a-f]{12,64}")
REPOSITORY = "localhost/vmlab"
#: podman's container states in vmlab's words
STATES = {"created": "pending", "configured": "pending", "initialized": "pending", "running": "running",
          "paused": "running", "stopping": "stopping", "exited": "stopped", "stopped": "stopped",
          "removing": "terminated"}
#: on a lab container: the volumes its launch made (comma-separated), which undo_lab_launch removes
MADE_LABEL = "vmlab:launch-made"
#: podman's states of a container whose processes are all gone (its volumes free for a flush)
FULLY_STOPPED = ("created", "configured", "exited", "stopped")
BOOT_TIMEOUT = 120.0
#: this machine's CA bundle (a TLS-inspecting proxy's CA included): mounted read-only into builders at HOST_CA so
#: pip and curl reach PyPI as this machine does; a mount is never committed, so the image does not keep it
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HOST_CA = "/run/vmlab-host-ca.pem"


def _quiet(_msg: str, _frac: float | None) -> None:
    pass


def check_labels(tags: Mapping[str, str]) -> None:
    """Labels travel to podman as `KEY=VALUE` words and `LABEL KEY=VALUE` image changes: keys are plain words,
    values one line without quotes or backslashes (which the LABEL syntax would read)."""
    for key, value in tags.items():
        if not LABEL_KEY_RE.fullmatch(key):
            raise BadInput(f"tag key {key!r} is not a container label key", "use letters, digits and ._:/-")
        check_text(value, f"the value of tag {key}")
        if '"' in value or "\\" in value:
            raise BadInput(f"the value of tag {key} contains a quote or backslash", "leave them out")


def image_tag(tags: Mapping[str, str]) -> str:
    """`HASH-BASE`: the recipe hash's first 12 characters and the base it was baked on, so a recipe baked under
    one name on two bases keeps both images named."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", tags.get("vmlab:base", ""))[:100]
    digest = tags.get("vmlab:recipe-hash", "latest")[:12]
    return f"{digest}-{base}" if base else digest


class ContainerProvider:
    """Containers on podman (see the module docstring). `root` is the engine root (default $VMLAB_CONTAINER_ROOT
    or `cache_dir()/container`); `base_cache` where the base image's tar file is built (default `root`)."""

    name = "container"
    default_base = baseimage.DEFAULT

    def __init__(self, root: Path | None = None, *, base_cache: Path | None = None,
                 progress: Progress | None = None, stop_timeout: int = 10) -> None:
        self.engine = Podman(root or default_root())
        self.base_cache = base_cache or self.engine.root
        self.progress: Progress = progress or _quiet
        self.stop_timeout = stop_timeout

    # ---- helpers -------------------------------------------------------------------------------------------
    def _inspect(self, kind: str, ident: str) -> dict[str, Any] | None:
        """`podman KIND inspect IDENT` (container or image) as a dict; None when it does not exist."""
        proc = self.engine.call(kind, "inspect", ident)
        if proc.returncode != 0:
            if missing(proc):
                return None
            raise HostError(f"podman {kind} inspect {ident} failed: {tail(proc.stderr)}")
        data = json.loads(proc.stdout or b"[]")
        return data[0] if data else None

    def _instance(self, data: Mapping[str, Any]) -> Instance:
        state = data.get("State") or {}
        status = state.get("Status", "") if isinstance(state, dict) else str(state)
        config = data.get("Config") or {}
        labels = dict(config.get("Labels") or {})
        served = labels.get(labcontainer.PORT_LABEL, "")  # a lab container: JupyterLab on 127.0.0.1:PORT
        return Instance(id=str(data.get("Id", ""))[:12], name=str(data.get("Name", "")).lstrip("/"),
                        state=STATES.get(status, "stopped"), host="127.0.0.1" if served.isdigit() else None,
                        port=int(served) if served.isdigit() else 0, user="root",
                        image=str(data.get("ImageName", "")), provider=self.name, instance_type="container",
                        tags=labels, launched_at=utc_time(str(state.get("StartedAt") or data.get("Created") or "")
                                                          if isinstance(state, dict) else str(data.get("Created", ""))))

    def _wait_booted(self, container: str) -> None:
        """Until systemd in the container has started everything (running, or degraded: a unit failed). Right
        after the start its bus may not exist yet: asked again until it answers."""
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            proc = self.engine.call("exec", container, "systemctl", "is-system-running", "--wait",
                                    timeout=BOOT_TIMEOUT)
            status = proc.stdout.decode(errors="replace").strip()
            if status in ("running", "degraded"):
                return
            if time.monotonic() >= deadline or status not in ("", "offline", "starting", "initializing"):
                raise HostError(f"systemd in container {container[:12]} did not start "
                                f"({status or tail(proc.stderr)})", "see `podman logs` of the container")
            time.sleep(0.1)

    def _image_ref(self, image: str) -> str:
        """The podman reference of `image` (an id, a name, or a base's id, imported or built first)."""
        if image in baseimage.BASES:
            return baseimage.ensure_base_image(self.engine, self.base_cache, baseimage.BASES[image], self.progress)
        return self._require_base(image).id

    def _require_base(self, image: str) -> Image:
        """A vmlab image to start from; BadInput naming the bases when there is none called `image`."""
        found = self.describe_image(image)
        if found is None:
            raise BadInput(f"container image {image!r} not found: the bases are {', '.join(baseimage.BASES)}",
                           "list vmlab's images with `vmlab images --provider container`")
        return found

    # ---- checks (PlansLaunches) ----------------------------------------------------------------------------
    def check_launch(self, spec: LaunchSpec) -> None:
        if not NAME_RE.fullmatch(spec.name):
            raise BadInput(f"container name {spec.name!r} is not allowed", "use letters, digits and ._- "
                           "(128 at most, starting with a letter or digit)")
        check_labels(spec.tags)
        if spec.instance_type:
            raise BadInput(f"--type/--builder-type {spec.instance_type} does not apply to containers (they share "
                           "this machine's CPUs and memory)", "drop it")
        if spec.volume_size_gb is not None:
            raise BadInput("--volume-size does not apply to containers (their disk is the engine's storage)",
                           "drop --volume-size")
        self.engine.check()
        if self._inspect("container", spec.name) is not None:
            raise BadInput(f"a container named {spec.name} exists", "choose another name, or `vmlab down` it")
        if spec.image not in baseimage.BASES:
            self._require_base(spec.image)

    def plan_launch(self, spec: LaunchSpec) -> LaunchPlan:
        self.check_launch(spec)
        creates = ((f"podman volumes {', '.join(labvolumes.names(spec.name))} (the data folder and the agent's "
                    "state, unless they exist)",
                    f"podman container {spec.name} from {spec.image} (the agent runs JupyterLab, published on "
                    "127.0.0.1 only; own network namespace, slirp4netns)") if "vmlab:lab" in spec.tags else
                   (f"podman container {spec.name} from {spec.image} (systemd; own network namespace, "
                    "slirp4netns)",))
        return LaunchPlan(provider=self.name, image=spec.image, image_name=spec.image, instance_type="container",
                          volume_gb=None, spot=False, creates=creates)

    def check_image_name(self, name: str) -> None:
        if len(name) > 128 or not IMAGE_NAME_RE.fullmatch(name):
            raise BadInput(f"image name {name!r} is not a container image name",
                           "use lower-case letters, digits and ._- (e.g. vmlab-lab-1)")

    # ---- instances -----------------------------------------------------------------------------------------
    def launch(self, spec: LaunchSpec) -> Instance:
        """A container from `spec.image` running systemd, labelled with `spec.tags`; removed again when anything
        fails before it is returned (it is found by a label unique to this launch)."""
        self.check_launch(spec)
        ref = self._image_ref(spec.image)
        launch_label = secrets.token_hex(6)
        labels = [arg for k, v in {**spec.tags, "vmlab:launch": launch_label}.items()
                  for arg in ("--label", f"{k}={v}")]
        ca = ["-v", f"{HOST_CA_BUNDLE}:{HOST_CA}:ro"] if HOST_CA_BUNDLE.is_file() else []
        try:
            cid = self.engine.text("run", "-d", "--pull", "never", "--name", spec.name, "--hostname", spec.name[:63],
                                   "--systemd", "always", "--network", "slirp4netns", *ca,
                                   "--stop-timeout", str(self.stop_timeout), *labels, ref, "/sbin/init",
                                   what=f"starting container {spec.name}").strip()
            self._wait_booted(cid)
        except BaseException:
            self._remove_launch(launch_label)
            raise
        found = self._inspect("container", cid)
        if found is None:
            raise HostError(f"container {spec.name} vanished right after it started")
        return self._instance(found)

    def _remove_launch(self, launch_label: str) -> None:
        ids = self.engine.call("ps", "-a", "-q", "--filter", f"label=vmlab:launch={launch_label}")
        for cid in ids.stdout.decode().split():
            self.engine.call("rm", "-f", "-v", "-t", "0", cid)

    def describe(self, instance_id: str) -> Instance | None:
        found = self._inspect("container", instance_id)
        return None if found is None else self._instance(found)

    def list_instances(self, tags: Mapping[str, str] | None = None) -> list[Instance]:
        listed = self.engine.json("ps", "-a", "--format", "json", what="listing containers") or []
        out = []
        for row in listed:
            if match_tags(row.get("Labels") or {}, tags):
                found = self._inspect("container", row["Id"])
                if found is not None:
                    out.append(self._instance(found))
        return out

    def stop(self, instance_id: str) -> Instance:
        """`podman stop` with the container's own timeout (a lab's agent gets its grace period to push)."""
        self.engine.text("stop", instance_id, what=f"stopping {instance_id}")
        return self._require(instance_id)

    def start(self, instance_id: str) -> Instance:
        self.engine.text("start", instance_id, what=f"starting {instance_id}")
        if not self._require(instance_id).host:  # a lab container runs the agent, not systemd
            self._wait_booted(instance_id)
        return self._require(instance_id)

    def _require(self, instance_id: str) -> Instance:
        found = self.describe(instance_id)
        if found is None:
            raise BadInput(f"no container {instance_id}", "list them with `vmlab ls`")
        return found

    def terminate(self, instance_id: str) -> None:
        """Remove the container, its anonymous volumes and a lab's data and agent volumes (its disk); a missing
        container is a no-op."""
        found = self._inspect("container", instance_id)
        inst = self._instance(found) if found else None
        proc = self.engine.call("rm", "-f", "-v", "-t", "2", instance_id)
        if proc.returncode != 0 and not missing(proc):
            raise HostError(f"removing container {instance_id} failed: {tail(proc.stderr)}")
        if inst is not None and inst.tags.get(labcontainer.VOLUME_LABEL):
            # a lab's volumes; one launched before the agent volume has no label for it (`down`'s check made one)
            agent = inst.tags.get(labcontainer.AGENT_VOLUME_LABEL) or labcontainer.agent_volume_name(inst.name)
            labvolumes.remove(self.engine, agent, inst.tags[labcontainer.VOLUME_LABEL])  # the data last

    def discard_lab(self, instance_id: str) -> None:
        """ServesLabs: remove a lab container, keep its data volume (a missing container is a no-op)."""
        proc = self.engine.call("rm", "-f", "-v", "-t", "2", instance_id)
        if proc.returncode != 0 and not missing(proc):
            raise HostError(f"removing container {instance_id} failed: {tail(proc.stderr)}")

    def undo_lab_launch(self, instance_id: str) -> None:
        """ServesLabs: remove a lab container and the volumes its launch made (the agent volume first); volumes
        that were there before stay (a missing container is a no-op)."""
        found = self._inspect("container", instance_id)
        made = str(((found or {}).get("Config") or {}).get("Labels", {}).get(MADE_LABEL, "")).split(",")
        self.discard_lab(instance_id)
        labvolumes.remove(self.engine, *(v for v in reversed(made) if v))

    def lab_data_tags(self, name: str) -> dict[str, str] | None:
        """ServesLabs: the labels of lab `name`'s data volume, else of its agent volume when only that is left
        (the tags of the launch that made it); None when it has neither."""
        for volume in labvolumes.names(name):
            found = labvolumes.inspect(self.engine, volume)
            if found is not None:
                return dict(found.get("Labels") or {})
        return None

    def remove_lab_data(self, name: str) -> None:
        """ServesLabs: remove lab `name`'s agent, then data volume (a HostError, nothing removed from a volume,
        while a container uses it: labvolumes.remove)."""
        labvolumes.remove(self.engine, *reversed(labvolumes.names(name)))

    @contextlib.contextmanager
    def lab_lock(self, name: str) -> Iterator[None]:
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

    def flush_lab_data(self, name: str, sync_url: str, image: str) -> AgentStatus:
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
            self._check_store(name, labvolumes.inspect(self.engine, agent))
        ref = str(found.get("Image") or image) if found is not None else image
        if self._inspect("image", ref) is None:
            raise BadInput(f"lab {name}'s image {ref} is gone, so no agent can check its data is in its bucket",
                           f"bake it again (`vmlab bake`), or `vmlab down {name} --force` to lose what is not "
                           "synced")
        labvolumes.create_missing(self.engine, name, self.lab_data_tags(name) or {},  # labelled as the lab's
                                  labvolumes.store_settings(environ))
        return labvolumes.flush(self.engine, name, ref, sync_url, environ)

    @staticmethod
    def _check_store(name: str, agent: Mapping[str, Any] | None) -> None:
        """BadInput when this shell's store settings differ from those lab `name` was launched with."""
        recorded = labvolumes.recorded_settings(agent or {})
        here = labvolumes.store_settings(os.environ)
        for key, value in (recorded or {}).items():
            if here[key] != value:
                raise BadInput(f"lab {name} syncs through {key}={value or '(unset)'}; this shell has "
                               f"{here[key] or '(unset)'}", f"set {key}={value} (or unset it) and try again")

    # ---- labs served on this machine (ServesLabs) ----------------------------------------------------------
    def check_lab_image(self, image: str) -> None:
        """BadInput unless `image` has the vmlab agent, which runs a container lab (labcontainer.py)."""
        ref = self._image_ref(image) if image not in baseimage.BASES else ""
        proc = self.engine.call("run", "--rm", "--pull", "never", "--network", "none", "--entrypoint",
                                "/usr/bin/test", ref, "-x", labcontainer.AGENT) if ref else None
        if proc is None or proc.returncode != 0:
            raise BadInput(f"container image {image!r} has no vmlab agent ({labcontainer.AGENT}), which runs a "
                           "container lab", "bake one from recipes/lab.py (or a recipe that includes "
                           "recipes/agent.py and recipes/jupyterlab.py)")

    def launch_lab(self, spec: LaunchSpec, lab: LabLaunch) -> Instance:
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

    def read_file(self, instance_id: str, path: str) -> bytes | None:
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

    def shell(self, instance_id: str, command: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
        """ServesLabs: `podman exec -it` a login shell (or `command`) in the running lab, as root."""
        inst = self._require(instance_id)
        if inst.state != "running":
            raise HostError(f"container {inst.name} is {inst.state}", f"start it first: `vmlab start {inst.name}`")
        return ["podman", "exec", "-it", inst.id, *(command or ("bash", "-l"))], self.engine.env()

    # ---- storage (ScopesStorage): the lab gets this environment's credentials, nothing is granted ----------
    def storage_scope(self, url: str) -> str | None:
        return None

    def grant_storage(self, url: str) -> StorageGrant | None:
        return None

    def revoke_storage(self, grant: StorageGrant) -> None:
        """Nothing to revoke: `grant_storage` grants nothing."""

    def exec_host(self, instance_id: str) -> ExecHost:
        """Executes: commands in the running container through `podman exec`."""
        inst = self._require(instance_id)
        if inst.state != "running":
            raise HostError(f"container {inst.name} is {inst.state}", "start it first")
        return ExecHost(self.engine, inst.id, inst.name)

    # ---- images --------------------------------------------------------------------------------------------
    def create_image(self, instance_id: str, name: str, tags: Mapping[str, str],
                     progress: Progress | None = None) -> Image:
        """Stop the container (a clean systemd shutdown) and commit it to `localhost/vmlab/NAME:HASH-BASE`."""
        from vmlab import __version__

        self.check_image_name(name)
        labels = {**tags, "vmlab:name": name, "vmlab:version": __version__,
                  "org.opencontainers.image.title": name,
                  "org.opencontainers.image.created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        check_labels(labels)
        ref = f"{REPOSITORY}/{name}:{image_tag(tags)}"
        (progress or _quiet)(f"stopping {instance_id}", None)
        self.engine.text("stop", "-t", str(self.stop_timeout), instance_id, what=f"stopping {instance_id}")
        (progress or _quiet)(f"committing {ref}", None)
        changes = [arg for k, v in labels.items() for arg in ("--change", f"LABEL {k}={v}")]
        image_id = self.engine.text("commit", "-q", *changes, instance_id, ref, what=f"committing {ref}").strip()
        found = self.describe_image(image_id)
        if found is None:
            raise HostError(f"podman committed {ref} but does not list it")
        return found

    def _images(self) -> list[Image]:
        listed = self.engine.json("images", "--format", "json", what="listing images") or []
        return [self._image(row) for row in listed]

    def _image(self, row: Mapping[str, Any]) -> Image:
        labels = dict(row.get("Labels") or {})
        names = list(row.get("Names") or [])
        created = row.get("Created")
        when = (datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="seconds")
                if isinstance(created, (int, float)) else None)
        return Image(id=str(row.get("Id", ""))[:12], name=labels.get("vmlab:name") or (names[0] if names else ""),
                     state="available", provider=self.name, created=when, tags=labels,
                     size_bytes=row.get("Size"), source=names[0] if names else None, user="root")

    def describe_image(self, image: str) -> Image | None:
        """By id (12 or more hex digits), vmlab name, full reference, or a base's id (when imported)."""
        if image in baseimage.BASES:
            image = baseimage.BASES[image].reference()
        for found in self._images():
            if (ID_RE.fullmatch(image) and found.id.startswith(image[:12])) or image in (found.name, found.source):
                return found
        return None

    def list_images(self, tags: Mapping[str, str] | None = None) -> list[Image]:
        return [i for i in self._images() if match_tags(i.tags, tags)]

    def delete_image(self, image_id: str) -> None:
        """Remove an image (refused by podman while a container uses it); a missing image is a no-op."""
        proc = self.engine.call("rmi", image_id)
        if proc.returncode != 0 and not missing(proc):
            raise HostError(f"removing image {image_id} failed: {tail(proc.stderr)}",
                            "remove the containers that use it first")

    def _require_image(self, image: str) -> Image:
        found = self.describe_image(image)
        if found is None or not found.source:
            raise BadInput(f"container image {image!r} not found", "list images with `vmlab images --provider "
                           "container`")
        return found

    def export_image(self, image: str, kind: str, dest: Path) -> Path:
        """ShipsImages: an OCI layout folder or a docker-archive tar of `image` at `dest` (which must not exist)."""
        check_text(str(dest), "the export path")
        if ":" in str(dest) or dest.exists():
            raise BadInput(f"cannot export to {dest}: " + ("it exists" if dest.exists() else "the path has a ':'"),
                           "name a new path without ':'")
        return shipping.export(self.engine, self._require_image(image).source or "", kind, dest)

    def push_image(self, image: str, dest: str) -> str:
        """ShipsImages: push `image` to `dest` (HOST[:PORT]/REPO[:TAG]); returns the registry's digest."""
        shipping.check_destination(dest)
        return shipping.push(self.engine, self._require_image(image).source or "", dest)

    def build_base_image(self, progress: Progress | None = None, base: str = baseimage.DEFAULT) -> Image:
        """BuildsBaseImage: a base (Debian 12 unless `base` names another), built (debootstrap; root) and
        imported once."""
        self.engine.check()
        ref = baseimage.ensure_base_image(self.engine, self.base_cache, baseimage.base_for(base),
                                          progress or self.progress)
        found = self.describe_image(ref)
        if found is None:
            raise HostError(f"the base image {ref} was imported but is not listed")
        return found
