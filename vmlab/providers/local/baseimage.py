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

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from vmlab.errors import BadInput, HostError
from vmlab.providers.base import Image, Progress
from vmlab.providers.cloudinit import HOSTKEY_DROPIN
from vmlab.providers.local import store

BASE_ID = "debian-12"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: the keys that sign Debian's Release files (package debian-archive-keyring); debootstrap checks against it
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
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


def mirror() -> str:
    """The Debian mirror: $VMLAB_DEBIAN_MIRROR or deb.debian.org."""
    return os.environ.get("VMLAB_DEBIAN_MIRROR", DEFAULT_MIRROR).rstrip("/")


def keyring() -> Path:
    """The keyring debootstrap verifies the mirror with: $VMLAB_DEBIAN_KEYRING (a mirror signed by another key)
    or Debian's archive keyring."""
    return Path(os.environ.get("VMLAB_DEBIAN_KEYRING") or DEFAULT_KEYRING)


def debootstrap_argv(rootfs: Path, mirror_url: str, keyring_file: Path) -> list[str]:
    """debootstrap over plain http is safe only with the signatures checked: `--force-check-gpg` makes a
    missing or unusable keyring an error instead of a warning."""
    return ["debootstrap", "--variant=minbase", f"--keyring={keyring_file}", "--force-check-gpg",
            f"--include={','.join(PACKAGES)}", SUITE, str(rootfs), mirror_url]


def version_tag(mirror_url: str | None = None) -> str:
    """A tag naming this build recipe; it changes whenever the packages or the configuration change."""
    text = "\n".join([RECIPE_VERSION, SUITE, mirror_url or mirror(), DISK_SIZE, *PACKAGES, *MASKED_UNITS,
                      CLOUD_CFG, NETWORK_UNIT, HOSTKEY_DROPIN])
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
    missing = [tool for tool in ("debootstrap", "qemu-img", "qemu-system-x86_64", "genisoimage", "mke2fs")
               if shutil.which(tool) is None]
    if missing:
        raise BadInput(f"missing tools: {', '.join(missing)}",
                       "apt-get install qemu-system-x86 qemu-utils debootstrap genisoimage e2fsprogs")
    if os.geteuid() != 0:
        raise BadInput("building the local base image needs root (debootstrap)", "run as root")
    if not keyring().is_file():
        raise BadInput(f"no Debian archive keyring at {keyring()}: debootstrap could not check what it downloads",
                       "apt-get install debian-archive-keyring (or set VMLAB_DEBIAN_KEYRING to the keyring "
                       "that signs your mirror)")
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < MIN_FREE_BYTES:
        raise BadInput(f"only {free / 1024**3:.1f} GB free under {root}; the base image build needs 3 GB",
                       "free some space or set VMLAB_CACHE_DIR to a larger disk")


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise HostError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc.stdout


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _mask(rootfs: Path, unit: str) -> None:
    # what `systemctl mask` does, without needing systemd in a chroot
    link = rootfs / "etc/systemd/system" / unit
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to("/dev/null")


def configure_rootfs(rootfs: Path, mirror_url: str) -> None:
    """Turn a debootstrapped tree into a cloud image: cloud-init NoCloud, networkd DHCP, trimmed boot, no host
    keys or machine-id (generated at first boot), apt sources for updates and security fixes."""
    _write(rootfs / "etc/cloud/cloud.cfg.d/90-vmlab.cfg", CLOUD_CFG)
    _write(rootfs / "etc/systemd/network/10-eth0.network", NETWORK_UNIT)
    wants = rootfs / "etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
    wants.parent.mkdir(parents=True, exist_ok=True)
    if not wants.is_symlink():
        wants.symlink_to("/lib/systemd/system/systemd-networkd.service")
    _write(rootfs / "etc/systemd/system/ssh.service.d/10-vmlab-hostkeys.conf", HOSTKEY_DROPIN)
    for unit in MASKED_UNITS:
        _mask(rootfs, unit)
    for name in ("etc/systemd/system/timers.target.wants", "etc/systemd/system/getty.target.wants"):
        for link in (rootfs / name).glob("*"):
            if link.name in MASKED_UNITS:
                link.unlink()
    resolv = rootfs / "etc/resolv.conf"
    if resolv.is_symlink():
        resolv.unlink()
    _write(resolv, RESOLV_CONF)
    _write(rootfs / "etc/fstab", FSTAB)
    _write(rootfs / "etc/default/locale", "LANG=C.UTF-8\n")
    _write(rootfs / "etc/hostname", "localhost\n")
    _write(rootfs / "etc/hosts", "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
    sources = f"deb {mirror_url} {SUITE} main\ndeb {mirror_url} {SUITE}-updates main\n"
    if mirror_url == DEFAULT_MIRROR:
        sources += "deb http://deb.debian.org/debian-security bookworm-security main\n"
    _write(rootfs / "etc/apt/sources.list", sources)
    # identity must be per VM: sshd host keys come from cloud-init, machine-id from systemd at first boot
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    _write(rootfs / "etc/machine-id", "", 0o444)
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    shutil.rmtree(rootfs / "debootstrap", ignore_errors=True)


def _kernel_files(rootfs: Path) -> tuple[Path, Path]:
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise HostError("debootstrap installed no kernel", "check the mirror has linux-image-amd64")
    kernel = kernels[-1]
    initrd = rootfs / "boot" / kernel.name.replace("vmlinuz-", "initrd.img-")
    if not initrd.is_file():
        raise HostError(f"no initrd beside {kernel.name}", "initramfs-tools did not run in the chroot")
    return kernel, initrd


def _unmount_under(path: Path) -> None:
    """Unmount anything debootstrap left mounted (proc, sys) under `path`, deepest first, so removing the
    tree can never reach into a live /proc or /sys."""
    prefix = str(path.resolve()) + "/"
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    for mnt in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)


def remove_tree(path: Path) -> None:
    """Remove a build directory safely (after unmounting whatever is mounted inside it)."""
    if path.exists():
        _unmount_under(path)
        shutil.rmtree(path, ignore_errors=True)


def build(work: Path, progress: Progress) -> Image:
    """Build the base image inside `work` (an empty directory). Returns its Image record."""
    url = mirror()
    rootfs = work / "rootfs"
    started = time.monotonic()
    progress(f"debootstrap {SUITE} from {url} (about 2 minutes)", 0.0)
    _run(debootstrap_argv(rootfs, url, keyring()), "debootstrap")
    _unmount_under(rootfs)
    progress("configuring the root filesystem", 0.6)
    configure_rootfs(rootfs, url)
    kernel, initrd = _kernel_files(rootfs)
    shutil.copy2(kernel, work / "vmlinuz")
    shutil.copy2(initrd, work / "initrd.img")
    shutil.copy2(rootfs / "etc/ssl/certs/ca-certificates.crt", work / "guest-ca-bundle.pem")
    progress("making the ext4 disk", 0.7)
    raw = work / "disk.raw"
    _run(["truncate", "-s", DISK_SIZE, str(raw)], "truncate")
    _run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "vmlab-root", "-d", str(rootfs), str(raw)], "mke2fs")
    shutil.rmtree(rootfs)
    progress("converting to qcow2", 0.85)
    # zstd: ~3x smaller than plain qcow2 for ~3 s more; zlib (-c alone) is 5x slower for the same size
    _run(["qemu-img", "convert", "-c", "-o", "compression_type=zstd", "-O", "qcow2", str(raw),
          str(work / store.DISK)], "qemu-img convert")
    raw.unlink()
    image = Image(id=BASE_ID, name=f"{BASE_ID}-{version_tag(url)}", state="available", provider="local",
                  created=store.now(), tags={"vmlab:base": BASE_ID, "vmlab:base-version": version_tag(url)},
                  size_bytes=(work / store.DISK).stat().st_size, source=f"debootstrap {SUITE} {url}")
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
    (root / "base").mkdir(parents=True, exist_ok=True)
    with open(root / "base" / ".build.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report("waiting for another process building the base image", None)
            fcntl.flock(lock, fcntl.LOCK_EX)
        ready = find_base(root)
        if ready is not None:
            return store.read_image(ready)
        for stale in (root / "base").glob(".tmp-*"):
            remove_tree(stale)  # left by a build that was killed; we hold the lock, so nobody uses it
        work = root / "base" / f".tmp-{BASE_ID}-{os.getpid()}"
        remove_tree(work)
        work.mkdir(mode=0o755)
        try:
            build(work, report)
            target = base_dir(root)
            remove_tree(target)  # a directory without image.json is a failed earlier build
            os.rename(work, target)
        except BaseException:
            remove_tree(work)
            raise
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
