"""SIGTERM and SIGHUP end a command as Ctrl-C does, once; a signal ignored by the parent (nohup) stays ignored."""

from __future__ import annotations

import os
import signal

import pytest

from vmlab.interrupts import Interrupted, ctrl_c_ignored, signals_interrupt


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_raises_once_then_later_ones_are_ignored(sig: signal.Signals) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as caught:
        with signals_interrupt():
            try:
                os.kill(os.getpid(), sig)
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # a second signal during the "undo": ignored
    assert isinstance(caught.value, KeyboardInterrupt)
    assert caught.value.exit_code == 128 + sig and caught.value.signal_name == sig.name
    assert signal.getsignal(signal.SIGTERM) == before


def test_nohup_keeps_sighup_ignored() -> None:
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with signals_interrupt():
            os.kill(os.getpid(), signal.SIGHUP)  # ignored: nothing raised
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_ctrl_c_ignored_shields_every_stop_signal() -> None:
    with signals_interrupt():
        with ctrl_c_ignored():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                os.kill(os.getpid(), sig)
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, signal.SIG_DFL)
