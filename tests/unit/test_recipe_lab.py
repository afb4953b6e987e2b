"""recipes/base.py and the default composite recipes/lab.py (with the e2e recipe that includes it), planned against
fresh hosts: what runs, what is skipped, and the variables refused before any host."""

from __future__ import annotations

from pathlib import Path

import pytest
from recipehost import DEBIAN_12, UBUNTU_2404, FreshHost, planned, skipped

from vmlab import lab
from vmlab.engine.loader import load_recipe
from vmlab.engine.runner import apply, prepare
from vmlab.errors import BadInput

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"


def test_base_on_a_fresh_host() -> None:
    recap = apply(load_recipe(RECIPES / "base.py"), FreshHost(DEBIAN_12), variables={"user": "admin"}, check=True)
    plan = planned(recap)
    assert list(plan)[0] == "unattended upgrades held off"  # before the first apt step
    assert plan["package lists"] == ("apt-get update",)
    assert plan["pending upgrades"][0].startswith("sh -c 'DEBIAN_FRONTEND=noninteractive apt-get -y")
    assert "chrony" in plan["everyday tools"][0] and "unattended-upgrades" in plan["everyday tools"][0]
    assert plan["time sync"] == ("systemctl enable chrony.service", "systemctl start chrony.service")
    assert plan["lab user"] == ("usermod --shell /bin/bash admin",)
    assert plan["data folder"] == ("mkdir -p -m 0755 /home/admin/data", "chown admin:admin /home/admin/data")
    names = list(plan)
    assert names[-2:] == ["apt-daily.timer enabled for the image", "apt-daily-upgrade.timer enabled for the image"]
    assert plan["apt-daily.timer enabled for the image"] == ("sh -c 'systemctl enable apt-daily.timer'",)


def test_base_without_upgrades() -> None:
    recap = apply(load_recipe(RECIPES / "base.py"), FreshHost(UBUNTU_2404), variables={"user": "ubuntu",
                                                                                      "upgrade": False}, check=True)
    assert "pending upgrades" in skipped(recap)


@pytest.mark.parametrize("variables, message", [
    ({"upgrade": "sometimes"}, "upgrade 'sometimes' is not true or false"),
    ({"data_dir": "../etc"}, "data_dir '../etc' is not a folder name"),
])
def test_base_refuses_bad_variables(variables: dict[str, object], message: str) -> None:
    recipe = load_recipe(RECIPES / "base.py")
    with pytest.raises(BadInput, match=message):
        prepare(recipe, {**recipe.vars, "user": "admin", **variables})


def _names(recap, prefix: str) -> set[str]:
    return {r.name for r in recap.results if r.name.startswith(prefix)}


def test_lab_defaults_on_an_ec2_ubuntu_builder() -> None:
    recap = apply(load_recipe(RECIPES / "lab.py"), FreshHost(UBUNTU_2404, cloud="Amazon EC2"),
                  variables={"user": "ubuntu"}, check=True)
    plan = planned(recap)
    assert "cuda: driver and toolkit" in plan and "conda: Miniforge" in plan
    assert plan["jupyterlab: jupyterlab in a venv"][1] == ("uv venv /opt/jupyter from /opt/conda/bin/python "
                                                           "(or python -m venv)")
    assert f"agent: {lab.SYNC_SERVICE}" in plan
    steps = [r.name for r in recap.results]
    # order: base, then cuda, conda, JupyterLab, agent
    assert steps.index("base: data folder") < steps.index("cuda: CUDA repository") < steps.index("conda: Miniforge")
    assert steps.index("conda: kernel lab") < steps.index("jupyterlab: jupyterlab in a venv")


def test_e2e_recipe_on_the_local_debian_vm() -> None:
    """What the e2e bake runs in QEMU (Debian 12, no GPU, PyPI and Debian only): no CUDA, no conda, a venv."""
    import sys

    sys.path.insert(0, str(RECIPES))  # as the e2e test's PYTHONPATH does
    try:
        recipe = load_recipe(ROOT / "tests" / "e2e" / "recipes" / "e2e_lab.py")
    finally:
        sys.path.remove(str(RECIPES))
    recap = apply(recipe, FreshHost(DEBIAN_12, cloud="QEMU"), variables={"user": "admin"}, check=True)
    plan = planned(recap)
    assert _names(recap, "lab: cuda: ") <= skipped(recap) and _names(recap, "lab: cuda: ")
    assert _names(recap, "lab: conda: ") <= skipped(recap) and _names(recap, "lab: conda: ")
    assert "lab: base: pending upgrades" in skipped(recap)
    assert plan["lab: jupyterlab: jupyterlab in a venv"][1] == "uv venv /opt/jupyter from python3 (or python -m venv)"
    assert "lab: agent: agent dependencies, locked" in plan and "lab: agent: vmlab" in plan
    for command in (c for commands in plan.values() for c in commands):
        assert "nvidia" not in command and "github.com" not in command  # the VM reaches PyPI and Debian only


def test_hold_guard_does_not_find_itself_but_finds_a_running_upgrade() -> None:
    """The guard is read-only (systemctl is-active, pgrep), so it runs here for real: the shell running it holds
    the pattern in its own command line, which must not count as an upgrade in progress."""
    import subprocess
    import sys

    sys.path.insert(0, str(RECIPES))
    try:
        import base
    finally:
        sys.path.remove(str(RECIPES))
    import time

    guard = ["sh", "-c", base.HELD]
    # unattended-upgrade-shutdown runs all the time where the package is installed: it is no upgrade
    waiter = subprocess.Popen(["bash", "-c", "exec -a '/usr/bin/python3 /usr/share/unattended-upgrades/"
                               "unattended-upgrade-shutdown --wait-for-signal' sleep 60"])
    try:
        while b"unattended-upgrade-shutdown" not in Path(f"/proc/{waiter.pid}/cmdline").read_bytes():
            time.sleep(0.01)  # until bash has exec'd under its new name
        idle = subprocess.run(guard, capture_output=True, timeout=30)
    finally:
        waiter.kill()
        waiter.wait()
    assert idle.returncode == 0, idle.stderr  # no timers running here (no systemd), no upgrade
    upgrade = subprocess.Popen(["bash", "-c", "exec -a /usr/bin/unattended-upgrade sleep 60"])
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(guard, capture_output=True, timeout=30).returncode == 0:
            assert time.monotonic() < deadline, "the guard never saw the running upgrade"
            time.sleep(0.1)
    finally:
        upgrade.kill()
        upgrade.wait()
