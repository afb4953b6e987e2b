"""A clean Debian root tree (debootstrap minbase with the local base image's packages, kernel and initrd
included), built once and kept in the user's cache dir (`VMLAB_TEST_CACHE` moves it).

The secret scan must find nothing in a stock system: this tree is what it is tried on. Building takes 1.5-4
minutes (Debian's mirror over apt's usual client, signatures checked); later runs reuse it. Ubuntu 24.04 is not
built: its archive is not Debian's mirror, and Debian 12's debootstrap has no script for noble.

Example::

    root = clean_root("bookworm")      # Path to the tree, built on first use
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import platformdirs

from vmlab.providers.debian import unmount_under
from vmlab.providers.local import baseimage

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
MIRROR = os.environ.get("VMLAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
#: what a builder starts from: the local base image's packages (kernel and initrd included)
PACKAGES = baseimage.PACKAGES


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
    tag = hashlib.sha256(" ".join(PACKAGES).encode()).hexdigest()[:8]
    target = top / f"debian-{suite}-minbase-{tag}"
    done_mark = top / f"{target.name}.complete"  # outside the tree: the tree stays stock
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
            unmount_under(work)
            shutil.rmtree(target, ignore_errors=True)
            os.rename(work, target)
            done_mark.write_text("")
        finally:
            unmount_under(work)
            shutil.rmtree(work, ignore_errors=True)
    return target
