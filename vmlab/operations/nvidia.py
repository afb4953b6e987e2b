"""NVIDIA's CUDA apt repository and the hardware facts GPU recipes decide on.

Example::

    recipe.step("CUDA repository", nvidia.CudaRepository())
    recipe.step("driver and toolkit", apt.Packages(("cuda-drivers", "cuda-toolkit-12-6")))

`CudaRepository` picks the repository folder from the host's /etc/os-release (ubuntu2204, ubuntu2404, debian12)
and architecture, installs NVIDIA's keyring package from it (checked against a pinned sha256 first), and points
apt at `url` (NVIDIA's, or an organisation's mirror of the same tree).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from vmlab.engine.command import Command, RunResult, sh
from vmlab.engine.facts import Fact, Facts, FileStat, OsRelease
from vmlab.engine.operation import Operation
from vmlab.errors import BadInput
from vmlab.operations._write import check_sha256, check_url, downloader, is_pending, set_field, write_file
from vmlab.operations.apt import update_command

#: releases NVIDIA publishes a CUDA repository for (that vmlab supports), and the CUDA versions each offers
OFFERED: dict[str, tuple[str, ...]] = {
    "ubuntu2204": ("11.7", "11.8", "12.0", "12.1", "12.2", "12.3", "12.4", "12.5", "12.6", "12.8", "12.9", "13.0"),
    "ubuntu2404": ("12.5", "12.6", "12.8", "12.9", "13.0"),
    "debian12": ("12.2", "12.3", "12.4", "12.5", "12.6", "12.8", "12.9", "13.0"),
}
#: `uname -m` -> the folder name NVIDIA uses for it
ARCHES = {"x86_64": "x86_64", "aarch64": "sbsa"}
KEYRING_FILE = "/usr/share/keyrings/cuda-archive-keyring.gpg"
#: sha256 of NVIDIA's `cuda-keyring_VERSION_all.deb` in each repository folder. The package is a trust anchor (it
#: installs the key every CUDA package is checked with), so it is checked before dpkg sees it. Not downloaded
#: here (vmlab's build machines reach no NVIDIA server): taken from published pins that agree, e.g.
#: GoogleCloudPlatform's compute-gpu-installation (x86_64); the sbsa ones from fewer sources. To add a
#: release or a new keyring version: `curl -fsSL URL/FOLDER/ARCH/cuda-keyring_V_all.deb | sha256sum`.
KEYRING_SHA256: dict[tuple[str, str, str], str] = {
    ("1.1-1", "ubuntu2204", "x86_64"): "d93190d50b98ad4699ff40f4f7af50f16a76dac3bb8da1eaaf366d47898ff8df",
    ("1.1-1", "ubuntu2204", "sbsa"): "36d1aed84dfcf93ee9a0212d149f1c4187db92e03ab96a759ec0689aa438fd9e",
    ("1.1-1", "ubuntu2404", "x86_64"): "d2a6b11c096396d868758b86dab1823b25e14d70333f1dfa74da5ddaf6a06dba",
    ("1.1-1", "ubuntu2404", "sbsa"): "6ea7d2737648936820e85677177957a0f6521b840d98eb0bbae0a4f003fa7249",
    ("1.1-1", "debian12", "x86_64"): "e7f219eab6fe4819cdb5c15b98233dc3420302d9c00883219cd3d896857cf48d",
    ("1.1-1", "debian12", "sbsa"): "bf2f53b1a19259501119f732bdef2699f8c80c69a18e6a78dad78d67d96766dc",
}


def repo_dir(os_release: Mapping[str, str]) -> str:
    """The repository folder for a host's /etc/os-release (`ubuntu2404`); BadInput for a release NVIDIA's
    repository (or vmlab) does not cover."""
    os_id, version = os_release.get("ID", "?"), os_release.get("VERSION_ID", "?")
    folder = os_id + version.replace(".", "")
    if folder not in OFFERED:
        raise BadInput(f"cuda: {os_id} {version} has no CUDA repository vmlab supports",
                       "bake on ubuntu-22.04, ubuntu-24.04 or debian-12, or turn CUDA off with -e cuda=false")
    return folder


def check_version(folder: str, version: object) -> None:
    """BadInput naming `cuda_version` unless the repository for `folder` offers it."""
    offered = OFFERED[folder]
    if str(version) not in offered:
        raise BadInput(f"cuda_version {version!r} is not offered for {folder} (offered: {', '.join(offered)})",
                       f"set e.g. -e cuda_version={offered[-2] if len(offered) > 1 else offered[-1]}")


# ---- facts ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Machine(Fact[str]):
    """`uname -m`: x86_64, aarch64, ..."""

    def command(self) -> Command:
        return Command("uname", "-m")

    def parse(self, result: RunResult) -> str:
        return result.stdout.strip()


@dataclass(frozen=True)
class NvidiaGpus(Fact[int]):
    """How many NVIDIA display/3D controllers the host's PCI bus shows (no driver or lspci needed)."""

    def command(self) -> Command:
        return sh('n=0; for d in /sys/bus/pci/devices/*; do\n'
                  '  [ -r "$d/vendor" ] || continue\n'
                  '  [ "$(cat "$d/vendor")" = 0x10de ] || continue\n'
                  '  case "$(cat "$d/class")" in 0x03*) n=$((n+1));; esac\n'
                  'done; echo "$n"', label="count NVIDIA GPUs")

    def parse(self, result: RunResult) -> int:
        return int(result.stdout.strip() or 0)


@dataclass(frozen=True)
class Cloud(Fact[str]):
    """Which cloud the host runs on, from its firmware (DMI): "ec2", "gce", "azure" or "" (anything else)."""

    def command(self) -> Command:
        return sh('cat /sys/class/dmi/id/sys_vendor /sys/class/dmi/id/bios_vendor /sys/class/dmi/id/product_name '
                  '2>/dev/null || true', label="cloud vendor")

    def parse(self, result: RunResult) -> str:
        text = result.stdout.lower()
        if "amazon" in text:
            return "ec2"
        if "google" in text:
            return "gce"
        return "azure" if "microsoft" in text else ""


# ---- operations -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CudaRepository(Operation):
    """NVIDIA's CUDA apt repository for this host's release: the `cuda-keyring` package (NVIDIA's signing key),
    a source list that uses it at `url`, then `apt-get update` when either changed.

    `url` is the folder holding `ubuntu2404/`, `debian12/`, ...; a mirror must keep that layout. The keyring
    package's own list has the same path, so apt never sees the repository twice. The package must match
    `KEYRING_SHA256` (the pins of `keyring_version` 1.1-1); another version needs its own `keyring_sha256`.
    """

    url: str = "https://developer.download.nvidia.com/compute/cuda/repos"
    keyring_version: str = "1.1-1"
    keyring_sha256: str | None = None

    def __post_init__(self) -> None:
        check_url(self, "url")
        version = self.keyring_version
        if not is_pending(version) and not re.fullmatch(r"[0-9][0-9.]*-[0-9]+", version):
            raise BadInput(f"CudaRepository: keyring_version {self.keyring_version!r} is not valid", "e.g. '1.1-1'")
        if self.keyring_sha256 == "":  # a recipe variable left empty: the built-in pins
            set_field(self, "keyring_sha256", None)
        check_sha256(self, "keyring_sha256", optional=True)
        pinned = {v for v, _, _ in KEYRING_SHA256}
        if self.keyring_sha256 is None and not is_pending(version) and version not in pinned:
            raise BadInput(f"CudaRepository: cuda-keyring {version} has no pinned sha256 (vmlab pins "
                           f"{', '.join(sorted(pinned))})",
                           "give its sha256 too: -e cuda_keyring_sha256=... (sha256sum of the .deb from a "
                           "download you trust)")

    def repository(self, facts: Facts) -> tuple[str, str]:
        """(repository URL, source list path) for the host."""
        release: dict[str, str] = facts.get(OsRelease())
        folder = repo_dir(release)
        machine = facts.get(Machine())
        arch = ARCHES.get(machine)
        if arch is None:
            raise BadInput(f"cuda: no CUDA repository for {machine}", "use an x86_64 or aarch64 host")
        return f"{self.url.rstrip('/')}/{folder}/{arch}", f"/etc/apt/sources.list.d/cuda-{folder}-{arch}.list"

    def keyring_pin(self, repo: str) -> str:
        """The sha256 the keyring package from `repo` (.../FOLDER/ARCH) must have."""
        if self.keyring_sha256:
            return self.keyring_sha256
        folder, arch = repo.rsplit("/", 2)[-2:]
        pin = KEYRING_SHA256.get((self.keyring_version, folder, arch))
        if pin is None:
            raise BadInput(f"cuda: no pinned sha256 for cuda-keyring {self.keyring_version} in {folder}/{arch}",
                           "give it: -e cuda_keyring_sha256=... (sha256sum of the .deb from a download you trust)")
        return pin

    def plan(self, facts: Facts) -> Iterator[Command]:
        repo, list_path = self.repository(facts)
        commands: list[Command] = []
        if facts.get(FileStat(KEYRING_FILE)) is None:
            name = f"cuda-keyring_{self.keyring_version}_all.deb"
            deb = f"/tmp/{name}"
            commands += [write_file(deb, fetch=downloader(facts, f"{repo}/{name}"), mode="0644",
                                    sha256=self.keyring_pin(repo), label=f"download {repo}/{name} to {deb}"),
                         Command("dpkg", "-i", deb),
                         Command("rm", "-f", deb)]
        line = f"deb [signed-by={KEYRING_FILE}] {repo}/ /\n".encode()
        listing = facts.get(FileStat(list_path))
        if commands or listing is None or listing.sha256 != hashlib.sha256(line).hexdigest():
            commands.append(write_file(list_path, content=line, mode="0644"))
        if commands:
            yield from commands
            yield update_command(facts.throwaway)


__all__ = ["ARCHES", "KEYRING_FILE", "KEYRING_SHA256", "OFFERED", "Cloud", "CudaRepository", "Machine", "NvidiaGpus",
           "check_version", "repo_dir"]
