"""The base every lab image starts from: an up-to-date system, everyday tools, time sync, and `~/data`.

    vmlab bake recipes/base.py --provider local
    vmlab provision recipes/base.py -i inventory.yaml -e user=ubuntu

Unattended upgrades are held off while the recipe runs (their apt lock would make the next apt step fail): the
apt timers are stopped for this boot only and an upgrade already running is waited for; the last steps make
sure they are enabled, so every VM booted from the image runs security upgrades again. On a host you
`provision` rather than bake, the timers come back at its next reboot (or with
`systemctl start apt-daily.timer apt-daily-upgrade.timer`).

Variables: `user` (owner of `~/data`; default: the SSH user), `data_dir` (`data`), `upgrade` (true: apply
pending package upgrades). The package list is `PACKAGES` below: copy the recipe and edit it.
"""

from vmlab import lab
from vmlab.engine import Recipe, varcheck
from vmlab.operations import apt, files, shell, systemd, users

PACKAGES = ("ca-certificates", "curl", "git", "htop", "tmux", "unzip", "less", "rsync", "procps", "python3",
            "python3-venv", "chrony", "unattended-upgrades")

# Stop the apt timers for this boot, then wait (up to 10 minutes) for an upgrade already running to let go of
# the dpkg lock. Guarded by HELD, so a second run changes nothing. The [u] in the patterns keeps pgrep -f from
# finding the shell that runs this very script (its command line holds the pattern, not a match of it). Only
# /usr/bin/unattended-upgrade itself counts: unattended-upgrade-shutdown runs all the time (it waits for a
# shutdown signal) and holds no lock.
UPGRADING = "pgrep -f 'bin/[u]nattended-upgrade( |$)|[a]pt[.]systemd[.]daily' >/dev/null"
HOLD = f"""\
systemctl stop apt-daily.timer apt-daily-upgrade.timer 2>/dev/null || true
for i in $(seq 600); do
  {UPGRADING} || exit 0
  sleep 1
done
echo "an unattended upgrade still holds the apt lock after 10 minutes" >&2; exit 1
"""
HELD = ("! systemctl is-active --quiet apt-daily.timer && ! systemctl is-active --quiet apt-daily-upgrade.timer"
        f" && ! {UPGRADING}")
# `apt-get -s` only simulates: "0 upgraded, 0 newly installed" means nothing is pending
UP_TO_DATE = "apt-get -s -o Debug::NoLocking=1 dist-upgrade | grep -q '^0 upgraded, 0 newly installed'"
UPGRADE = ("DEBIAN_FRONTEND=noninteractive apt-get -y -o Dpkg::Options::=--force-confdef "
           "-o Dpkg::Options::=--force-confold dist-upgrade")

recipe = Recipe("base", become=True, vars={"data_dir": lab.DATA_DIR, "upgrade": True})


@recipe.check
def _variables(v):
    varcheck.boolean(v, "upgrade")
    varcheck.user_name(v, "user")
    varcheck.folder_name(v, "data_dir")


recipe.step("unattended upgrades held off", shell.Shell(HOLD, unless=HELD))
recipe.step("package lists", apt.UpdateCache(max_age=6 * 3600))
recipe.step("pending upgrades", shell.Shell(UPGRADE, unless=UP_TO_DATE), when="upgrade")
recipe.step("everyday tools", apt.Packages(PACKAGES))
recipe.step("time sync", systemd.Service("chrony.service", enabled=True, running=True))
recipe.step("lab user", users.User("{{ user }}", shell="/bin/bash"))
recipe.step("data folder", files.Directory("/home/{{ user }}/{{ data_dir }}", mode="0755", owner="{{ user }}",
                                           group="{{ user }}"))
# enabled again for every VM made from the image; a timer the base image masked on purpose (vmlab's local base
# image does, for a fast boot) stays masked: that was its maker's decision
for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
    recipe.step(f"{timer} enabled for the image", shell.Shell(
        f"systemctl enable {timer}",
        unless=f"systemctl is-enabled {timer} | grep -qxE 'enabled|masked|masked-runtime'"))
