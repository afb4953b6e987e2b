"""`vmlab tunnel`: forward a port on this machine's 127.0.0.1 to the lab's JupyterLab on the VM's loopback.

The system OpenSSH client carries the tunnel when it exists (it measured about 3x paramiko's throughput), with
the lab's pinned host key and its own key only; paramiko's forwarding is the fallback.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmlab.errors import BadInput, HostError
from vmlab.state import LabRecord, LabStore

Say = Callable[[str], None]


def free_port(start: int, tries: int = 50) -> int:
    """`start` if nothing listens on 127.0.0.1:start, else the next free port after it."""
    if not 0 < start < 65536:
        raise BadInput(f"--port {start} is out of range", "use a port between 1024 and 65535")
    for port in range(start, min(start + tries, 65536)):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise HostError(f"no free local port in {start}-{start + tries - 1}", "pass --port with another number")


def lab_status(port: int, token: str | None, timeout: float = 5.0) -> int:
    """HTTP status of JupyterLab's /api/status through the tunnel (with the token, or without it)."""
    headers = {"Authorization": f"token {token}"} if token else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/status", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


@dataclass
class Tunnel:
    record: LabRecord
    local_port: int
    backend: str
    _close: Callable[[], None] = field(repr=False)
    _alive: Callable[[], bool] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://localhost:{self.local_port}/lab?token={self.record.token}"

    def alive(self) -> bool:
        return self._alive()

    def close(self) -> None:
        self._close()

    def to_json(self) -> dict[str, Any]:
        return {"lab": self.record.name, "local_port": self.local_port, "url": self.url, "backend": self.backend}


def known_hosts_for(record: LabRecord) -> Path:
    """A one-line known_hosts pinning the lab's host key under its alias (for the OpenSSH client)."""
    path = LabStore().known_hosts_path(record.name)
    path.write_text(f"vmlab-{record.instance_id} {record.host_key}\n")
    path.chmod(0o600)
    return path


def open_tunnel(record: LabRecord, port: int = 8888, *, backend: str | None = None, timeout: float = 30.0,
                say: Say = lambda _m: None) -> Tunnel:
    """Open the tunnel and prove it with an authenticated request; raises HostError if the lab does not answer."""
    if not record.host:
        raise HostError(f"lab {record.name} has no address (is it stopped?)", f"vmlab start {record.name}")
    local = free_port(port)
    if local != port:
        say(f"port {port} is busy; using {local}")
    use = backend or ("openssh" if shutil.which("ssh") else "paramiko")
    tunnel = (_openssh if use == "openssh" else _paramiko)(record, local)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not tunnel.alive():
            raise HostError(f"the tunnel to {record.name} closed at once", "check `vmlab ssh " + record.name + "`")
        try:
            status = lab_status(local, record.token)
            if status == 200:
                return tunnel
            last = f"HTTP {status}"
            if status == 403:
                break  # wrong token: waiting will not help
        except OSError as exc:
            last = str(exc)
        time.sleep(0.3)
    tunnel.close()
    raise HostError(f"JupyterLab on {record.name} does not answer through the tunnel ({last})",
                    f"the service may be down: `vmlab ssh {record.name}` then `journalctl -u jupyterlab`")


def _openssh(record: LabRecord, local: int) -> Tunnel:
    argv = ["ssh", "-N", "-L", f"127.0.0.1:{local}:127.0.0.1:{record.jupyter_port}",
            "-p", str(record.port), "-i", record.key_file, "-l", record.user,
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts_for(record)}", "-o", f"HostKeyAlias=vmlab-{record.instance_id}",
            "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3",
            "-F", "none", str(record.host)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def close() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()

    return Tunnel(record, local, "openssh", close, lambda: proc.poll() is None)


def _paramiko(record: LabRecord, local: int) -> Tunnel:
    from vmlab.transport.ssh import SSHConnection, SSHTarget

    target = SSHTarget(host=record.host or "", port=record.port, user=record.user, key_file=Path(record.key_file),
                       name=record.name, host_key_alias=f"vmlab-{record.instance_id}",
                       pinned_host_key=record.host_key)
    conn = SSHConnection(target).open(retry_for=10)
    fwd = conn.forward_local(local, "127.0.0.1", record.jupyter_port)

    def close() -> None:
        fwd.close()
        conn.close()

    return Tunnel(record, local, "paramiko", close, lambda: True)
