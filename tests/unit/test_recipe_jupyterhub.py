"""recipes/jupyterhub.py: the plan on a fresh host, the hub settings it writes (valid Python, loopback only, the
chosen authenticator, the listed users) and bad variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from recipehost import DEBIAN_12, UBUNTU_2404, FreshHost, planned

from vmlab.engine.loader import load_recipe
from vmlab.engine.runner import apply, prepare
from vmlab.errors import BadInput

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def hub(variables: dict[str, Any] | None = None, os_release: str = DEBIAN_12):
    return apply(load_recipe(RECIPES / "jupyterhub.py"), FreshHost(os_release),
                 variables={"user": "admin", **(variables or {})}, check=True, diff=True)


def written(recap, step: str) -> str:
    result = next(r for r in recap.results if r.name == step)
    return "".join(line[1:] + "\n" for line in (result.diff or "").splitlines()
                   if line.startswith("+") and not line.startswith("+++"))


def settings(variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the written jupyterhub_config.py the way JupyterHub does (with a `get_config()`), return what it set."""
    text = written(hub(variables), "hub settings")

    class Section(dict):
        def __getattr__(self, name: str) -> Any:
            return self.setdefault(name, Section())

        def __setattr__(self, name: str, value: Any) -> None:
            self[name] = value

    config = Section()
    exec(compile(text, "jupyterhub_config.py", "exec"), {"get_config": lambda: config})
    return config


def test_plan_on_a_fresh_host() -> None:
    plan = planned(hub(os_release=UBUNTU_2404))
    assert "node-configurable-http-proxy" in plan["python and the proxy"][0]
    assert plan["jupyterhub"][0] == "python3 -m venv /opt/jupyterhub"
    assert plan["jupyterhub at boot"] == ("systemctl enable jupyterhub.service", "systemctl start jupyterhub.service")
    assert "users and their data" in plan


@pytest.mark.parametrize("authenticator, cls", [
    ("native", "nativeauthenticator.NativeAuthenticator"),
    ("pam", "jupyterhub.auth.PAMAuthenticator"),
    ("oauth", "oauthenticator.generic.GenericOAuthenticator"),
])
def test_settings_bind_loopback_and_name_the_authenticator(authenticator: str, cls: str) -> None:
    c = settings({"hub_authenticator": authenticator, "hub_users": ["ana", "ben"], "hub_admins": ["ana"]})
    assert c["JupyterHub"]["bind_url"] == "http://127.0.0.1:8000"
    assert c["JupyterHub"]["hub_ip"] == "127.0.0.1"
    assert c["ConfigurableHTTPProxy"]["api_url"] == "http://127.0.0.1:8001"
    assert c["JupyterHub"]["authenticator_class"] == cls
    assert c["Authenticator"]["allowed_users"] == {"ana", "ben"}
    assert c["Authenticator"]["admin_users"] == {"ana"}
    assert c["Spawner"]["notebook_dir"] == "~/data"
    native = c.get("NativeAuthenticator", {})
    assert (native.get("enable_signup") is False) == (authenticator == "native")
    assert not native.get("open_signup")
    assert c["JupyterHub"]["services"][0]["command"][-1] == "--timeout=3600"


def test_native_accounts_are_made_before_the_hub_starts_and_only_for_native() -> None:
    recap = hub({"hub_users": ["ana", "ben"]})
    unit = written(recap, "jupyterhub unit")
    assert ("ExecStartPre=/opt/jupyterhub/bin/python /etc/jupyterhub/hub_accounts.py "
            "/var/lib/jupyterhub/jupyterhub.sqlite /etc/vmlab/hub-passwords.env ana ben") in unit
    assert "hub accounts script" in planned(recap)
    pam = hub({"hub_authenticator": "pam"})
    assert "ExecStartPre" not in written(pam, "jupyterhub unit")
    assert "hub accounts script" not in planned(pam)


def test_users_script_gets_its_values_as_arguments() -> None:
    (command,) = planned(hub({"hub_users": ["ana", "ben"], "data_dir": "work"}))["users and their data"]
    assert command.endswith(" sh work 'ana ben'") and "$2" in command


def test_unit_reads_the_oauth_settings_from_an_unbaked_file() -> None:
    unit = written(hub(), "jupyterhub unit")
    assert "EnvironmentFile=-/etc/vmlab/hub.env" in unit
    assert "ExecStart=/opt/jupyterhub/bin/jupyterhub -f /etc/jupyterhub/jupyterhub_config.py" in unit


@pytest.mark.parametrize("variables, message", [
    ({"hub_users": ["Ana Smith"]}, "hub_users ['Ana Smith'] is not a list of user names"),
    ({"hub_users": "ana"}, "hub_users 'ana' is not a list of user names"),
    ({"hub_users": ["ana"], "hub_admins": ["zoe"]}, "hub_admins ['zoe'] must list some of hub_users"),
    ({"hub_authenticator": "ldap"}, "hub_authenticator 'ldap' is not native, pam or oauth"),
    ({"hub_port": "8000x"}, "hub_port '8000x' is not a port number"),
])
def test_bad_variables_are_refused_before_any_host(variables: dict[str, Any], message: str) -> None:
    recipe = load_recipe(RECIPES / "jupyterhub.py")
    with pytest.raises(BadInput) as err:
        prepare(recipe, {**recipe.vars, "user": "admin", **variables})
    assert message in str(err.value) and "\n" not in str(err.value)


DOCKER = {"hub_spawner": "docker", "hub_users": ["ana", "ben"], "hub_admins": ["ana"],
          "hub_image": "registry.example.org:5000/class/lab:v1"}


def test_docker_mode_settings() -> None:
    c = settings({**DOCKER, "hub_shared_volume": "class-data", "hub_cpu_limit": 1.5, "hub_mem_limit": "2G",
                  "hub_gpus": 4, "hub_image_user": "1000:100", "hub_image_cmd": ["vmlab-agent", "run", "--jupyter"]})
    assert c["JupyterHub"]["spawner_class"] == "vmlab_hub_docker.LoopbackDockerSpawner"
    assert c["JupyterHub"]["bind_url"] == "http://127.0.0.1:8000" and c["JupyterHub"]["hub_ip"] == "127.0.0.1"
    docker = c["DockerSpawner"]
    assert docker["image"] == "registry.example.org:5000/class/lab:v1" and docker["pull_policy"] == "ifnotpresent"
    assert docker["cmd"] == ["vmlab-agent", "run", "--jupyter"]
    assert (docker["network_name"], docker["use_internal_ip"]) == ("host", True)
    assert docker["volumes"] == {"vmlab-hub-{username}": "/home/jovyan/data",
                                 "class-data": {"bind": "/home/jovyan/shared", "mode": "ro"}}
    assert docker["extra_create_kwargs"] == {"labels": {"vmlab:hub": "jupyterhub"}, "user": "1000:100"}
    assert (docker["cpu_limit"], docker["mem_limit"]) == (1.5, "2G")
    assert c["LoopbackDockerSpawner"]["gpus"] == 4 and c["JupyterHub"]["cleanup_servers"] is False
    assert (c["Spawner"]["start_timeout"], c["Spawner"]["http_timeout"]) == (300, 120)
    assert c["Spawner"]["notebook_dir"] == "/home/jovyan/data" and "cmd" not in c["Spawner"]
    assert c["Authenticator"]["allowed_users"] == {"ana", "ben"} and c["NativeAuthenticator"]["enable_signup"] is False
    assert c["JupyterHub"]["services"][0]["name"] == "idle-culler"


def test_docker_mode_defaults_set_no_limits_and_no_user() -> None:
    c = settings(DOCKER)
    assert "user" not in c["DockerSpawner"]["extra_create_kwargs"]
    assert "cpu_limit" not in c["DockerSpawner"] and "mem_limit" not in c["DockerSpawner"]
    assert c["DockerSpawner"]["volumes"] == {"vmlab-hub-{username}": "/home/jovyan/data"}
    assert c["LoopbackDockerSpawner"]["gpus"] == 0


def test_docker_mode_plan_has_the_engine_and_the_spawner_but_no_system_users() -> None:
    recap = hub(DOCKER)
    plan = planned(recap)
    assert "docker.io" in plan["docker engine"][0]
    assert "dockerspawner>=14,<15" in plan["dockerspawner"][-1]
    assert "docker spawner module" in plan and "users and their data" not in plan
    assert "Environment=PYTHONPATH=/etc/jupyterhub" in written(recap, "jupyterhub unit")
    local = planned(hub())
    assert "docker engine" not in local and "docker spawner module" not in local


@pytest.mark.parametrize("variables, message", [
    ({"hub_spawner": "kubernetes"}, "hub_spawner 'kubernetes' is not local or docker"),
    ({"hub_spawner": "docker"}, "hub_image '' is not an image reference"),
    ({**DOCKER, "hub_image": "lab\nc.JupyterHub.x = 1"}, "is not an image reference"),
    ({**DOCKER, "hub_image": "Lab:v1"}, "hub_image 'Lab:v1' is not an image reference"),
    ({**DOCKER, "hub_image_cmd": "jupyterhub-singleuser"}, "is not a command"),
    ({**DOCKER, "hub_image_cmd": ["jupyterhub-singleuser", "--x={username}"]}, "is not a command"),
    ({**DOCKER, "hub_image_user": "root; rm"}, "is not a user name or uid[:gid] of the image"),
    ({**DOCKER, "hub_image_home": "home/jovyan"}, "hub_image_home"),
    ({**DOCKER, "hub_image_pull": "sometimes"}, "is not ifnotpresent, always or never"),
    ({**DOCKER, "hub_shared_volume": "../etc"}, "is not a volume name"),
    ({**DOCKER, "hub_cpu_limit": "two"}, "is not a number of CPUs"),
    ({**DOCKER, "hub_cpu_limit": True}, "is not a number of CPUs"),
    ({**DOCKER, "hub_mem_limit": "2 GB"}, "is not a memory size"),
    ({**DOCKER, "hub_gpus": -1}, "is not the number of the host's GPUs"),
])
def test_bad_docker_variables_are_refused_before_any_host(variables: dict[str, Any], message: str) -> None:
    recipe = load_recipe(RECIPES / "jupyterhub.py")
    with pytest.raises(BadInput) as err:
        prepare(recipe, {**recipe.vars, "user": "admin", **variables})
    assert message in str(err.value) and "\n" not in str(err.value)
