"""The scrub script, run for real on a fake root tree (as an unprivileged user, so a path it forgot to prefix
cannot touch this machine): what must go goes, what a lab needs stays, and the host key fallback is installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from vmlab.providers.cloudinit import HOSTKEY_DROPIN
from vmlab.workflows.scrub import SCAN_SCRIPT, SCRUB_SCRIPT, scrub_command

BUILDER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBuilderKeyBuilderKeyBuilderKeyBuilder vmlab-bake"
USER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIUserKeyUserKeyUserKeyUserKeyUserKeyUs me@laptop"

GONE = [
    "etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub", "etc/ssh/ssh_host_rsa_key",
    "var/lib/cloud/instances/i-0abc/user-data.txt", "var/lib/cloud/instance", "var/lib/cloud/seed/nocloud/meta-data",
    "var/lib/cloud/data/instance-id",
    "root/.bash_history", "home/admin/.bash_history", "home/admin/.python_history", "home/admin/.zsh_history",
    "home/admin/.aws/credentials", "home/admin/.config/gcloud/credentials.db", "home/admin/.azure/accessTokens.json",
    "home/admin/.git-credentials", "home/admin/.netrc", "home/admin/.pypirc", "home/admin/.docker/config.json",
    "home/admin/.local/share/jupyter/runtime/jpserver-42.json", "home/admin/.cache/pip/http/x",
    "root/.cache/pip/wheels/y", "root/.cache/uv/wheels-v8/z",
    "etc/vmlab/jupyter.env", "etc/vmlab/agent.env", "var/lib/vmlab-agent/status.json",
    "var/lib/jupyterhub/jupyterhub_cookie_secret", "var/lib/jupyterhub/jupyterhub.sqlite",
    "var/cache/apt/archives/tree_2.1.0-1_amd64.deb", "var/cache/vmlab/Miniforge3-24.11.3-0.sh",
    "tmp/cuda-keyring_1.1-1_all.deb", "var/tmp/build.log", "var/log/syslog.1", "var/log/apt/history.log.2.gz",
    "var/log/journal/abc/system.journal", "var/lib/dbus/machine-id", "var/lib/systemd/random-seed",
    "var/lib/dhcp/dhclient.eth0.leases",
    # credentials tools keep in a home (a service account's home from /etc/passwd included)
    "home/admin/.cache/huggingface/token", "home/admin/.cache/huggingface/stored_tokens",
    "home/admin/.kaggle/kaggle.json", "home/admin/.pgpass", "home/admin/.npmrc", "root/.vault-token",
    "root/.netrc", "home/admin/.config/gh/hosts.yml", "var/lib/svc/.git-credentials", "var/lib/svc/.pypirc",
    "var/lib/svc/.local/share/jupyter/runtime/kernel-1.json", "var/lib/svc/.docker/config.json",
    # dotfiles in the temporary folders, and the apt proxy file cloud-init wrote from the seed
    "tmp/.hidden-token", "tmp/..odd", "var/tmp/.cache-x/y", "etc/apt/apt.conf.d/90cloud-init-aptproxy",
]
KEPT = [
    "etc/ssh/sshd_config", "home/admin/data/notebook.ipynb", "home/admin/.bashrc", "opt/jupyter/bin/jupyter",
    "var/lib/jupyterhub/jupyterhub_config.py", "etc/systemd/system/jupyterlab.service",
    "var/cache/apt/archives/lock", "var/lib/cloud/scripts/per-boot/x.sh",
    "home/admin/.cache/huggingface/hub/models--x/blobs/abc", "var/lib/svc/app.conf",
    "etc/apt/apt.conf.d/20auto-upgrades",
]
PASSWD = ("root:x:0:0:root:/root:/bin/bash\nsvc:x:998:998::/var/lib/svc:/usr/sbin/nologin\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nweird:x:5:5::/:/bin/sh\n"
          "admin:x:1000:1000::/home/admin:/bin/bash\n")
ENVIRONMENT = ("PATH=/usr/local/bin:/usr/bin:/bin\n"
               "# vmlab: host settings begin (removed when an image is made)\n"
               "PIP_CERT=/etc/ssl/certs/ca-certificates.crt\n"
               "http_proxy=http://alice:s3cret-Pw@10.0.2.2:3128\nHTTP_PROXY=http://alice:s3cret-Pw@10.0.2.2:3128\n"
               "# vmlab: host settings end\n"
               "https_proxy=http://bob:0ld-Pw@proxy.corp:3128/\n"  # unmarked (an older vmlab, or a recipe)
               "EDITOR=vim\n")


def test_every_path_in_the_script_is_under_the_root_prefix() -> None:
    """No absolute path outside "$R" (or a home found under it): the fake-root run below relies on it."""
    for line in SCRUB_SCRIPT.splitlines():
        code = line.split("#", 1)[0]
        for prefix in ('"$R"/', '"$R/', '"$home/', "/dev/null"):
            code = code.replace(prefix, "")
        for match in re.finditer(r"(?<![\w*])/[\w.]+", code):
            raise AssertionError(f"unprefixed path {match.group()!r} in: {line.strip()}")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run the scrub as an unprivileged user")
def test_scrub_on_a_fake_root() -> None:
    # not under pytest's tmp_path: its parents are root-only, and the scrub runs as nobody
    top = Path(tempfile.mkdtemp(prefix="vmlab-scrub-"))
    try:
        _scrub_fake_root(top)
    finally:
        shutil.rmtree(top)


def _scrub_fake_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for rel in GONE + KEPT:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("JUPYTER_TOKEN=abcdefabcdefabcdefabcdef\n" if rel.endswith(".env") else "x\n")
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/environment").write_text(ENVIRONMENT)
    (root / "var/log/syslog").write_text("builder log lines\n")
    (root / "lib/systemd/system").mkdir(parents=True)
    (root / "lib/systemd/system/ssh.service").write_text("[Service]\nExecStart=/usr/sbin/sshd -D\n")
    (root / "root/.ssh").mkdir(parents=True)
    (root / "root/.ssh/authorized_keys").write_text(BUILDER + "\n")
    (root / "home/admin/.ssh").mkdir(parents=True)
    (root / "home/admin/.ssh/authorized_keys").write_text(f"{USER_KEY}\n{BUILDER}\n")
    subprocess.run(["chown", "-R", "65534:65534", str(tmp_path)], check=True)
    command = scrub_command(BUILDER, str(root))
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command.argv],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    left = [rel for rel in GONE if (root / rel).exists()]
    assert left == []
    assert [rel for rel in KEPT if not (root / rel).exists()] == []
    assert not (root / "root/.ssh/authorized_keys").exists()  # only the builder's key was in it
    assert (root / "home/admin/.ssh/authorized_keys").read_text() == USER_KEY + "\n"
    assert (root / "etc/machine-id").read_text() == ""
    assert (root / "var/log/syslog").read_text() == ""
    assert (root / "etc/systemd/system/ssh.service.d/10-vmlab-hostkeys.conf").read_text() == HOSTKEY_DROPIN
    # the host's proxy: vmlab's block gone, credentials stripped from a proxy line it did not write
    assert (root / "etc/environment").read_text() == ("PATH=/usr/local/bin:/usr/bin:/bin\n"
                                                       "https_proxy=http://proxy.corp:3128/\nEDITOR=vim\n")
    assert (root / "etc/passwd").read_text() == PASSWD
    # and what is left passes the scan
    done = subprocess.run([sys.executable, "-", "--root", str(root)], input=SCAN_SCRIPT, capture_output=True,
                          text=True, timeout=120)
    assert json.loads(done.stdout) == [], done.stdout


def test_scrub_refuses_without_a_builder_key(tmp_path: Path) -> None:
    # an empty key would make `grep -v -F ""` drop every authorized key
    command = scrub_command("", str(tmp_path / "nothing-here"))
    done = subprocess.run(command.argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "no builder key" in done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_hostkey_dropin_parses(tmp_path: Path) -> None:
    unit = tmp_path / "ssh.service"
    unit.write_text("[Unit]\nDescription=OpenSSH\n\n[Service]\nExecStart=/bin/true\n" + HOSTKEY_DROPIN.split(
        "[Service]\n", 1)[1].replace("/usr/sbin/sshd -t", "/bin/true").replace("/usr/bin/ssh-keygen -A", "true"))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert [line for line in done.stderr.splitlines() if str(tmp_path) in line] == [], done.stderr
