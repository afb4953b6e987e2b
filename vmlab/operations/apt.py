"""Debian/Ubuntu packages: Packages, UpdateCache, Repository, and the dpkg/apt facts they plan from.

Example::

    recipe.step("apt cache", apt.UpdateCache(max_age=3600))
    recipe.step("tools", apt.Packages(("curl", "git", "build-essential")))
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from vmlab.engine.command import Command, RunResult, sh
from vmlab.engine.facts import Fact, Facts, FileStat, FileText
from vmlab.engine.operation import Operation, unified_diff
from vmlab.errors import BadInput
from vmlab.operations._write import (
    check_sha256,
    check_strings,
    check_url,
    downloader,
    is_pending,
    write_file,
)

_APT_ENV = ("env", "DEBIAN_FRONTEND=noninteractive")
# keep changed config files the admin edited, take the package's for the rest: never prompt
_DPKG_OPTS = ("-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold")
# apt-get keeps every downloaded .deb in /var/cache/apt/archives (gigabytes for CUDA) although the package is
# installed: drop each once it is (what the `apt` command does by default), so a bake never fills the builder's
# disk with copies the scrub would delete anyway
_NO_KEEP = ("-o", "APT::Keep-Downloaded-Packages=false")
# a bake's builder only (`Facts.throwaway`): dpkg skips its fsync of every unpacked file, the slowest part of an
# install on an emulated or network disk; a crash there means a new builder, and the scrub syncs before the image
_UNSAFE_IO = ("-o", "Dpkg::Options::=--force-unsafe-io")
# ... and `apt-get update` fetches no package description translations (the image's lists are refreshed by its
# first `apt-get update` anyway)
_NO_TRANSLATIONS = ("-o", "Acquire::Languages=none")
_STAMP = "/var/lib/apt/periodic/update-success-stamp"
# apt's own "last successful update" stamp; written by us after every update we run, so a no-op update
# (all "Hit") still counts as fresh
UPDATE_SCRIPT = 'stamp=$1; shift; apt-get "$@" update && mkdir -p /var/lib/apt/periodic && touch "$stamp"'
_PACKAGE = re.compile(r"(?P<name>[a-z0-9][a-z0-9+.-]*(:[a-z0-9-]+)?)(=(?P<version>[A-Za-z0-9.+:~_-]+))?")


def update_command(throwaway: bool = False) -> Command:
    """`apt-get update`, then apt's success stamp (which `UpdateCache` reads); on a bake's builder without the
    description translations."""
    options = _NO_TRANSLATIONS if throwaway else ()
    return sh(UPDATE_SCRIPT, _STAMP, *options, label=" ".join(("apt-get", *options, "update")))


# ---- facts ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DpkgInstalled(Fact["dict[str, str]"]):
    """Installed versions of the named packages, keyed by name and by name:arch; absent names are left out."""

    names: tuple[str, ...]

    def command(self) -> Command:
        # exit 1 just means some names are unknown to dpkg
        return Command("dpkg-query", "-W", "-f", "${Package}\\t${Architecture}\\t${Version}\\t${Status}\\n",
                       *self.names, ok_codes=(0, 1), label=f"dpkg-query {' '.join(self.names)}")

    def parse(self, result: RunResult) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in result.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) == 4 and parts[3] == "install ok installed":
                name, arch, version, _ = parts
                out[name] = version
                out[f"{name}:{arch}"] = version
        return out


@dataclass(frozen=True)
class AptListsAge(Fact["int | None"]):
    """Seconds since apt's package lists were last updated, or None when there are no lists at all."""

    def command(self) -> Command:
        return sh(
            'now=$(date +%s); newest=0; has=no\n'
            'for f in "$1" /var/lib/apt/lists /var/lib/apt/lists/partial; do\n'
            '  if [ -e "$f" ]; then m=$(stat -c %Y "$f"); if [ "$m" -gt "$newest" ]; then newest=$m; fi; fi\n'
            'done\n'
            'for f in /var/lib/apt/lists/*_Packages* /var/lib/apt/lists/*Release; do\n'
            '  if [ -e "$f" ]; then has=yes; break; fi\n'
            'done\n'
            'echo "$now $newest $has"\n', _STAMP, label="age of apt lists")

    def parse(self, result: RunResult) -> int | None:
        now, newest, has = result.stdout.split()
        return max(0, int(now) - int(newest)) if has == "yes" else None


# ---- operations -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Packages(Operation):
    """Packages installed (`apt-get install --no-install-recommends`) or purged (`present=False`).

    Example: ``apt.Packages(("curl", "git", "libc6:i386", "htop=3.3.0-4"))``. A name may carry an
    architecture and an exact version (no globs). Only the packages not yet in the wanted state are passed to
    apt. A virtual name (``awk``) always looks missing to dpkg: name the real package (``mawk``). Downloaded
    .deb files are not kept once installed. On a bake's builder (`Facts.throwaway`) dpkg runs with
    `--force-unsafe-io` (no fsync per file: the builder is discarded if the bake fails, synced before the image);
    never on a host `vmlab provision` configures.
    """

    names: tuple[str, ...]
    present: bool = True

    def __post_init__(self) -> None:
        names = check_strings(self, "names", "Debian package names")
        for name in names:
            if not is_pending(name) and not _PACKAGE.fullmatch(name):
                raise BadInput(f"Packages: {name!r} is not a Debian package name",
                               "use names such as 'curl', optionally 'name:arch' or 'name=version'")
        if not self.present and any("=" in n for n in names):
            raise BadInput("Packages: a version pin makes no sense with present=False", "drop the '=version'")

    def plan(self, facts: Facts) -> Iterator[Command]:
        specs = list(dict.fromkeys(self.names))
        keys = {spec: spec.partition("=")[0] for spec in specs}
        installed = facts.get(DpkgInstalled(tuple(dict.fromkeys(keys.values()))))
        unsafe = _UNSAFE_IO if facts.throwaway else ()
        if self.present:
            missing = [s for s in specs if installed.get(keys[s]) is None
                       or ("=" in s and installed[keys[s]] != s.partition("=")[2])]
            if missing:
                yield Command(*_APT_ENV, "apt-get", "install", "-y", "--no-install-recommends", *_DPKG_OPTS, *unsafe,
                              *_NO_KEEP, *missing)
        else:
            there = [s for s in specs if s in installed]
            if there:
                yield Command(*_APT_ENV, "apt-get", "purge", "-y", *unsafe, *there)


@dataclass(frozen=True)
class UpdateCache(Operation):
    """`apt-get update` when the package lists are older than `max_age` seconds (or were never fetched).

    Example: ``apt.UpdateCache(max_age=6 * 3600)``; ``max_age=0`` updates every run.
    """

    max_age: int = 3600

    def __post_init__(self) -> None:
        if not isinstance(self.max_age, int) or isinstance(self.max_age, bool) or self.max_age < 0:
            raise BadInput(f"UpdateCache: max_age {self.max_age!r} is not a number of seconds",
                           "e.g. max_age=3600")

    def plan(self, facts: Facts) -> Iterator[Command]:
        age = facts.get(AptListsAge())
        if age is None or age >= self.max_age:
            yield update_command(facts.throwaway)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./+-]*")
_SUITE = re.compile(r"[A-Za-z0-9./][A-Za-z0-9_./+-]*")
_ARCH = re.compile(r"[a-z0-9-]+(,[a-z0-9-]+)*")


@dataclass(frozen=True)
class Repository(Operation):
    """An apt source with its own signing key, then `apt-get update` in the same step if either changed.

    The key goes to /etc/apt/keyrings/NAME.asc (NAME.gpg when `key_url` ends in .gpg, as binary keys do) and
    the source to /etc/apt/sources.list.d/NAME.list with `signed-by`, so the key vouches for it alone::

        apt.Repository("docker", "https://download.docker.com/linux/ubuntu", "noble", components=("stable",),
                       key_url="https://download.docker.com/linux/ubuntu/gpg",
                       key_sha256="1500c1f56fa9e26b9b8f42452a553675796ade0807cdce11975eb98170b3a570", arch="amd64")

    `key_sha256` is required: the key is a trust anchor (whoever controls `key_url` could otherwise sign any
    package), so it is checked before use and re-fetched whenever the host's copy differs. Get it once from a
    download you trust: `curl -fsSL KEY_URL | sha256sum`.
    """

    name: str
    url: str
    suite: str
    key_url: str
    components: tuple[str, ...] = ("main",)
    key_sha256: str | None = None
    arch: str | None = None

    def __post_init__(self) -> None:
        for field, pattern, example in (("name", _NAME, "'docker'"), ("suite", _SUITE, "'noble' or './'")):
            value = getattr(self, field)
            if not is_pending(value) and not (isinstance(value, str) and pattern.fullmatch(value)):
                raise BadInput(f"Repository: {field} {value!r} is not valid", f"e.g. {field}={example}")
        check_url(self, "url")
        check_url(self, "key_url")
        check_sha256(self, "key_sha256", optional=True)
        if self.key_sha256 is None:
            raise BadInput(f"Repository {self.name}: key_url {self.key_url} has no key_sha256, so whoever answers "
                           "that URL could sign packages for this host",
                           f"pin the key with key_sha256= the output of `curl -fsSL {self.key_url} | sha256sum` "
                           "from a download you trust")
        for component in check_strings(self, "components", "components", allow_empty=True):
            if not is_pending(component) and not _WORD.fullmatch(component):
                raise BadInput(f"Repository: component {component!r} is not valid",
                               "e.g. components=('main', 'contrib')")
        if self.arch is not None and not is_pending(self.arch) and not _ARCH.fullmatch(self.arch):
            raise BadInput(f"Repository: arch {self.arch!r} is not valid",
                           "e.g. arch='amd64' or arch='amd64,arm64'")

    @property
    def key_path(self) -> str:
        ext = ".gpg" if self.key_url.split("?")[0].endswith(".gpg") else ".asc"
        return f"/etc/apt/keyrings/{self.name}{ext}"

    @property
    def list_path(self) -> str:
        return f"/etc/apt/sources.list.d/{self.name}.list"

    def source_line(self) -> str:
        options = ([f"arch={self.arch}"] if self.arch else []) + [f"signed-by={self.key_path}"]
        return " ".join(["deb", f"[{' '.join(options)}]", self.url, self.suite, *self.components]) + "\n"

    def plan(self, facts: Facts) -> Iterator[Command]:
        import hashlib

        commands: list[Command] = []
        key = facts.get(FileStat(self.key_path))
        if key is None or key.sha256 != self.key_sha256:
            if facts.get(FileStat("/etc/apt/keyrings")) is None:
                commands.append(Command("mkdir", "-p", "-m", "0755", "/etc/apt/keyrings"))
            commands.append(write_file(self.key_path, fetch=downloader(facts, self.key_url),
                                       sha256=self.key_sha256 or "", mode="0644",
                                       label=f"download {self.key_url} to {self.key_path}"))
        line = self.source_line().encode()
        listing = facts.get(FileStat(self.list_path))
        if listing is None or listing.sha256 != hashlib.sha256(line).hexdigest():
            commands.append(write_file(self.list_path, content=line, mode="0644"))
        if commands:
            yield from commands
            yield update_command(facts.throwaway)

    def diff(self, facts: Facts) -> str | None:
        return unified_diff(facts.get(FileText(self.list_path)), self.source_line(), self.list_path)


__all__ = ["AptListsAge", "DpkgInstalled", "Packages", "Repository", "UpdateCache"]
