"""A session channel opened ahead of need, so that a command waits for one round trip instead of two.

Opening an SSH session channel is a round trip of its own (open, then confirmation) before the command can even
be sent. While one command runs, `SpareSession` opens the channel for the next one in a helper thread, so on a
far-away host a run of commands costs one round trip each (exec, output) instead of two. On loopback or a LAN
an open costs less than the helper thread, so after the first one it only refills when opens are slow::

    spare = SpareSession(lambda link: link.transport.open_session(timeout=10))
    chan = spare.take(link) or spare.timed(open_new)      # the channel opened ahead, if it is still good
    spare.refill(link)                                     # start opening the next one, if that pays
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

# Opening ahead pays when an open takes longer than this (a network round trip, not a loopback hop).
WORTH_SECONDS = 0.004
# A spare older than this is not used: after a pause the link may have died unnoticed (a VM rebooted), and a
# fresh open is what detects that and reconnects before anything is sent.
MAX_AGE_SECONDS = 5.0


class SpareSession:
    """At most one session channel, opened in the background for a given link; `take` hands it over once."""

    def __init__(self, open_session: Callable[[Any], Any]) -> None:
        self._open = open_session  # link -> a new session channel (blocking)
        self._lock = threading.Lock()
        # (opening thread, [the channel once opened, or None], the link it is opened on, when it was started)
        self._pending: tuple[threading.Thread, list[Any], Any, float] | None = None
        self.last_open = float("inf")  # seconds the last open took; unknown at first, so the first refill runs

    def timed(self, open_now: Callable[[], Any]) -> Any:
        """`open_now()`, noting how long it took."""
        t0 = time.perf_counter()
        chan = open_now()
        self.last_open = time.perf_counter() - t0
        return chan

    def refill(self, link: Any) -> None:
        """Start opening a channel on `link` unless one is open or opening already, or opens are fast."""
        with self._lock:
            if self._pending is not None or self.last_open < WORTH_SECONDS:
                return
            holder: list[Any] = [None]
            thread = threading.Thread(target=self._fill, args=(link, holder), name="ssh-spare-session",
                                      daemon=True)
            self._pending = (thread, holder, link, time.monotonic())
            thread.start()

    def refresh(self, link: Any, older_than: float) -> None:
        """Replace a spare started more than `older_than` seconds ago (a long-lived holder of a link keeps one
        fresh this way, so `take` never has to refuse it for its age)."""
        with self._lock:
            pending = self._pending
        if pending is not None and time.monotonic() - pending[3] < older_than:
            return
        self.discard()
        self.refill(link)

    def _fill(self, link: Any, holder: list[Any]) -> None:
        try:
            holder[0] = self.timed(lambda: self._open(link))
        except Exception:  # the server refused or the link died: the next command opens its own channel
            holder[0] = None

    def _claim(self) -> tuple[Any, Any, float]:
        """(the spare channel or None, its link, when its opening started), waiting for it if it is still being
        opened."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return None, None, 0.0
        thread, holder, link, started = pending
        thread.join()
        return holder[0], link, started

    def take(self, link: Any) -> Any:
        """The spare channel if it was opened on `link`, recently, and is still open; else None (and it is
        closed)."""
        chan, owner, started = self._claim()
        if chan is None:
            return None
        fresh = time.monotonic() - started < MAX_AGE_SECONDS
        if owner is link and link.active and not chan.closed and fresh:
            return chan
        chan.close()
        return None

    def discard(self) -> None:
        """Close the spare channel, if any (the connection is closing)."""
        chan, _, _ = self._claim()
        if chan is not None:
            chan.close()
