"""pip.Locked: a lock file's packages (exact versions, hashes) installed with --require-hashes: the plans, the
lock parser refusing anything unpinned or unhashed, and the shipped locks (a real install: tests/integration/
test_pip_lock_install.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from planning import argvs

from vmlab.engine.facts import FileStat, PathInfo
from vmlab.errors import BadInput
from vmlab.operations.pip import Locked, PythonDists, PythonEnv, lock_requirements

LOCKS = Path(__file__).resolve().parents[2] / "recipes" / "locks"
MARKERS = {"python_version": "3.11", "python_full_version": "3.11.7", "sys_platform": "linux",
           "platform_machine": "x86_64", "implementation_name": "cpython", "os_name": "posix"}
SIX = ("six==1.17.0 \\\n"
       "    --hash=sha256:4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274 \\\n"
       "    --hash=sha256:ff70335d468e7eb6ec65b95b99d3a2836546063f63acc5171de367e834932a81\n"
       "    # via python-dateutil\n")
LOCK = ("# made by scripts/lock.sh\n" + SIX
        + "pywin32==306 ; sys_platform == 'win32' \\\n    --hash=sha256:" + "a" * 64 + "\n")
VPY = "/opt/lab/bin/python"
FILE = PathInfo("file", "0755", "root", "root", 10)


def test_parser_keeps_markers_and_refuses_what_is_not_pinned_and_hashed() -> None:
    assert lock_requirements(LOCK) == ["six==1.17.0", "pywin32==306 ; sys_platform == 'win32'"]
    for text in ("six>=1.16 --hash=sha256:" + "a" * 64, "six==1.17.0\n", "--index-url http://evil\n", "",
                 "six @ https://example.org/six.whl --hash=sha256:" + "a" * 64):
        with pytest.raises(BadInput, match="regenerate"):
            lock_requirements(text)


@pytest.mark.parametrize("name, must_pin", [("agent.txt", ["boto3", "paramiko", "watchdog", "azure-storage-blob",
                                                           "google-cloud-storage"]),
                                             ("jupyterlab.txt", ["jupyterlab", "jupyter-server", "tornado"])])
def test_shipped_locks_pin_everything_with_hashes(name: str, must_pin: list[str]) -> None:
    from packaging.requirements import Requirement

    pinned = {Requirement(r).name.lower() for r in lock_requirements((LOCKS / name).read_text())}
    assert set(must_pin) <= pinned
    assert "vmlab" not in pinned  # the agent's own wheel comes from the running code, installed after


def _op(tmp_path: Path, text: str = LOCK) -> Locked:
    path = tmp_path / "lock.txt"
    path.write_text(text)
    return Locked(str(path), dest="/opt/lab/requirements.lock", venv="/opt/lab")


def test_plans(tmp_path: Path) -> None:
    import hashlib

    op = _op(tmp_path)
    install = (VPY, "-m", "pip", "install", "--require-hashes", "--no-deps", "-r", "/opt/lab/requirements.lock")
    same = PathInfo("file", "0644", "root", "root", len(LOCK), hashlib.sha256(LOCK.encode()).hexdigest())
    fresh = argvs(op, {FileStat(VPY): None, FileStat("/opt/lab/requirements.lock"): None})
    assert fresh[0] == ("python3", "-m", "venv", "/opt/lab") and fresh[-1] == install and len(fresh) == 3
    facts = {FileStat(VPY): FILE, FileStat("/opt/lab/requirements.lock"): same}
    assert argvs(op, {**facts, PythonDists(VPY): PythonEnv({"six": "1.17.0"}, MARKERS)}) == []  # pywin32: not here
    assert argvs(op, {**facts, PythonDists(VPY): PythonEnv({"six": "1.16.0", "pip": "24.0"}, MARKERS)}) == [install]
    # a venv uv made has no pip: plain pip is put in first (from the copy Python ships), then installs
    assert argvs(op, {**facts, PythonDists(VPY): PythonEnv({"six": "1.16.0"}, MARKERS)}) == [
        (VPY, "-m", "ensurepip", "--default-pip"), install]
    before = op.fingerprint()
    _op(tmp_path, SIX)  # the same file, new content
    assert op.fingerprint() != before  # a new lock is a new recipe digest


def test_unreadable_or_bad_lock_is_refused_when_the_recipe_loads(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot read the lock file"):
        Locked(str(tmp_path / "missing.txt"), dest="/opt/lab/requirements.lock")
    with pytest.raises(BadInput, match="six is not pinned with == and hashes"):
        _op(tmp_path, "six>=1\n")
