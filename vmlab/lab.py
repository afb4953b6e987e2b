"""The contract between the lab recipes and `vmlab up`/`vmlab tunnel`: where the token goes, which unit runs
JupyterLab, and on which loopback port. Recipes import these names instead of repeating the strings."""

from __future__ import annotations

#: root-only environment file holding JUPYTER_TOKEN; written at every `up`, never baked into an image
ENV_FILE = "/etc/vmlab/jupyter.env"
#: systemd unit that runs JupyterLab (bound to 127.0.0.1 only)
SERVICE = "jupyterlab.service"
#: JupyterLab's port on the VM's loopback
PORT = 8888
#: the folder JupyterLab serves, under the default user's home
DATA_DIR = "data"

# ---- the on-VM agent (vmlab-agent): units the lab recipe installs, files `vmlab up` writes ------------------
#: root-only environment file read by the agent units; written by `vmlab up` at every launch, never baked.
#: Keys: VMLAB_SYNC_URL (s3://, az://, https://ACCOUNT.blob.core.windows.net/..., gs://),
#: VMLAB_IDLE_MINUTES (0 = off), VMLAB_MAX_HOURS (0 = off), VMLAB_DEADLINE (unix time of the hard stop), and the
#: storage credentials a backend needs (AZURE_BLOB_SAS_TOKEN, GOOGLE_APPLICATION_CREDENTIALS, ...). The data folder is
#: not there: the units set VMLAB_DATA_DIR to the recipe's folder, and EnvironmentFile= would override it
AGENT_ENV_FILE = "/etc/vmlab/agent.env"
#: where the agent keeps its manifest, queue and status (status.json: pending files/bytes, last error)
AGENT_STATE_DIR = "/var/lib/vmlab-agent"
AGENT_STATUS_FILE = AGENT_STATE_DIR + "/status.json"
#: the agent's own virtualenv on the VM (the recipe installs vmlab's wheel there)
AGENT_VENV = "/opt/vmlab-agent"
#: JupyterLab's own venv in a vmlab image (recipes/jupyterlab.py `jupyter_venv`)
JUPYTER_VENV = "/opt/jupyter"
#: oneshot restore of the data folder, ordered before JupyterLab
RESTORE_SERVICE = "vmlab-restore.service"
#: the sync daemon (`vmlab-agent sync`), SIGTERM flushes pending uploads
SYNC_SERVICE = "vmlab-sync.service"
#: the idle / hard-time-limit watcher (`vmlab-agent idle`)
IDLE_SERVICE = "vmlab-idle.service"
