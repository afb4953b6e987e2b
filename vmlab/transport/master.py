"""The SSH connection master: a background process that holds one SSH connection for later vmlab runs.

Started by `vmlab.transport.mux.spawn` (`python -m vmlab.transport.master`, the target as JSON on stdin) right
after a run connected directly, so the target's host key is already verified or recorded. It takes the
target's lock file (a second master for the same target exits at once), connects and checks the host key like
any vmlab connection, then serves `<identity>.sock` (mode 0600, in the 0700 runtime folder) until no client has
been connected for `idle` seconds, or its SSH connection is gone, or a client sends `exit`. Every accepted
client's uid is checked with SO_PEERCRED; another user's connection is closed without a word.

It runs commands it is given and nothing else: no port forwards, no SFTP, no shell of its own. It keeps one
session channel opened ahead (when a client arrives, and while each command runs), so a client's command costs
one round trip to the host; it sends nothing while idle but SSH keepalives.

Example (what `spawn` does)::

    echo '{"target": {"host": "10.0.0.5", ...}, "idle": 60, "socket": "/run/user/1000/vmlab/ab12.sock"}' \\
        | python -m vmlab.transport.master
"""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import select
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paramiko

from vmlab.errors import HostError, VmlabError
from vmlab.transport.channel import CHANNEL_ERRORS, collect
from vmlab.transport.connect import Link, connect
from vmlab.transport.hostkeys import HostKey
from vmlab.transport.mux import peer_uid, recv_frame, send_frame
from vmlab.transport.rundir import PROTOCOL, check_folder, check_socket, identity
from vmlab.transport.spare import MAX_AGE_SECONDS, SpareSession
from vmlab.transport.target import SSHTarget

log = logging.getLogger("vmlab.transport.master")

TICK_SECONDS = 1.0


class Master:
    """Serves one link to clients on a unix socket; see the module docstring."""

    def __init__(self, target: SSHTarget, link: Link, idle: float, path: Path) -> None:
        self.target = target
        self.link = link
        self.idle = idle
        self.path = path
        self.host_key = HostKey.from_blob(link.transport.get_remote_server_key().asbytes()).line()
        self.spare = SpareSession(lambda lk: lk.transport.open_session(timeout=target.connect_timeout))
        self._lock = threading.Lock()
        self._clients = 0
        self._last = time.monotonic()
        self._stop = threading.Event()

    def serve(self) -> None:
        if check_socket(self.path):  # a stale socket: its master is dead, since we hold the lock
            self.path.unlink()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            server.bind(str(self.path))
        finally:
            os.umask(old_umask)
        inode = os.lstat(self.path).st_ino
        server.listen(16)
        log.info("serving %s on %s for %.0fs idle", self.target.describe(), self.path, self.idle)
        self.spare.refill(self.link)
        try:
            while not self._stop.is_set() and self._wanted():
                ready, _, _ = select.select([server], [], [], TICK_SECONDS)
                if ready:
                    conn, _ = server.accept()
                    threading.Thread(target=self._client, args=(conn,), daemon=True).start()
        finally:
            try:
                if os.lstat(self.path).st_ino == inode:
                    self.path.unlink()
            except FileNotFoundError:
                pass
            server.close()
            log.info("stopping (link active: %s)", self.link.active)

    def _wanted(self) -> bool:
        """Serve on while a client is attached (even with a dead link: it must hear "not sent" rather than
        lose its master mid-request), else while the link lives and the idle time has not run out."""
        with self._lock:
            if self._clients:
                return True
            return self.link.active and time.monotonic() - self._last <= self.idle

    def _client(self, conn: socket.socket) -> None:
        with conn:
            uid = peer_uid(conn)
            if uid != os.getuid():
                log.warning("refused a client running as uid %d", uid)
                return
            with self._lock:
                self._clients += 1
            try:
                self._converse(conn)
            except (OSError, ValueError) as exc:
                log.info("client left: %s", exc)
            finally:
                with self._lock:
                    self._clients -= 1
                    self._last = time.monotonic()

    def _converse(self, conn: socket.socket) -> None:
        hello = recv_frame(conn) or {}
        if hello.get("vmlab-mux") != PROTOCOL or hello.get("id") != self.path.stem:
            send_frame(conn, {"vmlab-mux": PROTOCOL, "ok": False, "why": "another protocol or target"})
            return
        if not self.link.active:
            send_frame(conn, {"vmlab-mux": PROTOCOL, "ok": False, "why": "the SSH connection is closed"})
            return
        send_frame(conn, {"vmlab-mux": PROTOCOL, "ok": True, "host_key": self.host_key, "pid": os.getpid()})
        # A channel for the client's first command opens while the client gets ready; one opened long ago is
        # replaced, as a fresh open is what finds a link that died unnoticed before anything is sent.
        self.spare.refresh(self.link, MAX_AGE_SECONDS / 2)
        while (request := recv_frame(conn)) is not None:
            if request.get("op") == "exec":
                send_frame(conn, self.execute(str(request["line"]), base64.b64decode(request.get("stdin", ""))))
            elif request.get("op") == "exit":
                self._stop.set()
                send_frame(conn, {"ok": True})
                return
            else:
                send_frame(conn, {"error": f"unknown request {request.get('op')!r}", "sent": False})
                return

    def execute(self, line: str, stdin: bytes) -> dict[str, Any]:
        """Run `line` on the link; the reply frame. `"sent": false` only when nothing reached the server."""
        link = self.link
        if not link.active:
            return {"error": "the master's SSH connection is closed", "sent": False}
        try:
            chan = self.spare.take(link) or self.spare.timed(
                lambda: link.transport.open_session(timeout=self.target.connect_timeout))
        except CHANNEL_ERRORS as exc:
            return {"error": f"cannot open a session: {exc}", "sent": False}
        self.spare.refill(link)
        try:
            try:
                chan.exec_command(line)
            except CHANNEL_ERRORS as exc:
                return {"error": f"the connection failed while starting the command: {exc}", "sent": True}
            result = collect(chan, stdin, self.target.name, line)
        except HostError as exc:
            return {"error": exc.message, "sent": True}
        finally:
            chan.close()
        return {"rc": result.rc, "stdout": result.stdout, "stderr": result.stderr}


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    spec = json.loads(sys.stdin.buffer.read())
    target = SSHTarget(**spec["target"])
    path = Path(spec["socket"])
    check_folder(path.parent)
    lock = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("another master serves %s", target.describe())
        return 0
    os.ftruncate(lock, 0)
    os.write(lock, f"{os.getpid()}\n".encode())  # who holds it, for `kill` and for tests
    try:
        link = connect(target)
    except (VmlabError, paramiko.SSHException, OSError) as exc:
        log.error("cannot connect to %s: %s", target.describe(), exc)
        return 1
    try:
        if identity(target) != path.stem:  # trust changed between the spawning run and now
            log.error("the identity of %s changed; not serving it", target.describe())
            return 1
        Master(target, link, float(spec["idle"]), path).serve()
    finally:
        link.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
