"""Facts: read-only questions about a host, one command each, cached until the host changes.

A fact is a frozen dataclass (so it can key the cache) with `command()` and `parse()`. Operations ask for facts
through a `Facts` view; the runner reads the facts of the coming steps in batches (see `vmlab.engine.prefetch`)
and clears the cache after any step that changed the host, so a step never plans from facts an earlier step
made stale.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from vmlab.engine.batch import Batch, batchable, plan_batches
from vmlab.engine.command import Command, RunResult, sh
from vmlab.engine.host import Host
from vmlab.errors import CommandFailed

T = TypeVar("T")


class Fact(Generic[T]):
    """Base of all facts. Subclasses are frozen dataclasses.

    Example::

        @dataclass(frozen=True)
        class Hostname(Fact[str]):
            def command(self) -> Command:
                return Command("hostname")
            def parse(self, result: RunResult) -> str:
                return result.stdout.strip()
    """

    def command(self) -> Command:
        raise NotImplementedError

    def parse(self, result: RunResult) -> T:
        raise NotImplementedError


class FactCache:
    """Per-host cache shared by all steps of one run; keyed by (fact, sudo).

    `load` reads many facts in batches (one command per privilege, see `vmlab.engine.batch`) and keeps their raw
    results; `get` parses a result when a step asks for it, so a fact that failed to read fails the step that
    needed it, as if it had been read on its own. `reads` counts the commands sent. `throwaway`: what the run
    knows of the host without asking it, that it is a bake's builder (see `Facts.throwaway`).
    """

    def __init__(self, host: Host, throwaway: bool = False) -> None:
        self.host = host
        self.throwaway = throwaway
        self._values: dict[tuple[Fact, bool], object] = {}
        self._raw: dict[tuple[Fact, bool], RunResult] = {}
        self.reads = 0

    def has(self, fact: Fact[T], sudo: bool) -> bool:
        key = (fact, sudo)
        return key in self._values or key in self._raw

    def get(self, fact: Fact[T], sudo: bool) -> T:
        key = (fact, sudo)
        if key in self._values:
            return self._values[key]  # type: ignore[return-value]
        cmd = fact.command()
        result = self._raw.pop(key, None)
        if result is None:
            result = self.host.execute(cmd, sudo=sudo)
            self.reads += 1
        if result.rc not in cmd.ok_codes:
            last = (result.stderr.strip().splitlines() or [""])[-1]
            raise CommandFailed(
                f"{self.host.name}: reading {type(fact).__name__} failed (exit {result.rc}): {last}",
                result.rc, result.stdout, result.stderr)
        value = fact.parse(result)
        self._values[key] = value
        return value

    def load(self, keys: Iterable[tuple[Fact, bool]]) -> int:
        """Read the facts not yet cached, a batch per privilege; returns how many it read. Facts a batch cannot
        carry (stdin, a huge command line), and all facts of a host with `batch_reads = False` (a test double
        that answers commands itself), are left for `get` to read one by one."""
        if not getattr(self.host, "batch_reads", True):
            return 0
        before = len(self._raw)
        wanted: dict[bool, list[tuple[Fact, Command]]] = {}
        for fact, sudo in dict.fromkeys(keys):
            cmd = fact.command()
            if not self.has(fact, sudo) and batchable(cmd):
                wanted.setdefault(sudo, []).append((fact, cmd))
        for sudo, items in wanted.items():
            commands = [cmd for _, cmd in items]
            for group in plan_batches(commands):
                batch = Batch.of([commands[i] for i in group])
                result = self.host.execute(batch.command, sudo=sudo)
                self.reads += 1
                for i, one in zip(group, batch.split(result), strict=True):
                    if one is not None:
                        self._raw[(items[i][0], sudo)] = one
        return len(self._raw) - before

    def clear(self) -> None:
        self._values.clear()
        self._raw.clear()


class Facts:
    """What an operation sees while planning: cached fact reads with the step's privilege, and `throwaway`.

    `throwaway` is true when the host is a bake's builder: it is thrown away if the run fails, and synced and
    shut down (or committed) before its disk becomes an image. Operations may then skip safety that only a
    long-lived host needs, such as dpkg's fsync of every file it unpacks (`apt.Packages`). It is false for
    `vmlab provision`, whose hosts outlive a crash in the middle of a step.
    """

    def __init__(self, cache: FactCache, sudo: bool) -> None:
        self._cache = cache
        self.sudo = sudo

    @property
    def throwaway(self) -> bool:
        return self._cache.throwaway

    def get(self, fact: Fact[T]) -> T:
        return self._cache.get(fact, self.sudo)


# ---- facts used by several operation modules -------------------------------------------------------------


@dataclass(frozen=True)
class PathInfo:
    """What `stat` says about a path; `sha256` only for regular files."""

    kind: str  # "file", "directory", "link", "other"
    mode: str  # four octal digits, e.g. "0644"
    owner: str
    group: str
    size: int
    sha256: str | None = None


_STAT_SCRIPT = (
    'if [ -e "$1" ] || [ -L "$1" ]; then stat -c "%F|%a|%U|%G|%s" -- "$1" || exit 3; '
    'if [ -f "$1" ] && [ ! -L "$1" ]; then sha256sum < "$1" || true; fi; fi'
)

_KINDS = {"regular file": "file", "regular empty file": "file", "directory": "directory",
          "symbolic link": "link"}


@dataclass(frozen=True)
class FileStat(Fact["PathInfo | None"]):
    """Type, mode, owner, group, size and (for files) sha256 of a path, or None when it does not exist."""

    path: str

    def command(self) -> Command:
        return sh(_STAT_SCRIPT, self.path, label=f"stat {self.path}")

    def parse(self, result: RunResult) -> PathInfo | None:
        lines = result.stdout.splitlines()
        if not lines:
            return None
        kind, mode, owner, group, size = lines[0].split("|")
        # from stdin, so the line is "HEX  -" whatever the name (sha256sum escapes odd names with a leading \\)
        digest = lines[1].split()[0] if len(lines) > 1 else None
        return PathInfo(kind=_KINDS.get(kind, "other"), mode=mode.zfill(4), owner=owner, group=group,
                        size=int(size), sha256=digest)


@dataclass(frozen=True)
class FileText(Fact["str | None"]):
    """The text of a file, or None when it does not exist (used for --diff and line edits)."""

    path: str

    def command(self) -> Command:
        return sh('if [ -f "$1" ]; then printf x; cat -- "$1"; fi', self.path, label=f"read {self.path}")

    def parse(self, result: RunResult) -> str | None:
        # the leading "x" tells an empty file from a missing one
        return result.stdout[1:] if result.stdout.startswith("x") else None


@dataclass(frozen=True)
class CommandSucceeds(Fact[bool]):
    """Whether a shell command exits 0 (for `unless`/`onlyif` guards). Runs the command: keep it read-only."""

    script: str

    def command(self) -> Command:
        return Command("sh", "-c", self.script, ok_codes=tuple(range(256)), label=f"test: {self.script}")

    def parse(self, result: RunResult) -> bool:
        return result.rc == 0


@dataclass(frozen=True)
class OsRelease(Fact["dict[str, str]"]):
    """/etc/os-release as a dict (ID, VERSION_ID, VERSION_CODENAME, ...)."""

    def command(self) -> Command:
        return Command("cat", "/etc/os-release")

    def parse(self, result: RunResult) -> dict[str, str]:
        import shlex

        out: dict[str, str] = {}
        for line in result.stdout.splitlines():
            if "=" in line and not line.startswith("#"):
                key, _, value = line.partition("=")
                parts = shlex.split(value) or [""]
                out[key.strip()] = parts[0]
        return out


@dataclass(frozen=True)
class Which(Fact["str | None"]):
    """Absolute path of an executable on PATH, or None."""

    name: str

    def command(self) -> Command:
        return sh('command -v -- "$1" || true', self.name, label=f"which {self.name}")

    def parse(self, result: RunResult) -> str | None:
        return result.stdout.strip() or None


_CONTAINER_SCRIPT = r"""
v=$(systemd-detect-virt --container 2>/dev/null) || v=
case "$v" in ""|none) ;; *) echo "$v"; exit 0;; esac
if [ -e /run/.containerenv ]; then echo podman
elif [ -e /.dockerenv ]; then echo docker
elif [ -s /run/systemd/container ]; then head -n 1 /run/systemd/container
elif tr '\000' '\n' < /proc/1/environ 2>/dev/null | grep -q '^container=.'; then
  tr '\000' '\n' < /proc/1/environ | sed -n 's/^container=//p' | head -n 1
elif grep -qE '/(kubepods|docker|libpod|lxc)' /proc/1/cgroup 2>/dev/null; then echo container-other
fi
"""


@dataclass(frozen=True)
class Container(Fact[str]):
    """The container engine the host runs in ("podman", "docker", "lxc", ...; "container-other" when only its
    cgroup tells), or "" on a VM or bare metal. Asks systemd-detect-virt first, then the engines' own marks
    (/run/.containerenv, /.dockerenv), then what PID 1 was started with; each of them alone is enough, so it
    holds whether or not systemd is PID 1 (a vmlab builder container runs systemd; a lab container does not)."""

    def command(self) -> Command:
        return sh(_CONTAINER_SCRIPT, label="container engine")

    def parse(self, result: RunResult) -> str:
        return result.stdout.strip()
