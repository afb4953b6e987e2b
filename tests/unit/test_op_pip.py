"""pip.Packages: plans from the interpreter's installed distributions, bad arguments, the real fact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from planning import apply_locally, argvs, plan, read_fact

from vmlab.engine.command import RunResult
from vmlab.engine.facts import FileStat, PathInfo
from vmlab.errors import BadInput
from vmlab.operations.pip import DISTS_SCRIPT, Packages, PythonDists, PythonEnv, satisfied
from vmlab.operations.uvtool import FETCH_UV, UV_VENV

MARKERS = {"python_version": "3.11", "sys_platform": "linux", "platform_machine": "x86_64",
           "python_full_version": "3.11.7", "implementation_name": "cpython", "os_name": "posix"}
ENV = PythonEnv(dists={"jupyterlab": "4.1.5", "typing-extensions": "4.10.0", "torch": "2.3.1+cu121",
                       "notebook": "7.2.0rc1", "pip": "24.0"}, markers=MARKERS)
VPY = "/opt/lab/bin/python"
LINK = PathInfo("link", "0777", "root", "root", 7)


@pytest.mark.parametrize("requirement, met", [
    ("jupyterlab", True),
    ("JupyterLab>=4,<5", True),
    ("jupyterlab>=4.2", False),
    ("typing_extensions==4.10.0", True),
    ("Typing.Extensions~=4.10", True),
    ("torch==2.3.1", True),  # local version labels match a plain pin
    ("torch==2.3.1+cu118", False),
    ("notebook>=7.1", True),  # an installed pre-release counts
    ("ipywidgets", False),
    ("jupyterlab[test]>=4", True),
    ("pywin32; sys_platform == 'win32'", True),  # not for this host
    ("ipywidgets; python_version >= '3.8'", False),
    ("jupyterlab @ https://example.org/jupyterlab-4.1.5-py3-none-any.whl", True),
])
def test_satisfied(requirement, met) -> None:
    assert satisfied(requirement, ENV) is met


@pytest.mark.parametrize("op, facts, expected", [
    (Packages(("jupyterlab>=4", "typing_extensions")), {PythonDists("python3"): ENV}, []),
    (Packages(("jupyterlab>=4.2", "ipywidgets", "pip")), {PythonDists("python3"): ENV},
     [("python3", "-m", "pip", "install", "jupyterlab>=4.2", "ipywidgets")]),
    (Packages(("ipywidgets",), python="/usr/bin/python3.11", index_url="https://pypi.example/simple",
              find_links="/srv/wheels", extra_args=("--no-cache-dir",)),
     {PythonDists("/usr/bin/python3.11"): ENV},
     [("/usr/bin/python3.11", "-m", "pip", "install", "--index-url", "https://pypi.example/simple",
       "--find-links", "/srv/wheels", "--no-cache-dir", "ipywidgets")]),
    (Packages(("jupyterlab",), venv="/opt/lab/"), {FileStat(VPY): LINK, PythonDists(VPY): ENV}, []),
    (Packages(["ipywidgets"], venv="/opt/lab"), {FileStat(VPY): LINK, PythonDists(VPY): ENV},
     [(VPY, "-m", "pip", "install", "ipywidgets")]),
    (Packages(("jupyterlab", "pywin32; sys_platform == 'win32'"), venv="/opt/lab"), {FileStat(VPY): None},
     [("python3", "-m", "venv", "/opt/lab"),
      (VPY, "-m", "pip", "install", "jupyterlab", "pywin32; sys_platform == 'win32'")]),
])
def test_packages_plans(op, facts, expected) -> None:
    assert argvs(op, facts) == expected


@pytest.mark.parametrize("make, message", [
    (lambda: Packages(()), "packages is empty"),
    (lambda: Packages("jupyterlab"), "must be a tuple"),
    (lambda: Packages(("jupyterlab>=>4",)), "is not a PEP 508 requirement"),
    (lambda: Packages(("-r requirements.txt",)), "is not a PEP 508 requirement"),
    (lambda: Packages(("x",), venv="venv"), "is not an absolute path"),
    (lambda: Packages(("x",), python=""), "python '' is not valid"),
    (lambda: Packages(("x",), index_url="--pre"), "index_url '--pre' is not valid"),
    (lambda: Packages(("x",), extra_args="--pre"), "must be a tuple"),
])
def test_bad_arguments(make, message) -> None:
    with pytest.raises(BadInput, match=message):
        make()


def test_fact_parses_the_scripts_json() -> None:
    out = '{"dists": {"pip": "24.0"}, "env": {"python_version": "3.12"}}\n'
    assert PythonDists("python3").parse(RunResult(0, out, "")) == PythonEnv({"pip": "24.0"},
                                                                           {"python_version": "3.12"})
    assert PythonDists("python3").command().argv == ("python3", "-c", DISTS_SCRIPT)


def test_fact_reads_this_interpreter() -> None:
    env = read_fact(PythonDists(sys.executable))
    assert "packaging" in env.dists and "pytest" in env.dists
    assert env.markers["python_version"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    import packaging

    assert satisfied(f"packaging=={packaging.__version__}", env)
    assert satisfied("Packaging>=20", env) and not satisfied("packaging<1", env)


def test_venv_created_then_nothing_to_do(tmp_path: Path) -> None:
    """Real run under tmp_path: make a venv, "install" pip (already there: no network), then plan nothing."""
    venv = str(tmp_path / "venv")
    op = Packages(("pip",), venv=venv, python=sys.executable, extra_args=("--no-index",))
    first = apply_locally(op)
    vpy = f"{venv}/bin/python"
    assert [c.argv[:3] for c in first] == [(sys.executable, "-m", "venv"), (vpy, "-m", "pip")]
    assert apply_locally(op) == []
    facts = {FileStat(vpy): LINK, PythonDists(vpy): read_fact(PythonDists(vpy))}
    assert argvs(Packages(("pip>=999",), venv=venv), facts) == [(vpy, "-m", "pip", "install", "pip>=999")]


# ---- installer="uv" -----------------------------------------------------------------------------------------

UV = "/opt/vmlab/uv/bin/uv"
UV_LOCK_ON_HOST = "/opt/vmlab/uv/requirements.lock"


def _uv_facts(ready: bool) -> dict[object, object]:
    """uv's two facts: installed from the current lock (ready), or never installed."""
    import hashlib

    from vmlab.operations.uvtool import lock_text

    if not ready:
        return {FileStat(UV): None, FileStat(UV_LOCK_ON_HOST): None}
    lock = PathInfo("file", "0644", "root", "root", len(lock_text()), hashlib.sha256(lock_text()).hexdigest())
    return {FileStat(UV): PathInfo("file", "0755", "root", "root", 1), FileStat(UV_LOCK_ON_HOST): lock}


def _uv_install(*args: str) -> tuple[str, ...]:
    """The planned install with uv there: the uv-then-pip script, the interpreter, uv, then pip's arguments."""
    from vmlab.operations.uvtool import UV_OR_PIP

    return ("sh", "-c", UV_OR_PIP, "sh", VPY, UV, *args)


@pytest.mark.parametrize("op, facts, expected", [
    # nothing missing: no install, and uv's facts are not even read
    (Packages(("jupyterlab",), venv="/opt/lab", installer="uv"), {FileStat(VPY): LINK, PythonDists(VPY): ENV}, []),
    # uv installed from the current lock: one uv command, same arguments pip would get
    (Packages(("ipywidgets",), venv="/opt/lab", installer="uv", find_links="/srv/w", extra_args=("--no-index",)),
     {FileStat(VPY): LINK, PythonDists(VPY): ENV, **_uv_facts(True)},
     [_uv_install("--find-links", "/srv/w", "--no-index", "ipywidgets")]),
    # fresh venv, uv there: uv makes the venv too (no pip in it; python -m venv if uv fails)
    (Packages(("jupyterlab",), venv="/opt/lab", installer="uv"), {FileStat(VPY): None, **_uv_facts(True)},
     [("sh", "-c", UV_VENV, "sh", UV, "python3", "/opt/lab"), _uv_install("jupyterlab")]),
    # fresh venv, uv not yet on the host: uv first (with python3's pip or the wheel it ships), then the same
    (Packages(("jupyterlab",), venv="/opt/lab", installer="uv", extra_args=("--no-index",)),
     {FileStat(VPY): None, **_uv_facts(False)},
     [("sh", "-c", FETCH_UV, "sh", "/opt/vmlab/uv", UV_LOCK_ON_HOST, "python3", "--no-index"),
      ("sh", "-c", UV_VENV, "sh", UV, "python3", "/opt/lab"), _uv_install("--no-index", "jupyterlab")]),
    # fresh venv, pip: python -m venv whether or not uv is there
    (Packages(("jupyterlab",), venv="/opt/lab", installer="pip", python="/opt/conda/bin/python"),
     {FileStat(VPY): None}, [("/opt/conda/bin/python", "-m", "venv", "/opt/lab"), (VPY, "-m", "pip", "install",
                                                                                   "jupyterlab")]),
    # a reinstall installs again whatever is there, without asking what is
    (Packages(("vmlab @ file:///w/vmlab.whl",), venv="/opt/lab", installer="uv", extra_args=("--no-deps",),
              reinstall=True), {FileStat(VPY): LINK, **_uv_facts(True)},
     [_uv_install("--no-deps", "--force-reinstall", "vmlab @ file:///w/vmlab.whl")]),
    (Packages(("six",), venv="/opt/lab", reinstall=True), {FileStat(VPY): LINK},
     [(VPY, "-m", "pip", "install", "--force-reinstall", "six")]),
    # opting out: plain pip, no uv fact read
    (Packages(("ipywidgets",), venv="/opt/lab", installer="pip"), {FileStat(VPY): LINK, PythonDists(VPY): ENV},
     [(VPY, "-m", "pip", "install", "ipywidgets")]),
])
def test_uv_plans(op, facts, expected) -> None:
    assert argvs(op, facts) == expected


def test_uv_missing_is_fetched_from_its_lock_with_pip_as_the_fallback() -> None:
    from vmlab.operations.uvtool import FETCH_UV, UV_OR_PIP, lock_text

    op = Packages(("ipywidgets",), venv="/opt/lab", installer="uv", index_url="https://m.example/simple",
                  extra_args=("--no-index", "--no-deps"))
    fetch, install = plan(op, {FileStat(VPY): LINK, PythonDists(VPY): ENV, **_uv_facts(False)})
    # uv from the same index the packages come from, its lock on stdin (written only once uv is in)
    assert fetch.argv == ("sh", "-c", FETCH_UV, "sh", "/opt/vmlab/uv", UV_LOCK_ON_HOST, VPY,
                          "--index-url", "https://m.example/simple", "--no-index")
    assert fetch.stdin == lock_text() and b"uv==" in fetch.stdin and b"--hash=sha256:" in fetch.stdin
    assert install.argv == ("sh", "-c", UV_OR_PIP, "sh", VPY, UV, "--index-url", "https://m.example/simple",
                            "--no-index", "--no-deps", "ipywidgets")


def test_uv_lock_pins_one_version_with_hashes() -> None:
    from vmlab.operations.pip import lock_requirements
    from vmlab.operations.uvtool import LOCK

    (pin,) = lock_requirements(LOCK.read_text(), str(LOCK))
    assert pin.startswith("uv==")


def test_fallback_script_runs_pip_when_uv_cannot_be_installed(tmp_path: Path) -> None:
    """The two scripts for real, with no network: uv is not in an empty --find-links folder, so the fetch
    reports it and keeps no lock, and the install runs plain pip (`pip` is already in this venv: a no-op)."""
    import subprocess

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    vpy = str(venv / "bin" / "python")
    (tmp_path / "empty").mkdir()
    uv_dir = str(tmp_path / "uv")
    op = Packages(("pip>=1",), venv=str(venv), installer="uv", uv_dir=uv_dir, find_links=str(tmp_path / "empty"),
                  extra_args=("--no-index",))
    facts = {FileStat(vpy): LINK, PythonDists(vpy): PythonEnv({}, MARKERS),
             FileStat(f"{uv_dir}/bin/uv"): None, FileStat(f"{uv_dir}/requirements.lock"): None}
    fetch, install = plan(op, facts)
    got = [subprocess.run(c.argv, input=c.stdin, capture_output=True, timeout=300)
           for c in (fetch, install)]
    assert got[0].returncode == 0 and b"plain pip installs instead" in got[0].stderr
    assert not Path(uv_dir, "requirements.lock").exists() and not Path(uv_dir, "bin", "uv").exists()
    assert got[1].returncode == 0, got[1].stderr
    assert b"Requirement already satisfied: pip" in got[1].stdout  # pip's words, not uv's


def test_a_failing_uv_hands_the_same_install_to_pip(tmp_path: Path) -> None:
    """The uv-then-pip script for real: a uv that fails (as one that cannot reach an index only pip.conf names)
    is followed by pip with the same arguments; a uv that works is the only installer run."""
    import subprocess

    from vmlab.operations.uvtool import UV_OR_PIP

    log = tmp_path / "log"
    fake_python = tmp_path / "python"
    fake_python.write_text(f'#!/bin/sh\necho "pip $*" >> {log}\n')
    for name, rc in (("failing-uv", 1), ("working-uv", 0)):
        uv = tmp_path / name
        uv.write_text(f'#!/bin/sh\necho "uv $*" >> {log}\nexit {rc}\n')
    for path in (fake_python, tmp_path / "failing-uv", tmp_path / "working-uv"):
        path.chmod(0o755)
    failed = subprocess.run(["sh", "-c", UV_OR_PIP, "sh", str(fake_python), str(tmp_path / "failing-uv"), "-r", "l"],
                            capture_output=True, text=True, timeout=30)
    assert failed.returncode == 0 and "plain pip tries the same install" in failed.stderr
    assert log.read_text().splitlines() == [  # pip is there (the fake answers), so ensurepip does not run
        f"uv pip install --python {fake_python} --compile-bytecode --system-certs -r l", "pip -m pip --version",
        "pip -m pip install -r l"]
    log.unlink()
    worked = subprocess.run(["sh", "-c", UV_OR_PIP, "sh", str(fake_python), str(tmp_path / "working-uv"), "x"],
                            capture_output=True, text=True, timeout=30)
    assert worked.returncode == 0 and log.read_text().splitlines() == [
        f"uv pip install --python {fake_python} --compile-bytecode --system-certs x"]


def test_pip_fallback_puts_pip_into_a_venv_uv_made_without_it(tmp_path: Path) -> None:
    """A venv without pip (as `uv venv` makes them): when uv fails, the script first puts pip in from the copy
    Python ships (ensurepip, no network), then pip runs the install."""
    import subprocess

    from vmlab.operations.uvtool import UV_OR_PIP

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    vpy = str(venv / "bin" / "python")
    assert subprocess.run([vpy, "-m", "pip", "--version"], capture_output=True, timeout=60).returncode != 0
    failing_uv = tmp_path / "uv"
    failing_uv.write_text("#!/bin/sh\nexit 2\n")
    failing_uv.chmod(0o755)
    done = subprocess.run(["sh", "-c", UV_OR_PIP, "sh", vpy, str(failing_uv), "--no-index", "pip"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Requirement already satisfied: pip" in done.stdout  # pip's own words: ensurepip put it in


def test_venv_script_uses_uv_and_falls_back_to_python_venv(tmp_path: Path) -> None:
    """The venv script for real with stand-ins: a working uv alone makes the venv, with only the given Python
    and no settings of its own; a failing (or missing) uv hands over to `python -m venv`."""
    import subprocess

    log = tmp_path / "log"
    fake_python = tmp_path / "python"
    fake_python.write_text(f'#!/bin/sh\necho "python $*" >> {log}\n')
    for name, rc in (("failing-uv", 1), ("working-uv", 0)):
        (tmp_path / name).write_text(f'#!/bin/sh\necho "uv $*" >> {log}\nexit {rc}\n')
    for path in (fake_python, tmp_path / "failing-uv", tmp_path / "working-uv"):
        path.chmod(0o755)
    uv_line = (f"uv venv --quiet --allow-existing --python {fake_python} --no-managed-python --no-python-downloads "
               "--no-project --no-config /v")
    for uv, expected in (("working-uv", [uv_line]), ("failing-uv", [uv_line, "python -m venv /v"]),
                         ("missing-uv", ["python -m venv /v"])):
        done = subprocess.run(["sh", "-c", UV_VENV, "sh", str(tmp_path / uv), str(fake_python), "/v"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and log.read_text().splitlines() == expected, (uv, done.stderr)
        assert ("python -m venv makes the venv" in done.stderr) == (uv == "failing-uv")
        log.unlink()


@pytest.mark.parametrize("make, message", [
    (lambda: Packages(("x",), installer="conda"), "installer 'conda' is not uv or pip"),
    (lambda: Packages(("x",), reinstall="yes"), "reinstall 'yes' is not true or false"),
    (lambda: Packages(("x",), installer="uv", uv_dir="opt/uv"), "is not an absolute path"),
])
def test_bad_installer(make, message) -> None:
    with pytest.raises(BadInput, match=message):
        make()


def test_locked_with_uv(tmp_path: Path) -> None:
    """pip.Locked plans the same lock and the same hash-checked install, with uv; nothing when all is there."""
    import hashlib

    from test_op_pip_lock import SIX

    from vmlab.operations.pip import Locked

    lock = tmp_path / "lock.txt"
    lock.write_text(SIX)
    op = Locked(str(lock), dest="/opt/lab/requirements.lock", venv="/opt/lab", installer="uv")
    same = PathInfo("file", "0644", "root", "root", len(SIX), hashlib.sha256(SIX.encode()).hexdigest())
    facts = {FileStat(VPY): LINK, FileStat("/opt/lab/requirements.lock"): same, **_uv_facts(True)}
    assert argvs(op, {**facts, PythonDists(VPY): PythonEnv({"six": "1.17.0"}, MARKERS)}) == []
    assert argvs(op, {**facts, PythonDists(VPY): PythonEnv({"six": "1.16.0"}, MARKERS)}) == [
        _uv_install("--require-hashes", "--no-deps", "-r", "/opt/lab/requirements.lock")]
    assert "uv=" in op.fingerprint() and "uv=" not in Locked(str(lock), dest="/opt/l.lock").fingerprint()


def test_plain_pip_into_a_venv_uv_made_puts_pip_in_first(tmp_path: Path) -> None:
    """A venv uv made has no pip: with installer="pip" (`-e installer=pip` on a host an earlier bake made with uv),
    pip comes in first from the copy Python ships (offline), and then installs."""
    facts = {FileStat(VPY): LINK, PythonDists(VPY): PythonEnv({}, MARKERS)}
    assert argvs(Packages(("six",), venv="/opt/lab"), facts) == [(VPY, "-m", "ensurepip", "--default-pip"),
                                                                   (VPY, "-m", "pip", "install", "six")]
    with_pip = {FileStat(VPY): LINK, PythonDists(VPY): PythonEnv({"pip": "24.0"}, MARKERS)}
    assert argvs(Packages(("six",), venv="/opt/lab"), with_pip) == [(VPY, "-m", "pip", "install", "six")]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    vpy = str(venv / "bin" / "python")
    (ensure,) = plan(Packages(("six",), venv=str(venv)), {FileStat(vpy): LINK,
                                                          PythonDists(vpy): PythonEnv({}, MARKERS)})[:1]
    assert subprocess.run([vpy, "-m", "pip", "--version"], capture_output=True).returncode != 0
    subprocess.run(ensure.argv, check=True, capture_output=True, timeout=300)
    assert subprocess.run([vpy, "-m", "pip", "--version"], capture_output=True).returncode == 0
