"""`vmlab tunnel --background / --stop` through the real sshd: the command returns with a working tunnel, the
state file is private, `vmlab ls` shows the port, `--stop` and `vmlab down` end it, stale pid files are cleared."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from harness.emulators.sshd import SSHD, free_port
from tests.integration.test_tunnel import jupyter, make_record, status, vmlab  # noqa: F401 (fixture)

pytestmark = pytest.mark.sshd


def tunnels_dir() -> Path:
    return Path(os.environ["VMLAB_STATE_DIR"]) / "tunnels"


def pid_alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


@pytest.mark.parametrize("backend", ["openssh", "paramiko"])
def test_background_tunnel_outlives_the_command_and_stops(sshd: SSHD, jupyter: int, backend: str) -> None:  # noqa: F811
    make_record(sshd, jupyter)
    port = free_port()
    proc = vmlab("tunnel", "lab", "--background", "--json", "--backend", backend, "--port", str(port))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["local_port"] == port and doc["backend"] == backend
    assert status(port) == 200  # the command has returned; the tunnel still serves
    pid = int((tunnels_dir() / "lab.pid").read_text())
    assert pid == doc["pid"] and pid_alive(pid)
    assert (tunnels_dir() / "lab.json").stat().st_mode & 0o777 == 0o600
    again = vmlab("tunnel", "lab", "--background", "--port", str(free_port()))
    assert again.returncode == 1 and "already has a background tunnel" in again.stderr

    ls = vmlab("ls", "--json")
    assert ls.returncode == 0, ls.stderr
    assert [row["tunnel_port"] for row in json.loads(ls.stdout)["labs"] if row["name"] == "lab"] == [port]
    assert f"tunnel: 127.0.0.1:{port}" in vmlab("ls").stdout

    stopped = vmlab("tunnel", "lab", "--stop", "--json")
    assert stopped.returncode == 0 and json.loads(stopped.stdout) == {"lab": "lab", "stopped": True, "pid": pid}
    assert not (tunnels_dir() / "lab.pid").exists() and not (tunnels_dir() / "lab.json").exists()
    assert not pid_alive(pid)
    with pytest.raises(OSError):  # its ssh child went with it
        status(port)
    assert json.loads(vmlab("ls", "--json").stdout)["labs"][0]["tunnel_port"] is None


def test_background_failure_is_one_line_and_leaves_no_files(sshd: SSHD) -> None:
    make_record(sshd, free_port())  # nothing listens on the "lab's" port
    proc = vmlab("tunnel", "lab", "--background", "--port", str(free_port()))
    assert proc.returncode == 1
    assert proc.stderr.startswith("vmlab: error: the background tunnel to lab did not start") and \
        "does not answer" in proc.stderr, proc.stderr
    assert not (tunnels_dir() / "lab.pid").exists()


def test_stale_pid_file_is_cleared(sshd: SSHD, jupyter: int) -> None:  # noqa: F811
    make_record(sshd, jupyter)
    dead = subprocess.Popen(["true"])
    dead.wait()
    tunnels_dir().mkdir(exist_ok=True)
    (tunnels_dir() / "lab.pid").write_text(f"{dead.pid}\n")
    (tunnels_dir() / "lab.json").write_text(json.dumps({"local_port": 1}))
    assert json.loads(vmlab("ls", "--json").stdout)["labs"][0]["tunnel_port"] is None
    (tunnels_dir() / "lab.pid").write_text(f"{dead.pid}\n")
    proc = vmlab("tunnel", "lab", "--stop")
    assert proc.returncode == 0 and "no background tunnel" in proc.stdout
    assert not (tunnels_dir() / "lab.pid").exists() and not (tunnels_dir() / "lab.json").exists()
    # and a new background tunnel starts over the stale files
    (tunnels_dir() / "lab.pid").write_text(f"{dead.pid}\n")
    port = free_port()
    assert vmlab("tunnel", "lab", "--background", "--port", str(port)).returncode == 0
    try:
        assert status(port) == 200
    finally:
        vmlab("tunnel", "lab", "--stop")


def test_down_stops_the_background_tunnel(sshd: SSHD, jupyter: int) -> None:  # noqa: F811
    make_record(sshd, jupyter)
    port = free_port()
    assert vmlab("tunnel", "lab", "--background", "--port", str(port)).returncode == 0
    pid = int((tunnels_dir() / "lab.pid").read_text())
    proc = vmlab("down", "lab", "--json")
    assert proc.returncode == 0, proc.stderr
    assert f"background tunnel (pid {pid})" in json.loads(proc.stdout)["removed"]
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid)
    with pytest.raises(OSError):
        status(port)
