"""Reach a VM that vmlab launched: wait for its sshd directly (not for cloud status checks), with its host key
pinned, and fail fast when the VM itself died instead of waiting out the timeout."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from vmlab.errors import ConnectError, HostError
from vmlab.providers.base import Instance, Provider

if TYPE_CHECKING:
    from vmlab.transport.ssh import SSHConnection


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
