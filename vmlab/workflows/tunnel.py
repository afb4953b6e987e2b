"""`vmlab tunnel`: forward a port on this machine's 127.0.0.1 to the lab's JupyterLab on the VM's loopback.

The system OpenSSH client carries the tunnel when it exists (bench/tunnel.py: ~1.4x paramiko's throughput and ~2.4x
lower latency here), with the lab's pinned host key and its own key only; paramiko's forwarding is the fallback.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vmlab.errors import BadInput, HostError, HostKeyMismatch, VmlabError
from vmlab.fileio import write_atomic
from vmlab.providers.base import Instance
from vmlab.safetext import check_public_key, check_record
from vmlab.state import LabRecord, LabStore

Say = Callable[[str], None]

BACKENDS = ("openssh", "paramiko")
#: how long the lab may keep refusing the forwarded connection before we say its service is down
REFUSED_GRACE = 3.0
#: pause between reconnect attempts: short, so the tunnel is back within about a second of the host answering
RETRY_DELAY = 0.5
#: the only address the tunnel listens on, and so the one its URLs name
LOCAL = "127.0.0.1"
#: after this long without a connection, ask the provider whether the lab was stopped (then stop retrying)
CHECK_AFTER = 15.0


def check_port(port: int, what: str = "--port") -> int:
    if not 1 <= port <= 65535:
        raise BadInput(f"{what} {port} is out of range", "use a port between 1024 and 65535, e.g. 8888")
    return port


def free_port(start: int, tries: int = 50, taken: set[int] | frozenset[int] = frozenset()) -> int:
    """`start` if nothing listens on 127.0.0.1:start, else the next free port after it (skipping `taken`)."""
    check_port(start)
    for port in range(start, min(start + tries, 65536)):
        if port in taken:
            continue
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((LOCAL, port))
                return port
            except OSError:
                continue
    raise HostError(f"no free local port in {start}-{start + tries - 1}", "pass --port with another number")


def lab_status(port: int, token: str | None, timeout: float = 5.0) -> int:
    """HTTP status of JupyterLab's /api/status through the tunnel (with the token, or without it)."""
    headers = {"Authorization": f"token {token}"} if token else {}
    req = urllib.request.Request(f"http://{LOCAL}:{port}/api/status", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


class TokenRefused(HostError):
    """JupyterLab answers but not to the recorded token (the lab was relaunched elsewhere)."""


class Backend(Protocol):
    """One SSH connection carrying the forwards; `start` may be called again after the connection dropped."""

    name: str

    def start(self) -> None: ...

    def alive(self) -> bool: ...

    def stop(self) -> None: ...

    def failure(self) -> str:
        """What the SSH client last complained about ('' when nothing)."""
        ...


@dataclass
class Tunnel:
    record: LabRecord
    local_port: int
    backend: Backend = field(repr=False)
    requested_port: int = 8888
    #: remote loopback port -> local port, for `--extra` (TensorBoard and the like)
    extra: dict[int, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        # 127.0.0.1, never `localhost`: the forward listens on 127.0.0.1 only, and a browser that tries ::1
        # first would hand the token to whoever listens on [::1]:PORT
        return f"http://{LOCAL}:{self.local_port}/lab?token={self.record.token}"

    def alive(self) -> bool:
        return self.backend.alive()

    def close(self) -> None:
        self.backend.stop()

    def to_json(self) -> dict[str, Any]:
        return {"lab": self.record.name, "local_port": self.local_port, "requested_port": self.requested_port,
                "url": self.url, "backend": self.backend.name,
                "extra": [{"remote_port": r, "local_port": loc, "url": f"http://{LOCAL}:{loc}/"}
                          for r, loc in self.extra.items()]}


def known_hosts_for(record: LabRecord) -> Path:
    """A one-line known_hosts pinning the lab's host key under its alias (for the OpenSSH client); BadInput when
    a value of the record could add a line or a word to it."""
    check_record(record)
    path = LabStore().known_hosts_path(record.name)
    write_atomic(path, f"vmlab-{record.instance_id} {check_public_key(record.host_key, 'pinned host key')}\n")
    return path


def check_key_file(record: LabRecord) -> None:
    """OpenSSH ignores a key others can read and then fails with a vague 'Permission denied': say why first."""
    path = Path(record.key_file)
    if not path.is_file():
        raise BadInput(f"the SSH key of lab {record.name} ({path}) is missing",
                       f"restore it, or recreate the lab: `vmlab down {record.name}` then `vmlab up {record.name}`")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise BadInput(f"the SSH key of lab {record.name} ({path}) is readable by others (mode {mode:04o})",
                       f"run `chmod 600 {path}`")


def open_tunnel(record: LabRecord, port: int = 8888, *, extra: tuple[int, ...] = (), backend: str | None = None,
                timeout: float = 30.0, say: Say = lambda _m: None) -> Tunnel:
    """Open the tunnel and prove it with an authenticated request; raises HostError if the lab does not answer.

    `extra` lists more ports on the lab's loopback to forward, each to the same local port number (or the next
    free one); only JupyterLab's is checked, since a TensorBoard may start later.
    """
    for remote in extra:
        check_port(remote, "--extra")
    check_record(record)
    if not record.host:
        raise HostError(f"lab {record.name} has no address (is it stopped?)", f"vmlab start {record.name}")
    if backend is not None and backend not in BACKENDS:
        raise BadInput(f"unknown tunnel backend {backend!r}", f"use one of: {', '.join(BACKENDS)}")
    check_key_file(record)
    local = free_port(port)
    if local != port:
        say(f"port {port} is busy; using {local}")
    use = backend or ("openssh" if shutil.which("ssh") else "paramiko")
    forwards = [(local, record.jupyter_port)]
    mapped: dict[int, int] = {}
    for remote in dict.fromkeys(extra):
        mapped[remote] = free_port(remote, taken={loc for loc, _ in forwards})
        forwards.append((mapped[remote], remote))
        if mapped[remote] != remote:
            say(f"port {remote} is busy here; the lab's port {remote} is on local port {mapped[remote]}")
    carrier: Backend = OpenSSH(record, forwards) if use == "openssh" else Paramiko(record, forwards)
    carrier.start()
    tunnel = Tunnel(record, local, carrier, port, mapped)
    try:
        wait_ready(tunnel, timeout)
    except BaseException:
        tunnel.close()
        raise
    return tunnel


def wait_ready(tunnel: Tunnel, timeout: float) -> None:
    """Block until an authenticated request through the tunnel answers 200, or raise the reason it cannot."""
    record = tunnel.record
    deadline = time.monotonic() + timeout
    last = "no answer"
    refused_since: float | None = None
    while time.monotonic() < deadline:
        if not tunnel.alive():
            raise connect_failure(record, tunnel.backend.failure())
        try:
            status = lab_status(tunnel.local_port, record.token)
            if status == 200:
                return
            if status in (401, 403):
                raise TokenRefused(f"JupyterLab on {record.name} refuses the recorded token (HTTP {status})",
                                f"get a fresh token with `vmlab up {record.name}`")
            last = f"HTTP {status}"
            refused_since = None
        except (http.client.RemoteDisconnected, ConnectionResetError) as exc:
            # The local end accepted and the lab's side closed at once: nothing listens on the lab's port.
            last = f"the lab closed the connection ({exc.__class__.__name__})"
            refused_since = refused_since or time.monotonic()
            if time.monotonic() - refused_since > REFUSED_GRACE:
                break
        except OSError as exc:  # our end is not listening yet (ssh still authenticating)
            last = str(exc)
        time.sleep(0.2)
    raise HostError(f"JupyterLab on {record.name} does not answer on its port {record.jupyter_port} ({last})",
                    f"the lab service may be down: `vmlab ssh {record.name} -- journalctl -u jupyterlab -n 50`")


def keep_alive(tunnel: Tunnel, *, say: Say = lambda _m: None, stop: threading.Event | None = None,
               check_after: float = CHECK_AFTER, describe: Callable[[], Instance | None] | None = None) -> None:
    """Serve until `stop` is set; when the SSH client exits (VM rebooted, network changed, sshd restarted),
    start it again and prove it with a request. Raises HostError when the provider says the lab is stopped or
    gone, HostKeyMismatch when the host comes back with another key.

    `describe` reports the lab's instance (default: its provider's `describe`); it is only asked after
    reconnects have failed for `check_after` seconds, so a healthy tunnel never calls the cloud.
    """
    stop = stop or threading.Event()
    name = tunnel.record.name
    while not stop.wait(0.2):
        if tunnel.alive():
            continue
        lost = time.monotonic()
        say(f"connection to {name} lost ({tunnel.backend.failure() or 'ssh exited'}); reconnecting")
        if _reconnect(tunnel, stop, check_after, describe or _describer(tunnel.record)):
            say(f"reconnected to {name} after {time.monotonic() - lost:.1f}s")


def _reconnect(tunnel: Tunnel, stop: threading.Event, check_after: float,
               describe: Callable[[], Instance | None]) -> bool:
    checked = time.monotonic()
    while not stop.is_set():
        try:
            tunnel.backend.start()
            wait_ready(tunnel, timeout=10.0)
            return True
        except (HostKeyMismatch, TokenRefused):  # waiting cannot fix these
            tunnel.close()
            raise
        except VmlabError:
            tunnel.backend.stop()
        if time.monotonic() - checked >= check_after:
            checked = time.monotonic()
            check_running(tunnel.record, describe)
        stop.wait(RETRY_DELAY)
    return False


def _describer(record: LabRecord) -> Callable[[], Instance | None]:
    def describe() -> Instance | None:
        from vmlab.providers import provider_for

        return provider_for(record).describe(record.instance_id)

    return describe


def check_running(record: LabRecord, describe: Callable[[], Instance | None]) -> None:
    """Raise HostError when the lab's instance is stopped or gone; return when running or unknown."""
    try:
        inst = describe()
    except VmlabError:
        return  # the provider cannot tell right now: keep trying the host itself
    name = record.name
    if inst is None or inst.state == "terminated":
        raise HostError(f"lab {name} no longer exists (instance {record.instance_id} is gone)",
                        f"launch it again with `vmlab up {name}`")
    if inst.state in ("stopped", "stopping"):
        raise HostError(f"lab {name} is {inst.state} ({record.instance_id})",
                        f"start it with `vmlab start {name}`, then run `vmlab tunnel {name}` again")


def connect_failure(record: LabRecord, why: str) -> VmlabError:
    """The error for an SSH client that gave up, from what it said on stderr."""
    name = record.name
    low = why.lower()
    if "host key verification failed" in low or "identification has changed" in low:
        return HostKeyMismatch(f"lab {name} at {record.host}:{record.port} presents a host key other than the one "
                               "pinned when it was launched",
                               f"if the lab was rebuilt outside vmlab, recreate it (`vmlab down {name}`, "
                               f"`vmlab up {name}`); otherwise do not connect: the connection may be intercepted")
    if "permission denied" in low:
        return HostError(f"lab {name} refused its SSH key {record.key_file}",
                         f"recreate the lab's key and record with `vmlab down {name}` and `vmlab up {name}`")
    if "address already in use" in low or "cannot listen" in low:
        return HostError(f"a local port for the tunnel to {name} was taken meanwhile ({why})",
                         "run the command again, or pass --port with another number")
    return HostError(f"cannot reach lab {name} at {record.host}:{record.port} ({why or 'ssh exited'})",
                     f"is it running? check `vmlab ls`, then `vmlab start {name}`")


class OpenSSH:
    """`ssh -N -L ...` with the lab's key and pinned host key only (no agent, no user config). `reverse` lists
    (port on the lab's loopback, port on this machine's 127.0.0.1) pairs carried the other way (`-R`): a hub's
    API for the lab's jupyterhub-singleuser (vmlab.hub)."""

    name = "openssh"

    def __init__(self, record: LabRecord, forwards: list[tuple[int, int]],
                 reverse: tuple[tuple[int, int], ...] = ()) -> None:
        self.record = record
        self.forwards = forwards
        self.reverse = reverse
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: deque[str] = deque(maxlen=20)

    def argv(self) -> list[str]:
        r = self.record
        argv = ["ssh", "-N", "-F", "none", "-p", str(r.port), "-i", r.key_file, "-l", r.user]
        for local, remote in self.forwards:
            argv += ["-L", f"{LOCAL}:{local}:127.0.0.1:{remote}"]
        for remote, local in self.reverse:
            argv += ["-R", f"127.0.0.1:{remote}:{LOCAL}:{local}"]
        options = {"IdentitiesOnly": "yes", "IdentityAgent": "none", "BatchMode": "yes",
                   "StrictHostKeyChecking": "yes", "UserKnownHostsFile": str(known_hosts_for(r)),
                   "GlobalKnownHostsFile": "/dev/null", "HostKeyAlias": f"vmlab-{r.instance_id}",
                   "ExitOnForwardFailure": "yes", "ConnectTimeout": "5", "ConnectionAttempts": "1",
                   "ServerAliveInterval": "5", "ServerAliveCountMax": "3", "LogLevel": "error"}
        for key, value in options.items():
            argv += ["-o", f"{key}={value}"]
        return [*argv, "--", str(r.host)]

    def start(self) -> None:
        self.stop()
        self._stderr.clear()
        proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, errors="replace")
        self._proc = proc
        threading.Thread(target=self._read_stderr, args=(proc,), daemon=True, name="tunnel-ssh-stderr").start()

    def _read_stderr(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.strip():
                self._stderr.append(line.strip())

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def failure(self) -> str:
        if self._proc is not None and self._proc.poll() is not None:
            # the reader thread may still be draining the pipe of a process that just exited
            for _ in range(20):
                if self._stderr:
                    break
                time.sleep(0.01)
        lines = [s for s in self._stderr if not s.startswith("@") and "WARNING" not in s]
        return lines[-1] if lines else ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Paramiko:
    """paramiko's forwarding: the fallback when there is no `ssh` binary. Its connection reopens on the next
    request after a drop, so it never 'dies' the way an ssh process does."""

    name = "paramiko"

    def __init__(self, record: LabRecord, forwards: list[tuple[int, int]]) -> None:
        self.record = record
        self.forwards = forwards
        self._conn: Any = None
        self._fwds: list[Any] = []
        self._error = ""

    def start(self) -> None:
        from vmlab.transport.ssh import SSHConnection, SSHTarget

        self.stop()
        r = self.record
        target = SSHTarget(host=r.host or "", port=r.port, user=r.user, key_file=Path(r.key_file), name=r.name,
                           host_key_alias=f"vmlab-{r.instance_id}", pinned_host_key=r.host_key)
        try:
            # Forwards always use a direct connection: a connection master would only be one more process.
            self._conn = SSHConnection(target, persist=0).open(retry_for=5)
        except HostKeyMismatch as exc:
            raise connect_failure(r, "host key verification failed") from exc
        self._fwds = [self._conn.forward_local(local, "127.0.0.1", remote) for local, remote in self.forwards]

    def alive(self) -> bool:
        return bool(self._fwds) and not any(f.closed for f in self._fwds)

    def failure(self) -> str:
        return self._error

    def stop(self) -> None:
        for f in self._fwds:
            f.close()
        self._fwds = []
        if self._conn is not None:
            self._conn.close()
            self._conn = None
