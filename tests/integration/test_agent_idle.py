"""`vmlab-agent idle` against a real jupyter-server: an unused lab is powered off, a busy kernel, an open
terminal or recent activity keep it on, and the deadline powers it off regardless after a warning. Minutes are
shortened with VMLAB_AGENT_MINUTE_SECONDS; "powering off" is a script that records the call."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.drivers.agent import ROOT, agent_env
from harness.emulators.jupyter import JupyterServer

MINUTE_S = 0.5  # an agent minute, in seconds


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    server = JupyterServer(tmp_path_factory.mktemp("jupyter"))
    try:
        yield server
    finally:
        server.stop()


class IdleAgent:
    """`vmlab-agent idle` in a subprocess whose poweroff and wall commands append a line to `calls`."""

    def __init__(self, tmp_path: Path, jupyter: JupyterServer, idle_minutes: float, deadline: float = 0) -> None:
        self.calls = tmp_path / "calls.txt"
        record = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write(' '.join(sys.argv[2:]) + '\\n')",
                  str(self.calls)]
        import shlex

        env = agent_env(tmp_path / "state", VMLAB_IDLE_MINUTES=str(idle_minutes), VMLAB_DEADLINE=str(deadline),
                        VMLAB_AGENT_MINUTE_SECONDS=str(MINUTE_S), VMLAB_JUPYTER_ENV=str(jupyter.env_file),
                        VMLAB_POWEROFF_COMMAND=shlex.join([*record, "POWEROFF"]),
                        VMLAB_WALL_COMMAND=shlex.join([*record, "WALL"]))
        self.log = tmp_path / "idle.log"
        self.started = time.monotonic()
        with self.log.open("w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "vmlab.agent", "idle", "--jupyter-url", jupyter.url,
                                          "--interval", "0.1"], cwd=ROOT, env=env, stdout=log,
                                         stderr=subprocess.STDOUT)

    def lines(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def powered_off_after(self, timeout: float) -> float:
        """Seconds from start until the poweroff command ran (the agent exits then)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"no poweroff within {timeout}s:\n{self.log.read_text()}") from None
        assert any(line.startswith("POWEROFF") for line in self.lines()), self.log.read_text()
        return time.monotonic() - self.started

    def still_on_for(self, seconds: float) -> None:
        time.sleep(seconds)
        assert self.proc.poll() is None and self.lines() == [], f"powered off too early:\n{self.log.read_text()}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def test_unused_lab_is_powered_off(jupyter: JupyterServer, tmp_path: Path) -> None:
    agent = IdleAgent(tmp_path, jupyter, idle_minutes=3)  # 1.5 s
    took = agent.powered_off_after(timeout=15)
    print(f"powered off {took:.1f}s after start (idle limit {3 * MINUTE_S}s)")
    assert took >= 3 * MINUTE_S
    assert "WALL vmlab: powering off: the lab was idle" in agent.lines()[0]
    assert "powering off: the lab was idle" in agent.log.read_text()


def test_busy_kernel_keeps_it_on(jupyter: JupyterServer, tmp_path: Path) -> None:
    kernel = jupyter.post("/api/kernels")["id"]
    try:
        jupyter.execute(kernel, "import time; time.sleep(6)")
        agent = IdleAgent(tmp_path, jupyter, idle_minutes=2)  # 1 s
        agent.still_on_for(4)
        took = agent.powered_off_after(timeout=15)  # the cell ends at ~6 s; then 1 s idle
        assert took >= 5, f"powered off at {took:.1f}s while the kernel was busy"
    finally:
        jupyter.delete(f"/api/kernels/{kernel}")


def test_open_terminal_keeps_it_on(jupyter: JupyterServer, tmp_path: Path) -> None:
    terminal = jupyter.post("/api/terminals")["name"]
    agent = IdleAgent(tmp_path, jupyter, idle_minutes=2)
    try:
        agent.still_on_for(3)
    finally:
        jupyter.delete(f"/api/terminals/{terminal}")
    agent.powered_off_after(timeout=15)


def test_recent_activity_keeps_it_on(jupyter: JupyterServer, tmp_path: Path) -> None:
    agent = IdleAgent(tmp_path, jupyter, idle_minutes=2)
    until = time.monotonic() + 3
    while time.monotonic() < until:  # a user browsing and saving: API requests Jupyter tracks
        jupyter.get("/api/contents")
        time.sleep(0.3)
    assert agent.proc.poll() is None and agent.lines() == [], agent.log.read_text()
    stopped_using = time.monotonic()
    agent.powered_off_after(timeout=15)
    assert time.monotonic() - stopped_using >= 2 * MINUTE_S - 0.3


def test_deadline_powers_off_regardless_after_a_warning(jupyter: JupyterServer, tmp_path: Path) -> None:
    terminal = jupyter.post("/api/terminals")["name"]  # in use the whole time
    try:
        # the warning comes 10 agent minutes (5 s) before the deadline, i.e. at once here
        agent = IdleAgent(tmp_path, jupyter, idle_minutes=0, deadline=time.time() + 6)
        took = agent.powered_off_after(timeout=20)
    finally:
        jupyter.delete(f"/api/terminals/{terminal}")
    lines = agent.lines()
    assert lines[0].startswith("WALL vmlab: this lab powers off in") and "time limit" in lines[0]
    assert lines[-1] == "POWEROFF" and "reached its time limit" in lines[-2]
    assert took >= 5


def test_nothing_configured_exits_at_once(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "vmlab.agent", "idle"], cwd=ROOT, capture_output=True, text=True,
                          env=agent_env(tmp_path, VMLAB_IDLE_MINUTES="0", VMLAB_DEADLINE="0"), timeout=30)
    assert done.returncode == 0 and "nothing to watch" in done.stderr
