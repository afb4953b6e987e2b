"""SpareSession: the channel opened ahead is handed over once, only for the link it was opened on, and only
refilled while opens are slow enough for it to pay (pure logic: links and channels are plain objects)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

import vmlab.transport.spare as spare_module
from vmlab.transport.spare import WORTH_SECONDS, SpareSession


@dataclass
class Link:
    active: bool = True


@dataclass
class Chan:
    link: Link
    closed: bool = False
    seen_by: list[str] = field(default_factory=list)

    def close(self) -> None:
        self.closed = True


def test_spare_is_taken_once_and_only_on_its_own_link() -> None:
    opened: list[Chan] = []
    spare = SpareSession(lambda link: opened.append(Chan(link)) or opened[-1])
    first, second = Link(), Link()
    spare.refill(first)
    assert spare.take(first) is opened[0]
    assert spare.take(first) is None  # handed over once
    spare.last_open = float("inf")
    spare.refill(first)
    assert spare.take(second) is None and opened[1].closed  # a reconnect made it useless: closed, not leaked
    spare.last_open = float("inf")
    spare.refill(second)
    second.active = False
    assert spare.take(second) is None and opened[2].closed


def test_refills_only_while_opens_are_slow() -> None:
    calls: list[Link] = []
    spare = SpareSession(lambda link: calls.append(link) or Chan(link))
    link = Link()
    spare.refill(link)  # the first time the cost is unknown: open ahead
    assert spare.take(link) is not None and len(calls) == 1
    spare.last_open = WORTH_SECONDS / 10  # opens on loopback take a fraction of a millisecond
    spare.refill(link)
    assert spare.take(link) is None and len(calls) == 1  # fast opens: not worth a thread
    spare.timed(lambda: threading.Event().wait(WORTH_SECONDS * 3))  # a slow, far-away open
    spare.refill(link)
    assert spare.take(link) is not None and len(calls) == 2


def test_a_failed_open_ahead_leaves_the_next_command_to_open_its_own() -> None:
    def refuse(link: Link) -> Chan:
        raise OSError("administratively prohibited")

    spare = SpareSession(refuse)
    spare.refill(Link())
    assert spare.take(Link()) is None
    spare.discard()  # nothing pending: fine


def test_a_spare_left_over_a_pause_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # after a pause the link may be dead without anyone knowing yet: a fresh open finds out before exec
    opened: list[Chan] = []
    spare = SpareSession(lambda link: opened.append(Chan(link)) or opened[-1])
    link = Link()
    spare.refill(link)
    later = spare_module.time.monotonic() + spare_module.MAX_AGE_SECONDS + 1
    monkeypatch.setattr(spare_module.time, "monotonic", lambda: later)
    assert spare.take(link) is None and opened[0].closed
