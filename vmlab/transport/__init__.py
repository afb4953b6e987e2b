"""SSH transport: run commands, move files, forward ports, and decide which host keys to trust.

paramiko objects never leave this package, and paramiko itself is imported only when a connection is made:
`SSHConnection` and `Forward` are loaded on first use so that `vmlab --help` stays fast.

Example::

    from vmlab.transport import SSHConnection, SSHTarget

    with SSHConnection(SSHTarget("127.0.0.1", port=2222, key_file=key)).open(retry_for=60) as conn:
        print(conn.run("uname", "-a").stdout)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmlab.transport.hostkeys import HostKey, KnownHosts, forget
from vmlab.transport.target import SSHTarget

if TYPE_CHECKING:
    from vmlab.transport.forward import Forward
    from vmlab.transport.ssh import SSHConnection

__all__ = ["Forward", "HostKey", "KnownHosts", "SSHConnection", "SSHTarget", "forget"]


def __getattr__(name: str) -> Any:
    if name == "SSHConnection":
        from vmlab.transport.ssh import SSHConnection

        return SSHConnection
    if name == "Forward":
        from vmlab.transport.forward import Forward

        return Forward
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
