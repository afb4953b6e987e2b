"""Ctrl-C held off while vmlab removes what it created: leaking a paid VM is worse than waiting a moment.

    try:
        ...
    except BaseException:
        with ctrl_c_ignored():
            remove_what_was_made()
        raise
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def ctrl_c_ignored() -> Iterator[None]:
    """Ignore SIGINT inside the block (main thread only: other threads cannot set handlers), then restore it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
