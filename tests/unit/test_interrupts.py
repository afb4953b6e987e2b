"""SIGTERM and SIGHUP end a command as Ctrl-C does, once; a signal ignored by the parent (nohup) stays ignored."""

from __future__ import annotations

import os
import signal

import pytest

from vmlab.interrupts import Interrupted, ctrl_c_ignored, deferred_signals, hold_signals, signals_interrupt


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


def test_a_background_jobs_ignored_sigint_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with signals_interrupt():
            os.kill(os.getpid(), signal.SIGINT)  # ignored: nothing raised
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_deferred_signals_hold_a_signal_after_the_create_until_it_is_registered() -> None:
    registered: list[str] = []
    with pytest.raises(Interrupted) as caught:
        with signals_interrupt():
            with deferred_signals():
                hold_signals()  # the create call has its result
                os.kill(os.getpid(), signal.SIGTERM)
                registered.append("undo")  # still runs: the signal waits
    assert registered == ["undo"] and caught.value.signum == signal.SIGTERM


def test_deferred_signals_let_a_signal_before_the_hold_act_at_once() -> None:
    reached: list[str] = []
    with pytest.raises(Interrupted):
        with signals_interrupt():
            with deferred_signals():
                os.kill(os.getpid(), signal.SIGINT)  # the create call is still waiting: it undoes its own work
                reached.append("too far")
    assert reached == []
