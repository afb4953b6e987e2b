"""Debian root trees made with debootstrap: what the local VM base and the container base share.

Each base builds its tree in a temporary folder beside its final place, renames it into place when done and
removes it on any failure or Ctrl-C (`build_once`); concurrent callers wait for one build. debootstrap checks
what it downloads against Debian's archive keyring (`--force-check-gpg`), so plain http from the mirror is safe.

Example::

    argv = debootstrap_argv(work / "rootfs", mirror(), keyring(), ("systemd-sysv", "python3"))
    run(argv, "debootstrap")
    write(work / "rootfs/etc/apt/sources.list", apt_sources(mirror()))
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

from vmlab.errors import BadInput, HostError
from vmlab.providers.base import Progress

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: the keys that sign Debian's Release files (package debian-archive-keyring); debootstrap checks against it
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
#: the mark of a finished build inside its folder: a folder without it is never used
DONE = "image.json"


def mirror() -> str:
    """The Debian mirror: $VMLAB_DEBIAN_MIRROR or deb.debian.org."""
    return os.environ.get("VMLAB_DEBIAN_MIRROR", DEFAULT_MIRROR).rstrip("/")


def keyring() -> Path:
    """The keyring debootstrap verifies the mirror with: $VMLAB_DEBIAN_KEYRING (a mirror signed by another key)
    or Debian's archive keyring."""
    return Path(os.environ.get("VMLAB_DEBIAN_KEYRING") or DEFAULT_KEYRING)


def debootstrap_argv(rootfs: Path, mirror_url: str, keyring_file: Path, packages: Iterable[str]) -> list[str]:
    """debootstrap over plain http is safe only with the signatures checked: `--force-check-gpg` makes a
    missing or unusable keyring an error instead of a warning."""
    return ["debootstrap", "--variant=minbase", f"--keyring={keyring_file}", "--force-check-gpg",
            f"--include={','.join(packages)}", SUITE, str(rootfs), mirror_url]


def check_builder(root: Path, tools: Iterable[str], install: str, what: str, min_free: int) -> None:
    """Refuse early, with the fix, when this host cannot build a base under `root`: missing `tools` (installed
    by `install`), not root, no archive keyring, less than `min_free` bytes free."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise BadInput(f"missing tools: {', '.join(missing)}", install)
    if os.geteuid() != 0:
        raise BadInput(f"building {what} needs root (debootstrap)", "run as root")
    if not keyring().is_file():
        raise BadInput(f"no Debian archive keyring at {keyring()}: debootstrap could not check what it downloads",
                       "apt-get install debian-archive-keyring (or set VMLAB_DEBIAN_KEYRING to the keyring "
                       "that signs your mirror)")
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < min_free:
        raise BadInput(f"only {free / 1024**3:.1f} GB free under {root}; building {what} needs "
                       f"{min_free / 1024**3:.0f} GB", "free some space or set VMLAB_CACHE_DIR to a larger disk")


def run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    """Run a build tool; HostError with the last lines of its output when it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise HostError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc.stdout


def bootstrap(rootfs: Path, packages: Iterable[str], progress: Progress) -> None:
    """debootstrap `packages` (minbase) into `rootfs`, then unmount what it left mounted there."""
    url = mirror()
    progress(f"debootstrap {SUITE} from {url} (about 2 minutes)", 0.0)
    run(debootstrap_argv(rootfs, url, keyring(), packages), "debootstrap")
    unmount_under(rootfs)


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def mask(rootfs: Path, units: Iterable[str]) -> None:
    """What `systemctl mask` does (without systemd in a chroot), and the units' timer/getty wants removed."""
    units = tuple(units)
    for unit in units:
        link = rootfs / "etc/systemd/system" / unit
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("/dev/null")
    for name in ("etc/systemd/system/timers.target.wants", "etc/systemd/system/getty.target.wants"):
        for link in (rootfs / name).glob("*"):
            if link.name in units:
                link.unlink()


def apt_sources(mirror_url: str) -> str:
    """sources.list for the suite, its updates and (from Debian's own mirror) its security fixes."""
    sources = f"deb {mirror_url} {SUITE} main\ndeb {mirror_url} {SUITE}-updates main\n"
    if mirror_url == DEFAULT_MIRROR:
        sources += f"deb http://deb.debian.org/debian-security {SUITE}-security main\n"
    return sources


def forget_identity(rootfs: Path) -> None:
    """What must be made anew on each machine or never shipped: SSH host keys, the machine id (systemd writes
    one at first boot into the empty file), downloaded .debs, debootstrap's own folder; locale C.UTF-8."""
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    write(rootfs / "etc/machine-id", "", 0o444)
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    shutil.rmtree(rootfs / "debootstrap", ignore_errors=True)
    write(rootfs / "etc/default/locale", "LANG=C.UTF-8\n")


def unmount_under(path: Path) -> None:
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
        unmount_under(path)
        shutil.rmtree(path, ignore_errors=True)


def build_once(target: Path, build: Callable[[Path], object], report: Progress) -> Path:
    """`target` (a folder holding DONE), built first by `build(work)` in an empty temporary folder beside it
    when missing. Concurrent callers wait for one build; a failed or interrupted build leaves nothing."""
    if (target / DONE).is_file():
        return target
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    with open(parent / ".build.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report("waiting for another process building the base image", None)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / DONE).is_file():
            return target
        for stale in parent.glob(".tmp-*"):
            remove_tree(stale)  # left by a build that was killed; we hold the lock, so nobody uses it
        work = parent / f".tmp-{target.name}-{os.getpid()}"
        remove_tree(work)
        work.mkdir(mode=0o755)
        try:
            build(work)
            remove_tree(target)  # a directory without DONE is a failed earlier build
            os.rename(work, target)
        except BaseException:
            remove_tree(work)
            raise
    return target
