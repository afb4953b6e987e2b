"""Debian-family root trees made with debootstrap: what the local VM base and the container bases share.

A `Distribution` describes a release (suite, mirror, components, the keyring that signs it, the debootstrap
script when debootstrap has none by the suite's name); `DEBIAN_12` is here, `vmlab.providers.ubuntu` has Ubuntu
24.04. Each base builds its tree in a temporary folder beside its final place, renames it into place when done
and removes it on any failure or Ctrl-C (`build_once`); concurrent callers wait for one build. debootstrap
checks what it downloads against the distribution's archive keyring (`--force-check-gpg`), so plain http from
the mirror is safe.

Example::

    url, keys = DEBIAN_12.mirror(), DEBIAN_12.keyring(cache)
    bootstrap(DEBIAN_12, work / "rootfs", ("systemd-sysv", "python3"), keys, progress)
    write(work / "rootfs/etc/apt/sources.list", DEBIAN_12.apt_sources(url))
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from vmlab.errors import BadInput, HostError
from vmlab.providers.base import Progress
from vmlab.providers.keyrings import PinnedKeyring

#: the mark of a finished build inside its folder: a folder without it is never used
DONE = "image.json"


@dataclass(frozen=True)
class Distribution:
    """A Debian-family release as debootstrap and apt see it.

    `env` names the overrides: `$ENV_MIRROR` (another mirror) and `$ENV_KEYRING` (the keyring that signs it).
    The keyring is otherwise `keyring_file` on this machine, or `keyring_package` fetched from the mirror and
    used only when it matches the sha256 pinned in vmlab (a distribution this machine has no keyring package
    for). `security_mirror`: where the security fixes come from, added with the default mirror only (Debian's
    own host; a local mirror rarely carries them); None: the mirror's own `SUITE-security` (Ubuntu's layout).
    `script`: the debootstrap script to use when debootstrap has none named after the suite.
    """

    name: str
    suite: str
    default_mirror: str
    env: str
    components: tuple[str, ...] = ("main",)
    keyring_file: str = ""
    keyring_package: PinnedKeyring | None = None
    security_mirror: str | None = None
    script: str | None = None

    def mirror(self) -> str:
        """The mirror: $ENV_MIRROR or the default one."""
        return os.environ.get(f"{self.env}_MIRROR", self.default_mirror).rstrip("/")

    def keyring_override(self) -> Path | None:
        value = os.environ.get(f"{self.env}_KEYRING")
        return Path(value) if value else None

    def keyring(self, cache: Path) -> Path:
        """The keyring debootstrap verifies the mirror with: $ENV_KEYRING, the keyring file on this machine, or
        the pinned keyring package's, fetched into `cache` (checked against its pin) when needed."""
        override = self.keyring_override()
        if override is not None:
            return override
        if self.keyring_package is not None:
            return self.keyring_package.fetch(self.mirror(), cache / "keyrings")
        return Path(self.keyring_file)

    def debootstrap_argv(self, rootfs: Path, mirror_url: str, keyring_file: Path,
                         packages: Iterable[str]) -> list[str]:
        """debootstrap over plain http is safe only with the signatures checked: `--force-check-gpg` makes a
        missing or unusable keyring an error instead of a warning."""
        components = [f"--components={','.join(self.components)}"] if self.components != ("main",) else []
        return ["debootstrap", "--variant=minbase", f"--keyring={keyring_file}", "--force-check-gpg",
                *components, f"--include={','.join(packages)}", self.suite, str(rootfs), mirror_url,
                *([self.script] if self.script else [])]

    def apt_sources(self, mirror_url: str) -> str:
        """sources.list for the suite, its updates and its security fixes."""
        security = self.security_mirror if mirror_url == self.default_mirror else None
        entries = [(mirror_url, self.suite), (mirror_url, f"{self.suite}-updates")]
        if self.security_mirror is None or security:
            entries.append((security or mirror_url, f"{self.suite}-security"))
        return "".join(f"deb {url} {suite} {' '.join(self.components)}\n" for url, suite in entries)


DEBIAN_12 = Distribution(
    name="Debian", suite="bookworm", default_mirror="http://deb.debian.org/debian", env="VMLAB_DEBIAN",
    # the keys that sign Debian's Release files (package debian-archive-keyring)
    keyring_file="/usr/share/keyrings/debian-archive-keyring.gpg",
    security_mirror="http://deb.debian.org/debian-security")


def check_builder(dist: Distribution, root: Path, tools: Iterable[str], install: str, what: str,
                  min_free: int) -> None:
    """Refuse early, with the fix, when this host cannot build a base of `dist` under `root`: missing `tools`
    (installed by `install`), not root, no archive keyring or debootstrap script, less than `min_free` bytes
    free."""
    fetches = dist.keyring_package is not None and dist.keyring_override() is None
    missing = [tool for tool in (*tools, *(("dpkg-deb",) if fetches else ())) if shutil.which(tool) is None]
    if missing:
        raise BadInput(f"missing tools: {', '.join(missing)}", install)
    if os.geteuid() != 0:
        raise BadInput(f"building {what} needs root (debootstrap)", "run as root")
    if not fetches and not dist.keyring(root).is_file():
        raise BadInput(f"no {dist.name} archive keyring at {dist.keyring(root)}: debootstrap could not check what "
                       "it downloads", keyring_fix(dist))
    if dist.script and not Path(dist.script).is_file():
        raise BadInput(f"debootstrap has no {dist.script} to build {dist.name} {dist.suite} with",
                       "apt-get install debootstrap (Debian 12's has it)")
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < min_free:
        raise BadInput(f"only {free / 1024**3:.1f} GB free under {root}; building {what} needs "
                       f"{min_free / 1024**3:.0f} GB", "free some space or set VMLAB_CACHE_DIR to a larger disk")


def keyring_fix(dist: Distribution) -> str:
    """How to get a keyring for `dist` onto this machine."""
    own = f"set {dist.env}_KEYRING to the keyring that signs your mirror"
    if dist.keyring_file:
        return f"apt-get install {Path(dist.keyring_file).stem} (or {own})"
    return f"{own}, or unset it to use vmlab's pinned keyring"


def run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    """Run a build tool; HostError with the last lines of its output when it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise HostError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc.stdout


def bootstrap(dist: Distribution, rootfs: Path, packages: Iterable[str], keyring_file: Path,
              progress: Progress) -> None:
    """debootstrap `packages` of `dist` (minbase) into `rootfs`, checked against `keyring_file`, then unmount
    what it left mounted there."""
    url = dist.mirror()
    progress(f"debootstrap {dist.suite} from {url} (about 2 minutes)", 0.0)
    run(dist.debootstrap_argv(rootfs, url, keyring_file, packages), "debootstrap")
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
