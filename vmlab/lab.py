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
