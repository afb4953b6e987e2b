"""A session channel opened ahead of need, so that a command waits for one round trip instead of two.

Opening an SSH session channel is a round trip of its own (open, then confirmation) before the command can even
be sent. While one command runs, `SpareSession` opens the channel for the next one in a helper thread, so on a
far-away host a run of commands costs one round trip each (exec, output) instead of two::

    spare = SpareSession(lambda: transport.open_session(timeout=10))
    chan = spare.take(link) or transport.open_session()   # the channel opened ahead, if it is still good
    spare.refill(link)                                     # start opening the next one
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class SpareSession:
    """At most one session channel, opened in the background for a given link; `take` hands it over once."""

    def __init__(self, open_session: Callable[[Any], Any]) -> None:
        self._open = open_session  # link -> a new session channel (blocking)
        self._lock = threading.Lock()
        # (opening thread, [the channel once opened, or None], the link it is opened on)
        self._pending: tuple[threading.Thread, list[Any], Any] | None = None

    def refill(self, link: Any) -> None:
        """Start opening a channel on `link` unless one is open or opening already."""
        with self._lock:
            if self._pending is not None:
                return
            holder: list[Any] = [None]
            thread = threading.Thread(target=self._fill, args=(link, holder), name="ssh-spare-session",
                                      daemon=True)
            self._pending = (thread, holder, link)
            thread.start()

    def _fill(self, link: Any, holder: list[Any]) -> None:
        try:
            holder[0] = self._open(link)
        except Exception:  # the server refused or the link died: the next command opens its own channel
            holder[0] = None

    def _claim(self) -> tuple[Any, Any]:
        """(the spare channel or None, its link), waiting for it if it is still being opened."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return None, None
        thread, holder, link = pending
        thread.join()
        return holder[0], link

    def take(self, link: Any) -> Any:
        """The spare channel if it was opened on `link` and is still open, else None (and it is closed)."""
        chan, owner = self._claim()
        if chan is None:
            return None
        if owner is link and link.active and not chan.closed:
            return chan
        chan.close()
        return None

    def discard(self) -> None:
        """Close the spare channel, if any (the connection is closing)."""
        chan, _ = self._claim()
        if chan is not None:
            chan.close()
