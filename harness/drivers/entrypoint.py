"""`vmlab-agent run` started the way a container runtime starts an entrypoint: a clean environment holding only
the variables given (as `docker run --env` would pass them), its output to a log, SIGTERM to stop it.

Example::

    entry = Entrypoint(tmp_path, {"AWS_S3_BUCKET_FOLDER": "bucket/alice"}, "--", "python3", "job.py")
    entry.wait_log("started")
    code, seconds = entry.terminate()        # SIGTERM, wait; exit code and seconds from the signal to the exit
    assert "secret" not in entry.log_text() and not entry.cmdlines_holding("secret")
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def container_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A minimal environment (PATH, HOME, this checkout importable, the agent's state and data folders under
    `tmp_path`) plus `extra`. A `jupyter-lab` on PATH runs this Python's JupyterLab (as the lab image's would)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "jupyter-lab"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m jupyterlab "$@"\n')
    wrapper.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(home),
        "PYTHONPATH": str(ROOT),
        "VMLAB_AGENT_STATE_DIR": str(tmp_path / "state"),
        "VMLAB_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jconfig"),
        "JUPYTER_DATA_DIR": str(tmp_path / "jdata"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jruntime"),
        "JUPYTER_PLATFORM_DIRS": "1",
        **extra,
    }


class Entrypoint:
    """`python -m vmlab.agent run ARGS` in `container_env(tmp_path, **env)`; `tty`: its stdin is a terminal (a
    pseudo-terminal, as `docker run -it` gives), else /dev/null."""

    def __init__(self, tmp_path: Path, env: dict[str, str], *args: str, tty: bool = False) -> None:
        self.log = tmp_path / "entrypoint.log"
        self.env = container_env(tmp_path, **env)
        self._pty = os.openpty() if tty else None
        with self.log.open("w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "vmlab.agent", "run", *args], cwd=ROOT,
                                         stdin=self._pty[1] if self._pty else subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never logged (exit {self.proc.poll()}):\n{self.log_text()}")
            time.sleep(0.05)

    def wait(self, timeout: float = 60.0) -> int:
        code = self.proc.wait(timeout=timeout)
        print(self.log_text())  # shown by pytest when a test fails
        return code

    def terminate(self, timeout: float = 60.0, signum: int = signal.SIGTERM) -> tuple[int, float]:
        """SIGTERM (or `signum`); (exit code, seconds from the signal to the exit)."""
        start = time.monotonic()
        self.proc.send_signal(signum)
        code = self.wait(timeout)
        return code, time.monotonic() - start

    def tree(self) -> list[int]:
        """The entrypoint's pid and its descendants' (from /proc)."""
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                parents[int(entry.name)] = int(fields[1])
        found = [self.proc.pid]
        for pid in found:
            found.extend(child for child, parent in parents.items() if parent == pid)
        return found

    def cmdlines_holding(self, *secrets: str) -> list[str]:
        """Command lines of any process on the machine that hold one of `secrets`."""
        hits = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            hits.extend(line for secret in secrets if secret and secret in line)
        return hits

    def close(self) -> None:
        """Kill the entrypoint and what it started (CMD runs in its own session: a kill of the entrypoint alone
        would leave it running)."""
        for fd in self._pty or ():
            os.close(fd)
        self._pty = None
        if self.proc.poll() is not None:
            return
        for pid in reversed(self.tree()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
