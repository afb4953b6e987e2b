"""JupyterHub for a class or a lab group: one VM, a JupyterLab per user, each in their own `~/data`.

    vmlab bake recipes/jupyterhub.py -e 'hub_users=[ana, ben, chloe]' -e 'hub_admins=[ana]'
    vmlab provision recipes/jupyterhub.py -i inventory.yaml -e hub_authenticator=pam

The hub listens on the VM's 127.0.0.1:8000 only, like a single lab: reach it through SSH
(`ssh -L 8000:127.0.0.1:8000 HOST`, or `vmlab tunnel NAME --extra 8000` for a lab image that also has
jupyterlab.py) and open http://localhost:8000.
Every name in `hub_users` becomes a system user with `~/data`; JupyterHub starts each user's server as that
user (LocalProcessSpawner), opening JupyterLab in `~/data`, and stops servers idle for `hub_cull_idle` seconds.

`hub_authenticator` picks how people log in:
- "native" (default): NativeAuthenticator with sign-up turned off. Every listed user gets an account with a
  random password when the hub starts (at its first start on each VM: a baked image holds no accounts); the
  passwords are in the root-only `/etc/vmlab/hub-passwords.env` (`name=password` lines, never baked). Read it
  over SSH (`vmlab ssh NAME sudo cat /etc/vmlab/hub-passwords.env`) and hand each person theirs; they can change
  it at /hub/change-password. A user added to `hub_users` later gets a password at the next hub restart.
  Nobody can claim a listed name, an admin's included, by signing up first: there is no sign-up page.
- "pam": the users' system passwords. The recipe sets none (a new account's is locked), so nobody can log in
  until you set them yourself, e.g. `chpasswd` in a step of your own.
- "oauth": GenericOAuthenticator (GitHub, Google, GitLab, Keycloak, ...). Its settings are read from the
  environment at start, from the root-only /etc/vmlab/hub.env, which is never baked (the scrub removes
  /etc/vmlab/*.env): write it on the VM after launch and restart the hub::

      OAUTH_CLIENT_ID=...            OAUTH_CLIENT_SECRET=...
      OAUTH_CALLBACK_URL=http://localhost:8000/hub/oauth_callback
      OAUTH2_AUTHORIZE_URL=https://github.com/login/oauth/authorize
      OAUTH2_TOKEN_URL=https://github.com/login/oauth/access_token
      OAUTH2_USERDATA_URL=https://api.github.com/user
      OAUTH2_USERNAME_KEY=login

  Only the names in `hub_users` are let in (`allowed_users`), so each must match the provider's user name.

`hub_spawner=docker` runs each user's server as a container of `hub_image` instead (DockerSpawner; docs/hub.md)::

    vmlab provision recipes/jupyterhub.py -i hub.yaml -e hub_spawner=docker \
        -e hub_image=registry.example.org/class/lab:v1 -e hub_mem_limit=4G -e hub_cpu_limit=2 -e hub_gpus=4

The containers join the host's network and each server listens on 127.0.0.1 (a free port per start); each user's
data folder is the Docker volume `vmlab-hub-NAME`, kept when the server stops or is culled; `hub_shared_volume`
is mounted read-only at `HOME/shared`; with `hub_gpus` > 0 each running server gets a GPU of its own.
Docker-mode variables: `hub_image`, `hub_image_cmd` ([jupyterhub-singleuser]), `hub_image_user` (the image's
own), `hub_image_home` (/home/jovyan), `hub_image_pull` (ifnotpresent), `hub_shared_volume`, `hub_cpu_limit`,
`hub_mem_limit` (2G, 512M), `hub_gpus`.

Variables: `hub_spawner` (local), `hub_users`, `hub_admins`, `hub_authenticator`, `hub_port` (8000; the proxy's
API takes the next port), `hub_cull_idle` (3600 s), `hub_venv` (/opt/jupyterhub), `jupyterhub_spec`, `jupyterlab_spec`,
`data_dir` (`data`). Each is checked before any host is touched and written into files as data (JSON/Python
literals), never as code.
"""

import re
from pathlib import Path

from vmlab import lab
from vmlab.engine import Recipe, varcheck
from vmlab.errors import BadInput
from vmlab.operations import apt, files, pip, shell, systemd

recipe = Recipe("jupyterhub", become=True, vars={
    "hub_users": ["student1", "student2"],
    "hub_admins": [],
    "hub_authenticator": "native",
    "hub_port": 8000,
    "hub_cull_idle": 3600,
    "hub_venv": "/opt/jupyterhub",
    "jupyterhub_spec": "jupyterhub>=5,<6",
    "jupyterlab_spec": "jupyterlab>=4,<5",
    "data_dir": lab.DATA_DIR,
    "hub_spawner": "local",
    "hub_image": "",
    "hub_image_cmd": ["jupyterhub-singleuser"],
    "hub_image_user": "",
    "hub_image_home": "/home/jovyan",
    "hub_image_pull": "ifnotpresent",
    "hub_shared_volume": "",
    "hub_cpu_limit": 0,
    "hub_mem_limit": "",
    "hub_gpus": 0,
})
#: hub_authenticator -> JupyterHub's authenticator class (all three are installed, so switching needs no bake)
AUTHENTICATORS = {"native": "nativeauthenticator.NativeAuthenticator", "pam": "jupyterhub.auth.PAMAuthenticator",
                  "oauth": "oauthenticator.generic.GenericOAuthenticator"}
#: creates the NativeAuthenticator accounts and their passwords before the hub starts (see its docstring)
ACCOUNTS_SCRIPT = Path(__file__).resolve().parent / "files" / "hub_accounts.py"
ACCOUNTS = "/etc/jupyterhub/hub_accounts.py"
#: hub_spawner=docker: the spawner class (DockerSpawner on loopback, a GPU each), installed beside the settings
DOCKER_MODULE = ACCOUNTS_SCRIPT.parent / "hub_docker.py"
DOCKERSPAWNER = "dockerspawner>=14,<15"
PASSWORDS = "/etc/vmlab/hub-passwords.env"
DATABASE = "/var/lib/jupyterhub/jupyterhub.sqlite"


@recipe.check
def _variables(v):
    users, admins = v["hub_users"], v["hub_admins"]
    if not isinstance(users, list) or not users or not all(isinstance(u, str) and varcheck.USER_NAME.fullmatch(u)
                                                           for u in users):
        raise BadInput(f"hub_users {users!r} is not a list of user names",
                       "use e.g. -e 'hub_users=[ana, ben]' (lower-case letters, digits, _ and -)")
    if not isinstance(admins, list) or not all(isinstance(a, str) and a in users for a in admins):
        raise BadInput(f"hub_admins {admins!r} must list some of hub_users", "use e.g. -e 'hub_admins=[ana]'")
    if v["hub_authenticator"] not in AUTHENTICATORS:
        raise BadInput(f"hub_authenticator {v['hub_authenticator']!r} is not native, pam or oauth",
                       "use -e hub_authenticator=native")
    if varcheck.port(v, "hub_port", 8000) == 65535:  # the proxy's API listens on the next port
        raise BadInput("hub_port 65535 leaves no port for the proxy's API", "use e.g. -e hub_port=8000")
    varcheck.seconds(v, "hub_cull_idle")
    varcheck.abs_path(v, "hub_venv", "/opt/jupyterhub")
    varcheck.requirement(v, "jupyterhub_spec", "'jupyterhub>=5,<6'")
    varcheck.requirement(v, "jupyterlab_spec")
    varcheck.folder_name(v, "data_dir")
    if v["hub_spawner"] not in ("local", "docker"):
        raise BadInput(f"hub_spawner {v['hub_spawner']!r} is not local or docker", "use -e hub_spawner=docker")
    if v["hub_spawner"] == "docker":
        _docker_variables(v)


#: what the docker mode's values may look like (they are also written as JSON literals, never pasted as code)
IMAGE = re.compile(r"([A-Za-z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+([._-]+[a-z0-9]+)*(/[a-z0-9]+([._-]+[a-z0-9]+)*)*"
                   r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?")
IMAGE_USER = re.compile(rf"{varcheck.USER_NAME.pattern}|[0-9]+(:[0-9]+)?")
VOLUME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MEMORY = re.compile(r"[1-9][0-9]*[KMG]?")
ARGUMENT = re.compile(r"[\x21-\x7a|~]+")  # printable, no space, no braces (DockerSpawner formats some values)
PULL = ("ifnotpresent", "always", "never")


def _docker_variables(v):
    def bad(name: str, what: str, example: str) -> BadInput:
        return BadInput(f"{name} {v[name]!r} is not {what}", f"use e.g. -e {example}")

    if not isinstance(v["hub_image"], str) or not IMAGE.fullmatch(v["hub_image"]):
        raise bad("hub_image", "an image reference (hub_spawner=docker needs one)",
                  "hub_image=localhost/vmlab/lab:0123456789ab")
    cmd = v["hub_image_cmd"]
    if not isinstance(cmd, list) or not cmd or not all(isinstance(a, str) and ARGUMENT.fullmatch(a) for a in cmd):
        raise bad("hub_image_cmd", "a command (a list of arguments without spaces)",
                  "'hub_image_cmd=[vmlab-agent, run, --jupyter]'")
    if v["hub_image_user"] != "" and not (isinstance(v["hub_image_user"], str)
                                          and IMAGE_USER.fullmatch(v["hub_image_user"])):
        raise bad("hub_image_user", "a user name or uid[:gid] of the image", "hub_image_user=1000")
    varcheck.abs_path(v, "hub_image_home", "/home/jovyan")
    if v["hub_image_pull"] not in PULL:
        raise bad("hub_image_pull", "ifnotpresent, always or never", "hub_image_pull=never")
    if v["hub_shared_volume"] != "" and not (isinstance(v["hub_shared_volume"], str)
                                             and VOLUME.fullmatch(v["hub_shared_volume"])):
        raise bad("hub_shared_volume", "a volume name", "hub_shared_volume=class-data")
    cpus = v["hub_cpu_limit"]
    if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not 0 <= cpus <= 1024:
        raise bad("hub_cpu_limit", "a number of CPUs (0: no limit)", "hub_cpu_limit=1.5")
    if v["hub_mem_limit"] != "" and not (isinstance(v["hub_mem_limit"], str) and MEMORY.fullmatch(v["hub_mem_limit"])):
        raise bad("hub_mem_limit", "a memory size such as 2G or 512M", "hub_mem_limit=2G")
    gpus = v["hub_gpus"]
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 0 <= gpus <= 64:
        raise bad("hub_gpus", "the number of the host's GPUs (0: none)", "hub_gpus=4")


CONFIG = """\
# written by vmlab (recipes/jupyterhub.py); changes here are overwritten by the next run
c = get_config()  # noqa: F821

c.JupyterHub.bind_url = "http://127.0.0.1:{{ hub_port }}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{{ hub_port + 1 }}"
c.JupyterHub.cookie_secret_file = "/var/lib/jupyterhub/jupyterhub_cookie_secret"
c.JupyterHub.db_url = "sqlite:///DATABASE"

c.JupyterHub.authenticator_class = {{ AUTHENTICATORS[hub_authenticator] | tojson }}
c.Authenticator.allowed_users = set({{ hub_users | list | tojson }})
c.Authenticator.admin_users = set({{ hub_admins | list | tojson }})
{%- if hub_authenticator == "native" %}
# accounts and passwords are made before the hub starts (hub_accounts.py): no sign-up, so no name can be claimed
c.NativeAuthenticator.enable_signup = False
c.NativeAuthenticator.open_signup = False
{%- endif %}

c.Spawner.default_url = "/lab"
{%- if hub_spawner == "local" %}
c.Spawner.cmd = [{{ (hub_venv ~ "/bin/jupyterhub-singleuser") | tojson }}]
c.Spawner.notebook_dir = {{ ("~/" ~ data_dir) | tojson }}
{%- else %}
# each server: a container of the image on the host's network, on 127.0.0.1 only (vmlab_hub_docker.py)
c.JupyterHub.spawner_class = "vmlab_hub_docker.LoopbackDockerSpawner"
c.DockerSpawner.image = {{ hub_image | tojson }}
c.DockerSpawner.pull_policy = {{ hub_image_pull | tojson }}
c.DockerSpawner.cmd = {{ hub_image_cmd | tojson }}
c.DockerSpawner.network_name = "host"
c.DockerSpawner.use_internal_ip = True
c.DockerSpawner.name_template = "vmlab-hub-{username}"
c.DockerSpawner.remove = True  # a stopped server's container goes; its volume (the data) stays
c.JupyterHub.cleanup_servers = False  # a hub restart (new settings) leaves the users' servers running
# a first start may pull the image, and many JupyterLabs starting at once on a small host take a while
c.Spawner.start_timeout = 300
c.Spawner.http_timeout = 120
c.DockerSpawner.extra_create_kwargs = {"labels": {"vmlab:hub": "jupyterhub"}}
{%- if hub_image_user %}
c.DockerSpawner.extra_create_kwargs["user"] = {{ hub_image_user | tojson }}
{%- endif %}
c.Spawner.notebook_dir = {{ (hub_image_home ~ "/" ~ data_dir) | tojson }}
c.DockerSpawner.volumes = {"vmlab-hub-{username}": {{ (hub_image_home ~ "/" ~ data_dir) | tojson }}}
{%- if hub_shared_volume %}
c.DockerSpawner.volumes[{{ hub_shared_volume | tojson }}] = {"bind": {{ (hub_image_home ~ "/shared") | tojson }},
                                                              "mode": "ro"}
{%- endif %}
{%- if hub_cpu_limit %}
c.DockerSpawner.cpu_limit = {{ hub_cpu_limit | float }}
{%- endif %}
{%- if hub_mem_limit %}
c.DockerSpawner.mem_limit = {{ hub_mem_limit | tojson }}
{%- endif %}
c.LoopbackDockerSpawner.gpus = {{ hub_gpus | int }}
{%- endif %}

c.JupyterHub.load_roles = [{"name": "idle-culler", "services": ["idle-culler"],
                            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"]}]
c.JupyterHub.services = [{"name": "idle-culler",
                          "command": [{{ (hub_venv ~ "/bin/python") | tojson }}, "-m", "jupyterhub_idle_culler",
                                      {{ ("--timeout=" ~ hub_cull_idle) | tojson }}]}]
""".replace("AUTHENTICATORS", repr(AUTHENTICATORS)).replace("DATABASE", DATABASE)
UNIT = """\
[Unit]
Description=JupyterHub (vmlab) on 127.0.0.1:{{ hub_port }}
After=network.target

[Service]
WorkingDirectory=/var/lib/jupyterhub
# OAuth client settings, written on the VM after launch; never baked
EnvironmentFile=-/etc/vmlab/hub.env
Environment=PATH={{ hub_venv }}/bin:/usr/local/bin:/usr/bin:/bin
{%- if hub_spawner == "docker" %}
# vmlab_hub_docker.py, the spawner the settings name
Environment=PYTHONPATH=/etc/jupyterhub
{%- endif %}
{%- if hub_authenticator == "native" %}
# an account and a password (root-only file) for every listed user who has none yet
ExecStartPre={{ hub_venv }}/bin/python ACCOUNTS DATABASE PASSWORDS {{ hub_users | join(' ') }}
{%- endif %}
ExecStart={{ hub_venv }}/bin/jupyterhub -f /etc/jupyterhub/jupyterhub_config.py
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
""".replace("ACCOUNTS", ACCOUNTS).replace("DATABASE", DATABASE).replace("PASSWORDS", PASSWORDS)
# one account and `~/data` per listed user; the guard makes a second run change nothing
# (the names and the folder come in as arguments: $1 the folder, $2 the names, checked to be plain words)
USERS = """\
set -e
for u in $2; do
  id -u "$u" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash -- "$u"
  install -d -m 0750 -o "$u" -g "$u" -- "/home/$u/$1"
done
"""
USERS_DONE = ("for u in {{ hub_users | join(' ') }}; do id -u \"$u\" >/dev/null 2>&1 "
              "&& [ -d /home/\"$u\"/{{ data_dir | quote }} ] || exit 1; done")

recipe.step("python and the proxy", apt.Packages(("python3-venv", "ca-certificates", "node-configurable-http-proxy")))
recipe.step("jupyterhub", pip.Packages(("{{ jupyterhub_spec }}", "{{ jupyterlab_spec }}", "jupyterhub-idle-culler",
                                        "jupyterhub-nativeauthenticator", "oauthenticator"), venv="{{ hub_venv }}"))
recipe.step("users and their data", shell.Run(("sh", "-c", USERS, "sh", "{{ data_dir }}",
                                               "{{ hub_users | join(' ') }}"), unless=USERS_DONE),
            when="hub_spawner == 'local'")
# docker mode: Debian's Docker engine (dockerd makes its default bridge; the servers use the host's network) and
# DockerSpawner at the version tested with JupyterHub 5
recipe.step("docker engine", apt.Packages(("docker.io",)), when="hub_spawner == 'docker'")
recipe.step("dockerspawner", pip.Packages((DOCKERSPAWNER,), venv="{{ hub_venv }}"), when="hub_spawner == 'docker'")
recipe.step("hub state", files.Directory("/var/lib/jupyterhub", mode="0700", owner="root", group="root"))
recipe.step("hub settings folder", files.Directory("/etc/jupyterhub", mode="0755"))
recipe.step("hub settings", files.Template("/etc/jupyterhub/jupyterhub_config.py", source=CONFIG, mode="0644"),
            notify="restart jupyterhub")
recipe.step("env folder", files.Directory("/etc/vmlab", mode="0700", owner="root", group="root"))
recipe.step("hub accounts script", files.Copy(str(ACCOUNTS_SCRIPT), ACCOUNTS, mode="0644"),
            when="hub_authenticator == 'native'", notify="restart jupyterhub")
recipe.step("docker spawner module", files.Copy(str(DOCKER_MODULE), "/etc/jupyterhub/vmlab_hub_docker.py", mode="0644"),
            when="hub_spawner == 'docker'", notify="restart jupyterhub")
recipe.step("jupyterhub unit", systemd.Unit("jupyterhub.service", content=UNIT), notify="restart jupyterhub")
recipe.step("jupyterhub at boot", systemd.Service("jupyterhub.service", enabled=True, running=True))
recipe.handler("restart jupyterhub", systemd.Service("jupyterhub.service", restarted=True))
