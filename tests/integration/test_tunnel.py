"""`vmlab tunnel` through a real OpenSSH sshd on 127.0.0.1 to a small token-checking HTTP server standing in
for JupyterLab: both backends, the pinned host key, busy and bad ports, a lab service that is down."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.harness.sshd import SSHD, free_port, make_keypair, public_key_line
from vmlab.state import LabRecord, LabStore

pytestmark = pytest.mark.sshd

REPO = Path(__file__).resolve().parents[2]
TOKEN = "t0ken-for-tests"


class FakeLab(BaseHTTPRequestHandler):
    """JupyterLab's /api/status as far as the tunnel cares: 200 with the token, 403 without."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        ok = self.headers.get("Authorization") == f"token {TOKEN}"
        body = b'{"started": "now"}' if ok else b"forbidden"
        self.send_response(200 if ok else 403)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def jupyter() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeLab)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def make_record(sshd: SSHD, jupyter_port: int, name: str = "lab", **overrides: object) -> LabRecord:
    fields: dict[str, object] = dict(
        name=name, provider="local", instance_id="lvm-000000000000", image="limg-000000", user=sshd.user,
        key_file=str(sshd.client_key), host_key=sshd.host_key_pub, token=TOKEN, host=sshd.host, port=sshd.port,
        jupyter_port=jupyter_port)
    fields.update(overrides)
    record = LabRecord(**fields)  # type: ignore[arg-type]
    LabStore().put(record)
    return record


def vmlab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmlab", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def status(port: int, token: str | None = TOKEN) -> int:
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/api/status",
                                                           headers=headers), timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert proc.returncode == code, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmlab: error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("backend", ["openssh", "paramiko"])
def test_tunnel_once_prints_url_and_serves_authenticated_requests(sshd: SSHD, jupyter: int, backend: str) -> None:
    make_record(sshd, jupyter)
    proc = vmlab("tunnel", "lab", "--once", "--json", "--no-open", "--backend", backend, "--port", str(free_port()))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["backend"] == backend
    assert doc["url"] == f"http://localhost:{doc['local_port']}/lab?token={TOKEN}"


@pytest.mark.parametrize("backend", ["openssh", "paramiko"])
def test_tunnel_forwards_while_it_runs(sshd: SSHD, jupyter: int, backend: str) -> None:
    from vmlab.workflows.tunnel import open_tunnel

    t = open_tunnel(make_record(sshd, jupyter), free_port(), backend=backend)
    try:
        assert status(t.local_port) == 200
        assert status(t.local_port, token=None) == 403
        assert t.alive()
    finally:
        t.close()
    with pytest.raises(OSError):
        status(t.local_port)


def test_tunnel_cli_runs_until_terminated(sshd: SSHD, jupyter: int) -> None:
    make_record(sshd, jupyter)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vmlab", "tunnel", "lab", "--json", "--port", str(port)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        doc = json.loads("".join(iter(proc.stdout.readline, "}\n")) + "}")
        assert doc["local_port"] == port and status(port) == 200
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 143
    with pytest.raises(OSError):  # the ssh child went with it
        status(port)


@pytest.mark.parametrize("backend", ["openssh", "paramiko"])
def test_wrong_pinned_host_key_is_refused(sshd: SSHD, jupyter: int, tmp_path: Path, backend: str) -> None:
    impostor = public_key_line(make_keypair(tmp_path, "impostor"))
    make_record(sshd, jupyter, host_key=impostor)
    proc = vmlab("tunnel", "lab", "--once", "--backend", backend, "--port", str(free_port()))
    one_line_error(proc, 1, "host key", "pinned", "vmlab down lab", "intercepted")


def test_busy_port_moves_to_the_next_free_one(sshd: SSHD, jupyter: int) -> None:
    make_record(sshd, jupyter)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = vmlab("tunnel", "lab", "--once", "--port", str(port))
    assert proc.returncode == 0, proc.stderr
    assert f"port {port} is busy; using " in proc.stdout
    moved = int(proc.stdout.split("using ")[1].split()[0])
    assert moved > port and f"http://localhost:{moved}/lab?token={TOKEN}" in proc.stdout


@pytest.mark.parametrize("port", ["0", "70000", "-1"])
def test_port_out_of_range_is_bad_input(sshd: SSHD, jupyter: int, port: str) -> None:
    make_record(sshd, jupyter)
    one_line_error(vmlab("tunnel", "lab", "--once", "--port", port), 2, f"--port {port} is out of range")


def test_unknown_lab_is_bad_input() -> None:
    one_line_error(vmlab("tunnel", "nosuch", "--once"), 2, "no lab named 'nosuch'", "vmlab up")


def test_missing_or_open_key_file_is_bad_input(sshd: SSHD, jupyter: int, tmp_path: Path) -> None:
    make_record(sshd, jupyter, key_file=str(tmp_path / "gone"))
    one_line_error(vmlab("tunnel", "lab", "--once"), 2, "is missing")
    key = tmp_path / "open_key"
    key.write_bytes(sshd.client_key.read_bytes())
    key.chmod(0o644)
    make_record(sshd, jupyter, key_file=str(key))
    one_line_error(vmlab("tunnel", "lab", "--once"), 2, "readable by others", f"chmod 600 {key}")


@pytest.mark.parametrize("backend", ["openssh", "paramiko"])
def test_lab_service_down_says_so_with_journalctl_hint(sshd: SSHD, backend: str) -> None:
    make_record(sshd, free_port())  # nothing listens there on the "VM"
    t0 = time.monotonic()
    proc = vmlab("tunnel", "lab", "--once", "--backend", backend, "--port", str(free_port()))
    one_line_error(proc, 1, "does not answer", "journalctl -u jupyterlab")
    assert time.monotonic() - t0 < 15


def test_unreachable_lab_is_reported(sshd: SSHD, jupyter: int) -> None:
    make_record(sshd, jupyter, port=free_port())  # no sshd there
    one_line_error(vmlab("tunnel", "lab", "--once"), 1, "cannot reach lab lab", "vmlab start lab")


def test_no_ssh_binary_falls_back_to_paramiko(sshd: SSHD, jupyter: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from vmlab.workflows.tunnel import open_tunnel

    monkeypatch.setenv("PATH", "/nonexistent")
    t = open_tunnel(make_record(sshd, jupyter), free_port())
    try:
        assert t.backend.name == "paramiko" and status(t.local_port) == 200
    finally:
        t.close()
    assert os.environ["PATH"] == "/nonexistent"
