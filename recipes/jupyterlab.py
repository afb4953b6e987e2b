"""JupyterLab as a systemd service on the VM's loopback (127.0.0.1:8888), serving `~/data`.

    vmlab provision recipes/jupyterlab.py -i inventory.yaml -e user=ubuntu
    hash=$(python -c 'from jupyter_server.auth import passwd; print(passwd())')   # asks for the password
    vmlab bake recipes/lab.py -e jupyter_password_hash="$hash"

It always goes into its own virtualenv (`jupyter_venv`), never into the conda base, whose own packages
(requests, certifi, packaging, ...) conda itself needs: with `conda` true (recipes/conda.py ran first) the venv
is made from the conda base's Python, the conda environments' kernels are found through `JUPYTER_PATH` and
`conda` is on the lab's PATH. The token is never baked: `vmlab up` writes a fresh one into the root-only
`/etc/vmlab/jupyter.env` at every launch, and the unit does not start without that file. Reach the lab with
`vmlab tunnel`.
The lab never phones home unasked: no news feed, no "get notified about official Jupyter news?" pop-up and no
update check (a user can turn them on in Settings > Notifications).

Variables (each checked before any host is touched: names are plain names, paths plain absolute paths):
- `user` (who runs JupyterLab; default: the SSH user), `data_dir` (`data`: the folder it serves).
- `conda` (false here, true in lab.py), `conda_prefix`, `jupyter_venv` (/opt/jupyter).
- `jupyterlab_lock` (true): install JupyterLab and everything it needs from `locks/jupyterlab.txt` (exact
  versions and sha256 hashes, `pip install --require-hashes`; refresh it with `bash scripts/lock.sh`); false:
  `jupyterlab_spec` (`jupyterlab>=4,<5`) from PyPI, unpinned.
- `jupyter_password_hash`: a hash from `jupyter_server.auth.passwd()` (argon2 or sha1) to also allow a
  password login; the hash, never the password, is written into the image.
- `jupyter_cull_idle` / `jupyter_cull_terminals`: seconds after which idle kernels / terminals are stopped
  (0: never), so an idle lab really is idle for the agent's idle stop.
- `tensorboard` (false): a second unit, TensorBoard on 127.0.0.1:`tensorboard_port` (6006) over
  `~/data/{{ tensorboard_logdir }}`; reach it with `vmlab tunnel --extra 6006`. TensorBoard has no login of
  its own: anyone with a shell on the VM can read it. It is not in the lock: pip installs the newest
  TensorBoard (and what it needs) into the locked venv, so such an image is not reproducible.
- `hub_singleuser` (false): also JupyterHub's single-user server (`hub_singleuser_spec`, `jupyterhub>=5,<6`, the
  hub's major version) in the same venv, so a class image can serve `vmlab.hub.LabSpawner`
  (`/opt/jupyter/bin/jupyterhub-singleuser`, docs/hub.md). Like TensorBoard it is not in the lock: pip installs
  the newest match into the locked venv.
"""

import re
from pathlib import Path

from vmlab import lab
from vmlab.engine import Recipe, varcheck
from vmlab.errors import BadInput
from vmlab.operations import apt, files, pip, systemd

recipe = Recipe("jupyterlab", become=True, vars={
    "data_dir": lab.DATA_DIR,
    "conda": False,
    "conda_prefix": "/opt/conda",
    "jupyter_venv": "/opt/jupyter",
    "jupyterlab_spec": "jupyterlab>=4,<5",
    "jupyterlab_lock": True,
    "installer": "uv",
    "jupyter_port": lab.PORT,
    "env_file": lab.ENV_FILE,
    "jupyter_password_hash": "",
    "jupyter_cull_idle": 3600,
    "jupyter_cull_terminals": 3600,
    "tensorboard": False,
    "tensorboard_port": 6006,
    "tensorboard_logdir": "runs",
    "hub_singleuser": False,
    "hub_singleuser_spec": "jupyterhub>=5,<6",
})

#: exact versions and hashes of JupyterLab and its dependencies (made by scripts/lock.sh from locks/jupyterlab.in)
LOCK = str(Path(__file__).resolve().parent / "locks" / "jupyterlab.txt")
#: where JupyterLab lives: always its own venv (a template: variables hold no templates themselves)
HOME = "{{ jupyter_venv }}"
#: the Python the venv is made from: the conda base's (so it has the lab's Python version), else the system's
VENV_PYTHON = "{{ (conda_prefix ~ '/bin/python') if conda else 'python3' }}"
# what jupyter_server.auth.passwd() returns: argon2 (jupyter_server 2) or the older salted sha1
PASSWORD_HASH = re.compile(r"argon2:\$argon2id?\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+"
                           r"|sha1:[0-9a-f]+:[0-9a-f]{40}")


@recipe.check
def _variables(v):
    varcheck.user_name(v, "user")
    varcheck.folder_name(v, "data_dir")
    varcheck.relative_path(v, "tensorboard_logdir")
    for name in ("conda_prefix", "jupyter_venv", "env_file"):
        varcheck.abs_path(v, name, example=recipe.vars[name])
    varcheck.requirement(v, "jupyterlab_spec")
    varcheck.requirement(v, "hub_singleuser_spec", example="'jupyterhub>=5,<6'")
    varcheck.installer(v, "installer")
    for name in ("conda", "tensorboard", "jupyterlab_lock", "hub_singleuser"):
        varcheck.boolean(v, name)
    if v["jupyterlab_lock"] and v["jupyterlab_spec"] != recipe.vars["jupyterlab_spec"]:
        raise BadInput(f"jupyterlab_spec {v['jupyterlab_spec']!r} is not used while the lock pins JupyterLab",
                       "add -e jupyterlab_lock=false, or change locks/jupyterlab.in and run scripts/lock.sh")
    for name in ("jupyter_port", "tensorboard_port"):
        varcheck.port(v, name)
    for name in ("jupyter_cull_idle", "jupyter_cull_terminals"):
        varcheck.seconds(v, name)
    secret = v["jupyter_password_hash"]
    if secret and not (isinstance(secret, str) and PASSWORD_HASH.fullmatch(secret)):
        raise BadInput("jupyter_password_hash is not a Jupyter password hash (argon2:... or sha1:...)",
                       "make one with python -c 'from jupyter_server.auth import passwd; print(passwd())'")


# LabApp: no news feed or update check from the server (JupyterLab fetches both from the internet by default)
SETTINGS = """\
{
  "LabApp": {"news_url": null, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate"},
  "MappingKernelManager": {"cull_idle_timeout": {{ jupyter_cull_idle }}, "cull_interval": 300,
                           "cull_connected": false, "cull_busy": false},
  "TerminalManager": {"cull_inactive_timeout": {{ jupyter_cull_terminals }}, "cull_interval": 300}
{%- if jupyter_password_hash %},
  "PasswordIdentityProvider": {"hashed_password": {{ jupyter_password_hash | tojson }},
                               "allow_password_change": false}
{%- endif %}
}
"""
# the lab's own defaults: never fetch news, never ask to (the "get notified about official Jupyter news?" pop-up),
# never check for updates; a user can still turn them on in Settings, which is then their choice
NO_NEWS = """\
{
  "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}
}
"""
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
Environment=PATH={{ jupyter_home }}/bin{% if conda %}:{{ conda_prefix }}/bin{% endif %}:/usr/local/bin:/usr/bin:/bin
{%- if conda %}
# the conda environments' kernels are registered under the conda prefix (recipes/conda.py)
Environment=JUPYTER_PATH={{ conda_prefix }}/share/jupyter
{%- endif %}
# the address and port are on the command line so no config file can widen them
ExecStart={{ jupyter_home }}/bin/jupyter lab --no-browser --ip=127.0.0.1 --port={{ jupyter_port }} \\
  --ServerApp.port_retries=0 --ServerApp.root_dir=/home/{{ user }}/{{ data_dir }}
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
"""
TENSORBOARD_UNIT = """\
[Unit]
Description=TensorBoard (vmlab) on 127.0.0.1:{{ tensorboard_port }}
After=network.target

[Service]
User={{ user }}
ExecStart={{ jupyter_home }}/bin/tensorboard --logdir /home/{{ user }}/{{ data_dir }}/{{ tensorboard_logdir }} \\
  --host 127.0.0.1 --port {{ tensorboard_port }}
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
"""
UNIT, TENSORBOARD_UNIT = (text.replace("{{ jupyter_home }}", HOME) for text in (UNIT, TENSORBOARD_UNIT))
# sys.prefix/etc/jupyter is on Jupyter's config path (a *.d folder would only enable extensions, not configure)
CONFIG_DIR = HOME + "/etc/jupyter"

recipe.step("python venv support", apt.Packages(("python3-venv", "ca-certificates")), when="not conda")
recipe.step("jupyterlab in a venv", pip.Locked(LOCK, dest="{{ jupyter_venv }}/requirements.lock",
                                               venv="{{ jupyter_venv }}", python=VENV_PYTHON,
                                               installer="{{ installer }}"), when="jupyterlab_lock")
recipe.step("jupyterlab in a venv, unpinned", pip.Packages(("{{ jupyterlab_spec }}",), venv="{{ jupyter_venv }}",
                                                           python=VENV_PYTHON, installer="{{ installer }}"),
            when="not jupyterlab_lock")
recipe.step("data folder", files.Directory("/home/{{ user }}/{{ data_dir }}", mode="0755", owner="{{ user }}",
                                           group="{{ user }}"))
recipe.step("settings folder", files.Directory(CONFIG_DIR, mode="0755"))
recipe.step("culling and password", files.Template(CONFIG_DIR + "/jupyter_server_config.json", source=SETTINGS,
                                                   mode="0644"), notify="restart jupyterlab")
recipe.step("lab defaults folder", files.Directory(CONFIG_DIR + "/labconfig", mode="0755"))
recipe.step("no news pop-up", files.File(CONFIG_DIR + "/labconfig/default_setting_overrides.json", content=NO_NEWS,
                                         mode="0644"), notify="restart jupyterlab")
recipe.step("token folder", files.Directory("/etc/vmlab", mode="0700", owner="root", group="root"))
recipe.step("jupyterlab unit", systemd.Unit(lab.SERVICE, content=UNIT), notify="restart jupyterlab")
recipe.step("jupyterlab at boot", systemd.Service(lab.SERVICE, enabled=True))
recipe.handler("restart jupyterlab", systemd.Service(lab.SERVICE, restarted=True))

recipe.step("jupyterhub-singleuser", pip.Packages(("{{ hub_singleuser_spec }}",), python=HOME + "/bin/python",
                                                 installer="{{ installer }}"), when="hub_singleuser")
recipe.step("tensorboard", pip.Packages(("tensorboard",), python=HOME + "/bin/python", installer="{{ installer }}"),
            when="tensorboard")
recipe.step("tensorboard logs", files.Directory("/home/{{ user }}/{{ data_dir }}/{{ tensorboard_logdir }}",
                                                mode="0755", owner="{{ user }}", group="{{ user }}"),
            when="tensorboard")
recipe.step("tensorboard unit", systemd.Unit("tensorboard.service", content=TENSORBOARD_UNIT),
            when="tensorboard", notify="restart tensorboard")
recipe.step("tensorboard at boot", systemd.Service("tensorboard.service", enabled=True, running=True),
            when="tensorboard")
recipe.handler("restart tensorboard", systemd.Service("tensorboard.service", restarted=True))
