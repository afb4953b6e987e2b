"""A clean Debian root tree (debootstrap minbase), built once and kept in the user's cache dir.

The secret scan must find nothing in a stock system: this tree is what it is tried on. Building takes ~80 s
(Debian's mirror, over apt's usual client, signatures checked); later runs reuse it. `VMLAB_TEST_CACHE`
moves the cache.

Example::

    root = clean_root("bookworm")      # Path to the tree, built on first use
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import platformdirs

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
MIRROR = os.environ.get("VMLAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
#: what a builder starts from, roughly: the local base image's packages without the kernel
PACKAGES = ("systemd-sysv", "openssh-server", "python3", "python3-venv", "ca-certificates", "curl", "sudo",
            "iproute2", "cloud-init",
            "python3-cffi-backend")  # debootstrap does not resolve the virtual package cryptography needs


def cache_root() -> Path:
    override = os.environ.get("VMLAB_TEST_CACHE")
    return Path(override) if override else Path(platformdirs.user_cache_dir("vmlab-tests"))


def why_not() -> str | None:
    """Why a root cannot be built here (None when it can)."""
    if os.geteuid() != 0:
        return "debootstrap needs root"
    if shutil.which("debootstrap") is None:
        return "no debootstrap (apt-get install debootstrap)"
    if not KEYRING.is_file():
        return f"no {KEYRING} (apt-get install debian-archive-keyring)"
    return None


def clean_root(suite: str = "bookworm") -> Path:
    """The tree for `suite`, built on first use (concurrent callers wait for one build)."""
    top = cache_root() / "rootfs"
    target = top / f"debian-{suite}-minbase"
    done_mark = top / f"debian-{suite}-minbase.complete"  # outside the tree: the tree stays stock
    if done_mark.is_file():
        return target
    top.mkdir(parents=True, exist_ok=True)
    with open(top / f".{suite}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done_mark.is_file():
            return target
        work = top / f".tmp-{suite}-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        try:
            done = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--keyring={KEYRING}", "--force-check-gpg",
                 f"--include={','.join(PACKAGES)}", suite, str(work), MIRROR],
                capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1800, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"debootstrap {suite} failed: {(done.stderr or done.stdout).strip()[-500:]}")
            _unmount_under(work)
            shutil.rmtree(target, ignore_errors=True)
            os.rename(work, target)
            done_mark.write_text("")
        finally:
            _unmount_under(work)
            shutil.rmtree(work, ignore_errors=True)
    return target


def _unmount_under(path: Path) -> None:
    prefix = str(path.resolve()) + "/"
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    for mnt in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)
