"""The idle watcher's decisions (pure), its parsers, and the spot watcher's "are we on EC2" check."""

from __future__ import annotations

import time

import pytest

from harness.emulators.sshd import free_port
from vmlab.agent import idle
from vmlab.agent.idle import Activity, Decision, Limits, decide, last_active
from vmlab.agent.imds import Imds, InterruptionWatcher, on_ec2

H = 3600.0


@pytest.mark.parametrize(("now", "used", "limits", "warned", "expected"), [
    (1000, 0, Limits(), False, "wait"),  # nothing configured
    (1000, 500, Limits(idle_s=600), False, "wait"),
    (1100, 500, Limits(idle_s=600), False, "poweroff"),
    (1000, 0, Limits(idle_s=0, deadline=2000, warn_s=600), False, "wait"),
    (1500, 1500, Limits(idle_s=600, deadline=2000, warn_s=600), False, "warn"),
    (1500, 1500, Limits(idle_s=600, deadline=2000, warn_s=600), True, "wait"),
    (2000, 2000, Limits(idle_s=600, deadline=2000, warn_s=600), True, "poweroff"),  # busy, but out of time
    (2500, 2500, Limits(deadline=2000), False, "poweroff"),
])
def test_decide(now: float, used: float, limits: Limits, warned: bool, expected: str) -> None:
    assert decide(now, used, limits, warned).action == expected


def test_reasons_say_what_and_which_option() -> None:
    assert decide(10 * H, 0, Limits(idle_s=1800), False) == Decision(
        "poweroff", "the lab was idle for 600 min (--idle)")
    warn = decide(1000, 1000, Limits(deadline=1000 + 599), False)
    assert warn.action == "warn" and "powers off in 10 min" in warn.reason


@pytest.mark.parametrize(("activity", "in_use"), [
    (Activity(), ""),
    (Activity(busy_kernels=1), "1 busy kernel(s)"),
    (Activity(terminals=2), "2 open terminal(s)"),
    (Activity(ssh_sessions=1), "1 SSH session(s)"),
    (Activity(gpu_percent=87), "GPU at 87%"),
    (Activity(gpu_percent=3), ""),  # an idle GPU's background noise
    (Activity(kernel_connections=2), ""),  # a browser tab left open
])
def test_what_counts_as_use(activity: Activity, in_use: str) -> None:
    assert activity.in_use() == in_use


def test_last_active() -> None:
    assert last_active(100, 500, Activity()) == 100
    assert last_active(100, 500, Activity(jupyter_last=300)) == 300
    assert last_active(100, 500, Activity(jupyter_last=900)) == 500  # a clock ahead of ours counts as now
    assert last_active(100, 500, Activity(terminals=1)) == 500
    assert last_active(100, 500, Activity(kernel_connections=1), count_connections=True) == 500


def test_parsers() -> None:
    assert idle.parse_time("2026-11-24T19:38:20.000000Z") == 1795549100.0
    assert idle.count_logins("ubuntu   pts/0   2026-11-24 19:00 (10.0.0.1)\nubuntu pts/1 ...\n\n") == 2
    assert idle.count_logins("root     ttyS0        2026-11-24 19:00\n") == 0  # a serial console autologin
    assert idle.gpu_percent("3\n87\n") == 87.0
    assert idle.gpu_percent("[N/A]\n") == 0.0


def test_watch_loop_warns_once_then_powers_off() -> None:
    clock = [1000.0]
    calls: list[str] = []

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    decision = idle.watch(Limits(idle_s=10 * H, deadline=1000 + 30, warn_s=20), lambda: Activity(terminals=1),
                          poweroff=lambda r: calls.append("poweroff: " + r), warn=lambda m: calls.append("warn"),
                          interval_s=1, clock=lambda: clock[0], sleep=sleep)
    assert decision.action == "poweroff"
    assert calls == ["warn", "poweroff: the lab reached its time limit (--max-hours)"]
    assert clock[0] == 1030


def test_on_ec2_by_environment() -> None:
    assert on_ec2({"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:1"}) is True
    assert on_ec2({"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://x", "AWS_EC2_METADATA_DISABLED": "true"}) is False


def test_no_metadata_service_stops_watching_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens: like a laptop or a QEMU VM
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint)
    watcher = InterruptionWatcher(lambda _t: None, imds=Imds(endpoint))
    started = time.monotonic()
    assert watcher.start() is False
    assert time.monotonic() - started < 2 and not watcher.active


def test_a_deadline_from_before_this_boot_starts_a_new_period() -> None:
    boot = 10_000.0
    assert idle.effective_deadline(20_000, 3600, boot) == 20_000  # written by `vmlab up` after this boot
    assert idle.effective_deadline(5_000, 3600, boot) == boot + 3600  # `vmlab start` of a lab stopped long ago
    assert idle.effective_deadline(5_000, 0, boot) == 0
    assert idle.effective_deadline(0, 3600, boot) == 0  # no limit
    assert 0 < idle.boot_time() < time.time()
