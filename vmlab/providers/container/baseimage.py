"""The base images containers start from, Debian 12 (the default) and Ubuntu 24.04: debootstrap trees (no
registry needed), kept as tar files in the cache and imported into vmlab's podman storage when missing there.

Layout (`cache_dir()/container/base/<id>-<tag>/`, id `debian-12` or `ubuntu-24.04`): `rootfs.tar` and
`image.json` (written last). The tag changes with the distribution, the package list and the configuration
below, so a new base is built beside an old one, like the local VM base (`vmlab/providers/local/baseimage.py`;
all are built through `vmlab/providers/debian.py`). The imported image is `localhost/vmlab-base/<id>:<tag>`,
labelled `vmlab:base` and `vmlab:base-version`, and runs systemd as PID 1 (`CMD /sbin/init`).

Example::

    base = BASES["ubuntu-24.04"]
    ref = ensure_base_image(Podman(), Path("/var/tmp/cache/container"), base, lambda msg, frac: print(msg))
    print(ref)      # localhost/vmlab-base/ubuntu-24.04:v1-0a1b2c3d
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from vmlab.errors import BadInput
from vmlab.fileio import write_atomic
from vmlab.providers import debian
from vmlab.providers.base import Progress
from vmlab.providers.container.engine import Podman
from vmlab.providers.debian import DEBIAN_12, Distribution
from vmlab.providers.ubuntu import UBUNTU_24_04

MIN_FREE_BYTES = 2 * 1024**3
#: what recipes need to run in a container: systemd as PID 1 (and D-Bus for systemctl), Python for the engine's
#: facts and the secret scan, TLS roots for apt/pip over https, sudo/procps for recipes that use them
PACKAGES = ("systemd-sysv", "dbus", "python3", "python3-venv", "ca-certificates", "curl", "sudo", "procps")
#: units with nothing to do in a container (no consoles, disks or clocks of its own), or that cost start time
MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
    "e2scrub_reap.service", "fstrim.timer", "getty@tty1.service", "console-getty.service",
    "systemd-networkd-wait-online.service", "systemd-timesyncd.service", "systemd-remount-fs.service",
)
#: bump when the configuration below changes
RECIPE_VERSION = "1"


@dataclass(frozen=True)
class ContainerBase:
    """A base image: `id` (what `--base` names), the distribution it is built from, and what is masked."""

    id: str
    dist: Distribution
    masked_units: tuple[str, ...] = MASKED_UNITS

    @property
    def repository(self) -> str:
        return f"localhost/vmlab-base/{self.id}"

    def version_tag(self, mirror_url: str | None = None) -> str:
        """A tag naming this build recipe; it changes whenever the packages or the configuration change."""
        text = "\n".join([RECIPE_VERSION, self.dist.suite, mirror_url or self.dist.mirror(), *PACKAGES,
                          *self.masked_units])
        return "v" + RECIPE_VERSION + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]

    def reference(self) -> str:
        return f"{self.repository}:{self.version_tag()}"

    def tar_dir(self, cache: Path) -> Path:
        """Where the current base's tar file lives (it may not be built yet)."""
        return cache / "base" / f"{self.id}-{self.version_tag()}"


DEFAULT = "debian-12"
#: Ubuntu's minbase also enables the motd news timer (it fetches news from Canonical's server)
BASES = {base.id: base for base in (ContainerBase(DEFAULT, DEBIAN_12),
                                    ContainerBase("ubuntu-24.04", UBUNTU_24_04, (*MASKED_UNITS, "motd-news.timer")))}


def base_for(base_id: str) -> ContainerBase:
    """The base named `base_id`; BadInput naming the bases there are otherwise."""
    found = BASES.get(base_id)
    if found is None:
        raise BadInput(f"{base_id!r} is no container base", f"use --base {' or '.join(BASES)} (or a vmlab image)")
    return found


def configure_rootfs(rootfs: Path, base: ContainerBase, mirror_url: str) -> None:
    """A debootstrapped tree made ready for containers: apt sources, trimmed units, no machine identity.
    /etc/hosts, /etc/hostname and /etc/resolv.conf are podman's at run time."""
    debian.mask(rootfs, base.masked_units)
    debian.write(rootfs / "etc/apt/sources.list", base.dist.apt_sources(mirror_url))
    debian.forget_identity(rootfs)


def build(work: Path, base: ContainerBase, cache: Path, progress: Progress) -> None:
    """debootstrap and configure a tree in `work`, then pack it into `work/rootfs.tar` (numeric owners)."""
    url = base.dist.mirror()
    rootfs = work / "rootfs"
    started = time.monotonic()
    debian.bootstrap(base.dist, rootfs, PACKAGES, base.dist.keyring(cache), progress)
    progress("configuring the root filesystem", 0.7)
    configure_rootfs(rootfs, base, url)
    progress("packing the root filesystem", 0.8)
    debian.run(["tar", "-C", str(rootfs), "--numeric-owner", "--xattrs", "-cf", str(work / "rootfs.tar"), "."],
               "tar")
    debian.remove_tree(rootfs)
    meta = {"id": base.id, "version": base.version_tag(url), "source": f"debootstrap {base.dist.suite} {url}",
            "build_seconds": round(time.monotonic() - started, 1)}
    write_atomic(work / debian.DONE, json.dumps(meta, indent=2) + "\n", 0o644)


def import_base(engine: Podman, base: ContainerBase, tar: Path) -> None:
    """`podman import` the tar as the base image (about 6 s), systemd as its command."""
    engine.text("import", "--change", 'CMD ["/sbin/init"]', "--change", f"LABEL vmlab:base={base.id}",
                "--change", f"LABEL vmlab:base-version={base.version_tag()}", "--message", f"vmlab base {base.id}",
                str(tar), base.reference(), what=f"importing the base image {base.id}")


def ensure_base_image(engine: Podman, cache: Path, base: ContainerBase, progress: Progress | None = None) -> str:
    """The base image's reference, imported into `engine` first (and built into `cache` before that) when
    needed; idempotent, concurrent builders wait for one build."""
    report: Progress = progress or (lambda _msg, _frac: None)
    if engine.call("image", "exists", base.reference()).returncode == 0:
        return base.reference()
    target = base.tar_dir(cache)
    if not (target / debian.DONE).is_file():
        debian.check_builder(base.dist, cache, ("debootstrap", "tar"), "apt-get install debootstrap tar",
                             f"the container base image {base.id}", MIN_FREE_BYTES)
        debian.build_once(target, lambda work: build(work, base, cache, report), report)
    report(f"importing the base image {base.id}", 0.9)
    import_base(engine, base, target / "rootfs.tar")
    report("base image ready", 1.0)
    return base.reference()
