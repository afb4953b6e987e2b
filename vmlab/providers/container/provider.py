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
- launch_lab (ServesLabs, `vmlab up`; labserving.py): a lab container whose agent runs JupyterLab, published on
  127.0.0.1 only, the data folder on the volume `vmlab-NAME-data`, the agent's state on `vmlab-NAME-agent`
  (labcontainer.py, labvolumes.py); `terminate` removes both volumes too.

Example::

    provider = ContainerProvider()
    inst = provider.launch(LaunchSpec(name="b1", image="debian-12", ssh_public_key="", tags={"vmlab:run": "r"}))
    provider.exec_host(inst.id).execute(Command("systemctl", "is-system-running"))
    img = provider.create_image(inst.id, "small", {"vmlab:recipe-hash": "ab12" * 16})
    provider.terminate(inst.id)
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vmlab.errors import BadInput, HostError
from vmlab.providers.base import Image, Instance, LaunchPlan, LaunchSpec, Progress, match_tags
from vmlab.providers.capabilities import StorageGrant
from vmlab.providers.container import baseimage, labcontainer, labvolumes, shipping
from vmlab.providers.container.engine import Podman, default_root, missing, tail, utc_time
from vmlab.providers.container.exechost import ExecHost
from vmlab.providers.container.labserving import ServedLabs
from vmlab.safetext import check_text

NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
IMAGE_NAME_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
LABEL_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
ID_RE = re.compile(r"[0-9a-f]{12,64}")
REPOSITORY = "localhost/vmlab"
#: podman's container states in vmlab's words
STATES = {"created": "pending", "configured": "pending", "initialized": "pending", "running": "running",
          "paused": "running", "stopping": "stopping", "exited": "stopped", "stopped": "stopped",
          "removing": "terminated"}
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


class ContainerProvider(ServedLabs):
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
        return self.engine.inspect(kind, ident)

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
