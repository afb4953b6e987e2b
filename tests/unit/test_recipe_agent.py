"""recipes/agent.py: vmlab's own wheel (reproducible, installable by pip), the install plan, and the three units
(checked by systemd's own parser where `systemd-analyze` exists)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from recipehost import DEBIAN_12, FreshHost, planned

from vmlab import lab
from vmlab.engine.loader import load_recipe
from vmlab.engine.runner import apply
from vmlab.operations.ownwheel import OwnWheel, wheel_bytes, wheel_name

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_wheel_is_reproducible_and_complete(tmp_path: Path) -> None:
    name, data = wheel_bytes()
    wheel_bytes.cache_clear()
    assert wheel_bytes() == (name, data)  # packed again: the same bytes
    assert name == wheel_name() and name.startswith("vmlab-") and name.endswith("-py3-none-any.whl")
    path = tmp_path / name
    path.write_bytes(data)
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(f"{info}/METADATA").decode()
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
    assert {"vmlab/__init__.py", "vmlab/agent/cli.py", "vmlab/lab.py"} <= names
    assert not any("__pycache__" in n for n in names)
    assert "Provides-Extra: agent" in metadata and "watchdog" in metadata
    assert "vmlab-agent = vmlab.agent.cli:main" in entry_points


def test_pip_installs_the_wheel(tmp_path: Path) -> None:
    """pip itself (no network: --no-deps) accepts the wheel and lays out the package and the console script."""
    name, data = wheel_bytes()
    wheel = tmp_path / name
    wheel.write_bytes(data)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target",
                           str(tmp_path / "t"), str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "t" / "vmlab" / "agent" / "cli.py").is_file()
    assert (tmp_path / "t" / "bin" / "vmlab-agent").is_file()
    check = subprocess.run([sys.executable, "-c", "import vmlab.lab, sys; print(vmlab.lab.__file__)"],
                           cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "t")}, capture_output=True, text=True)
    assert check.stdout.startswith(str(tmp_path / "t"))


def agent_recap():
    # the pip plans (uv's, the default: test_recipe_installer.py)
    return apply(load_recipe(RECIPES / "agent.py"), FreshHost(DEBIAN_12), variables={"user": "lab", "installer": "pip"},
                 check=True, diff=True)


def unit_text(recap, unit: str) -> str:
    result = next(r for r in recap.results if r.name == unit)
    return "".join(line[1:] + "\n" for line in (result.diff or "").splitlines()
                   if line.startswith("+") and not line.startswith("+++"))


def test_install_plan_uploads_the_wheel_into_the_agent_venv() -> None:
    recap = agent_recap()
    plan = planned(recap)
    wheel = f"{lab.AGENT_VENV}/wheels/{wheel_name()}"
    assert plan["vmlab wheel"][0].startswith(f"write {wheel} (")
    venv, lock, install = plan["agent dependencies, locked"]
    assert venv == f"python3 -m venv {lab.AGENT_VENV}"
    assert lock.startswith(f"write {lab.AGENT_VENV}/requirements.lock (")
    assert install == (f"{lab.AGENT_VENV}/bin/python -m pip install --require-hashes --no-deps "
                       f"-r {lab.AGENT_VENV}/requirements.lock")
    assert plan["vmlab"][-1] == f"{lab.AGENT_VENV}/bin/python -m pip install --no-deps 'vmlab @ file://{wheel}'"
    assert plan["agent state"] == (f"mkdir -p -m 0755 {lab.AGENT_STATE_DIR}", f"chown lab:lab {lab.AGENT_STATE_DIR}")
    handlers = [r for r in recap.results if r.handler]
    assert [h.name for h in handlers] == ["reinstall the agent"]
    # with the recipe's installer (a venv uv made has no pip), forced: same version, new code
    assert handlers[0].commands[-1] == (f"{lab.AGENT_VENV}/bin/python -m pip install --no-deps --force-reinstall "
                                        f"'vmlab @ file://{wheel}'")
    for unit in (lab.RESTORE_SERVICE, lab.SYNC_SERVICE, lab.IDLE_SERVICE):
        assert plan[f"{unit} at boot"] == (f"systemctl enable {unit}",)


def test_units_say_what_the_agent_contract_says() -> None:
    recap = agent_recap()
    restore, sync, idle = (unit_text(recap, u) for u in (lab.RESTORE_SERVICE, lab.SYNC_SERVICE, lab.IDLE_SERVICE))
    agent = f"{lab.AGENT_VENV}/bin/vmlab-agent"
    for text in (restore, sync, idle):
        assert f"EnvironmentFile=-{lab.AGENT_ENV_FILE}" in text
        assert "Environment=VMLAB_DATA_DIR=/home/lab/data" in text
    assert f"ExecStart={agent} restore" in restore
    assert "Type=oneshot" in restore and "RemainAfterExit=yes" in restore and f"Before={lab.SERVICE}" in restore
    assert f"ExecStart={agent} sync" in sync and "TimeoutStopSec=120" in sync and "User=lab" in sync
    assert f"After=network-online.target {lab.RESTORE_SERVICE}" in sync
    assert f"ExecStart={agent} idle" in idle and "User=" not in idle  # root: it powers the VM off


def test_wheel_operation_uploads_only_changed_bytes() -> None:
    import hashlib

    from vmlab.engine.facts import FactCache, Facts, FileStat, PathInfo

    name, data = wheel_bytes()
    op = OwnWheel("/opt/w/")
    fresh = list(op.plan(Facts(FactCache(FreshHost(DEBIAN_12)), True)))
    assert len(fresh) == 1 and fresh[0].stdin == data and fresh[0].argv[4] == f"/opt/w/{name}"
    there = PathInfo("file", "0644", "root", "root", len(data), hashlib.sha256(data).hexdigest())
    from planning import plan

    assert plan(op, {FileStat(f"/opt/w/{name}"): there}) == []
    assert hashlib.sha256(data).hexdigest() in op.fingerprint()


def test_loading_the_recipe_writes_nothing_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VMLAB_STATE_DIR", str(tmp_path / "state"))
    load_recipe(RECIPES / "lab.py").digest()
    assert not (tmp_path / "cache").exists() and not (tmp_path / "state").exists()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    recap = agent_recap()
    lab_recap = apply(load_recipe(RECIPES / "jupyterlab.py"), FreshHost(DEBIAN_12),
                      variables={"user": "lab", "tensorboard": True}, check=True, diff=True)
    texts = {u: unit_text(recap, u) for u in (lab.RESTORE_SERVICE, lab.SYNC_SERVICE, lab.IDLE_SERVICE)}
    texts[lab.SERVICE] = unit_text(lab_recap, "jupyterlab unit")
    texts["tensorboard.service"] = unit_text(lab_recap, "tensorboard unit")
    for name, text in texts.items():
        # the programs are not on this machine: point ExecStart at one that is, keep everything else
        lines = ["ExecStart=/bin/true" if line.startswith("ExecStart=") else line
                 for line in text.replace("\\\n", "").splitlines()]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    done = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / n) for n in texts)], capture_output=True,
                          text=True, timeout=60)
    problems = [line for line in done.stderr.splitlines() if str(tmp_path) in line]
    assert problems == [], done.stderr
