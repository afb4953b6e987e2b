"""Python packages with pip, optionally in a virtual environment: Packages, and the fact it plans from.

Example::

    recipe.step("lab", pip.Packages(("jupyterlab>=4,<5", "ipywidgets"), venv="/opt/lab"))
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
    ``extra_args=("--break-system-packages",)`` if you mean it.
    """

    packages: tuple[str, ...]
    venv: str | None = None
    python: str = "python3"
    index_url: str | None = None
    find_links: str | None = None
    extra_args: tuple[str, ...] = ()

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

    def _install(self, requirements: list[str]) -> Command:
        options: list[str] = []
        if self.index_url:
            options += ["--index-url", self.index_url]
        if self.find_links:
            options += ["--find-links", self.find_links]
        return Command(self.interpreter, "-m", "pip", "install", *options, *self.extra_args, *requirements)

    def plan(self, facts: Facts) -> Iterator[Command]:
        wanted = list(dict.fromkeys(self.packages))
        if self.venv and facts.get(FileStat(self.interpreter)) is None:
            yield Command(self.python, "-m", "venv", self.venv)
            yield self._install(wanted)  # pip itself skips requirements whose markers exclude the host
            return
        env = facts.get(PythonDists(self.interpreter))
        missing = [r for r in wanted if not satisfied(r, env)]
        if missing:
            yield self._install(missing)


__all__ = ["Packages", "PythonDists", "PythonEnv", "satisfied"]
