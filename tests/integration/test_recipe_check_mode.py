"""The lab recipes planned for real over SSH: `vmlab provision --check` against this machine through a real sshd.

Check mode only reads facts (os-release, dpkg, stat, read-only guards), so this is safe on the test machine,
and it is the one place the recipes' fact reads meet a real system. A CUDA version the release does not offer
is refused before anything runs, with exit 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vmlab.operations.nvidia import OFFERED

pytestmark = pytest.mark.sshd
RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def release_folder() -> str:
    values = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    return values.get("ID", "").strip('"') + values.get("VERSION_ID", "").strip('"').replace(".", "")


def vmlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmlab", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(RECIPES.parent)})


@pytest.fixture()
def inventory(tmp_path: Path, sshd) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(f"""
all:
  hosts:
    here:
      ansible_host: 127.0.0.1
      ansible_port: {sshd.port}
      ansible_user: {sshd.user}
      ansible_ssh_private_key_file: {sshd.client_key}
""")
    return path


def snapshot() -> dict[str, float]:
    """Modification times of what the CUDA recipe would change, to prove check mode changed none of it."""
    paths = [Path("/etc/apt/sources.list"), Path("/etc/profile.d"), *Path("/etc/apt/sources.list.d").glob("*")]
    return {str(p): p.stat().st_mtime for p in paths if p.exists()}


@pytest.mark.skipif(release_folder() not in OFFERED, reason="this machine's release has no CUDA repository")
def test_cuda_recipe_plans_over_ssh_and_changes_nothing(inventory: Path) -> None:
    before = snapshot()
    proc = vmlab("provision", str(RECIPES / "cuda.py"), "-i", str(inventory), "--check", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (host,) = json.loads(proc.stdout)["hosts"]
    steps = {s["name"]: s for s in host["steps"]}
    assert host["failed"] == 0 and host["check"]
    folder = release_folder()
    if steps["CUDA repository"]["status"] == "changed":  # not yet set up here (the usual case)
        assert any(f"/{folder}/" in c for c in steps["CUDA repository"]["commands"])
    assert steps["driver answers"]["status"] in ("skipped", "ok")
    assert snapshot() == before


@pytest.mark.skipif(release_folder() not in OFFERED, reason="this machine's release has no CUDA repository")
def test_cuda_version_not_offered_is_refused_with_exit_2(inventory: Path) -> None:
    proc = vmlab("provision", str(RECIPES / "cuda.py"), "-i", str(inventory), "-e", "cuda_version='10.0'",
                 "--json")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (host,) = json.loads(proc.stdout)["hosts"]
    assert host["refused"] and host["steps"] == []
    assert host["error"].startswith(f"cuda_version '10.0' is not offered for {release_folder()}")
    assert "-e cuda_version=" in host["error"]


def test_base_and_jupyterlab_plan_over_ssh(inventory: Path) -> None:
    """Every step plans; on a machine without systemd running (a container) the first step that asks systemd
    for a unit's state is the one allowed failure, and everything before it must have planned."""
    systemd = Path("/run/systemd/system").is_dir()
    for recipe in ("base.py", "jupyterlab.py"):
        proc = vmlab("provision", str(RECIPES / recipe), "-i", str(inventory), "--check", "--json")
        (host,) = json.loads(proc.stdout)["hosts"]
        failed = [s for s in host["steps"] if s["status"] == "failed"]
        if systemd:
            assert proc.returncode == 0 and failed == [], proc.stdout + proc.stderr
        else:
            assert len(failed) <= 1 and all("Failed to connect to bus" in s["error"] for s in failed), failed
        assert len([s for s in host["steps"] if s["status"] != "failed"]) >= 3


@pytest.mark.parametrize("recipe, assignment, message", [
    ("jupyterlab.py", "data_dir=../../etc", "data_dir '../../etc' is not a folder name"),
    ("jupyterhub.py", "hub_venv=/opt/hub x", "hub_venv '/opt/hub x' is not an absolute path"),
    ("conda.py", "conda_prefix=/opt/conda;id", "conda_prefix '/opt/conda;id' is not an absolute path"),
])
def test_a_bad_recipe_variable_exits_2_before_any_host_is_contacted(tmp_path: Path, recipe: str, assignment: str,
                                                                    message: str) -> None:
    """Nothing listens on the inventory's port: had the check let the value through, vmlab would have tried to
    connect and exited 1 (unreachable); the refusal comes first, as one line, exit 2."""
    from harness.emulators.sshd import free_port

    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(f"all:\n  hosts:\n    h:\n      ansible_host: 127.0.0.1\n      ansible_port: {free_port()}\n")
    proc = vmlab("provision", str(RECIPES / recipe), "-i", str(inventory), "-e", assignment)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
