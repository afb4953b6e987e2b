"""The lab recipes install with uv by default (pip when uv cannot be had or fails) and with plain pip on request
(`-e installer=pip`): their plans on a fresh host."""

from __future__ import annotations

from pathlib import Path

import pytest
from recipehost import DEBIAN_12, FreshHost, planned

from vmlab import lab
from vmlab.engine.loader import load_recipe
from vmlab.engine.runner import apply
from vmlab.errors import BadInput

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
FETCH = "install uv into /opt/vmlab/uv from its lock (if it cannot be, pip installs)"


def plan(name: str, variables: dict[str, object] | None = None) -> dict[str, tuple[str, ...]]:
    recipe = load_recipe(RECIPES / name)
    return planned(apply(recipe, FreshHost(DEBIAN_12), variables={"user": "lab", **(variables or {})}, check=True))


@pytest.mark.parametrize("name, step, python, args", [
    ("jupyterlab.py", "jupyterlab in a venv", "/opt/jupyter/bin/python",
     "--require-hashes --no-deps -r /opt/jupyter/requirements.lock"),
    ("agent.py", "agent dependencies, locked", f"{lab.AGENT_VENV}/bin/python",
     f"--require-hashes --no-deps -r {lab.AGENT_VENV}/requirements.lock"),
])
def test_uv_by_default_pip_on_request(name: str, step: str, python: str, args: str) -> None:
    """On a fresh host uv comes first, then makes the venv (no pip, no ensurepip) and installs; pip's plan is
    `python -m venv` and the venv's pip."""
    venv = python.removesuffix("/bin/python")
    fetch, make, lock, install = plan(name)[step]
    assert fetch == FETCH and make == f"uv venv {venv} from python3 (or python -m venv)"
    assert lock.startswith(f"write {venv}/requirements.lock")
    assert install == f"uv (or pip) for {python}: pip install {args}"
    make, _, install = plan(name, {"installer": "pip"})[step]
    assert make == f"python3 -m venv {venv}" and install == f"{python} -m pip install {args}"


def test_the_agent_wheel_goes_in_with_uv_too() -> None:
    installs = plan("agent.py")["vmlab"][-1]
    assert installs.startswith(f"uv (or pip) for {lab.AGENT_VENV}/bin/python: pip install --no-deps vmlab @ file://")
    recipe = load_recipe(RECIPES / "agent.py")
    recap = apply(recipe, FreshHost(DEBIAN_12), variables={"user": "lab"}, check=True)
    (handler,) = [r for r in recap.results if r.handler]
    assert handler.commands[-1].startswith(f"uv (or pip) for {lab.AGENT_VENV}/bin/python: pip install --no-deps "
                                           "--force-reinstall vmlab @ file://")


@pytest.mark.parametrize("name", ["jupyterlab.py", "agent.py", "lab.py"])
def test_an_unknown_installer_is_refused_before_any_host(name: str) -> None:
    with pytest.raises(BadInput, match="installer 'conda' is not uv or pip"):
        plan(name, {"installer": "conda"})
