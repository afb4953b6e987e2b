"""Make a builder safe to snapshot, then prove it: scrub secrets and per-instance state, scan for leftovers.

Both run over the builder's SSH connection as root. The scrub removes the builder's key, SSH host keys (a new VM
makes its own at first boot: cloud-init, else a drop-in for ssh.service the scrub installs), cloud-init state (it
holds the user data), shell histories, cloud and git credentials, Jupyter runtime files, what `vmlab up` writes
(/etc/vmlab/*.env) and the agent's state, package caches and downloaded installers, logs, the machine id and
random seed. The scan then looks through the places users and
services keep files for AWS key ids, private keys and tokens; any hit fails the bake and no image is made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from vmlab.engine.command import Command, sh
from vmlab.engine.host import Host
from vmlab.errors import HostError
from vmlab.providers.cloudinit import HOSTKEY_DROPIN

# $1: the builder's public key line (only that line leaves authorized_keys: a recipe may install others);
# $2: the host key drop-in; $3: a folder standing for / ("" on a builder; tests scrub a fake tree). What acts
# on the running system (`cloud-init clean`) only runs when $3 is "".
SCRUB_SCRIPT = r"""
set -u
key=$(printf '%s' "$1" | cut -d' ' -f2) dropin=$2 R=$3
[ -n "$key" ] || { echo "vmlab scrub: no builder key given" >&2; exit 2; }
for f in "$R"/root/.ssh/authorized_keys "$R"/home/*/.ssh/authorized_keys; do
  [ -f "$f" ] || continue
  grep -v -F -- "$key" "$f" > "$f.vmlab-scrub" || true
  cat "$f.vmlab-scrub" > "$f"; rm -f "$f.vmlab-scrub"
  [ -s "$f" ] || rm -f "$f"
done
# host keys: a new VM makes its own (cloud-init, else the drop-in)
rm -f "$R"/etc/ssh/ssh_host_*
if [ -e "$R/lib/systemd/system/ssh.service" ] || [ -e "$R/usr/lib/systemd/system/ssh.service" ]; then
  mkdir -p "$R/etc/systemd/system/ssh.service.d"
  printf '%s' "$dropin" > "$R/etc/systemd/system/ssh.service.d/10-vmlab-hostkeys.conf"
fi
# cloud-init state holds the builder's user data and instance id
if [ -z "$R" ] && command -v cloud-init >/dev/null 2>&1; then cloud-init clean --logs >/dev/null 2>&1 || true; fi
rm -rf "$R"/var/lib/cloud/instances "$R"/var/lib/cloud/instance "$R"/var/lib/cloud/data "$R"/var/lib/cloud/seed
# per-user secrets, histories and caches
for home in "$R"/root "$R"/home/*; do
  [ -d "$home" ] || continue
  rm -rf "$home/.bash_history" "$home/.zsh_history" "$home/.python_history" "$home/.lesshst" \
         "$home/.viminfo" "$home/.wget-hsts" "$home/.sudo_as_admin_successful" "$home/.psql_history" \
         "$home/.mysql_history" "$home/.sqlite_history" "$home/.node_repl_history" \
         "$home/.local/share/fish/fish_history" "$home/.aws" "$home/.azure" "$home/.config/gcloud" \
         "$home/.git-credentials" "$home/.config/git/credentials" "$home/.netrc" "$home/.pypirc" \
         "$home/.docker/config.json" "$home/.kube/config" "$home/.local/share/jupyter/runtime" \
         "$home/.jupyter/jupyter_server_config.json" "$home/.ipython/profile_default/history.sqlite" \
         "$home/.cache/pip" "$home/.cache/vmlab"
done
# package caches, the installers recipes downloaded, temporary files
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/cache/vmlab "$R"/tmp/* "$R"/var/tmp/*
# what `vmlab up` writes at each launch (token, agent settings and credentials), and per-instance agent state
rm -f "$R"/etc/vmlab/*.env
rm -rf "$R"/var/lib/vmlab-agent/*
# a hub's sessions and cookie secret are per lab
rm -f "$R"/var/lib/jupyterhub/jupyterhub_cookie_secret "$R"/var/lib/jupyterhub/jupyterhub.sqlite
# logs
find "$R"/var/log -type f \( -name '*.gz' -o -name '*.[0-9]' \) -delete 2>/dev/null || true
find "$R"/var/log -type f -exec truncate -s 0 {} + 2>/dev/null || true
rm -rf "$R"/var/log/journal/*
# identity: systemd makes a new machine id (and random seed) at first boot; DHCP leases are per instance
: > "$R/etc/machine-id"
rm -f "$R"/var/lib/dbus/machine-id "$R"/var/lib/systemd/random-seed "$R"/var/lib/dhcp/*.leases
sync
"""

# arguments: folders to scan (default: where users and services keep files); prints JSON [[path, what], ...]
SCAN_SCRIPT = r"""
import json, os, re, stat, sys
roots = sys.argv[1:] or ["/root", "/home", "/etc", "/opt", "/srv", "/usr/local/etc", "/var/lib/cloud",
                         "/var/log", "/tmp"]
skip = ("/etc/ssl/", "/etc/ca-certificates", "/usr/share/", "/etc/pki/")
patterns = [
    (re.compile(rb"(?<![A-Z0-9])(AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"), "AWS access key id"),
    (re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"), "private key"),
    (re.compile(rb"(?i)aws_secret_access_key\s*[=:]\s*[A-Za-z0-9/+]{40}"), "AWS secret key"),
    (re.compile(rb"JUPYTER_TOKEN=[A-Za-z0-9_\-]{16,}"), "Jupyter token"),
    (re.compile(rb"(?:ghp|gho|github_pat)_[A-Za-z0-9_]{30,}"), "GitHub token"),
    (re.compile(rb"(?:^|[?&\s\"'=])sig=[A-Za-z0-9%/+]{30,}", re.M), "Azure SAS signature"),
    (re.compile(rb"(?im)^\s*(?:export\s+)?AZURE_[A-Z_]*SAS[A-Z_]*\s*=\s*['\"]?[^\s'\"]{16,}"), "Azure SAS token"),
]
hits = []
for root in roots:
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs
                   if d not in ("site-packages", "dist-packages", "node_modules", "__pycache__", ".git")]
        for name in files:
            path = os.path.join(dirpath, name)
            if path.startswith(skip):
                continue
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode) or st.st_size > 4 * 1024 * 1024:
                    continue
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            for rx, what in patterns:
                if rx.search(data):
                    hits.append([path, what])
                    break
json.dump(hits, sys.stdout)
"""


@dataclass(frozen=True)
class SecretHit:
    path: str
    what: str


def scrub_command(builder_public_key: str, root: str = "") -> Command:
    """The scrub as one command; `root` stands for / (tests scrub a fake tree with it)."""
    return sh(SCRUB_SCRIPT, builder_public_key, HOSTKEY_DROPIN, root, label="scrub builder")


def scrub(host: Host, builder_public_key: str) -> None:
    """Remove secrets and per-instance state from the builder (as root)."""
    command = scrub_command(builder_public_key)
    result = host.execute(command, sudo=True)
    if result.rc != 0:
        raise HostError(f"scrubbing the builder failed (exit {result.rc}): {result.stderr.strip()[-300:]}")


def scan(host: Host) -> list[SecretHit]:
    """Look for secrets left on the builder; returns the hits (empty = clean)."""
    result = host.execute(Command("python3", "-", stdin=SCAN_SCRIPT, label="secret scan"), sudo=True)
    if result.rc != 0:
        raise HostError(f"the secret scan could not run (exit {result.rc}): {result.stderr.strip()[-300:]}",
                        "the image needs python3")
    return [SecretHit(path, what) for path, what in json.loads(result.stdout or "[]")]
