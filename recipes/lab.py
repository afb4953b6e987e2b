"""The default lab: JupyterLab in its own virtualenv, run by systemd on the VM's loopback only.

`vmlab bake` uses this recipe when none is given; `vmlab up` then writes a fresh token into a root-only file
(`/etc/vmlab/jupyter.env`, never baked) and starts the service. Reach it with `vmlab tunnel`.

    vmlab bake recipes/lab.py --provider local
    vmlab provision recipes/lab.py -i inventory.yaml -e user=ubuntu

Variables: `user` (who runs JupyterLab; default: the SSH user), `jupyter_venv`, `jupyterlab_spec`.
"""

from vmlab import lab
from vmlab.engine import Recipe
from vmlab.operations import apt, files, pip, systemd, users

UNIT = """\
[Unit]
Description=JupyterLab (vmlab) on 127.0.0.1:{{ jupyter_port }}
After=network.target
# no token, no lab: the token file is written by `vmlab up` and is never part of an image
ConditionPathExists={{ env_file }}

[Service]
User={{ user }}
WorkingDirectory=/home/{{ user }}/{{ data_dir }}
# jupyter_server reads JUPYTER_TOKEN from the environment, so the token never shows in `ps`
EnvironmentFile={{ env_file }}
ExecStart={{ jupyter_venv }}/bin/jupyter lab --no-browser --ip=127.0.0.1 --port={{ jupyter_port }} \\
  --ServerApp.root_dir=/home/{{ user }}/{{ data_dir }}
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
"""

recipe = Recipe("lab", become=True, vars={
    "jupyter_venv": "/opt/jupyter",
    "jupyterlab_spec": "jupyterlab>=4,<5",
    "jupyter_port": lab.PORT,
    "env_file": lab.ENV_FILE,
    "data_dir": lab.DATA_DIR,
})
recipe.step("package lists", apt.UpdateCache(max_age=24 * 3600))
recipe.step("python venv support", apt.Packages(("python3-venv", "ca-certificates")))
recipe.step("lab user", users.User("{{ user }}", shell="/bin/bash"))
recipe.step("data folder", files.Directory("/home/{{ user }}/{{ data_dir }}", mode="0755", owner="{{ user }}",
                                           group="{{ user }}"))
recipe.step("jupyterlab", pip.Packages(("{{ jupyterlab_spec }}",), venv="{{ jupyter_venv }}"))
recipe.step("token folder", files.Directory("/etc/vmlab", mode="0700", owner="root", group="root"))
recipe.step("jupyterlab unit", systemd.Unit(lab.SERVICE, content=UNIT), notify="restart jupyterlab")
recipe.step("jupyterlab at boot", systemd.Service(lab.SERVICE, enabled=True))
recipe.handler("restart jupyterlab", systemd.Service(lab.SERVICE, restarted=True))
