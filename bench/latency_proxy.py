"""A TCP proxy on 127.0.0.1 that delays each direction by half a round trip: a far-away host on loopback.

tc/netem is not available on these machines, so the benchmark puts this in front of its sshd. Every chunk read
from one side is written to the other `rtt / 2` seconds later, in order; nothing is throttled. It also counts
*turns*, a tool-independent count of the round trips a client waited for (the SSH handshake included): a turn
is the server answering something the client sent, at least a round trip after the previous turn. Messages sent
together or while an earlier answer is still on its way (a command pipelined behind another) share a turn, and
a message nothing answers (a channel close, the final disconnect) is none::

    with LatencyProxy("127.0.0.1", sshd_port, rtt=0.050) as proxy:
        ...  # connect to 127.0.0.1:proxy.port
        print(proxy.turns)

Runs its own asyncio loop in a daemon thread; `close()` stops it and every connection it carries.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import threading
from collections.abc import Callable
from types import TracebackType


class _Pipe:
    """One direction of one connection: chunks wait in a queue until their time comes, then are written."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, writer: asyncio.StreamWriter) -> None:
        self.loop, self.delay, self.writer = loop, delay, writer
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.eof = False

    def push(self, data: bytes) -> None:
        self.queue.append((self.loop.time() + self.delay, data))
        self._arm()

    def finish(self) -> None:
        self.queue.append((self.loop.time() + self.delay, b""))
        self._arm()

    def _arm(self) -> None:
        if self.timer is None and self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)

    def _flush(self) -> None:
        self.timer = None
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            if self.writer.is_closing():
                self.queue.clear()
                return
            if data:
                self.writer.write(data)
            elif self.writer.can_write_eof():
                try:
                    self.writer.write_eof()
                except OSError:  # the other side is gone already
                    pass
        self._arm()


class LatencyProxy:
    """Listen on 127.0.0.1 (port 0 picks a free one) and forward to `host:port` with `rtt` seconds of round
    trip added; `turns` counts client round trips over all connections, `connections` the connections."""

    def __init__(self, host: str, port: int, rtt: float, listen_port: int = 0) -> None:
        self.upstream = (host, port)
        self.rtt = rtt
        self.turns = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(listen_port, ready), name="latency-proxy",
                                        daemon=True)
        self._thread.start()
        ready.wait(10)
        if self._server is None:
            raise RuntimeError("the latency proxy did not start")
        self.port: int = self._server.sockets[0].getsockname()[1]

    def _run(self, listen_port: int, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", listen_port))
        finally:
            ready.set()
        self._loop.run_forever()

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            c_writer.close()
            self._tasks.discard(task)
            return
        for w in (c_writer, s_writer):
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        half = self.rtt / 2
        asked = [False]  # the client sent something the server has not answered yet
        last = [float("-inf")]  # when the last turn was counted
        # 90% of a round trip: the scheduling of both sides jitters by a few milliseconds
        spacing = 0.9 * self.rtt

        def to_server(data: bytes) -> None:
            asked[0] = True

        def to_client(data: bytes) -> None:
            now = self._loop.time()
            if asked[0] and now - last[0] >= spacing:
                self.turns += 1
                last[0] = now
            asked[0] = False

        try:
            await asyncio.gather(self._pump(c_reader, _Pipe(self._loop, half, s_writer), to_server),
                                 self._pump(s_reader, _Pipe(self._loop, half, c_writer), to_client))
        except asyncio.CancelledError:  # close(): end quietly, asyncio would log a cancelled handler
            pass
        finally:
            for w in (c_writer, s_writer):
                w.close()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, pipe: _Pipe, seen: Callable[[bytes], None]) -> None:
        try:
            while data := await reader.read(1 << 16):
                seen(data)
                pipe.push(data)
        except OSError:
            pass
        pipe.finish()
        # keep the connection until the delayed bytes are out
        while pipe.queue or pipe.timer is not None:
            await asyncio.sleep(pipe.delay or 0.001)

    def close(self) -> None:
        """Stop listening and drop every connection."""

        def stop() -> None:
            if self._server is not None:
                self._server.close()
            for t in list(self._tasks):
                t.cancel()
            self._loop.call_later(0.05, self._loop.stop)

        if self._loop.is_running():
            self._loop.call_soon_threadsafe(stop)
            self._thread.join(5)

    def __enter__(self) -> LatencyProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
