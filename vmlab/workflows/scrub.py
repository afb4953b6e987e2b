"""Make a builder safe to snapshot, then prove it: scrub secrets and per-instance state, scan for leftovers.

Both run over the builder's SSH connection as root. The scrub removes the builder's key, SSH host keys (a new VM
makes its own at first boot: cloud-init, else a drop-in for ssh.service the scrub installs), cloud-init state (it
holds the user data), shell histories, cloud and git credentials, Jupyter runtime files, what `vmlab up` writes
(/etc/vmlab/*.env) and the agent's state, package caches and downloaded installers, logs, the machine id and
random seed. The scan (`secretscan.py`, run by the builder's python3) then reads every file on the disk that no
package manager owns for private keys, cloud credentials and tokens; any hit fails the bake and no image is made.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmlab.engine.command import Command, sh
from vmlab.engine.host import Host
from vmlab.errors import HostError
from vmlab.providers.cloudinit import HOSTKEY_DROPIN

log = logging.getLogger(__name__)

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
# per-user secrets, histories and caches, in every home: /root, /home/*, and each account's in /etc/passwd
{ for h in "$R"/root "$R"/home/*; do [ -d "$h" ] && printf '%s\n' "${h#"$R"}"; done
  cut -d: -f6 "$R/etc/passwd" 2>/dev/null; } | sort -u | while IFS= read -r h; do
  case "$h" in /*) ;; *) continue;; esac
  [ "$h" != / ] || continue
  home="$R$h"
  [ -d "$home" ] && [ ! -L "$home" ] || continue
  rm -rf "$home/.bash_history" "$home/.zsh_history" "$home/.python_history" "$home/.lesshst" \
         "$home/.viminfo" "$home/.wget-hsts" "$home/.sudo_as_admin_successful" "$home/.psql_history" \
         "$home/.mysql_history" "$home/.sqlite_history" "$home/.node_repl_history" \
         "$home/.local/share/fish/fish_history" "$home/.aws" "$home/.azure" "$home/.config/gcloud" \
         "$home/.git-credentials" "$home/.config/git/credentials" "$home/.netrc" "$home/_netrc" "$home/.pypirc" \
         "$home/.pgpass" "$home/.npmrc" "$home/.vault-token" "$home/.s3cfg" "$home/.boto" \
         "$home/.cache/huggingface/token" "$home/.cache/huggingface/stored_tokens" "$home/.huggingface/token" \
         "$home/.kaggle/kaggle.json" "$home/.config/kaggle/kaggle.json" "$home/.config/gh/hosts.yml" \
         "$home/.config/hub" "$home/.cargo/credentials" "$home/.cargo/credentials.toml" "$home/.gem/credentials" \
         "$home/.terraform.d/credentials.tfrc.json" \
         "$home/.docker/config.json" "$home/.kube/config" "$home/.local/share/jupyter/runtime" \
         "$home/.jupyter/jupyter_server_config.json" "$home/.ipython/profile_default/history.sqlite" \
         "$home/.cache/pip" "$home/.cache/uv" "$home/.cache/vmlab"
done
# package caches, the installers recipes downloaded, temporary files (dotfiles too)
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/cache/vmlab \
       "$R"/tmp/* "$R"/tmp/.[!.]* "$R"/tmp/..?* "$R"/var/tmp/* "$R"/var/tmp/.[!.]* "$R"/var/tmp/..?*
# the build host's proxy (with any credentials in its URL) is no setting of the image: vmlab's seed writes it
# between markers in /etc/environment and cloud-init writes apt's proxy file, anew at each VM's first boot
rm -f "$R/etc/apt/apt.conf.d/90cloud-init-aptproxy"
if [ -f "$R/etc/environment" ]; then
  sed -i -e '/^# vmlab: host settings begin/,/^# vmlab: host settings end/d' \
         -e '\%^[A-Za-z_]*_[Pp][Rr][Oo][Xx][Yy]=%s%://[^/@[:space:]]*@%://%' "$R/etc/environment"
fi
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

#: the scan program (vmlab/workflows/secretscan.py), sent to the builder's python3 on stdin
SCAN_SCRIPT = (Path(__file__).with_name("secretscan.py")).read_text()


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


def scan(host: Host, say: Callable[[str], None] = lambda _m: None) -> list[SecretHit]:
    """Look for secrets left anywhere on the builder's disk; returns the hits (empty = clean). `say` hears what
    was read and what the image's scan-ignore kept out."""
    result = host.execute(Command("python3", "-", stdin=SCAN_SCRIPT, label="secret scan"), sudo=True)
    if result.rc != 0:
        raise HostError(f"the secret scan could not run (exit {result.rc}): {result.stderr.strip()[-300:]}",
                        "the image needs python3")
    stats = _stats(result.stderr)
    log.debug("secret scan: %s", stats)
    if "files" in stats:
        say(f"secret scan: {stats['files']} files no package owns read ({stats.get('read', 0) / 1e6:.0f} MB) "
            f"in {stats.get('seconds', '?')} s")
    if stats.get("ignored"):
        say("secret scan: not scanned, as the image's /etc/vmlab/scan-ignore asks: "
            + ", ".join(printable(str(p)) for p in stats["ignored"]))
    return parse_hits(result.stdout)


def _stats(stderr: str) -> dict[str, Any]:
    """The scan's last stderr line: {"files", "bytes", "read", "owned", "ignored", "seconds"}."""
    try:
        stats = json.loads(stderr.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}
    return stats if isinstance(stats, dict) else {}


def parse_hits(stdout: str) -> list[SecretHit]:
    """The scan's JSON output as hits; a path from the builder is data: control characters are shown escaped."""
    return [SecretHit(printable(path), printable(what)) for path, what in json.loads(stdout or "[]")]


def printable(text: str) -> str:
    """`text` with control characters, backslashes and undecodable bytes (surrogate escapes) shown escaped."""
    out = []
    for c in text:
        if 0xDC80 <= ord(c) <= 0xDCFF:
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif c == "\\" or not c.isprintable():
            out.append(c.encode("unicode_escape").decode("ascii"))
        else:
            out.append(c)
    return "".join(out)
