"""Reach a VM that vmlab launched: wait for its sshd directly (not for cloud status checks), with its host key
pinned, and fail fast when the VM itself died instead of waiting out the timeout.

The host key a VM boots with is the *launch key*: vmlab made it and sent its private half in the user data, so
the first connection can be verified (no trust on first use, even at an address another VM had before). User
data is not secret, though: a shell on the VM reads it from the metadata service, and anyone allowed
`ec2:DescribeInstanceAttribute` reads it from the API. So the first connection replaces it (`connect_launched`):
the VM makes a new host key itself, sends its public half back over that verified connection, and vmlab pins
that one from then on. Once that first connection is done the launch key opens nothing: a copy of it cannot
impersonate the VM then (before it, someone who reads the user data and intercepts that connection could).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING

from vmlab.engine.command import sh
from vmlab.errors import ConnectError, HostError, HostKeyMismatch
from vmlab.providers.base import Instance, Provider
from vmlab.providers.capabilities import Executes

if TYPE_CHECKING:
    from vmlab.engine.host import Session
    from vmlab.transport.ssh import SSHConnection

# Makes a new ed25519 host key on the VM in place of the launch key and prints its public half. sshd up to
# OpenSSH 9.7 reads host keys at each connection; later ones at a reload (which keeps open sessions).
ROTATE_HOST_KEY = r"""
set -e
umask 077
key=/etc/ssh/ssh_host_ed25519_key
rm -f "$key.vmlab-new" "$key.vmlab-new.pub"
ssh-keygen -q -t ed25519 -N '' -C '' -f "$key.vmlab-new" </dev/null >/dev/null
chmod 0644 "$key.vmlab-new.pub"
mv -f "$key.vmlab-new.pub" "$key.pub"
mv -f "$key.vmlab-new" "$key"
reload=0
systemctl reload ssh.service >/dev/null 2>&1 || systemctl reload sshd.service >/dev/null 2>&1 || reload=$?
echo "reload-exit=$reload"
cat "$key.pub"
"""


def connect_instance(provider: Provider, instance: Instance, key_file: Path, host_key: str,
                     timeout: float = 900.0) -> SSHConnection:
    """An open SSH connection to `instance`, whose host key must be `host_key` (an OpenSSH public key line)."""
    from vmlab.transport.ssh import SSHConnection, SSHTarget

    deadline = time.monotonic() + timeout
    while True:
        current = provider.describe(instance.id) or instance
        if current.state in ("stopped", "stopping", "terminated"):
            raise HostError(f"{instance.name} ({instance.id}) is {current.state} before SSH came up",
                            "see the VM's console log; `vmlab ls` shows its state")
        if not current.host:
            # no address yet (EC2 assigns it seconds after launch or start): ask again, not in a busy loop
            if time.monotonic() >= deadline:
                raise HostError(f"{instance.name} ({instance.id}) has no address after {timeout:.0f} s",
                                "check that its subnet assigns public IPv4 addresses")
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
            continue
        target = SSHTarget(host=current.host, port=current.port, user=current.user, key_file=key_file,
                           name=instance.name, host_key_alias=f"vmlab-{instance.id}", pinned_host_key=host_key)
        remaining = deadline - time.monotonic()
        try:
            # cloud-init writes the key and host key during boot: until then sshd may reject the key or show
            # another host key. Retrying is safe: nothing but the pinned key is ever accepted.
            return SSHConnection(target).open(retry_for=max(1.0, min(20.0, remaining)), retry_auth=True)
        except ConnectError as exc:
            if exc.reason == "dns" or time.monotonic() >= deadline:
                raise
            time.sleep(1.0)


def connect_launched(provider: Provider, instance: Instance, key_file: Path, launch_host_key: str,
                     timeout: float = 900.0) -> tuple[SSHConnection, str]:
    """The first connection to a VM just launched with `launch_host_key`: verified with that key, which is then
    replaced by one the VM makes (see the module docstring). Returns an open connection verified with the new
    key and the new key's public line, the one to pin from now on.

    Example::

        conn, host_key = connect_launched(provider, inst, key_file, launch_key.public)
        record.host_key = host_key
    """
    first = connect_instance(provider, instance, key_file, launch_host_key, timeout=timeout)
    with first:
        return rotate_host_key(first)


def reach_launched(provider: Provider, instance: Instance, key_file: Path, launch_host_key: str,
                   timeout: float = 900.0) -> Session:
    """Where a workflow runs commands on an instance it just launched: the provider's own channel when it has one
    (`Executes`: a container's `podman exec`; no SSH key or host key involved), else SSH as `connect_launched`.

    Example: `host = reach_launched(provider, builder, key_file, host_key.public); apply(recipe, host); host.close()`
    """
    if isinstance(provider, Executes):
        return provider.exec_host(instance.id)
    return connect_launched(provider, instance, key_file, launch_host_key, timeout=timeout)[0]


def rotate_host_key(conn: SSHConnection, settle: float = 15.0) -> tuple[SSHConnection, str]:
    """Replace the host key of the host behind `conn` (a verified connection) with one made there, and prove
    that sshd serves it: returns a new connection verified with the new key, and its public line. `conn` stays
    open (the caller closes it)."""
    from vmlab.transport.hostkeys import HostKey
    from vmlab.transport.ssh import SSHConnection

    result = conn.execute(sh(ROTATE_HOST_KEY, label="replace the launch host key"), sudo=True)
    lines = result.stdout.strip().splitlines()
    if result.rc != 0 or not lines:
        raise HostError(f"cannot make a new SSH host key on {conn.name} (exit {result.rc}): "
                        f"{result.stderr.strip()[-300:]}", "is openssh-server (ssh-keygen) installed there?")
    new_key = HostKey.from_line(lines[-1], what=f"new host key of {conn.name}")
    reload = reload_status(lines)
    if new_key.keytype != "ssh-ed25519":
        raise HostError(f"{conn.name} made a {new_key.keytype} host key instead of ssh-ed25519")
    target = dataclasses.replace(conn.target, pinned_host_key=new_key.line())
    deadline = time.monotonic() + settle
    while True:
        try:
            return SSHConnection(target).open(retry_for=max(1.0, deadline - time.monotonic())), new_key.line()
        except HostKeyMismatch as exc:  # sshd still serves the launch key: a reload may take a moment
            if time.monotonic() >= deadline:
                raise HostError(f"sshd on {conn.name} still presents its launch host key after {settle:.0f}s "
                                f"(`systemctl reload` of sshd exited {reload})",
                                "restart sshd on the VM (`systemctl restart ssh`), or launch it again") from exc
            time.sleep(0.5)


def reload_status(lines: list[str]) -> str:
    """The exit status of the sshd reload that ROTATE_HOST_KEY printed ("?" when it printed none).
    Example: `reload_status(["reload-exit=5", "ssh-ed25519 AAAA..."])` is "5"."""
    found = [line.split("=", 1)[1] for line in lines if line.startswith("reload-exit=")]
    return found[-1] if found else "?"
