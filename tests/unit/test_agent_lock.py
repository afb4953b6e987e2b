"""recipes/locks/agent.txt pins every runtime dependency of vmlab (pyproject's `dependencies` and the `agent`
extra) for Linux and Python 3.10-3.12, at a version the pyproject allows: a dependency added or bumped in
pyproject without `bash scripts/lock.sh` fails here, not on a lab."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from vmlab.operations.pip import lock_requirements

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "recipes" / "locks" / "agent.txt"
tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")


def direct_dependencies() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["agent"]]]


def linux(python: str, machine: str) -> dict[str, str]:
    return {**default_environment(), "python_version": python, "python_full_version": python + ".0",
            "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "platform_machine": machine,
            "implementation_name": "cpython", "platform_python_implementation": "CPython"}


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
@pytest.mark.parametrize("python", ["3.10", "3.11", "3.12"])
def test_every_dependency_is_pinned_in_the_agent_lock(python: str, machine: str) -> None:
    env = linux(python, machine)
    pins: dict[str, list[str]] = {}
    for line in lock_requirements(LOCK.read_text(), str(LOCK)):
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            (spec,) = req.specifier
            pins.setdefault(canonicalize_name(req.name), []).append(spec.version)
    deps = [d for d in direct_dependencies() if d.marker is None or d.marker.evaluate(env)]
    assert len(deps) >= 11  # pyproject was read: 8 dependencies and 3 of the agent extra
    for dep in deps:
        versions = pins.get(canonicalize_name(dep.name), [])
        assert len(versions) == 1, f"{dep.name}: pinned {versions} in {LOCK.name} for Python {python} on {machine}"
        assert dep.specifier.contains(versions[0], prereleases=True), \
            f"{dep.name}=={versions[0]} in {LOCK.name} does not satisfy pyproject's {dep}: run bash scripts/lock.sh"
