"""The agent's IMDSv2 client against the emulator: a token first, both kinds of notice, a token that expired."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from harness.emulators.imds import ImdsEmulator
from vmlab.agent.imds import Imds, InterruptionWatcher


def test_notices_need_the_token_and_are_read() -> None:
    with ImdsEmulator() as emulator:
        with pytest.raises(urllib.error.HTTPError) as refused:  # IMDSv1-style GET: refused
            urllib.request.urlopen(emulator.endpoint + "/latest/meta-data/spot/instance-action", timeout=5)
        assert refused.value.code == 401
        imds = Imds(emulator.endpoint)
        assert imds.notice() is None
        emulator.set("/latest/meta-data/events/recommendations/rebalance", '{"noticeTime": "2026-11-24T20:00:00Z"}')
        assert imds.notice() == 'rebalance recommendation: {"noticeTime": "2026-11-24T20:00:00Z"}'
        emulator.set("/latest/meta-data/spot/instance-action", '{"action": "stop"}')
        assert imds.notice() == 'spot interruption: {"action": "stop"}'
        emulator.tokens.clear()  # the token expired: renewed once, transparently
        assert imds.notice() == 'spot interruption: {"action": "stop"}'
        assert [r for r in emulator.requests if r[0] == "PUT"] == [("PUT", "/latest/api/token", True)] * 2


def test_watcher_calls_back_once_per_notice(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    with ImdsEmulator() as emulator:
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", emulator.endpoint)
        seen: list[str] = []
        got = threading.Event()
        watcher = InterruptionWatcher(lambda text: (seen.append(text), got.set()), interval_s=0.05)
        assert watcher.start() is True
        try:
            emulator.set("/latest/meta-data/spot/instance-action", '{"action": "terminate"}')
            assert got.wait(5)
            got.clear()
            assert not got.wait(0.5)  # the same notice again is no news
        finally:
            watcher.stop()
    assert seen == ['spot interruption: {"action": "terminate"}']
