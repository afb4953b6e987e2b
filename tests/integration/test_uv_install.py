"""installer="uv" for real over a real sshd: uv comes from its hash-pinned lock, installs a small local wheel
into a venv with --require-hashes and no index (--no-index --find-links), a second run plans nothing, the next
operation uses the uv already there, and a wrong hash stops uv."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness.emulators.sshd import SSHD
from vmlab.engine import Recipe
from vmlab.engine.runner import apply
from vmlab.operations import pip
from vmlab.operations.uvtool import LOCK
from vmlab.transport.ssh import SSHConnection

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(600)]


def tiny_wheel(folder: Path, name: str, version: str = "1.0") -> Path:
    """A pure-Python wheel made by hand (no build tool, no network): module NAME with VERSION."""
    info = f"{name}-{version}.dist-info"
    files = {f"{name}.py": f"VERSION = {version!r}\n".encode(),
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: vmlab-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for path, data in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for arc, data in files.items():
            zf.writestr(zipfile.ZipInfo(arc, (2020, 1, 1, 0, 0, 0)), data)
    return path


def hashed_lock(wheel: Path, pin: str) -> str:
    return f"{pin} \\\n    --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}\n"


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The locked uv wheel for this machine (fetched once by pip, checked against uv's lock) and two tiny wheels."""
    folder = tmp_path_factory.mktemp("wheels")
    done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                           "--require-hashes", "-r", str(LOCK), "-d", str(folder)], capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        pytest.skip(f"the locked uv wheel could not be fetched from PyPI: {done.stderr.strip()[-200:]}")
    tiny_wheel(folder, "vmlabtiny")
    tiny_wheel(folder, "vmlabtwo")
    return folder


def test_uv_installs_a_locked_local_wheel_then_plans_nothing(sshd: SSHD, tmp_path: Path, wheelhouse: Path) -> None:
    lock = tmp_path / "tiny.txt"
    lock.write_text(hashed_lock(wheelhouse / "vmlabtiny-1.0-py3-none-any.whl", "vmlabtiny==1.0"))
    venv, uv_dir = tmp_path / "venv", tmp_path / "uv"
    where = {"installer": "uv", "uv_dir": str(uv_dir), "find_links": str(wheelhouse), "extra_args": ("--no-index",)}
    recipe = Recipe("uv")
    recipe.step("locked", pip.Locked(str(lock), dest=f"{venv}/requirements.lock", venv=str(venv),
                                     python=sys.executable, **where))  # type: ignore[arg-type]
    recipe.step("another", pip.Packages(("vmlabtwo==1.0",), venv=str(venv), **where))  # type: ignore[arg-type]
    # a second venv, in a folder that already holds something (the agent recipe's wheel folder, say)
    other = tmp_path / "other"
    (other / "wheels").mkdir(parents=True)
    (other / "wheels" / "keep.txt").write_text("kept\n")
    recipe.step("other venv", pip.Packages(("vmlabtwo==1.0",), venv=str(other), python=sys.executable,
                                           **where))  # type: ignore[arg-type]
    with SSHConnection(sshd.target()) as conn:
        first = apply(recipe, conn)
        assert first.success and first.changed == 3, [(r.name, r.error) for r in first.results]
        locked, another, second_venv = first.results
        # uv fetched from its lock first, then it makes the venv and installs
        assert [c.split(" ")[0] for c in locked.commands[:2]] == ["install", "uv"], locked.commands
        assert another.commands == (f"uv (or pip) for {venv}/bin/python: pip install --find-links {wheelhouse} "
                                    "--no-index vmlabtwo==1.0",)  # uv there: no fetch
        assert second_venv.commands[0] == f"uv venv {other} from {sys.executable} (or python -m venv)"
        second = apply(recipe, conn)
        assert second.success and second.changed == 0
    assert (uv_dir / "requirements.lock").read_bytes() == LOCK.read_bytes()
    for folder in (venv, other):  # uv made both venvs (python -m venv writes no uv line), without pip
        assert "\nuv = " in (folder / "pyvenv.cfg").read_text()
        assert not list((folder / "lib").glob("python3*/site-packages/pip"))
    assert (other / "wheels" / "keep.txt").read_text() == "kept\n"
    for name in ("vmlabtiny", "vmlabtwo"):  # uv, not pip, put them there; and byte-compiled them
        (info,) = (venv / "lib").glob(f"python3*/site-packages/{name}-1.0.dist-info")
        assert (info / "INSTALLER").read_text().strip() == "uv"
        assert list((info.parent / "__pycache__").glob(f"{name}.*.pyc"))
    out = subprocess.run([venv / "bin" / "python", "-c", "import vmlabtiny, vmlabtwo; print(vmlabtiny.VERSION)"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "1.0"


def test_uv_refuses_a_wrong_hash(sshd: SSHD, tmp_path: Path, wheelhouse: Path) -> None:
    lock = tmp_path / "tiny.txt"
    lock.write_text("vmlabtiny==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    venv = tmp_path / "venv"
    recipe = Recipe("uv")
    recipe.step("locked", pip.Locked(str(lock), dest=f"{venv}/requirements.lock", venv=str(venv),
                                     python=sys.executable, installer="uv", uv_dir=str(tmp_path / "uv"),
                                     find_links=str(wheelhouse), extra_args=("--no-index",)))
    with SSHConnection(sshd.target()) as conn:
        recap = apply(recipe, conn)
    assert not recap.success
    (result,) = recap.results
    assert result.status == "failed" and "hash" in (result.error or "").lower()
    assert not list((venv / "lib").glob("python3*/site-packages/vmlabtiny*"))
