"""jupyterhub-singleuser on a lab's loopback, authenticating against the hub: the `LabServer` that `vmlab up` starts
for vmlab.hub.LabSpawner instead of the recipe's token-only JupyterLab.

At each spawn the spawner's environment (JUPYTERHUB_API_TOKEN, JUPYTERHUB_USER, the OAuth client and scopes, ...)
goes into the root-only /etc/vmlab/singleuser.env, a unit runs `jupyterhub-singleuser` from the image's Jupyter
venv as the lab's user on 127.0.0.1:`port`, and the hub's API is reached from the lab through the spawner's SSH
tunnel (`ssh -R`): so JUPYTERHUB_API_URL and JUPYTERHUB_ACTIVITY_URL name the lab's end of that tunnel.

Every value is checked before it is written: names are plain names, the command a plain absolute path, each
environment value one line without quotes or backslashes (the file is systemd's EnvironmentFile format, values
in single quotes, read literally).

Example::

    server = SingleUserServer(env=spawner.get_env(), command="/opt/jupyter/bin/jupyterhub-singleuser",
                              port=8888, hub_port=8081, before_start=open_tunnel)
    up(provider, "intro-ml-ana", server=server)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

from vmlab import lab
from vmlab.engine.command import Command, sh
from vmlab.engine.host import Host
from vmlab.errors import BadInput
from vmlab.safetext import check_user, unsafe_char
from vmlab.state import LabRecord
from vmlab.workflows.labserver import Say, Stopwatch, conn_run

ENV_FILE = "/etc/vmlab/singleuser.env"
SERVICE = "vmlab-singleuser.service"
UNIT_PATH = "/etc/systemd/system/" + SERVICE
#: what the image needs: JupyterHub's single-user server in the Jupyter venv recipes/jupyterlab.py makes
DEFAULT_COMMAND = "/opt/jupyter/bin/jupyterhub-singleuser"
ENV_KEY = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")
ABS_PATH = re.compile(r"^(/[A-Za-z0-9._+-]+)+$")
#: the hub's URLs the lab must reach through the tunnel instead
HUB_URLS = ("JUPYTERHUB_API_URL", "JUPYTERHUB_ACTIVITY_URL")

UNIT = """\
[Unit]
Description=jupyterhub-singleuser (vmlab.hub) on 127.0.0.1:{port}
After=network.target
# no hub environment, no server: the file is written at each spawn and never baked
ConditionPathExists={env_file}

[Service]
User={user}
WorkingDirectory={root}
EnvironmentFile={env_file}
ExecStart={command} --ip=127.0.0.1 --port={port} --ServerApp.port_retries=0 --ServerApp.root_dir={root}{allow_root}
Restart=on-failure
RestartSec=2
"""
# $1: a file, $2: its mode; the content on stdin (the environment holds the hub's token: never on a command line)
WRITE_FILE = r"""
umask 077
mkdir -p "$(dirname "$1")"
cat > "$1.tmp" && chmod "$2" "$1.tmp" && mv -f "$1.tmp" "$1"
"""


def check_command(path: str) -> str:
    if not ABS_PATH.fullmatch(path) or "/../" in path + "/":
        raise BadInput(f"singleuser command {path!r} is not a plain absolute path",
                       f"set c.LabSpawner.singleuser_command to e.g. {DEFAULT_COMMAND}")
    return path


def env_text(env: Mapping[str, str]) -> str:
    """systemd EnvironmentFile lines, each value single-quoted (read literally); BadInput for a key or value that
    could end the quote or the line."""
    lines = []
    for key, value in sorted(env.items()):
        if not ENV_KEY.fullmatch(key):
            raise BadInput(f"environment name {key!r} is not a plain name",
                           "use A-Z, 0-9 and _ (c.Spawner.environment)")
        bad = unsafe_char(value, spaces=True) or next((repr(c) for c in value if c in "'\\"), None)
        if bad:
            raise BadInput(f"environment value of {key} contains {bad}",
                           "remove it from c.Spawner.environment (quotes, backslashes and line breaks are refused)")
        lines.append(f"{key}='{value}'\n")
    return "".join(lines)


def through_tunnel(url: str, port: int) -> str:
    """The hub's URL `url` as the lab reaches it: its own 127.0.0.1:`port`, the far end of the spawner's `-R`."""
    parts = urlsplit(url)
    return urlunsplit(("http", f"127.0.0.1:{port}", parts.path, parts.query, ""))


class SingleUserServer:
    """jupyterhub-singleuser as the lab's server. `env`: the spawner's environment; `hub_port`: where the hub's
    API is on the lab's loopback; `before_start(record)` runs just before the server starts (the spawner opens
    its tunnel there, so the server finds the hub at once)."""

    def __init__(self, env: Mapping[str, str], command: str, port: int, hub_port: int,
                 before_start: Callable[[LabRecord], None], data_dir: str = lab.DATA_DIR) -> None:
        self.port = port
        self.hub_port = hub_port
        self.command = check_command(command)
        self.before_start = before_start
        self.data_dir = data_dir
        service = env.get("JUPYTERHUB_SERVICE_PREFIX", "/")
        self.env = {**env, **{k: through_tunnel(env[k], hub_port) for k in HUB_URLS if env.get(k)},
                    "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}{service}"}
        self.env_lines = env_text(self.env)  # checked before anything is made

    def unit(self, user: str) -> tuple[str, str]:
        """(unit text, served folder) for the lab's login user."""
        user = check_user(user, "the lab's user")
        home = "/root" if user == "root" else f"/home/{user}"
        root = f"{home}/{self.data_dir}"
        text = UNIT.format(port=self.port, env_file=ENV_FILE, user=user, root=root, command=self.command,
                           allow_root=" --allow-root" if user == "root" else "")
        return text, root

    def prepare(self, conn: Host, record: LabRecord, watch: Stopwatch) -> None:
        text, root = self.unit(record.user)
        with watch.lap("token"):
            conn_run(conn, sh(WRITE_FILE, ENV_FILE, "0600", stdin=self.env_lines, label="write hub environment"))
            conn_run(conn, sh(WRITE_FILE, UNIT_PATH, "0644", stdin=text, label="write singleuser unit"))
            conn_run(conn, Command("install", "-d", "-o", record.user, "-g", record.user, "-m", "0755", root))
            conn_run(conn, Command("systemctl", "daemon-reload"))

    def start(self, conn: Host, record: LabRecord, watch: Stopwatch, say: Say) -> None:
        self.before_start(record)
        say("starting jupyterhub-singleuser on the lab")
        with watch.lap("jupyter_start"):
            conn_run(conn, Command("systemctl", "restart", SERVICE))
