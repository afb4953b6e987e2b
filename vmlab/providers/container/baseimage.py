"""The Debian 12 base image containers start from: a debootstrap tree (no registry needed), kept as a tar file in
the cache and imported into vmlab's podman storage when missing there.

Layout (`cache_dir()/container/base/debian-12-<tag>/`): `rootfs.tar` and `image.json` (written last). The tag
changes with the package list and the configuration below, so a new base is built beside an old one, like the
local VM base (`vmlab/providers/local/baseimage.py`; both build through `vmlab/providers/debian.py`). The
imported image is `localhost/vmlab-base/debian-12:<tag>`, labelled `vmlab:base` and `vmlab:base-version`, and
runs systemd as PID 1 (`CMD /sbin/init`).

Example::

    image = ensure_base_image(Podman(), Path("/var/tmp/cache/container"), lambda msg, frac: print(msg))
    print(image.name)      # localhost/vmlab-base/debian-12:v1-0a1b2c3d
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from vmlab.fileio import write_atomic
from vmlab.providers import debian
from vmlab.providers.base import Progress
from vmlab.providers.container.engine import Podman

BASE_ID = "debian-12"
REPOSITORY = "localhost/vmlab-base/debian-12"
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


def version_tag(mirror_url: str | None = None) -> str:
    """A tag naming this build recipe; it changes whenever the packages or the configuration change."""
    text = "\n".join([RECIPE_VERSION, debian.SUITE, mirror_url or debian.mirror(), *PACKAGES, *MASKED_UNITS])
    return "v" + RECIPE_VERSION + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def reference() -> str:
    return f"{REPOSITORY}:{version_tag()}"


def tar_dir(cache: Path) -> Path:
    """Where the current base's tar file lives (it may not be built yet)."""
    return cache / "base" / f"{BASE_ID}-{version_tag()}"


def configure_rootfs(rootfs: Path, mirror_url: str) -> None:
    """A debootstrapped tree made ready for containers: apt sources, trimmed units, no machine identity.
    /etc/hosts, /etc/hostname and /etc/resolv.conf are podman's at run time."""
    debian.mask(rootfs, MASKED_UNITS)
    debian.write(rootfs / "etc/apt/sources.list", debian.apt_sources(mirror_url))
    debian.forget_identity(rootfs)


def build(work: Path, progress: Progress) -> None:
    """debootstrap and configure a tree in `work`, then pack it into `work/rootfs.tar` (numeric owners)."""
    url = debian.mirror()
    rootfs = work / "rootfs"
    started = time.monotonic()
    debian.bootstrap(rootfs, PACKAGES, progress)
    progress("configuring the root filesystem", 0.7)
    configure_rootfs(rootfs, url)
    progress("packing the root filesystem", 0.8)
    debian.run(["tar", "-C", str(rootfs), "--numeric-owner", "--xattrs", "-cf", str(work / "rootfs.tar"), "."],
               "tar")
    debian.remove_tree(rootfs)
    meta = {"id": BASE_ID, "version": version_tag(url), "source": f"debootstrap {debian.SUITE} {url}",
            "build_seconds": round(time.monotonic() - started, 1)}
    write_atomic(work / debian.DONE, json.dumps(meta, indent=2) + "\n", 0o644)


def import_base(engine: Podman, tar: Path) -> None:
    """`podman import` the tar as the base image (about 6 s), systemd as its command."""
    engine.text("import", "--change", 'CMD ["/sbin/init"]', "--change", f"LABEL vmlab:base={BASE_ID}",
                "--change", f"LABEL vmlab:base-version={version_tag()}", "--message", f"vmlab base {BASE_ID}",
                str(tar), reference(), what="importing the base image")


def ensure_base_image(engine: Podman, cache: Path, progress: Progress | None = None) -> str:
    """The base image's reference, imported into `engine` first (and built into `cache` before that) when
    needed; idempotent, concurrent builders wait for one build."""
    report: Progress = progress or (lambda _msg, _frac: None)
    if engine.call("image", "exists", reference()).returncode == 0:
        return reference()
    target = tar_dir(cache)
    if not (target / debian.DONE).is_file():
        debian.check_builder(cache, ("debootstrap", "tar"), "apt-get install debootstrap tar",
                             "the container base image", MIN_FREE_BYTES)
        debian.build_once(target, lambda work: build(work, report), report)
    report("importing the base image", 0.9)
    import_base(engine, target / "rootfs.tar")
    report("base image ready", 1.0)
    return reference()
