"""A TCP proxy on 127.0.0.1 that cuts the first N connections (reads the request, then resets the connection
without answering) and relays every later one unchanged: the network failure a client must retry, below HTTP.

Example::

    with DropProxy("http://127.0.0.1:9000", drop=2) as proxy:
        client = make_client(endpoint=proxy.endpoint)   # its first two connections are reset
        ...
        assert proxy.dropped == 2
        proxy.cut()                                      # and every connection open now dies mid-session
"""

from __future__ import annotations

import socket
import struct
import threading
from urllib.parse import urlsplit


class DropProxy:
    def __init__(self, upstream: str, drop: int = 1) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.to_drop = drop
        self.dropped = 0
        self.relayed = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._open: list[socket.socket] = []

    def __enter__(self) -> DropProxy:
        threading.Thread(target=self._accept, name="dropproxy", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._open:
                sock.close()

    def cut(self) -> int:
        """Cut every relayed connection open now, mid-session (both peers see the link die); later connections
        relay as before. Returns how many were cut."""
        with self._lock:
            open_now, self._open = self._open, []
        for sock in open_now:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)  # wakes the relay threads blocked in recv
            except OSError:
                pass
        return len(open_now) // 2

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                drop = self.dropped < self.to_drop
                self.dropped += drop
                self.relayed += not drop
            if drop:
                threading.Thread(target=self._reset, args=(client,), daemon=True).start()
            else:
                threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    @staticmethod
    def _reset(client: socket.socket) -> None:
        try:
            client.settimeout(5)
            client.recv(65536)  # the request has left the client: a retry is a real resend
        except OSError:
            pass
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        client.close()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=30)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(None)
        with self._lock:
            self._open += [client, upstream]
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
