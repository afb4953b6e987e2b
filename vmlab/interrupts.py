"""Every stop signal is a Ctrl-C, and none interrupts vmlab while it removes what it created: leaking a paid VM
is worse than waiting a moment.

SIGTERM (a cancelled CI job, `timeout`, systemd) and SIGHUP (a closed terminal, a dropped SSH session) end a
command the way Ctrl-C does: an `Interrupted` (a KeyboardInterrupt) is raised in the main thread, so every
`except BaseException: undo(); raise` and every `Cleanup` runs. Once one signal arrived, later ones are ignored
until the command is over; `ctrl_c_ignored()` also shields an undo when vmlab is used as a library.

    with signals_interrupt():          # the CLI wraps every command in this
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
from types import FrameType
from typing import Any

#: the signals that mean "stop now" to vmlab (SIGHUP is absent on Windows)
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; `exit_code` is the shell's 128 + signal number (130 Ctrl-C, 143 TERM, 129 HUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum
        self.signal_name = signal.Signals(signum).name


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Inside the block SIGINT, SIGTERM and SIGHUP raise `Interrupted` once; later ones are ignored (the command
    is already ending, and its clean-up must not be cut short). A signal the parent set to be ignored (`nohup`
    ignores SIGHUP, a shell's background job SIGINT) stays ignored. Handlers are restored on exit; outside the
    main thread this does nothing."""
    if not _on_main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        if fired:
            return
        fired.append(signum)
        raise Interrupted(signum)

    previous: dict[signal.Signals, Any] = {}
    for sig in STOP_SIGNALS:
        before = signal.getsignal(sig)
        if before == signal.SIG_IGN:  # nohup's SIGHUP, a background job's SIGINT
            continue
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)


@contextmanager
def ctrl_c_ignored() -> Iterator[None]:
    """Ignore SIGINT, SIGTERM and SIGHUP inside the block (main thread only: other threads cannot set handlers),
    then restore their handlers."""
    if not _on_main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)


class _Deferral:
    """One `deferred_signals()` block: `holding` once the creating call said its result is complete."""

    def __init__(self) -> None:
        self.holding = False
        self.pending: int | None = None


_deferrals: list[_Deferral] = []


def hold_signals() -> None:
    """Called by a function that creates something (a launch, an image) once it has the result and no longer
    undoes it itself: from here a stop signal waits until the caller's `deferred_signals()` block has registered
    its clean-up. Outside such a block (or another thread) it does nothing."""
    if _deferrals and _on_main_thread():
        _deferrals[-1].holding = True


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Close the gap between a create call returning and its clean-up being registered: a stop signal that comes
    after the call's `hold_signals()` is remembered and raised on leaving the block; one that comes before
    (while the call still waits and can undo its own work) acts at once.

        with deferred_signals():
            inst = provider.launch(spec)      # calls hold_signals() just before returning
            cleanup.on_failure(f"instance {inst.id}", lambda: terminate(provider, inst.id))
    """
    if not _on_main_thread():
        yield
        return
    scope = _Deferral()
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        if scope.holding:
            if scope.pending is None:
                scope.pending = signum
            return
        before = previous.get(signal.Signals(signum))
        if callable(before):
            before(signum, frame)
        elif before != signal.SIG_IGN:
            raise Interrupted(signum)

    for sig in STOP_SIGNALS:
        before = signal.getsignal(sig)
        if before != signal.SIG_IGN:
            previous[sig] = signal.signal(sig, handler)
    _deferrals.append(scope)
    try:
        yield
    finally:
        _deferrals.remove(scope)
        for sig, before in previous.items():
            signal.signal(sig, before)
        if scope.pending is not None:
            signal.raise_signal(scope.pending)  # now handled as it would have been at once
