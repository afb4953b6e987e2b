"""Local port forwarding over an SSH connection: a listener on 127.0.0.1 whose connections become channels.

Used for checks and short forwards (the lab's `/api/status`); `vmlab tunnel` prefers the system `ssh -N -L`,
which moves bulk data about three times faster than paramiko.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from vmlab.errors import BadInput

log = logging.getLogger("vmlab.transport")

CHUNK = 1 << 16


class Forward:
    """A running local forward; `local_port` is where to connect, `close()` stops it and its connections.

    Made by `SSHConnection.forward_local`; `open_channel(origin)` returns a channel to the remote end.

    Example::

        with conn.forward_local(0, "127.0.0.1", 8888) as fwd:
            urllib.request.urlopen(f"http://127.0.0.1:{fwd.local_port}/api/status")
    """

    def __init__(self, open_channel: Callable[[tuple[str, int]], Any], local_port: int, label: str) -> None:
        self._open_channel = open_channel
        self.label = label
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._active: set[tuple[socket.socket, Any]] = set()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            # Loopback only: a forward to a lab must never be reachable from the network.
            self._server.bind(("127.0.0.1", local_port))
        except OSError as exc:
            self._server.close()
            raise BadInput(f"cannot listen on 127.0.0.1:{local_port} ({exc.strerror})",
                           "pick another local port, or 0 for any free one") from None
        self._server.listen(64)
        # A timeout lets the accept loop notice close() even where shutdown() does not wake accept().
        self._server.settimeout(1.0)
        self.local_port: int = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name=f"forward-{self.local_port}",
                                        daemon=True)
        self._thread.start()

    def __enter__(self) -> Forward:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Forward(127.0.0.1:{self.local_port} -> {self.label})"

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """Stop listening and cut every connection in flight. Safe to call twice."""
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self._server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._server.close()
        with self._lock:
            pairs = list(self._active)
        for client, chan in pairs:
            _quiet_close(client)
            _quiet_close(chan)
        self._thread.join(timeout=2.0)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, origin = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(client, origin), daemon=True,
                             name=f"forward-{self.local_port}-{origin[1]}").start()

    def _serve(self, client: socket.socket, origin: tuple[str, int]) -> None:
        try:
            chan = self._open_channel(origin)
        except Exception as exc:  # a failed channel only costs this one local connection
            log.warning("forward %s: cannot open channel: %s", self.label, exc)
            _quiet_close(client)
            return
        pair = (client, chan)
        with self._lock:
            self._active.add(pair)
        try:
            _pump(client, chan, self._closed)
        except (OSError, EOFError) as exc:
            log.debug("forward %s: connection ended: %s", self.label, exc)
        finally:
            with self._lock:
                self._active.discard(pair)
            _quiet_close(client)
            _quiet_close(chan)


def _pump(client: socket.socket, chan: Any, closed: threading.Event) -> None:
    """Copy both ways until both sides have ended, passing half-closes through (EOF one way, data the
    other)."""
    reading: list[Any] = [client, chan]
    while reading and not closed.is_set():
        ready, _, _ = select.select(reading, [], [], 1.0)
        if client in ready:
            data = client.recv(CHUNK)
            if data:
                chan.sendall(data)
            else:
                chan.shutdown_write()
                reading.remove(client)
        if chan in ready:
            data = chan.recv(CHUNK)
            if data:
                client.sendall(data)
            else:
                try:
                    client.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                reading.remove(chan)
        if chan.closed and chan in reading and not chan.recv_ready():
            reading.remove(chan)


def _quiet_close(thing: Any) -> None:
    try:
        thing.close()
    except Exception:  # already closed or its transport is gone
        pass
