"""The Debian 12 base image local VMs boot from, built once with debootstrap and cached.

Layout of a built base (`cache_dir()/local/base/debian-12-<tag>/`): `disk.qcow2`, `vmlinuz`, `initrd.img`,
`guest-ca-bundle.pem` (the guest's own CA bundle, so launch sends only the host's extra certificates) and
`image.json`, written last: a directory without it is never used. Building happens in a temporary directory that
is renamed into place at the end and removed on failure or Ctrl-C.

Example::

    image = ensure_base_image(lambda msg, frac: print(msg))
    print(image.id, image.size_bytes)   # debian-12 ...
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from vmlab.errors import BadInput, HostError
from vmlab.providers import debian
from vmlab.providers.base import Image, Progress
from vmlab.providers.cloudinit import HOSTKEY_DROPIN
from vmlab.providers.debian import DEBIAN_12
from vmlab.providers.local import store

BASE_ID = "debian-12"
DISK_SIZE = "8G"
MIN_FREE_BYTES = 3 * 1024**3
PACKAGES = (
    "linux-image-amd64", "systemd-sysv", "udev", "kmod", "dbus", "openssh-server", "cloud-init",
    # debootstrap does not resolve virtual packages: python3-cryptography needs cffi's backend named explicitly
    "python3-cffi-backend",
    "python3", "python3-venv", "sudo", "iproute2", "isc-dhcp-client", "ca-certificates", "curl",
)
#: units that only cost boot time in a throwaway emulated VM
MASKED_UNITS = (
    "systemd-networkd-wait-online.service", "apt-daily.timer", "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer", "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer",
    "getty@tty1.service", "systemd-pstore.service",
)
#: bump when the rootfs configuration below changes, so a new base is built beside the old one
RECIPE_VERSION = "3"

CLOUD_CFG = """\
# vmlab: only the NoCloud seed (or nothing); probing EC2/GCE metadata costs minutes
datasource_list: [NoCloud, None]
# networking is systemd-networkd with DHCP on eth0, set up in the image
network: {config: disabled}
# the image's locale is C.UTF-8 (no locales to generate); cloud-init's locale module would fail on en_US
locale: false
"""
NETWORK_UNIT = "[Match]\nName=eth0 en*\n\n[Network]\nDHCP=ipv4\n"
# slirp's DNS; there is no resolved in minbase and networkd does not write resolv.conf itself
RESOLV_CONF = "nameserver 10.0.2.3\n"
FSTAB = "/dev/vda / ext4 rw,errors=remount-ro 0 0\n"


def version_tag(mirror_url: str | None = None) -> str:
    """A tag naming this build recipe; it changes whenever the packages or the configuration change."""
    text = "\n".join([RECIPE_VERSION, DEBIAN_12.suite, mirror_url or DEBIAN_12.mirror(), DISK_SIZE, *PACKAGES,
                      *MASKED_UNITS, CLOUD_CFG, NETWORK_UNIT, HOSTKEY_DROPIN])
    return "v" + RECIPE_VERSION + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def base_dir(root: Path) -> Path:
    """Where the current base image lives (it may not be built yet)."""
    return root / "base" / f"{BASE_ID}-{version_tag()}"


def find_base(root: Path) -> Path | None:
    """The built base directory, or None when it still has to be built."""
    path = base_dir(root)
    return path if (path / store.IMAGE_META).is_file() else None


def check_host(root: Path) -> None:
    """Refuse early, with the fix, when the host cannot build the base image."""
    debian.check_builder(DEBIAN_12, root,
                         ("debootstrap", "qemu-img", "qemu-system-x86_64", "genisoimage", "mke2fs"),
                         "apt-get install qemu-system-x86 qemu-utils debootstrap genisoimage e2fsprogs",
                         "the local base image", MIN_FREE_BYTES)


def configure_rootfs(rootfs: Path, mirror_url: str) -> None:
    """Turn a debootstrapped tree into a cloud image: cloud-init NoCloud, networkd DHCP, trimmed boot, no host
    keys or machine-id (generated at first boot), apt sources for updates and security fixes."""
    write = debian.write
    write(rootfs / "etc/cloud/cloud.cfg.d/90-vmlab.cfg", CLOUD_CFG)
    write(rootfs / "etc/systemd/network/10-eth0.network", NETWORK_UNIT)
    wants = rootfs / "etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
    wants.parent.mkdir(parents=True, exist_ok=True)
    if not wants.is_symlink():
        wants.symlink_to("/lib/systemd/system/systemd-networkd.service")
    write(rootfs / "etc/systemd/system/ssh.service.d/10-vmlab-hostkeys.conf", HOSTKEY_DROPIN)
    debian.mask(rootfs, MASKED_UNITS)
    resolv = rootfs / "etc/resolv.conf"
    if resolv.is_symlink():
        resolv.unlink()
    write(resolv, RESOLV_CONF)
    write(rootfs / "etc/fstab", FSTAB)
    write(rootfs / "etc/hostname", "localhost\n")
    write(rootfs / "etc/hosts", "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
    write(rootfs / "etc/apt/sources.list", DEBIAN_12.apt_sources(mirror_url))
    # identity must be per VM: sshd host keys come from cloud-init, machine-id from systemd at first boot
    debian.forget_identity(rootfs)


def _kernel_files(rootfs: Path) -> tuple[Path, Path]:
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise HostError("debootstrap installed no kernel", "check the mirror has linux-image-amd64")
    kernel = kernels[-1]
    initrd = rootfs / "boot" / kernel.name.replace("vmlinuz-", "initrd.img-")
    if not initrd.is_file():
        raise HostError(f"no initrd beside {kernel.name}", "initramfs-tools did not run in the chroot")
    return kernel, initrd


def build(work: Path, progress: Progress) -> Image:
    """Build the base image inside `work` (an empty directory). Returns its Image record."""
    url = DEBIAN_12.mirror()
    rootfs = work / "rootfs"
    started = time.monotonic()
    debian.bootstrap(DEBIAN_12, rootfs, PACKAGES, DEBIAN_12.keyring(work), progress)
    progress("configuring the root filesystem", 0.6)
    configure_rootfs(rootfs, url)
    kernel, initrd = _kernel_files(rootfs)
    shutil.copy2(kernel, work / "vmlinuz")
    shutil.copy2(initrd, work / "initrd.img")
    shutil.copy2(rootfs / "etc/ssl/certs/ca-certificates.crt", work / "guest-ca-bundle.pem")
    progress("making the ext4 disk", 0.7)
    raw = work / "disk.raw"
    debian.run(["truncate", "-s", DISK_SIZE, str(raw)], "truncate")
    debian.run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "vmlab-root", "-d", str(rootfs), str(raw)], "mke2fs")
    shutil.rmtree(rootfs)
    progress("converting to qcow2", 0.85)
    # zstd: ~3x smaller than plain qcow2 for ~3 s more; zlib (-c alone) is 5x slower for the same size
    debian.run(["qemu-img", "convert", "-c", "-o", "compression_type=zstd", "-O", "qcow2", str(raw),
                str(work / store.DISK)], "qemu-img convert")
    raw.unlink()
    image = Image(id=BASE_ID, name=f"{BASE_ID}-{version_tag(url)}", state="available", provider="local",
                  created=store.now(), tags={"vmlab:base": BASE_ID, "vmlab:base-version": version_tag(url)},
                  size_bytes=(work / store.DISK).stat().st_size, source=f"debootstrap {DEBIAN_12.suite} {url}")
    store.write_image(work, image, build_seconds=round(time.monotonic() - started, 1))
    return image


def ensure_base_image(progress: Progress | None = None, root: Path | None = None) -> Image:
    """Return the base image, building it first if needed (idempotent; concurrent callers wait for one build).

    `root` is the local provider's cache root (default `cache_dir()/local`).
    """
    root = root or store.default_root()
    report: Progress = progress or (lambda _msg, _frac: None)
    ready = find_base(root)
    if ready is not None:
        return store.read_image(ready)
    check_host(root)
    target = debian.build_once(base_dir(root), lambda work: build(work, report), report)
    report("base image ready", 1.0)
    return store.read_image(target)


def base_files(root: Path) -> dict[str, Path]:
    """Paths of the built base's disk, kernel, initrd and guest CA bundle (BadInput if not built)."""
    path = find_base(root)
    if path is None:
        raise BadInput("the local base image is not built", "run `vmlab local init`")
    return {"disk": path / store.DISK, "kernel": path / "vmlinuz", "initrd": path / "initrd.img",
            "ca_bundle": path / "guest-ca-bundle.pem", "dir": path}


def read_meta(path: Path) -> dict[str, object]:
    """The raw metadata of a built base (for debugging output)."""
    return dict(json.loads((path / store.IMAGE_META).read_text()))
