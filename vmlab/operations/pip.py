"""Python packages with pip or uv, optionally in a virtual environment: Packages (requirements), Locked (a lock
file of exact versions and hashes), and the fact they plan from.

Example::

    recipe.step("lab", pip.Packages(("jupyterlab>=4,<5", "ipywidgets"), venv="/opt/lab"))
    recipe.step("lab", pip.Locked("recipes/locks/jupyterlab.txt", dest="/opt/lab/requirements.lock", venv="/opt/lab",
                                  installer="uv"))

`installer="uv"` runs `uv pip install --python INTERPRETER` with the same arguments (uv itself comes hash-pinned
from PyPI, see `vmlab.operations.uvtool`; plain pip when it cannot be installed); "pip" (the default) runs
`INTERPRETER -m pip install`. Either way the plan is made from the same fact (the interpreter's installed
distributions), so a second run plans nothing. uv does not read /etc/pip.conf: give a mirror as `index_url`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from vmlab.engine.command import Command, RunResult
from vmlab.engine.facts import Fact, Facts, FileStat
from vmlab.engine.operation import Operation
from vmlab.errors import BadInput
from vmlab.operations._write import check_path, check_strings, is_pending
from vmlab.operations.uvtool import UV_DIR, check_installer, install_commands, venv_commands

# Runs on the host's interpreter: every installed distribution (first on sys.path wins, as for imports) with
# its PEP 503 name, plus the PEP 508 marker environment so requirements' markers are judged for that host.
DISTS_SCRIPT = """\
import json, os, platform, re, sys
from importlib import metadata
dists = {}
for d in metadata.distributions():
    name = d.metadata["Name"]
    if name:
        dists.setdefault(re.sub(r"[-_.]+", "-", name).lower(), d.version)
v = sys.implementation.version
iv = "%d.%d.%d" % (v.major, v.minor, v.micro)
if v.releaselevel != "final":
    iv += v.releaselevel[0] + str(v.serial)
env = {
    "implementation_name": sys.implementation.name, "implementation_version": iv, "os_name": os.name,
    "platform_machine": platform.machine(), "platform_release": platform.release(),
    "platform_system": platform.system(), "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]), "sys_platform": sys.platform,
}
print(json.dumps({"dists": dists, "env": env}))
"""


@dataclass(frozen=True)
class PythonEnv:
    """What a host's interpreter has installed (PEP 503 name -> version) and its marker environment."""

    dists: dict[str, str] = field(default_factory=dict)
    markers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PythonDists(Fact[PythonEnv]):
    """Installed distributions of the interpreter `python` (a name on PATH or an absolute path)."""

    python: str

    def command(self) -> Command:
        return Command(self.python, "-c", DISTS_SCRIPT, label=f"{self.python}: installed distributions")

    def parse(self, result: RunResult) -> PythonEnv:
        data = json.loads(result.stdout)
        return PythonEnv(dists=dict(data["dists"]), markers=dict(data["env"]))


def satisfied(requirement: str, env: PythonEnv) -> bool:
    """Whether `env` already meets a PEP 508 requirement (one whose marker excludes this host counts as met).

    Extras are not checked: ``jupyterlab[test]`` is met by any matching jupyterlab.
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion

    req = Requirement(requirement)
    if req.marker is not None and not req.marker.evaluate(env.markers):
        return True
    version = env.dists.get(canonicalize_name(req.name))
    if version is None:
        return False
    if req.url:
        return True
    try:
        return req.specifier.contains(version, prereleases=True)
    except InvalidVersion:
        return False


@dataclass(frozen=True)
class Packages(Operation):
    """Python distributions installed with `python -m pip install`, only those not already satisfied.

    `packages` are PEP 508 requirement strings. With `venv`, the environment is created first when missing
    (``python -m venv VENV``) and pip runs as ``VENV/bin/python -m pip``. Example::

        pip.Packages(("jupyterlab>=4,<5", "torch==2.3.1"), venv="/opt/lab",
                     index_url="https://download.pytorch.org/whl/cu121")

    Without `venv`, a distribution's Python may refuse (PEP 668): pass
    ``extra_args=("--break-system-packages",)`` if you mean it. With ``installer="uv"``, `extra_args` go to
    `uv pip install`: use options both know (``--no-deps``, ``--no-index``, ...). `reinstall=True` installs
    every requirement again (``--force-reinstall``) even when it is met: for a handler that puts in a rebuilt
    wheel whose version did not change.
    """

    packages: tuple[str, ...]
    venv: str | None = None
    python: str = "python3"
    index_url: str | None = None
    find_links: str | None = None
    extra_args: tuple[str, ...] = ()
    installer: str = "pip"
    uv_dir: str = UV_DIR
    reinstall: bool = False

    def __post_init__(self) -> None:
        from packaging.requirements import InvalidRequirement, Requirement

        for text in check_strings(self, "packages", "requirements"):
            if is_pending(text):
                continue
            try:
                Requirement(text)
            except InvalidRequirement as exc:
                raise BadInput(f"pip.Packages: {text!r} is not a PEP 508 requirement: {exc}",
                               "write e.g. 'jupyterlab>=4,<5'; pass pip options in extra_args") from None
        check_path(self, "venv", optional=True)
        check_strings(self, "extra_args", "pip arguments", allow_empty=True)
        check_installer(self, self.installer)
        check_path(self, "uv_dir")
        if not isinstance(self.reinstall, bool):
            raise BadInput(f"pip.Packages: reinstall {self.reinstall!r} is not true or false", "reinstall=True")
        for name in ("python", "index_url", "find_links"):
            value = getattr(self, name)
            if value is None and name != "python":
                continue
            if not isinstance(value, str) or not value or value.startswith("-"):
                raise BadInput(f"pip.Packages: {name} {value!r} is not valid",
                               "give a program name or path" if name == "python" else "give a URL or path")

    @property
    def interpreter(self) -> str:
        """The Python that pip runs under on the host."""
        return f"{self.venv.rstrip('/')}/bin/python" if self.venv else self.python

    def _install(self, facts: Facts, requirements: list[str], new_venv: bool = False) -> list[Command]:
        options = index_options(self.index_url, self.find_links)
        again = ("--force-reinstall",) if self.reinstall else ()
        return install_commands(facts, self.installer, self.interpreter,
                                (*options, *self.extra_args, *again, *requirements),
                                fetch_options(options, self.extra_args), self.uv_dir, new_venv=new_venv)

    def plan(self, facts: Facts) -> Iterator[Command]:
        wanted = list(dict.fromkeys(self.packages))
        if self.venv and facts.get(FileStat(self.interpreter)) is None:
            options = fetch_options(index_options(self.index_url, self.find_links), self.extra_args)
            yield from venv_commands(facts, self.installer, self.python, self.venv, options, self.uv_dir)
            # pip itself skips requirements whose markers exclude the host
            yield from self._install(facts, wanted, new_venv=True)
            return
        if self.reinstall:
            yield from self._install(facts, wanted)
            return
        env = facts.get(PythonDists(self.interpreter))
        missing = [r for r in wanted if not satisfied(r, env)]
        if missing:
            yield from pip_into_venv(self.installer, self.venv, self.interpreter, env)
            yield from self._install(facts, missing)


def pip_into_venv(installer: str, venv: str | None, interpreter: str, env: PythonEnv) -> list[Command]:
    """pip itself, from the copy Python ships (ensurepip, offline), into a venv that has none (uv made it) when
    plain pip is to install there."""
    if installer != "pip" or not venv or "pip" in env.dists:
        return []
    return [Command(interpreter, "-m", "ensurepip", "--default-pip", label=f"pip into {venv} (uv made it without)")]


def index_options(index_url: str | None, find_links: str | None) -> tuple[str, ...]:
    """Where packages come from, as pip options."""
    options: list[str] = []
    if index_url:
        options += ["--index-url", index_url]
    if find_links:
        options += ["--find-links", find_links]
    return tuple(options)


def fetch_options(options: tuple[str, ...], extra_args: tuple[str, ...]) -> tuple[str, ...]:
    """Where uv itself is fetched from: the packages' index and links (and nowhere else with --no-index)."""
    return (*options, *(a for a in extra_args if a == "--no-index"))


def lock_requirements(text: str, where: str = "lock") -> list[str]:
    """The requirements of a hashed lock file (`pip-compile --generate-hashes` / `uv pip compile
    --generate-hashes` output), markers kept: ``["anyio==4.6.0", "appnope==0.1.4 ; sys_platform == 'darwin'"]``.
    BadInput unless every entry is pinned with `==` and carries at least one `--hash`."""
    from packaging.requirements import InvalidRequirement, Requirement

    out: list[str] = []
    for entry in text.replace("\\\n", " ").splitlines():
        entry = entry.split(" #", 1)[0].strip()
        if not entry or entry.startswith("#"):
            continue
        requirement, _, options = entry.partition(" --hash=")
        try:
            req = Requirement(requirement.strip())
        except InvalidRequirement:
            raise BadInput(f"{where}: {requirement.strip()!r} is not a pinned requirement",
                           "regenerate the lock with scripts/lock.sh") from None
        pins = [s for s in req.specifier if s.operator == "=="]
        if not options or len(pins) != 1 or len(req.specifier) != 1 or req.url:
            raise BadInput(f"{where}: {req.name} is not pinned with == and hashes",
                           "regenerate the lock with scripts/lock.sh")
        out.append(requirement.strip())
    if not out:
        raise BadInput(f"{where}: the lock file lists no packages", "regenerate it with scripts/lock.sh")
    return out


@dataclass(frozen=True)
class Locked(Operation):
    """Every package of a local lock file (exact versions, hashes) installed with
    `pip install --require-hashes --no-deps -r DEST`: nothing unpinned or unverified reaches the host.

    The lock is written to `dest` on the host first (it stays there: it says what the environment holds);
    pip runs only when some locked package is missing or at another version. Example::

        pip.Locked(str(HERE / "locks" / "jupyterlab.txt"), dest="/opt/jupyter/requirements.lock",
                   venv="/opt/jupyter")

    With ``installer="uv"`` it is `uv pip install --python INTERPRETER --require-hashes --no-deps -r DEST`.
    `find_links`, `index_url` and `extra_args` (e.g. ``("--no-index",)``) say where the files come from, for
    both installers. Make and refresh lock files with scripts/lock.sh (`uv pip compile --universal
    --generate-hashes`).
    """

    lock: str
    dest: str
    venv: str | None = None
    python: str = "python3"
    installer: str = "pip"
    index_url: str | None = None
    find_links: str | None = None
    extra_args: tuple[str, ...] = ()
    uv_dir: str = UV_DIR

    def __post_init__(self) -> None:
        check_path(self, "dest")
        check_path(self, "venv", optional=True)
        check_path(self, "uv_dir")
        check_installer(self, self.installer)
        check_strings(self, "extra_args", "pip arguments", allow_empty=True)
        for name in ("index_url", "find_links"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value or value.startswith("-")):
                raise BadInput(f"pip.Locked: {name} {value!r} is not valid", "give a URL or path")
        if not isinstance(self.python, str) or not self.python or self.python.startswith("-"):
            raise BadInput(f"pip.Locked: python {self.python!r} is not valid", "give a program name or path")
        lock_requirements(self._text(), self.lock)

    def _text(self) -> str:
        try:
            with open(self.lock, encoding="utf-8") as fh:
                return fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"pip.Locked: cannot read the lock file {self.lock}: {exc}",
                           "fix the path, or make the lock with scripts/lock.sh") from None

    @property
    def interpreter(self) -> str:
        return f"{self.venv.rstrip('/')}/bin/python" if self.venv else self.python

    def plan(self, facts: Facts) -> Iterator[Command]:
        from vmlab.operations.files import plan_content

        text = self._text()
        options = index_options(self.index_url, self.find_links)
        fresh = bool(self.venv) and facts.get(FileStat(self.interpreter)) is None
        if fresh:
            yield from venv_commands(facts, self.installer, self.python, self.venv or "",
                                     fetch_options(options, self.extra_args), self.uv_dir)
        yield from plan_content(facts, self.dest, text.encode(), "0644", None, None)
        if not fresh:
            env = facts.get(PythonDists(self.interpreter))
            if all(satisfied(r, env) for r in lock_requirements(text, self.lock)):
                return
            yield from pip_into_venv(self.installer, self.venv, self.interpreter, env)
        args = (*options, *self.extra_args, "--require-hashes", "--no-deps", "-r", self.dest)
        yield from install_commands(facts, self.installer, self.interpreter, args,
                                    fetch_options(options, self.extra_args), self.uv_dir, new_venv=fresh)

    def fingerprint(self) -> str:
        import hashlib

        from vmlab.operations.uvtool import lock_text

        uv = f" uv={hashlib.sha256(lock_text()).hexdigest()}" if self.installer == "uv" else ""
        return f"{self!r} sha256={hashlib.sha256(self._text().encode()).hexdigest()}{uv}"


__all__ = ["Locked", "Packages", "PythonDists", "PythonEnv", "lock_requirements", "satisfied"]
