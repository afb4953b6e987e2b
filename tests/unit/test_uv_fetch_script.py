"""When the locked uv cannot be fetched, an older uv already in the folder is removed, so pip installs instead."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vmlab.operations.uvtool import FETCH_UV, UV_OR_PIP


def test_a_failed_fetch_removes_a_stale_uv_so_pip_runs(tmp_path: Path) -> None:
    uv = tmp_path / "uv" / "bin" / "uv"
    uv.parent.mkdir(parents=True)
    uv.write_text("#!/bin/sh\necho stale uv ran\n")
    uv.chmod(0o755)
    lock = tmp_path / "uv" / "requirements.lock"
    lock.write_text("old lock\n")
    fetch = subprocess.run(["sh", "-c", FETCH_UV, "sh", str(uv.parent.parent), str(lock), sys.executable,
                            "--no-index"], input="no-such-pkg==1 --hash=sha256:" + "0" * 64 + "\n",
                           capture_output=True, text=True, timeout=120)
    assert "plain pip installs instead" in fetch.stderr
    assert not uv.exists() and not lock.exists()
    run = subprocess.run(["sh", "-c", UV_OR_PIP, "sh", sys.executable, str(uv), "--version"],
                         capture_output=True, text=True, timeout=120)
    assert "stale uv ran" not in run.stdout and "pip install" in run.stdout + run.stderr


def test_a_python_without_pip_fetches_with_the_pip_wheel_it_ships(tmp_path: Path) -> None:
    """A Python with no pip of its own (a venv made without it, like a distribution's python3) runs pip from the
    wheel Python ships for ensurepip: pip's own refusal of the unknown pin shows it ran, and the venv still has
    no pip afterwards."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    fetch = subprocess.run(["sh", "-c", FETCH_UV, "sh", str(tmp_path / "uv"), str(tmp_path / "uv" / "lock"), py,
                            "--no-index"], input="no-such-pkg==1 --hash=sha256:" + "0" * 64 + "\n",
                           capture_output=True, text=True, timeout=300)
    assert "No matching distribution found for no-such-pkg==1" in fetch.stderr, fetch.stderr
    assert "plain pip installs instead" in fetch.stderr
    assert subprocess.run([py, "-m", "pip", "--version"], capture_output=True, timeout=60).returncode != 0
