"""`vmlab-agent` in a subprocess, started the way systemd would (environment, SIGTERM to stop), for the agent's
integration tests.

Example::

    daemon = AgentDaemon(folder, "s3://bucket/prefix", state_dir)
    ...
    log = daemon.stop()           # SIGTERM, wait, return the log
    daemon.kill()                 # or SIGKILL, for crash tests
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def agent_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """The test process's environment (AWS_* pointing at moto) plus the agent's state dir, with this checkout
    first on the import path."""
    env = {**os.environ, "VMLAB_AGENT_STATE_DIR": str(state_dir), **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


class AgentDaemon:
    """`vmlab-agent sync` running until `stop()` (SIGTERM) or `kill()` (SIGKILL); waits for its first status."""

    def __init__(self, folder: Path, url: str, state_dir: Path, *args: str, env: dict[str, str] | None = None,
                 log_name: str = "agent.log") -> None:
        self.state_dir = state_dir
        self.status_file = state_dir / "status.json"
        self.status_file.unlink(missing_ok=True)
        self.log = folder.parent / log_name
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vmlab.agent", "sync", "--folder", str(folder), "--url", url, "-v", *args],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env or agent_env(state_dir),
            )
        deadline = time.monotonic() + 20
        while not self.status_file.exists():  # written after the first pass, watch running
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"agent did not start:\n{self.stop()}")
            time.sleep(0.05)

    def status(self) -> dict[str, object]:
        return dict(json.loads(self.status_file.read_text()))

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=90)
        text = self.log.read_text()
        print(text)  # shown by pytest when a test fails
        return text

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
