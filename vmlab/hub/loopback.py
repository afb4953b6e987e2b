"""Ports on this machine's 127.0.0.1 that LabSpawner's SSH tunnels use: the local end the hub's proxy reaches a VM
lab's server at, and the hub API's port the tunnel's `-R` leads back to.

Example::

    local = free_port()                      # ssh -L 127.0.0.1:LOCAL:...
    while not listening(local): ...
"""

from __future__ import annotations


def hub_api_port(env: dict[str, str]) -> int:
    """The hub API's port on this machine, from the environment the hub gives a server."""
    from urllib.parse import urlsplit

    return urlsplit(env["JUPYTERHUB_API_URL"]).port or 80


def free_port() -> int:
    """A port nothing listens on now, on this machine's 127.0.0.1 (the tunnel's end for the proxy)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something accepts connections at 127.0.0.1:`port` (the tunnel's local end, once ssh is up)."""
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
