"""recipes/jupyterlab.py: where JupyterLab goes (a venv, made from the conda Python with conda), what the unit
binds to, the settings file read by a real jupyter_server, the optional password hash and TensorBoard, and bad
variables refused early."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from recipehost import DEBIAN_12, UBUNTU_2404, FreshHost, planned, skipped

from vmlab import lab
from vmlab.engine.loader import load_recipe
from vmlab.engine.runner import apply, prepare
from vmlab.errors import BadInput

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
ARGON = "argon2:$argon2id$v=19$m=10240,t=10,p=8$AbCdEfGhIjKlMnOpQrStUv$0123456789abcdefABCDEFghijklmnopqrstuvwxyz+/"


def recap(variables: dict[str, object] | None = None, os_release: str = DEBIAN_12):
    recipe = load_recipe(RECIPES / "jupyterlab.py")
    # the pip plans (uv's, the default: test_recipe_installer.py)
    return apply(recipe, FreshHost(os_release), variables={"user": "lab", "installer": "pip", **(variables or {})},
                 check=True, diff=True)


def rendered(step_name: str, variables: dict[str, object] | None = None) -> str:
    """The text a file-writing step would write, from its --diff (every line is new on a fresh host)."""
    result = next(r for r in recap(variables).results if r.name == step_name)
    assert result.diff is not None
    return "".join(line[1:] + "\n" for line in result.diff.splitlines()
                   if line.startswith("+") and not line.startswith("+++"))


def test_venv_mode_on_a_fresh_host() -> None:
    plan = planned(recap())
    venv, lock, install = plan["jupyterlab in a venv"]
    assert venv == "python3 -m venv /opt/jupyter" and lock.startswith("write /opt/jupyter/requirements.lock (")
    assert install == ("/opt/jupyter/bin/python -m pip install --require-hashes --no-deps "
                       "-r /opt/jupyter/requirements.lock")
    assert "jupyterlab in a venv, unpinned" not in plan
    assert plan["jupyterlab at boot"] == (f"systemctl enable {lab.SERVICE}",)
    assert plan["settings folder"] == ("mkdir -p -m 0755 /opt/jupyter/etc/jupyter",)


def test_conda_mode_uses_a_venv_of_the_conda_python_never_the_conda_base() -> None:
    r = recap({"conda": True}, UBUNTU_2404)
    plan = planned(r)
    venv, _, install = plan["jupyterlab in a venv"]
    assert venv == "/opt/conda/bin/python -m venv /opt/jupyter"
    assert install == ("/opt/jupyter/bin/python -m pip install --require-hashes --no-deps "
                       "-r /opt/jupyter/requirements.lock")
    assert not [c for cmds in plan.values() for c in cmds if c.startswith("/opt/conda/bin/python -m pip")]
    assert "python venv support" in skipped(r)
    unit = rendered("jupyterlab unit", {"conda": True})
    assert "ExecStart=/opt/jupyter/bin/jupyter lab" in unit
    assert "Environment=JUPYTER_PATH=/opt/conda/share/jupyter\n" in unit  # where conda.py registers the kernels
    assert "Environment=PATH=/opt/jupyter/bin:/opt/conda/bin:/usr/local/bin" in unit
    assert "JUPYTER_PATH" not in rendered("jupyterlab unit")
    unpinned = planned(recap({"conda": True, "jupyterlab_lock": False}, UBUNTU_2404))
    assert unpinned["jupyterlab in a venv, unpinned"][0] == "/opt/conda/bin/python -m venv /opt/jupyter"


def test_unpinned_jupyterlab_only_when_asked() -> None:
    plan = planned(recap({"jupyterlab_lock": False, "jupyterlab_spec": "jupyterlab==4.2.5"}))
    assert plan["jupyterlab in a venv, unpinned"] == ("python3 -m venv /opt/jupyter",
                                                      "/opt/jupyter/bin/python -m pip install jupyterlab==4.2.5")
    assert "jupyterlab in a venv" not in plan
    with pytest.raises(BadInput, match="jupyterlab_spec 'jupyterlab==4.2.5' is not used while the lock pins"):
        recap({"jupyterlab_spec": "jupyterlab==4.2.5"})


def test_unit_binds_loopback_serves_data_and_needs_the_token_file() -> None:
    unit = rendered("jupyterlab unit")
    assert "--ip=127.0.0.1 --port=8888" in unit
    assert "--ServerApp.root_dir=/home/lab/data" in unit
    assert f"ConditionPathExists={lab.ENV_FILE}" in unit and f"EnvironmentFile={lab.ENV_FILE}" in unit
    assert "User=lab" in unit
    assert "JUPYTER_TOKEN=" not in unit  # the token is never part of the image


def _show_config(tmp_path: Path, settings: str) -> str:
    """What a real jupyter_server loads from a config folder holding the recipe's settings file."""
    (tmp_path / "jupyter_server_config.json").write_text(settings)
    env = {**os.environ, "JUPYTER_CONFIG_PATH": str(tmp_path), "JUPYTER_CONFIG_DIR": str(tmp_path / "user"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-m", "jupyter_server", "--show-config"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_settings_are_read_by_jupyter_server(tmp_path: Path) -> None:
    settings = rendered("culling and password", {"jupyter_cull_idle": 1800, "jupyter_password_hash": ARGON})
    data = json.loads(settings)
    assert data["PasswordIdentityProvider"]["hashed_password"] == ARGON
    shown = _show_config(tmp_path, settings)
    assert str(tmp_path / "jupyter_server_config.json") in shown
    assert ".cull_idle_timeout = 1800" in shown
    assert ".cull_inactive_timeout = 3600" in shown
    assert f".hashed_password = '{ARGON}'" in shown


def test_no_password_section_without_a_hash() -> None:
    data = json.loads(rendered("culling and password"))
    assert "PasswordIdentityProvider" not in data
    assert data["MappingKernelManager"]["cull_idle_timeout"] == 3600


@pytest.mark.parametrize("variables, message", [
    ({"jupyter_password_hash": "hunter2"}, "jupyter_password_hash is not a Jupyter password hash"),
    ({"jupyter_password_hash": "sha1:abc:xyz"}, "jupyter_password_hash is not a Jupyter password hash"),
    ({"jupyter_port": 80}, "jupyter_port 80 is not a port number"),
    ({"jupyter_cull_idle": "soon"}, "jupyter_cull_idle 'soon' is not a number of seconds"),
    ({"tensorboard": "yes"}, "tensorboard 'yes' is not true or false"),
    ({"hub_singleuser": "yes"}, "hub_singleuser 'yes' is not true or false"),
    ({"hub_singleuser": True, "hub_singleuser_spec": "--index-url=http://x jupyterhub"}, "hub_singleuser_spec"),
])
def test_bad_variables_are_refused_before_any_host(variables: dict[str, object], message: str) -> None:
    recipe = load_recipe(RECIPES / "jupyterlab.py")
    with pytest.raises(BadInput) as err:
        prepare(recipe, {**recipe.vars, "user": "lab", **variables})
    assert message in str(err.value) and "\n" not in str(err.value)
    assert err.value.hint


def test_sha1_hash_is_accepted() -> None:
    recipe = load_recipe(RECIPES / "jupyterlab.py")
    prepare(recipe, {**recipe.vars, "user": "lab",
                     "jupyter_password_hash": "sha1:0a1b2c3d4e5f:" + "0123456789abcdef0123456789abcdef01234567"})


def test_jupyterhub_singleuser_only_when_asked_in_the_same_venv() -> None:
    assert "jupyterhub-singleuser" not in planned(recap())
    plan = planned(recap({"hub_singleuser": True}))
    assert plan["jupyterhub-singleuser"] == ("/opt/jupyter/bin/python -m pip install 'jupyterhub>=5,<6'",)


def test_tensorboard_is_a_second_loopback_unit() -> None:
    assert not {k for k in planned(recap()) if "tensorboard" in k}
    plan = planned(recap({"tensorboard": True}))
    assert plan["tensorboard"] == ("/opt/jupyter/bin/python -m pip install tensorboard",)
    assert plan["tensorboard at boot"] == ("systemctl enable tensorboard.service",
                                           "systemctl start tensorboard.service")
    unit = rendered("tensorboard unit", {"tensorboard": True})
    assert "--host 127.0.0.1 --port 6006" in unit
    assert "--logdir /home/lab/data/runs" in unit


def test_conda_kernels_are_found_through_the_units_jupyter_path(tmp_path: Path) -> None:
    """A real jupyter_client, given the unit's JUPYTER_PATH, finds a kernel registered the way conda.py does
    (`ipykernel install --prefix CONDA_PREFIX`)."""
    unit = rendered("jupyterlab unit", {"conda": True, "conda_prefix": str(tmp_path / "conda")})
    jupyter_path = next(line.split("=", 2)[2] for line in unit.splitlines()
                        if line.startswith("Environment=JUPYTER_PATH="))
    kernel = tmp_path / "conda" / "share" / "jupyter" / "kernels" / "lab"
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({"argv": ["python", "-m", "ipykernel_launcher", "-f",
                                                             "{connection_file}"], "display_name": "Python (lab)",
                                                    "language": "python"}))
    env = {**os.environ, "JUPYTER_PATH": jupyter_path, "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-c", "from jupyter_client.kernelspec import KernelSpecManager as K; "
                           "print(K().find_kernel_specs()['lab'])"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(kernel)
