"""Make a builder safe to snapshot, then prove it: scrub secrets and per-instance state, scan for leftovers.

Both run over the builder's SSH connection as root. The scrub removes the builder's key, SSH host keys (a new VM
makes its own at first boot), cloud-init state (it holds the user data), histories, cloud credentials, Jupyter
runtime files, the per-launch files in /etc/vmlab and the sync agent's state, package caches, logs and the
machine id. The scan then looks through the places users and
services keep files for AWS key ids, private keys and tokens; any hit fails the bake and no image is made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from vmlab.engine.command import Command, sh
from vmlab.engine.host import Host
from vmlab.errors import HostError

# $1: the builder's public key line; only that line leaves authorized_keys (a recipe may install others)
SCRUB_SCRIPT = r"""
set -u
key=$(printf '%s' "$1" | cut -d' ' -f2)
for f in /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys; do
  [ -f "$f" ] || continue
  grep -v -F -- "$key" "$f" > "$f.vmlab-scrub" || true
  cat "$f.vmlab-scrub" > "$f"; rm -f "$f.vmlab-scrub"
  [ -s "$f" ] || rm -f "$f"
done
rm -f /etc/ssh/ssh_host_*
if command -v cloud-init >/dev/null 2>&1; then cloud-init clean --logs >/dev/null 2>&1 || true; fi
rm -rf /var/lib/cloud/instances /var/lib/cloud/instance /var/lib/cloud/data /var/lib/cloud/seed
for home in /root /home/*; do
  [ -d "$home" ] || continue
  rm -rf "$home/.bash_history" "$home/.python_history" "$home/.lesshst" "$home/.viminfo" \
         "$home/.wget-hsts" "$home/.sudo_as_admin_successful" "$home/.aws" "$home/.azure" \
         "$home/.config/gcloud" "$home/.git-credentials" "$home/.docker/config.json" \
         "$home/.local/share/jupyter/runtime" "$home/.jupyter/jupyter_server_config.json" \
         "$home/.cache/pip" "$home/.ipython/profile_default/history.sqlite"
done
rm -rf /root/.cache/pip /var/cache/apt/archives/*.deb /tmp/* /var/tmp/*
# per-launch secrets `vmlab up` writes (jupyter.env: the token; agent.env: sync URL, maybe a storage SAS), and
# the agent's record of a bucket (a new lab must not trust a manifest of files it never had)
rm -f /etc/vmlab/*.env
rm -rf /var/lib/vmlab-agent
find /var/log -type f \( -name '*.gz' -o -name '*.[0-9]' \) -delete 2>/dev/null || true
find /var/log -type f -exec truncate -s 0 {} + 2>/dev/null || true
rm -rf /var/log/journal/*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
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


def scrub(host: Host, builder_public_key: str) -> None:
    """Remove secrets and per-instance state from the builder (as root)."""
    command = sh(SCRUB_SCRIPT, builder_public_key, label="scrub builder")
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
