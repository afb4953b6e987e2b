"""The on-VM agent (`vmlab-agent`): restores `~/data` from a bucket before JupyterLab starts, syncs every change
back, and stops an idle lab.

    vmlab provision recipes/agent.py -i inventory.yaml -e user=ubuntu

vmlab's own wheel is packed in memory from the code you run (no build tool, no network), uploaded, and
installed into its own virtualenv (/opt/vmlab-agent) after its dependencies (the `agent` extra's included),
which come from PyPI pinned by `locks/agent.txt`: exact versions and sha256 hashes, `pip install
--require-hashes` (refresh the lock with `bash scripts/lock.sh`). Three
units read the root-only `/etc/vmlab/agent.env` that `vmlab up` writes at each launch (bucket URL, idle
limit, credentials; never baked); with no such file, or nothing configured in it, each one exits 0 and
stays inert:

- vmlab-restore.service: oneshot `vmlab-agent restore`, before JupyterLab;
- vmlab-sync.service: `vmlab-agent sync` as the lab user, given 120 s after SIGTERM to flush pending uploads;
- vmlab-idle.service: `vmlab-agent idle` as root (it powers the VM off after the idle limit).

Variables: `user` (who owns `~/data`; default: the SSH user), `data_dir` (`data`), `installer` (`uv`: `uv pip
install`, uv itself hash-pinned from PyPI, pip when uv cannot be installed or its install fails; or `pip`). pip
follows /etc/pip.conf, uv does not: with a PyPI mirror set there by an earlier step, use `-e installer=pip`.
"""

from pathlib import Path

from vmlab import lab
from vmlab.engine import Recipe, varcheck
from vmlab.operations import apt, files, ownwheel, pip, systemd

WHEEL_ON_VM = f"{lab.AGENT_VENV}/wheels/{ownwheel.wheel_name()}"
AGENT = f"{lab.AGENT_VENV}/bin/vmlab-agent"
#: exact versions and hashes of vmlab's dependencies with the agent extra (made by scripts/lock.sh)
LOCK = str(Path(__file__).resolve().parent / "locks" / "agent.txt")

recipe = Recipe("agent", become=True, vars={"data_dir": lab.DATA_DIR, "installer": "uv"})


@recipe.check
def _variables(v):
    varcheck.user_name(v, "user")  # both land in unit files: a newline there would be a directive
    varcheck.folder_name(v, "data_dir")
    varcheck.installer(v, "installer")


COMMON = f"""\
# written by `vmlab up` at each launch; missing or empty: the agent has nothing to do and exits 0
EnvironmentFile=-{lab.AGENT_ENV_FILE}
Environment=VMLAB_DATA_DIR=/home/{{{{ user }}}}/{{{{ data_dir }}}}
"""
RESTORE = f"""\
[Unit]
Description=vmlab agent: restore ~/data from the bucket before JupyterLab starts
Wants=network-online.target
After=network-online.target
Before={lab.SERVICE}

[Service]
Type=oneshot
RemainAfterExit=yes
User={{{{ user }}}}
{COMMON}ExecStart={AGENT} restore

[Install]
WantedBy=multi-user.target
"""
SYNC = f"""\
[Unit]
Description=vmlab agent: sync ~/data with the bucket
Wants=network-online.target
After=network-online.target {lab.RESTORE_SERVICE}
# a sync that keeps failing (bad credentials, say) gives up after 5 tries in 10 minutes
StartLimitIntervalSec=600
StartLimitBurst=5

[Service]
User={{{{ user }}}}
{COMMON}ExecStart={AGENT} sync
# SIGTERM makes it flush pending uploads: give it the time
TimeoutStopSec=120
Restart=on-failure
RestartSec=10

[Install]
WantedBy=multi-user.target
"""
IDLE = f"""\
[Unit]
Description=vmlab agent: stop the lab when idle or past its time limit
After=network-online.target {lab.SERVICE}
StartLimitIntervalSec=600
StartLimitBurst=5

[Service]
{COMMON}ExecStart={AGENT} idle
Restart=on-failure
RestartSec=30

[Install]
WantedBy=multi-user.target
"""

recipe.step("python venv support", apt.Packages(("python3-venv", "ca-certificates")))
recipe.step("agent folder", files.Directory(f"{lab.AGENT_VENV}/wheels", mode="0755"))
recipe.step("vmlab wheel", ownwheel.OwnWheel(f"{lab.AGENT_VENV}/wheels"), notify="reinstall the agent")
recipe.step("agent dependencies, locked", pip.Locked(LOCK, dest=f"{lab.AGENT_VENV}/requirements.lock",
                                                     venv=lab.AGENT_VENV, installer="{{ installer }}"))
# every dependency is in place already, pinned and hashed: pip installs the wheel alone
recipe.step("vmlab", pip.Packages((f"vmlab @ file://{WHEEL_ON_VM}",), venv=lab.AGENT_VENV, extra_args=("--no-deps",),
                                  installer="{{ installer }}"))
recipe.step("agent state", files.Directory(lab.AGENT_STATE_DIR, mode="0755", owner="{{ user }}",
                                           group="{{ user }}"))
recipe.step("env folder", files.Directory("/etc/vmlab", mode="0700", owner="root", group="root"))
for unit, text in ((lab.RESTORE_SERVICE, RESTORE), (lab.SYNC_SERVICE, SYNC), (lab.IDLE_SERVICE, IDLE)):
    recipe.step(f"{unit}", systemd.Unit(unit, content=text))
    recipe.step(f"{unit} at boot", systemd.Service(unit, enabled=True))
# same version, new code: pip would call the installed one satisfied, so a changed wheel is forced in (with the
# recipe's installer: a venv uv made has no pip)
recipe.handler("reinstall the agent", pip.Packages((f"vmlab @ file://{WHEEL_ON_VM}",), venv=lab.AGENT_VENV,
                                                   extra_args=("--no-deps",), installer="{{ installer }}",
                                                   reinstall=True))
