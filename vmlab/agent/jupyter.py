"""The JupyterLab command `vmlab-agent run --jupyter` starts: never without authentication, never a secret on its
command line.

- `JUPYTERHUB_API_TOKEN` set (a JupyterHub spawner started the container): `jupyterhub-singleuser`, which
  authenticates through the hub (OAuth); the spawner's `JUPYTERHUB_SERVICE_URL` gives its address unless
  `--port`/`--ip` are given.
- else `jupyter-lab` with: a password hash made from `JUPYTERLAB_PW` (argon2, in a 0600 JSON config file passed
  by path), and/or the token `JUPYTER_TOKEN` from the environment (jupyter-server reads that variable itself);
  neither set: a fresh random token, which the caller prints once. A password alone still gets a random token
  nobody is shown, kept in a 0600 env file for the agent's own idle checks.

Readiness: `GET /api` answers 200 without authentication (`{"version": ...}`) and does not count as activity;
every other path needs the password or token (`/api/status` answers 403 without).

Example::

    launch = jupyter_command(env, state_dir, port=8888, ip="127.0.0.1", root_dir=Path("~/data").expanduser())
    subprocess.Popen(launch.argv, env={**env, **launch.env})
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vmlab import lab
from vmlab.agent.saladenv import write_private
from vmlab.errors import BadInput

READY_PATH = "/api"
CONFIG_FILE = "jupyter_server_config.json"
TOKEN_FILE = "jupyter.env"
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


@dataclass(frozen=True)
class JupyterLaunch:
    """The command, what to add to its environment, the token to print once (empty: none to show) and the env
    file holding the token for the idle watcher (None under a hub)."""

    argv: list[str]
    env: dict[str, str] = field(repr=False)
    show_token: str = field(repr=False, default="")
    token_file: Path | None = None
    url: str = ""


def check_ip(value: str) -> str:
    """A listen address: an IP literal (127.0.0.1, 0.0.0.0, ::, ::1 ...); BadInput otherwise."""
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        raise BadInput(f"--ip {value!r} is not an IP address", "use 127.0.0.1, 0.0.0.0 or ::") from None


def check_token(token: str) -> str:
    if len(token) < 16 or not set(token) <= _TOKEN_CHARS:
        raise BadInput("JUPYTER_TOKEN is shorter than 16 characters or has characters other than letters, "
                       "digits and -_.~", "use e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe())'`")
    return token


def hash_password(password: str) -> str:
    """Jupyter's argon2 form of `password` (`argon2:$argon2id$...`), which jupyter-server checks at login."""
    from argon2 import PasswordHasher

    return "argon2:" + PasswordHasher(memory_cost=10240, time_cost=10, parallelism=8).hash(password)


def _program(name: str, env: Mapping[str, str]) -> str:
    """`name` on the child's PATH (the lab's environment), else beside this Python, else in the JupyterLab venv a
    vmlab image has (a container platform starts the image with its own PATH); BadInput when missing."""
    candidates = [Path(sys.executable).parent / name, Path(lab.JUPYTER_VENV) / "bin" / name]
    found = shutil.which(name, path=env.get("PATH", os.defpath)) or next(
        (str(c) for c in candidates if os.access(c, os.X_OK)), None)
    if not found:
        raise BadInput(f"{name} is not installed", "install jupyterlab in the image (the jupyterlab recipe)")
    return found


def jupyter_command(env: Mapping[str, str], state_dir: Path, port: int | None, ip: str | None,
                    root_dir: Path) -> JupyterLaunch:
    """What to run (see the module docstring). `port`/`ip` None: 8888 and 127.0.0.1 (a hub's own address)."""
    ip = check_ip(ip) if ip else None
    if env.get("JUPYTERHUB_API_TOKEN"):
        argv = [_program("jupyterhub-singleuser", env)]
        if ip:
            argv.append(f"--ip={ip}")
        if port:
            argv.append(f"--port={port}")
        return JupyterLaunch(argv + [f"--ServerApp.root_dir={root_dir}"], {})
    ip, port = ip or "127.0.0.1", port or lab.PORT
    config: dict[str, dict[str, object]] = {"ServerApp": {"root_dir": str(root_dir), "port_retries": 0,
                                                           "open_browser": False}}
    password = env.get("JUPYTERLAB_PW", "")
    if password:
        config["PasswordIdentityProvider"] = {"hashed_password": hash_password(password),
                                              "allow_password_change": False}
    token = env.get("JUPYTER_TOKEN", "").strip()
    show = ""
    if token:
        check_token(token)
    else:
        token = secrets.token_urlsafe(32)
        show = "" if password else token
    config_file = state_dir / "jupyter" / CONFIG_FILE
    write_private(config_file, json.dumps(config))
    token_file = state_dir / "jupyter" / TOKEN_FILE
    write_private(token_file, f"JUPYTER_TOKEN={token}\n")
    argv = [_program("jupyter-lab", env), f"--config={config_file}", f"--ip={ip}", f"--port={port}", "--no-browser"]
    if os.geteuid() == 0:
        argv.append("--allow-root")  # containers (SaladCloud's included) often run as root
    host = f"[{ip}]" if ":" in ip else ip
    return JupyterLaunch(argv, {"JUPYTER_TOKEN": token}, show, token_file, f"http://{host}:{port}")
