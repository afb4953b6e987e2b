"""`vmlab tunnel` through a real OpenSSH sshd on 127.0.0.1 to a small token-checking HTTP server standing in
for JupyterLab: both backends, the pinned host key, busy and bad ports, a lab service that is down."""

from __future__ import annotations

import contextlib
import json
import os
import queue
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
from typing import IO

import pytest

from harness.emulators.sshd import SSHD, free_port, make_keypair, public_key_line
from vmlab.state import LabRecord, LabStore

pytestmark = pytest.mark.sshd

REPO = Path(__file__).resolve().parents[2]
TOKEN = "t0ken-for-tests"


class FakeLab(BaseHTTPRequestHandler):
    """JupyterLab's /api/status as far as the tunnel cares: 200 with the token (header, or `?token=` as in the
    URL a browser opens), 403 without."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        ok = self.headers.get("Authorization") == f"token {TOKEN}" or self.path.endswith(f"?token={TOKEN}")
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
    assert doc["url"] == f"http://127.0.0.1:{doc['local_port']}/lab?token={TOKEN}"


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
def test_extra_ports_are_forwarded_too(sshd: SSHD, jupyter: int, backend: str) -> None:
    """The "TensorBoard" listens on this machine's loopback, which is also the "VM's": its own port is busy
    here, so the forward moves to the next free one and says so."""
    from vmlab.workflows.tunnel import open_tunnel

    board = ThreadingHTTPServer(("127.0.0.1", 0), FakeLab)
    threading.Thread(target=board.serve_forever, daemon=True).start()
    remote = int(board.server_address[1])
    notices: list[str] = []
    try:
        t = open_tunnel(make_record(sshd, jupyter), free_port(), extra=(remote, remote), backend=backend,
                        say=notices.append)
        try:
            local = t.extra[remote]
            assert list(t.extra) == [remote] and local != remote and status(local) == 200
            assert notices == [f"port {remote} is busy here; the lab's port {remote} is on local port {local}"]
            assert t.to_json()["extra"] == [{"remote_port": remote, "local_port": local,
                                             "url": f"http://127.0.0.1:{local}/"}]
        finally:
            t.close()
    finally:
        board.shutdown()
        board.server_close()


def test_extra_port_in_cli_output(sshd: SSHD, jupyter: int) -> None:
    make_record(sshd, jupyter)
    proc = vmlab("tunnel", "lab", "--once", "--port", str(free_port()), "--extra", str(jupyter))
    assert proc.returncode == 0, proc.stderr
    assert f"port {jupyter} of lab: http://127.0.0.1:" in proc.stdout
    one_line_error(vmlab("tunnel", "lab", "--once", "--extra", "0"), 2, "--extra 0 is out of range")


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
    assert moved > port and f"http://127.0.0.1:{moved}/lab?token={TOKEN}" in proc.stdout


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


def _lines(stream: IO[str]) -> queue.Queue[str]:
    """A queue fed with a subprocess's output lines by a reader thread (so a test can wait with a timeout)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_line(lines: queue.Queue[str], needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"no line with {needle!r} within {timeout}s; got {seen}")


def test_tunnel_reconnects_within_5s_of_sshd_answering_again(sshd: SSHD, jupyter: int) -> None:
    make_record(sshd, jupyter)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vmlab", "tunnel", "lab", "--port", str(port)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    out = _lines(proc.stdout)
    try:
        _wait_line(out, f"http://127.0.0.1:{port}/lab?token={TOKEN}", 30)
        assert status(port) == 200
        for down_for in (0.0, 3.0):  # an instant restart, then a host away for a while (retries meanwhile)
            sshd.stop()  # kills every session too, like a VM going away
            _wait_line(out, "lost", 5)
            time.sleep(down_for)
            sshd.start()  # returns once the new sshd answers with a banner
            back = time.monotonic()
            while True:
                try:
                    if status(port) == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() - back < 5, "the tunnel did not serve again within 5 s"
                time.sleep(0.05)
            print(f"serving again {time.monotonic() - back:.2f}s after sshd answered")  # shown with -s
            _wait_line(out, "reconnected to lab after", 5)
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[threading.Event]:
    """A stop event set after `seconds`: a keep_alive that misses the drop fails its test instead of hanging."""
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    try:
        yield stop
    finally:
        timer.cancel()


def test_stopped_or_gone_lab_ends_the_reconnects(sshd: SSHD, jupyter: int) -> None:
    from vmlab.errors import HostError
    from vmlab.providers.base import Instance
    from vmlab.workflows.tunnel import keep_alive, open_tunnel

    record = make_record(sshd, jupyter)
    stopped = Instance(id=record.instance_id, name="lab", state="stopped", host=None, port=22, user="debian",
                       image="limg-000000", provider="local")
    notices: list[str] = []
    try:
        t = open_tunnel(record, free_port())
        sshd.stop()
        t0 = time.monotonic()
        with pytest.raises(HostError, match=r"lab lab is stopped .*vmlab start lab"), deadline(60) as stop:
            keep_alive(t, say=notices.append, check_after=1.0, describe=lambda: stopped, stop=stop)
        assert time.monotonic() - t0 < 5
        t.close()
        sshd.start()
        t = open_tunnel(record, free_port())
        sshd.stop()
        # the real local provider: this record's instance id does not exist there
        with pytest.raises(HostError, match=r"lab lab no longer exists.*vmlab up lab"), deadline(60) as stop:
            keep_alive(t, say=notices.append, check_after=1.0, stop=stop)
        t.close()
    finally:
        sshd.start()
    assert any("lost" in n and "reconnecting" in n for n in notices), notices


def test_a_lab_that_changed_its_token_ends_the_reconnects(sshd: SSHD, jupyter: int) -> None:
    from vmlab.workflows.tunnel import TokenRefused, keep_alive, open_tunnel

    t = open_tunnel(make_record(sshd, jupyter), free_port())
    t.record.token = "the-old-one"  # as if `vmlab up` ran again from another machine
    sshd.restart()
    try:
        with pytest.raises(TokenRefused, match="refuses the recorded token.*vmlab up lab"), deadline(60) as stop:
            keep_alive(t, stop=stop)
    finally:
        t.close()
    assert not t.alive()


def test_the_url_names_127_0_0_1_so_a_listener_on_ipv6_loopback_gets_no_token(sshd: SSHD, jupyter: int) -> None:
    """The forward listens on 127.0.0.1 only; a URL naming `localhost` lets a browser that tries ::1 first hand
    the token to whatever local user listens on [::1]:PORT."""
    from urllib.parse import urlsplit

    from vmlab.workflows.tunnel import open_tunnel

    hits: list[str] = []

    class Squatter(ThreadingHTTPServer):
        address_family = socket.AF_INET6

    class Record(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    port = free_port()
    squatter = Squatter(("::1", port), Record)
    threading.Thread(target=squatter.serve_forever, daemon=True).start()
    try:
        t = open_tunnel(make_record(sshd, jupyter), port, extra=(jupyter,))
        try:
            url = urlsplit(t.url)
            assert (url.hostname, url.port, url.query) == ("127.0.0.1", port, f"token={TOKEN}")
            assert all(urlsplit(e["url"]).hostname == "127.0.0.1" for e in t.to_json()["extra"])
            with urllib.request.urlopen(t.url, timeout=10) as answer:  # what the browser opens
                assert answer.status == 200 and answer.read() == b'{"started": "now"}'
        finally:
            t.close()
    finally:
        squatter.shutdown()
        squatter.server_close()
    assert hits == []


BROWSER = """#!{python}
import json, os, sys
url = sys.argv[1]
seen = {{"argv": sys.argv, "cmdline": open("/proc/self/cmdline", "rb").read().decode()}}
if url.startswith("file://"):
    path = url[len("file://"):]
    seen["mode"] = os.stat(path).st_mode & 0o777
    seen["page"] = open(path).read()
json.dump(seen, open({out!r}, "w"))
"""


def test_open_gives_the_browser_a_private_redirect_file_not_the_token(sshd: SSHD, jupyter: int,
                                                                       tmp_path: Path) -> None:
    """`ps` shows every user the browser's command line: the token must not be on it (as Jupyter does it)."""
    out = tmp_path / "seen.json"
    browser = tmp_path / "browser"
    browser.write_text(BROWSER.format(python=sys.executable, out=str(out)))
    browser.chmod(0o755)
    make_record(sshd, jupyter)
    port = free_port()
    proc = subprocess.run([sys.executable, "-m", "vmlab", "tunnel", "lab", "--once", "--open", "--port", str(port)],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "BROWSER": str(browser)})
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(out.read_text())
    assert TOKEN not in seen["cmdline"] and TOKEN not in " ".join(seen["argv"])
    page = Path(seen["argv"][1].removeprefix("file://"))
    assert page.parent == Path(os.environ["VMLAB_STATE_DIR"]) / "tunnels"
    assert seen["mode"] == 0o600
    assert f'content="0;url=http://127.0.0.1:{port}/lab?token={TOKEN}"' in seen["page"]
    assert not page.exists()  # --once: the tunnel is gone, and so is the page holding the token


@pytest.mark.moto
def test_the_self_healing_check_asks_the_labs_own_region(sshd: SSHD, jupyter: int, moto_server) -> None:
    """An EC2 lab outside the default region: while its host is away the tunnel keeps retrying (the lab still
    runs, in eu-west-1), and once it is stopped there the tunnel ends with the `vmlab start` hint; asked in the
    default region it would be "no longer exists" after the first check."""
    import boto3

    from vmlab.errors import HostError
    from vmlab.workflows.tunnel import keep_alive, open_tunnel

    moto_server.reset()
    assert os.environ["AWS_REGION"] == "us-east-1"
    ec2 = boto3.client("ec2", region_name="eu-west-1")
    ami = ec2.register_image(Name="lab", RootDeviceName="/dev/sda1", VirtualizationType="hvm",
                             BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8}}])["ImageId"]
    instance = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "vmlab:launch", "Value": "l-1"}]}])["Instances"][0]["InstanceId"]
    record = make_record(sshd, jupyter, provider="ec2", instance_id=instance, region="eu-west-1")
    notices: list[str] = []
    t = open_tunnel(record, free_port())
    try:
        sshd.stop()
        with deadline(4) as stop:  # checks every second meanwhile: the lab runs, so no verdict
            keep_alive(t, say=notices.append, check_after=1.0, stop=stop)
        ec2.stop_instances(InstanceIds=[instance])
        with pytest.raises(HostError, match=r"lab lab is stopped .*vmlab start lab"), deadline(60) as stop:
            keep_alive(t, say=notices.append, check_after=1.0, stop=stop)
    finally:
        t.close()
        sshd.start()
    assert any("lost" in n for n in notices), notices
