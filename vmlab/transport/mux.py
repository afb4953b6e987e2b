"""Client side of SSH connection persistence: find a master, send it commands, or start one.

A master (`vmlab.transport.master`) is a small background process holding one authenticated, host-key-checked
SSH connection for a while after the run that started it; later runs for the same target send their commands
through its unix socket instead of repeating the SSH handshake (6-7 round trips). The protocol is one frame
per message: a 4-byte big-endian length, then a JSON object.

    client -> {"vmlab-mux": 1, "id": <identity hash>}
    master -> {"vmlab-mux": 1, "ok": true, "host_key": "ssh-ed25519 AAAA...", "pid": 1234}  (or "ok": false)
    client -> {"op": "exec", "line": "<quoted command>", "stdin": "<base64>"}
    master -> {"rc": 0, "stdout": "...", "stderr": "..."}  or  {"error": "...", "sent": true|false}
    client -> {"op": "exit"}                                (stop the master now)

`"sent": false` means nothing reached the SSH server, so the caller may run the command over a direct
connection; `"sent": true`, or a master that vanishes after taking the request, is reported as a failure and
never retried (the command may have run). Every check fails closed: a socket or folder that is not this user's,
a master whose uid is not ours (SO_PEERCRED), another protocol version, or a host key that vmlab's trust no
longer accepts all mean "connect directly".

Example::

    mux = attach(target)                       # None: connect directly (and maybe spawn(target, 60))
    if mux is not None:
        result = mux.execute("uname -a", b"")   # NotSent: run it directly instead
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from vmlab.engine.command import RunResult
from vmlab.errors import HostError
from vmlab.transport.rundir import PROTOCOL, UnsafeRuntimeDir, check_socket, runtime_dir, socket_path
from vmlab.transport.target import SSHTarget

log = logging.getLogger("vmlab.transport")

MAX_FRAME = 256 << 20
# Larger stdin goes over a direct connection, streamed, instead of sitting whole in one frame.
MAX_STDIN = 8 << 20
HELLO_TIMEOUT = 5.0
_LENGTH = struct.Struct(">I")
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class NotSent(Exception):
    """The master did not pass the command to the SSH server: running it over a direct connection is safe."""


def send_frame(sock: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message).encode()
    sock.sendall(_LENGTH.pack(len(data)) + data)


def recv_frame(sock: socket.socket) -> dict[str, Any] | None:
    """The next message, or None when the peer closed cleanly between messages; ValueError on garbage."""
    head = _recv_exactly(sock, _LENGTH.size, eof_ok=True)
    if head is None:
        return None
    (length,) = _LENGTH.unpack(head)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes is over the {MAX_FRAME} limit")
    body = _recv_exactly(sock, length, eof_ok=False)
    message = json.loads(body or b"")
    if not isinstance(message, dict):
        raise ValueError("a frame must hold a JSON object")
    return message


def _recv_exactly(sock: socket.socket, n: int, *, eof_ok: bool) -> bytes | None:
    chunks: list[bytes] = []
    got = 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            if eof_ok and got == 0:
                return None
            raise ConnectionError("peer closed in the middle of a frame")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a unix socket (SO_PEERCRED: the kernel's word, not its)."""
    _, uid, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return uid


class MuxClient:
    """One connection to a master; one request at a time (a lock serialises threads sharing it)."""

    def __init__(self, sock: socket.socket, name: str, pid: int) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self.name = name
        self.pid = pid

    def execute(self, line: str, stdin: bytes, what: str) -> RunResult:
        """Run the already quoted command `line` through the master. NotSent when it surely did not run;
        HostError when it may have run but its result is lost."""
        request = {"op": "exec", "line": line, "stdin": base64.b64encode(stdin).decode()}
        with self._lock:
            try:
                send_frame(self._sock, request)
            except OSError as exc:  # an incomplete frame is never acted on
                raise NotSent(f"the master is gone ({exc})") from None
            why: object = "it closed the connection"
            try:
                reply = recv_frame(self._sock)
            except (OSError, ValueError) as exc:
                reply, why = None, exc
        if reply is None:
            raise HostError(f"the SSH connection master for {self.name} stopped while running: {what} ({why})",
                            "the command may or may not have run; check the host, then run it again")
        if "error" in reply:
            if not reply.get("sent", True):
                raise NotSent(str(reply["error"]))
            raise HostError(f"connection to {self.name} failed while running: {what} ({reply['error']})",
                            "the command may or may not have run; check the host, then run it again")
        return RunResult(int(reply["rc"]), str(reply["stdout"]), str(reply["stderr"]))

    def stop_master(self) -> None:
        """Ask the master to exit now (it finishes the requests of other clients first)."""
        with self._lock:
            try:
                send_frame(self._sock, {"op": "exit"})
                recv_frame(self._sock)
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        self._sock.close()


def attach(target: SSHTarget) -> MuxClient | None:
    """A client of the live master for `target`, or None (no master, or one that must not be used; the reason
    is logged)."""
    try:
        path = socket_path(runtime_dir(), target)
        if path is None or not check_socket(path):
            return None
    except (UnsafeRuntimeDir, OSError) as exc:
        log.warning("not using an SSH connection master for %s: %s", target.name, exc)
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(HELLO_TIMEOUT)
        sock.connect(str(path))
        if peer_uid(sock) != os.getuid():
            raise UnsafeRuntimeDir(f"the process behind {path} runs as another user")
        send_frame(sock, {"vmlab-mux": PROTOCOL, "id": path.stem})
        reply = recv_frame(sock) or {}
        if reply.get("vmlab-mux") != PROTOCOL or not reply.get("ok"):
            raise ConnectionError(f"the master declined: {reply.get('why', 'no answer')}")
        if not _trusted(target, str(reply.get("host_key", ""))):
            raise UnsafeRuntimeDir("its host key is not the one vmlab trusts for this target now")
        sock.settimeout(None)
        log.debug("using SSH connection master %s for %s", reply.get("pid"), target.describe())
        return MuxClient(sock, target.name, int(reply.get("pid", 0)))
    except UnsafeRuntimeDir as exc:
        log.warning("not using the SSH connection master for %s: %s", target.name, exc)
    except (OSError, ValueError) as exc:  # a stale socket (ECONNREFUSED), a master exiting, a timeout
        log.debug("no usable SSH connection master for %s: %s", target.name, exc)
    sock.close()
    return None


def _trusted(target: SSHTarget, line: str) -> bool:
    from vmlab.errors import BadInput
    from vmlab.transport.hostkeys import HostKey, KnownHosts

    try:
        key = HostKey.from_line(line)
    except BadInput:
        return False
    if target.pinned_host_key:
        return key == HostKey.from_line(target.pinned_host_key)
    return key in KnownHosts(target.known_hosts_path()).lookup(target.host_key_alias)


def spawn(target: SSHTarget, idle: float) -> None:
    """Start a master for `target` in the background (it exits at once if another one holds the target's
    lock). Its log, `<identity>.log`, sits next to the socket."""
    try:
        folder = runtime_dir()
        path = socket_path(folder, target)
    except (UnsafeRuntimeDir, OSError) as exc:
        log.warning("not starting an SSH connection master for %s: %s", target.name, exc)
        return
    if path is None:
        log.info("not starting an SSH connection master: the socket path under %s is too long", folder)
        return
    fields = {f.name: getattr(target, f.name) for f in dataclasses.fields(target)}
    spec = {"target": {k: str(v) if isinstance(v, Path) else v for k, v in fields.items()},
            "idle": idle, "socket": str(path)}
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    try:  # a failure here only costs the next run its shortcut; this run has its direct connection
        log_fd = os.open(path.with_suffix(".log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            proc = subprocess.Popen([sys.executable, "-m", "vmlab.transport.master"], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=log_fd, cwd="/", env=env,
                                    start_new_session=True)
        finally:
            os.close(log_fd)
        # Reap it if it exits while this process lives (another master won the lock); otherwise init does.
        threading.Thread(target=proc.wait, name="ssh-master-reaper", daemon=True).start()
        assert proc.stdin is not None
        with proc.stdin:
            proc.stdin.write(json.dumps(spec).encode())
    except OSError as exc:
        log.warning("cannot start an SSH connection master for %s: %s", target.name, exc)
