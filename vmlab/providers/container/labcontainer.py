"""A lab as a container (`vmlab up --provider container`): the image's agent runs JupyterLab
(`vmlab-agent run --jupyter`, PID 1, no systemd), published on this machine's 127.0.0.1 only, the data folder on
a named volume.

- Command: `/opt/vmlab-agent/bin/vmlab-agent run --jupyter --ip 0.0.0.0 --port 8888`. 0.0.0.0 is the
  container's own network namespace (slirp4netns: nothing else is in it); podman's port forwarder listens on
  `127.0.0.1:PORT` of this machine only (`-p 127.0.0.1:PORT:8888`). An image without the agent is refused: the
  agent is what guarantees the token, the restore and the final push.
- Secrets travel as `-e NAME` with the value in podman's environment, never on its command line: the token
  (JUPYTER_TOKEN), the sync URL (VMLAB_SYNC_URL; an Azure URL holds its SAS) and the storage credentials of this
  environment (AWS_*, AZURE_*; see STORAGE_ENV). podman keeps them in the container's configuration in vmlab's
  engine root (root only), as the VM providers keep the token in a root-only file on the VM.
- Data: the volume `vmlab-LAB-data` at /root/data, and the agent's state (manifest, journal, status) on the
  volume `vmlab-LAB-agent` (labvolumes.py says why), both labelled like the container; kept across stop/start
  and a hub's relaunch, removed with the container (`terminate`, i.e. `vmlab down`).
- Under a JupyterHub (vmlab.hub.LabSpawner, `LabLaunch.hub_env`): the hub's environment goes in as secrets the
  same way (no JUPYTER_TOKEN), the agent runs `jupyterhub-singleuser` (as root: `--allow-root`), and the hub's
  API on this machine's loopback is reached as 10.0.2.2 (slirp4netns `allow_host_loopback`: the server checks
  every visitor with the hub). That lets the lab reach anything on this machine's loopback, as DockerSpawner's
  host network does: keep nothing unauthenticated there (docs/hub.md).
- `VMLAB_CONTAINER_HOST_LOOPBACK=1` (tests with a store emulator on this machine's loopback only): the container
  may reach this machine's 127.0.0.1 as 10.0.2.2 (slirp4netns `allow_host_loopback`), and an AWS endpoint on
  127.0.0.1 or localhost is rewritten to it. Off by default: a lab must not reach the host's local services.

Example::

    argv, env = run_argv("lab", "localhost/vmlab/lab:ab12", 8890, LabLaunch(token), labels)
    engine.text(*argv, env=env)
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Mapping

from vmlab import lab
from vmlab.providers.capabilities import LabLaunch

AGENT = f"{lab.AGENT_VENV}/bin/vmlab-agent"
DATA = "/root/" + lab.DATA_DIR
INSIDE_PORT = lab.PORT
#: the lab's JupyterLab and conda come first on its PATH (recipes/jupyterlab.py, recipes/conda.py)
PATH = "/opt/jupyter/bin:/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: this environment's storage credentials a lab's agent gets (each only when set here)
STORAGE_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
               "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AZURE_STORAGE_CONNECTION_STRING",
               "AZURE_BLOB_SAS_TOKEN", "AWS_MAX_ATTEMPTS")
HOST_LOOPBACK_ENV = "VMLAB_CONTAINER_HOST_LOOPBACK"
#: label holding the published port: marks a lab container (no systemd) and tells `describe` where it answers
PORT_LABEL = "vmlab:lab-port"
VOLUME_LABEL = "vmlab:volume"
AGENT_VOLUME_LABEL = "vmlab:agent-volume"
_LOOPBACK_URL = re.compile(r"^(https?://)(127\.0\.0\.1|localhost)([:/]|$)")
#: this machine's loopback as a container sees it (slirp4netns with allow_host_loopback)
HOST_FROM_CONTAINER = "10.0.2.2"
#: the hub's URLs the server must reach from inside its container
HUB_URLS = ("JUPYTERHUB_API_URL", "JUPYTERHUB_ACTIVITY_URL")


#: ports handed out lately (port -> until when, monotonic): podman binds a port a moment after it is chosen, so
#: launches running at once in this process (a hub starting many labs) must not be given the same one
_CLAIMED: dict[int, float] = {}
_CLAIM_LOCK = threading.Lock()
CLAIM_SECONDS = 120.0


def free_port(start: int = 8890, tries: int = 200) -> int:
    """A port nothing listens on at 127.0.0.1 (podman's forwarder binds it a moment later) and that this process
    did not hand out in the last CLAIM_SECONDS."""
    import socket

    from vmlab.errors import HostError

    with _CLAIM_LOCK:
        now = time.monotonic()
        for port in range(start, start + tries):
            if _CLAIMED.get(port, 0.0) > now:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _CLAIMED[port] = now + CLAIM_SECONDS
            return port
    raise HostError(f"no free port on 127.0.0.1 in {start}-{start + tries - 1}", "stop a lab or a tunnel")


def volume_name(lab_name: str) -> str:
    return f"vmlab-{lab_name}-data"


def agent_volume_name(lab_name: str) -> str:
    return f"vmlab-{lab_name}-agent"


def host_loopback(environ: Mapping[str, str]) -> bool:
    return environ.get(HOST_LOOPBACK_ENV) == "1"


def plain_env(launch: LabLaunch) -> dict[str, str]:
    """The lab container's variables that are no secret (on podman's command line as NAME=VALUE)."""
    return {"VMLAB_DATA_DIR": DATA, "VMLAB_AGENT_STATE_DIR": lab.AGENT_STATE_DIR,
            "VMLAB_IDLE_MINUTES": f"{launch.idle_minutes:g}", "VMLAB_MAX_HOURS": f"{launch.max_hours:g}",
            "PATH": PATH}


def from_container(url: str) -> str:
    """`url` with this machine's loopback host replaced by the address a container reaches it at."""
    return _LOOPBACK_URL.sub(rf"\g<1>{HOST_FROM_CONTAINER}\g<3>", url)


def hub_env(launch: LabLaunch) -> dict[str, str]:
    """The hub's environment for a server in the container: its URLs as the container reaches them, and its own
    address (the container's port, under the prefix the hub gave)."""
    env = {**launch.hub_env, **{k: from_container(launch.hub_env[k]) for k in HUB_URLS if launch.hub_env.get(k)}}
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    return {**env, "JUPYTERHUB_SERVICE_URL": f"http://0.0.0.0:{INSIDE_PORT}{prefix}"}


def secret_env(launch: LabLaunch, environ: Mapping[str, str]) -> dict[str, str]:
    """The lab container's token (or the hub's environment), sync URL and storage variables (passed by name: see
    the module docstring)."""
    env = hub_env(launch) if launch.hub_env else {"JUPYTER_TOKEN": launch.token}
    if launch.sync_url:
        env.update(store_env(launch.sync_url, environ))
    return env


def store_env(sync_url: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The agent's sync URL and this environment's storage variables (an AWS endpoint on this machine's loopback
    rewritten when the tests' switch allows it)."""
    env = {"VMLAB_SYNC_URL": sync_url, **{name: environ[name] for name in STORAGE_ENV if environ.get(name)}}
    if host_loopback(environ):
        for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            if name in env:
                env[name] = from_container(env[name])
    return env


def reaches_host(launch: LabLaunch, environ: Mapping[str, str]) -> bool:
    """Whether the container may reach this machine's loopback: a hub's API there, or the tests' switch."""
    hub_local = any(_LOOPBACK_URL.match(launch.hub_env.get(k, "")) for k in HUB_URLS)
    return hub_local or host_loopback(environ)


def run_argv(name: str, image: str, port: int, launch: LabLaunch, labels: Mapping[str, str],
             stop_timeout: int) -> tuple[list[str], dict[str, str]]:
    """`podman run` words, and the variables to add to podman's environment (the values of the `-e NAME` words)."""
    env = secret_env(launch, os.environ)
    network = "slirp4netns:allow_host_loopback=true" if reaches_host(launch, os.environ) else "slirp4netns"
    argv = ["run", "-d", "--pull", "never", "--name", name, "--hostname", name[:63], "--network", network,
            "-p", f"127.0.0.1:{port}:{INSIDE_PORT}", "-v", f"{volume_name(name)}:{DATA}",
            "-v", f"{agent_volume_name(name)}:{lab.AGENT_STATE_DIR}",
            "--stop-signal", "SIGTERM", "--stop-timeout", str(stop_timeout), "--systemd", "false",
            *(arg for key, value in plain_env(launch).items() for arg in ("-e", f"{key}={value}")),
            *(arg for key in sorted(env) for arg in ("-e", key)),
            *(arg for k, v in {**labels, PORT_LABEL: str(port), VOLUME_LABEL: volume_name(name),
                                             AGENT_VOLUME_LABEL: agent_volume_name(name)}.items()
              for arg in ("--label", f"{k}={v}")),
            "--entrypoint", AGENT, image, "run", "--jupyter", "--ip", "0.0.0.0", "--port", str(INSIDE_PORT),
            *(("--", "--allow-root") if launch.hub_env else ())]
    return argv, env
