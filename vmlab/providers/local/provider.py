"""`LocalProvider`: the Provider protocol on QEMU VMs on this machine.

A VM is a directory `ROOT/vms/<id>/` (ROOT = `cache_dir()/local`) holding its qcow2 overlay, cloud-init seed,
serial log, QMP socket, pid file and `vm.json`. Removing the directory removes the VM.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from vmlab.errors import BadInput, HostError
from vmlab.providers.base import Image, Instance, LaunchSpec, Progress, match_tags
from vmlab.providers.capabilities import StorageGrant
from vmlab.providers.local import accel, baseimage, qemu, seed, store
from vmlab.providers.local.images import ImageFiles, ImageShelf

log = logging.getLogger("vmlab.providers.local")

VM_ID_RE = re.compile(r"^lvm-[0-9a-f]{6,32}$")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEFAULT_USER = "admin"
PORT_ATTEMPTS = 3


def _quiet(_msg: str, _frac: float | None) -> None:
    """The progress callback used when the caller gives none."""


class LocalProvider:
    """QEMU VMs on this machine, reachable over SSH on a port forwarded from 127.0.0.1.

    Example::

        provider = LocalProvider()
        inst = provider.launch(LaunchSpec(name="lab", image="debian-12", ssh_public_key=pub, host_key=priv))
        provider.wait_booted(inst.id, timeout=600)      # sshd answers on 127.0.0.1:inst.port
        img = provider.create_image(inst.id, "lab-v1", {"vmlab:recipe-hash": "ab12"})
        provider.terminate(inst.id)

    `root` defaults to `cache_dir()/local`; `progress` receives long waits (the base image build);
    `compress_images` makes create_image write zstd-compressed disks (~3x smaller, a few seconds slower).
    """

    name = "local"
    default_base = baseimage.BASE_ID

    def __init__(self, root: Path | None = None, *, progress: Progress | None = None,
                 compress_images: bool = True, stop_timeout: float = 120.0) -> None:
        self.root = root or store.default_root()
        self.progress: Progress = progress or _quiet
        self.compress_images = compress_images
        self.stop_timeout = stop_timeout
        self.images = ImageShelf(self.root)

    # ---- helpers -------------------------------------------------------------------------------------------
    def _vm_dir(self, instance_id: str) -> Path:
        if not VM_ID_RE.match(instance_id):
            raise BadInput(f"{instance_id!r} is not a local instance id", "ids look like lvm-3f9c0a1b2d4e")
        return self.root / "vms" / instance_id

    def _record(self, instance_id: str) -> tuple[qemu.VmFiles, store.VmRecord]:
        path = self._vm_dir(instance_id)
        if not (path / store.VM_META).is_file():
            raise BadInput(f"no local instance {instance_id}", "list them with `vmlab ls`")
        return qemu.VmFiles(path), store.read_vm(path)

    def _instance(self, files: qemu.VmFiles, rec: store.VmRecord) -> Instance:
        if qemu.read_pid(files) is not None:
            state = "running"
        elif rec.state in ("pending", "terminated"):
            state = rec.state  # mid-launch (no QEMU yet) or mid-terminate
        else:
            state = "stopped"
        return Instance(id=rec.id, name=rec.name, state=state, host="127.0.0.1", port=rec.port,
                        user=DEFAULT_USER, image=rec.image, provider=self.name,
                        instance_type=f"qemu-{rec.accel}", tags=dict(rec.tags), launched_at=rec.created)

    def _boot(self, files: qemu.VmFiles, rec: store.VmRecord, port: int | None) -> store.VmRecord:
        """Start QEMU for a VM record; picks a free port (retrying a lost race) unless `port` is fixed."""
        choice = accel.detect(self.root, Path(rec.kernel))
        log.debug("accelerator %s (%s)", choice.name, choice.reason)
        for attempt in range(1 if port else PORT_ATTEMPTS):
            use = port or (rec.port if attempt == 0 and rec.port and qemu.port_free(rec.port)
                           else qemu.free_port())
            rec = replace(rec, port=use, accel=choice.name, state="running")
            argv = qemu.qemu_argv(files, qemu.Boot(Path(rec.kernel), Path(rec.initrd), choice.name),
                                  name=rec.id, port=use, memory_mb=rec.memory_mb, cpus=rec.cpus,
                                  seed=files.seed.is_file())
            log.debug("qemu argv: %s", argv)
            files.serial.unlink(missing_ok=True)  # the log of this boot only
            try:
                qemu.run_qemu(argv)
            except qemu.PortInUse:
                if port or attempt == PORT_ATTEMPTS - 1:
                    raise
                continue
            store.write_vm(files.dir, rec)
            return rec
        raise AssertionError("unreachable")

    # ---- instances -----------------------------------------------------------------------------------------
    def launch(self, spec: LaunchSpec, *, port: int | None = None) -> Instance:
        """Boot a new VM from `spec.image` (an image id, an image name, or `debian-12`, built on first use).

        `port` fixes the forwarded SSH port (BadInput if taken); by default a free one is picked.
        On any failure everything this call created is removed.
        """
        if not spec.name.strip():
            raise BadInput("instance name is empty", "pass a name")
        memory = spec.memory_mb or 2048
        cpus = spec.cpus or min(2, os.cpu_count() or 1)
        if memory < 512 or cpus < 1:
            raise BadInput(f"memory {memory} MB / {cpus} CPUs is too small", "use at least 512 MB and 1 CPU")
        qemu.require_tools()
        if port is not None and not qemu.port_free(port):
            raise BadInput(f"port {port} on 127.0.0.1 is in use", "choose another port or omit it")
        if spec.image == baseimage.BASE_ID:
            baseimage.ensure_base_image(self.progress, self.root)
        image = self.images.require(spec.image)
        source = self.images.verify(image.id)
        virtual_gb = qemu.virtual_size(source.disk) / 1024**3
        size = spec.volume_size_gb
        if size is not None and size < virtual_gb:
            raise BadInput(f"volume_size_gb {size} is smaller than the image's disk ({virtual_gb:.0f} GB)",
                           "omit it or ask for more")
        user_data = self._user_data(spec, source)  # validates user_data before anything is created
        vm_id = store.new_id("lvm")
        files = qemu.VmFiles(self._vm_dir(vm_id))
        files.dir.parent.mkdir(parents=True, exist_ok=True)
        files.dir.mkdir(mode=0o700)
        try:
            qemu.create_overlay(source.disk, files.disk, size)
            instance_id = f"iid-{vm_id}-{store.new_id('s')[2:]}"
            seed.write_seed_iso(files.seed, user_data, seed.meta_data(instance_id, spec.name))
            rec = store.VmRecord(id=vm_id, name=spec.name, image=image.id, port=port or 0, created=store.now(),
                                 backing=str(source.disk), kernel=str(source.kernel), initrd=str(source.initrd),
                                 memory_mb=memory, cpus=cpus, tags=dict(spec.tags), instance_id=instance_id)
            store.write_vm(files.dir, rec)
            self.progress(f"starting {vm_id} from {image.id}", None)
            rec = self._boot(files, rec, port)
        except BaseException:
            self._destroy(files)
            raise
        log.debug("launched %s on 127.0.0.1:%d (%s)", vm_id, rec.port, rec.accel)
        return self._instance(files, rec)

    def _user_data(self, spec: LaunchSpec, source: ImageFiles) -> str:
        guest_bundle = source.ca_bundle.read_text() if source.ca_bundle.is_file() else None
        host_bundle = HOST_CA_BUNDLE.read_text() if HOST_CA_BUNDLE.is_file() else ""
        cfg = seed.cloud_config(user=DEFAULT_USER, ssh_public_key=spec.ssh_public_key, host_key=spec.host_key,
                                ca_certs=seed.extra_ca_certs(host_bundle, guest_bundle),
                                proxy=seed.proxy_env(os.environ))
        return seed.render_user_data(cfg, spec.user_data)

    def _destroy(self, files: qemu.VmFiles) -> None:
        qemu.kill(files)
        shutil.rmtree(files.dir, ignore_errors=True)

    def describe(self, instance_id: str) -> Instance | None:
        """The VM's current state (from its QEMU process), or None when there is no such VM."""
        path = self._vm_dir(instance_id)
        if not (path / store.VM_META).is_file():
            return None
        files = qemu.VmFiles(path)
        return self._instance(files, store.read_vm(path))

    def list_instances(self, tags: Mapping[str, str] | None = None) -> list[Instance]:
        """Every local VM carrying all of `tags`; a VM whose metadata is damaged is skipped with a warning."""
        out = []
        vms = self.root / "vms"
        for path in sorted(vms.iterdir()) if vms.is_dir() else []:
            if not VM_ID_RE.match(path.name) or not (path / store.VM_META).is_file():
                continue
            try:
                rec = store.read_vm(path)
            except Exception as exc:  # one damaged record must not hide the others
                log.warning("skipping %s: %s", path, exc)
                continue
            if match_tags(rec.tags, tags):
                out.append(self._instance(qemu.VmFiles(path), rec))
        return out

    def stop(self, instance_id: str) -> Instance:
        """Shut the guest down cleanly (ACPI power button over QMP), killing QEMU only after `stop_timeout`.
        The disk is kept; `start` boots it again."""
        files, rec = self._record(instance_id)
        if qemu.read_pid(files) is not None:
            deadline = time.monotonic() + self.stop_timeout
            while qemu.read_pid(files) is not None and time.monotonic() < deadline:
                # pressed again every 15 s: a guest still booting may not listen to the button yet
                qemu.powerdown(files)
                qemu.wait_exit(files, min(15.0, max(0.0, deadline - time.monotonic())))
            if qemu.read_pid(files) is not None:
                log.warning("%s ignored the power button for %.0f s; killing QEMU", instance_id,
                            self.stop_timeout)
                qemu.kill(files)
        rec = replace(rec, state="stopped")
        store.write_vm(files.dir, rec)
        return self._instance(files, rec)

    def start(self, instance_id: str) -> Instance:
        """Boot a stopped VM from its own disk, on its old port when that is still free."""
        files, rec = self._record(instance_id)
        if qemu.read_pid(files) is not None:
            return self._instance(files, rec)
        for path in (Path(rec.backing), Path(rec.kernel), Path(rec.initrd), files.disk):
            if not path.is_file():
                raise HostError(f"cannot start {instance_id}: {path} is gone", "terminate it and launch again")
        rec = self._boot(files, rec, None)
        return self._instance(files, rec)

    def terminate(self, instance_id: str) -> None:
        """Kill the VM and remove its directory (disk included). Terminating a VM that is gone is a no-op."""
        path = self._vm_dir(instance_id)
        if not path.is_dir():
            return
        files = qemu.VmFiles(path)
        if files.meta.is_file():
            try:
                store.write_vm(path, replace(store.read_vm(path), state="terminated"))
            except Exception as exc:  # a damaged record must not stop the removal
                log.warning("terminating %s with damaged metadata: %s", instance_id, exc)
        self._destroy(files)

    def wait_booted(self, instance_id: str, timeout: float = 600.0, poll: float = 2.0) -> Instance:
        """Wait until the guest's sshd answers on the forwarded port. Fails at once, with the last console lines,
        if QEMU exits meanwhile (kernel panic, bad disk, guest powered off)."""
        files, rec = self._record(instance_id)
        deadline = time.monotonic() + timeout
        while True:
            if qemu.read_pid(files) is None:
                raise HostError(f"VM {instance_id} is not running (QEMU exited)",
                                "last console lines:\n" + qemu.serial_tail(files))
            if qemu.ssh_banner(rec.port):
                return self._instance(files, rec)
            if time.monotonic() > deadline:
                raise HostError(f"VM {instance_id}: no SSH on 127.0.0.1:{rec.port} after {timeout:.0f} s",
                                "last console lines:\n" + qemu.serial_tail(files))
            time.sleep(poll)

    # ---- images --------------------------------------------------------------------------------------------
    def create_image(self, instance_id: str, name: str, tags: Mapping[str, str],
                     progress: Progress | None = None) -> Image:
        """Snapshot a VM's disk into a standalone image. A running VM is stopped cleanly first and left stopped
        (local disks cannot be copied consistently while the guest writes)."""
        report = progress or self.progress
        files, rec = self._record(instance_id)
        if qemu.read_pid(files) is not None:
            report(f"stopping {instance_id} for a consistent disk", 0.0)
            self.stop(instance_id)
        source = ImageFiles(Path(rec.kernel).parent)
        return self.images.create(source, files.disk, name, tags, instance_id, report, self.compress_images)

    def describe_image(self, image: str) -> Image | None:
        """An image by id or name (ambiguous names are refused), or the base `debian-12` once built."""
        return self.images.find(image)

    def list_images(self, tags: Mapping[str, str] | None = None) -> list[Image]:
        """Images made by create_image that carry all of `tags` (the base image is a cache, not listed)."""
        return [img for img in self.images.all() if match_tags(img.tags, tags)]

    def delete_image(self, image_id: str) -> None:
        """Delete an image; refused while a VM's disk is an overlay on it."""
        image = self.images.require(image_id)
        users = [inst.id for inst in self.list_instances() if inst.image == image.id]
        self.images.delete(image.id, users)

    def share_image(self, image_id: str, accounts: tuple[str, ...], remove: bool = False) -> Image:
        """Record the accounts an image is shared with (local images are not really shared; the record lets the
        share workflow be tested offline)."""
        return self.images.share(image_id, accounts, remove)

    # ---- optional capabilities: ScopesStorage, BuildsBaseImage ------------------------------------------------
    def storage_scope(self, url: str) -> str | None:
        """Nothing is fixed at launch: a local VM syncs with the credentials its URL carries (an Azure SAS) or
        that its image holds, and a later `up --sync` may point it elsewhere."""
        return None

    def grant_storage(self, url: str) -> StorageGrant | None:
        return None

    def revoke_storage(self, grant: StorageGrant) -> None:
        """Nothing to revoke: `grant_storage` grants nothing."""

    def build_base_image(self, progress: Progress | None = None) -> Image:
        """The Debian base image, built once under this provider's root (debootstrap; needs root)."""
        return baseimage.ensure_base_image(progress, self.root)
