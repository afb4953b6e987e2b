"""The throwaway root host of harness/clouds/sandbox.py keeps its promises: writes and deletes stay inside, stopping
it leaves no process and no temp dir, a kept upper dir boots the next sandbox, and its systemctl stand-in runs a
unit with its environment file and user."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness.clouds.sandbox import Sandbox

pytestmark = pytest.mark.sshd


def test_writes_and_deletes_stay_inside_and_stop_leaves_nothing(tmp_path: Path) -> None:
    real_hostname = Path("/etc/hostname").read_bytes()
    box = Sandbox().start()
    try:
        assert box.run("sh", "-c", "echo inside > /etc/vmlab-sandbox-probe && rm /etc/hostname").returncode == 0
        assert box.path("/etc/vmlab-sandbox-probe").read_text() == "inside\n"
        assert not box.path("/etc/hostname").exists()
        assert list(box.path("/root").iterdir()) == [] and list(box.path("/opt").iterdir()) == []
        sleeper = box.run("sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!")
        pid = int(sleeper.stdout)
        assert Path(f"/proc/{pid}").exists()
    finally:
        box.stop(keep=tmp_path / "disk")
    assert not Path("/etc/vmlab-sandbox-probe").exists()
    assert Path("/etc/hostname").read_bytes() == real_hostname
    assert not box.tmp.exists()
    time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]

    with Sandbox(layers=[tmp_path / "disk"]) as again:  # the kept disk is the next root
        assert again.path("/etc/vmlab-sandbox-probe").read_text() == "inside\n"
        assert not again.path("/etc/hostname").exists()


def test_the_systemctl_stand_in_runs_a_unit_with_its_environment() -> None:
    unit = ("[Unit]\nConditionPathExists=/etc/probe.env\n\n[Service]\nUser=nobody\nEnvironmentFile=/etc/probe.env\n"
            "ExecStart=/bin/sh -c 'echo \"$PROBE $(id -un)\" > /tmp/probe.out; exec sleep 300'\n")
    with Sandbox() as box:
        box.path("/etc/systemd/system").mkdir(parents=True, exist_ok=True)
        box.path("/etc/systemd/system/probe.service").write_text(unit)
        assert box.run("systemctl", "start", "probe.service").returncode == 0
        assert box.run("systemctl", "is-active", "probe.service").stdout.strip() == "inactive"  # condition unmet
        box.path("/etc/probe.env").write_text("PROBE=hello\n")
        assert box.run("systemctl", "enable", "probe.service").returncode == 0
        assert box.run("systemctl", "is-enabled", "probe.service").stdout.strip() == "enabled"
        assert box.run("systemctl", "restart", "probe.service").returncode == 0
        deadline = time.monotonic() + 10
        while not box.path("/tmp/probe.out").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert box.path("/tmp/probe.out").read_text() == "hello nobody\n"
        assert box.run("systemctl", "is-active", "probe.service").returncode == 0
        assert box.run("systemctl", "stop", "probe.service").returncode == 0
        assert box.run("systemctl", "is-active", "probe.service").returncode == 3
    assert not os.path.exists("/etc/systemd/system/probe.service")
