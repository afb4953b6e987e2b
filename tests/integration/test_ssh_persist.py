"""SSH connection persistence against a real sshd: a later run uses the master a first run left (no new
handshake), and every way a master can go wrong (killed, stale socket, dropped SSH link, changed host key,
unsafe folder, symlinked socket, another user) ends in a direct connection that runs each command exactly once."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.emulators.sshd import SSHD, make_keypair, public_key_line
from vmlab.errors import HostError, HostKeyMismatch
from vmlab.transport import KnownHosts, SSHConnection, SSHTarget
from vmlab.transport.hostkeys import HostKey
from vmlab.transport.mux import attach, recv_frame, send_frame
from vmlab.transport.rundir import PROTOCOL, UnsafeRuntimeDir, runtime_dir, socket_path

pytestmark = pytest.mark.sshd

PARAMIKO = re.compile(r"\|\s*paramiko\s*$", re.M)  # its line in `python -X importtime` output


@pytest.fixture
def rundir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private XDG_RUNTIME_DIR (short, under /tmp, traversable by the second-user test) with persistence on;
    every master started meanwhile is killed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="vmlab-run-", dir="/tmp"))
    base.chmod(0o711)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    monkeypatch.setenv("VMLAB_SSH_PERSIST", "30")
    try:
        yield base / "vmlab"
    finally:
        for pid in master_pids(base / "vmlab"):
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid)
        shutil.rmtree(base)


def master_pids(folder: Path) -> list[int]:
    """Pids of the masters holding a lock file in `folder` (a free lock is a master that has exited)."""
    pids = []
    for lock in folder.glob("*.lock"):
        with lock.open("r") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pids.append(int(fh.read().strip()))
    return pids


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still alive")


def wait_master(target: SSHTarget, timeout: float = 20.0) -> int:
    """The pid of the master serving `target`, once it answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mux = attach(target)
        if mux is not None:
            mux.close()
            return mux.pid
        time.sleep(0.1)
    raise AssertionError("no SSH connection master came up")


def logins(sshd: SSHD) -> int:
    return sshd.log().count("Accepted publickey")


def start_master(sshd: SSHD, **fields: object) -> tuple[SSHTarget, int]:
    target = sshd.target(pinned_host_key=sshd.host_key_pub, **fields)
    with SSHConnection(target) as first:
        assert first.run("true").rc == 0
        assert first._mux is None  # the first run connects directly and leaves a master behind
    return target, wait_master(target)


def runs_once(conn: SSHConnection, tmp_path: Path) -> None:
    """A command that appends to a file ran exactly once, with its full result."""
    marker = tmp_path / f"ran-{uuid.uuid4().hex}"
    result = conn.run("sh", "-c", 'echo x >> "$1"; echo out; echo err >&2; exit 3', "sh", str(marker), check=False)
    assert (result.rc, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert marker.read_text() == "x\n"


# -- the fast path -------------------------------------------------------------------------------------------

def test_later_runs_use_the_master_without_a_handshake(sshd: SSHD, rundir: Path, tmp_path: Path) -> None:
    target, pid = start_master(sshd)
    assert (rundir.stat().st_mode & 0o777) == 0o700
    sock = socket_path(rundir, target)
    assert sock is not None and (sock.stat().st_mode & 0o777) == 0o600
    before = logins(sshd)
    with SSHConnection(target) as conn:
        runs_once(conn, tmp_path)
        big = os.urandom(1 << 20)  # stdin goes through in one frame, byte for byte
        assert conn.run("sha256sum", stdin=big).stdout.split()[0] == hashlib.sha256(big).hexdigest()
        assert conn._link is None and conn._mux is not None and conn._mux.pid == pid
        conn.put(b"direct\n", str(tmp_path / "put.txt"))  # files always use a direct connection
        assert conn._link is not None
    assert (tmp_path / "put.txt").read_text() == "direct\n"
    assert logins(sshd) == before + 1  # the put's connection; the commands made none


def test_persist_zero_leaves_nothing(sshd: SSHD, rundir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMLAB_SSH_PERSIST", "0")
    with SSHConnection(sshd.target(pinned_host_key=sshd.host_key_pub)) as conn:
        conn.run("true")
    time.sleep(0.5)
    assert not rundir.exists() or not list(rundir.iterdir())


def test_the_master_exits_after_its_idle_time(sshd: SSHD, rundir: Path) -> None:
    target = sshd.target(pinned_host_key=sshd.host_key_pub)
    with SSHConnection(target, persist=1) as conn:
        conn.run("true")
    pid = wait_master(target)
    wait_gone(pid, timeout=15)
    sock = socket_path(rundir, target)
    assert sock is not None and not sock.exists()


# -- fallbacks -----------------------------------------------------------------------------------------------

def test_a_killed_master_leaves_a_stale_socket_that_is_skipped(sshd: SSHD, rundir: Path, tmp_path: Path) -> None:
    target, pid = start_master(sshd)
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    sock = socket_path(rundir, target)
    assert sock is not None and sock.exists()  # stale: nobody listens
    before = logins(sshd)
    with SSHConnection(target) as conn:
        runs_once(conn, tmp_path)
        assert conn._mux is None
    assert logins(sshd) >= before + 1
    assert wait_master(target) != pid  # the direct run left a new master, which replaced the stale socket


def test_a_master_killed_between_commands_falls_back_without_repeating(sshd: SSHD, rundir: Path,
                                                                       tmp_path: Path) -> None:
    target, pid = start_master(sshd)
    with SSHConnection(target) as conn:
        conn.run("true")
        assert conn._mux is not None
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid)
        runs_once(conn, tmp_path)
        assert conn._mux is None and conn._link is not None


def test_a_master_killed_during_a_command_is_a_failure_never_a_rerun(sshd: SSHD, rundir: Path,
                                                                     tmp_path: Path) -> None:
    target, pid = start_master(sshd)
    marker = tmp_path / "started"
    with SSHConnection(target) as conn:
        conn.run("true")
        killer = threading.Timer(1.0, os.kill, (pid, signal.SIGKILL))
        killer.start()
        try:
            with pytest.raises(HostError, match="may or may not have run"):
                conn.run("sh", "-c", 'echo x >> "$1"; sleep 3', "sh", str(marker))
        finally:
            killer.join()
    time.sleep(3.5)
    assert marker.read_text() == "x\n"  # started once by the master, and not again over a direct connection


def test_a_master_whose_ssh_link_dropped_is_not_used(sshd: SSHD, rundir: Path, tmp_path: Path) -> None:
    target, pid = start_master(sshd)
    with SSHConnection(target) as attached:
        attached.run("true")
        sshd.restart()  # kills every session, the master's included
        runs_once(attached, tmp_path)  # the master answers "not sent"; the command runs directly, once
        assert attached._mux is None
    with SSHConnection(target) as later:
        runs_once(later, tmp_path)


def test_a_changed_host_key_record_never_reaches_the_old_master(sshd: SSHD, rundir: Path,
                                                                 tmp_path: Path) -> None:
    target = sshd.target()  # trust on first use: the key is recorded in known_hosts
    with SSHConnection(target) as first:
        first.run("true")
    wait_master(target)
    # Now vmlab's record says the host has another key (as after the VM was replaced): the master, connected to
    # the old key, must not be used, and the direct connection refuses the host.
    other = HostKey.from_line(public_key_line(make_keypair(tmp_path, "other_host_key")))
    known = KnownHosts(target.known_hosts_path())
    known.forget(target.host_key_alias)
    known.record(target.host_key_alias, other)
    with SSHConnection(target) as conn, pytest.raises(HostKeyMismatch):
        conn.run("touch", str(tmp_path / "must-not-exist"))
    assert not (tmp_path / "must-not-exist").exists()


# -- safety --------------------------------------------------------------------------------------------------

def test_an_unsafe_folder_or_symlinked_socket_is_refused(sshd: SSHD, rundir: Path, tmp_path: Path) -> None:
    target, _ = start_master(sshd)
    sock = socket_path(rundir, target)
    assert sock is not None
    rundir.chmod(0o777)
    with pytest.raises(UnsafeRuntimeDir, match="writable by group or others"):
        runtime_dir()
    assert attach(target) is None
    rundir.chmod(0o700)
    real = sock.with_name("real.sock")
    sock.rename(real)
    sock.symlink_to(real)  # a symlink to a live master's socket: still never followed
    assert attach(target) is None
    with SSHConnection(target) as conn:
        runs_once(conn, tmp_path)
        assert conn._mux is None


def test_a_runtime_folder_that_is_a_symlink_is_refused(rundir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    rundir.symlink_to(elsewhere)
    with pytest.raises(UnsafeRuntimeDir, match="symlink"):
        runtime_dir()


_PEER = """
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("permission denied"); sys.exit(0)
hello = json.dumps({"vmlab-mux": %d, "id": sys.argv[2]}).encode()
try:
    s.sendall(struct.pack(">I", len(hello)) + hello)
    answer = s.recv(4096)
except (BrokenPipeError, ConnectionResetError):  # the master hung up before or while we sent
    answer = b""
print("answered" if answer else "closed without an answer")
"""


@pytest.fixture
def other_user() -> Iterator[pwd.struct_passwd]:
    if os.getuid() != 0 or not shutil.which("useradd") or not shutil.which("setpriv"):
        pytest.skip("needs root, useradd and setpriv to make a second user")
    name = f"vmlabt{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=True)


def test_another_user_is_refused_by_the_master(sshd: SSHD, rundir: Path, tmp_path: Path,
                                               other_user: pwd.struct_passwd) -> None:
    target, pid = start_master(sshd)
    sock = socket_path(rundir, target)
    assert sock is not None

    def as_other() -> str:
        out = subprocess.run(["setpriv", f"--reuid={other_user.pw_uid}", f"--regid={other_user.pw_gid}",
                              "--clear-groups", "/usr/bin/python3", "-c", _PEER % PROTOCOL, str(sock), sock.stem],
                             capture_output=True, text=True, timeout=30, cwd="/")
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    rundir.chmod(0o711)  # traversable, so the socket's own 0600 is the first wall
    assert as_other() == "permission denied"
    sock.chmod(0o666)  # a mistake that opens the socket: SO_PEERCRED is the second wall
    assert as_other() == "closed without an answer"
    assert f"refused a client running as uid {other_user.pw_uid}" in sock.with_suffix(".log").read_text()
    with SSHConnection(target) as conn:  # the master still serves its own user
        runs_once(conn, tmp_path)
        assert conn._mux is not None and conn._mux.pid == pid


def test_a_master_refuses_another_protocol_version(sshd: SSHD, rundir: Path) -> None:
    import socket

    target, _ = start_master(sshd)
    sock = socket_path(rundir, target)
    assert sock is not None
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))
        send_frame(s, {"vmlab-mux": PROTOCOL + 1, "id": sock.stem})
        assert recv_frame(s) == {"vmlab-mux": PROTOCOL, "ok": False, "why": "another protocol or target"}


# -- the engine through a master -----------------------------------------------------------------------------

def test_provision_through_the_master_reports_exactly_as_direct(sshd: SSHD, rundir: Path, tmp_path: Path) -> None:
    root = tmp_path / "target"
    recipe = tmp_path / "recipe.py"
    recipe.write_text(
        "from vmlab.engine import Recipe\nfrom vmlab.operations import files\n"
        "recipe = Recipe('p', vars={'greeting': 'hello'})\n"
        f"recipe.step('dir', files.Directory('{root}', mode='0750'))\n"
        f"recipe.step('conf', files.Template('{root}/conf.ini', source='greeting={{{{ greeting }}}}\\n'))\n")
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(f"all:\n  hosts:\n    box:\n      ansible_host: 127.0.0.1\n"
                         f"      ansible_port: {sshd.port}\n      ansible_user: {sshd.user}\n"
                         f"      ansible_ssh_private_key_file: {sshd.client_key}\n")

    def provision(*extra: str) -> subprocess.CompletedProcess[str]:
        # PYTHONPROFILEIMPORTTIME lists every module the CLI imports on stderr
        out = subprocess.run([sys.executable, "-m", "vmlab", "provision", str(recipe), "-i", str(inventory),
                              *extra], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "NO_COLOR": "1", "PYTHONPROFILEIMPORTTIME": "1"})
        assert out.returncode == 0, out.stderr + out.stdout
        return out

    first_run = provision("--json")
    assert PARAMIKO.search(first_run.stderr)  # a direct connection
    first = json.loads(first_run.stdout)["hosts"][0]
    assert first["changed"] == 2
    deadline = time.monotonic() + 20
    while not list(rundir.glob("*.sock")):  # the first run's master is up (and logged in) once its socket is
        assert time.monotonic() < deadline, "no master came up"
        time.sleep(0.1)
    time.sleep(0.2)
    before = logins(sshd)
    again_run = provision("--json")
    assert not PARAMIKO.search(again_run.stderr)  # through the master: paramiko's start-up is saved
    again = json.loads(again_run.stdout)["hosts"][0]
    assert (again["changed"], again["ok"], again["failed"]) == (0, 2, 0)
    diff = provision("--check", "--diff", "-e", "greeting=bonjour").stdout
    assert "-greeting=hello" in diff and "+greeting=bonjour" in diff and "would change" in diff
    assert (root / "conf.ini").read_text() == "greeting=hello\n"
    assert logins(sshd) == before  # both runs went through the master


def test_a_run_through_the_master_never_imports_paramiko(sshd: SSHD, rundir: Path) -> None:
    target, _ = start_master(sshd)
    code = ("import sys\nfrom pathlib import Path\nfrom vmlab.transport import SSHConnection, SSHTarget\n"
            f"t = SSHTarget({target.host!r}, port={target.port}, user={target.user!r}, "
            f"key_file=Path({str(target.key_file)!r}), known_hosts=Path({str(target.known_hosts)!r}), "
            f"pinned_host_key={target.pinned_host_key!r}, name={target.name!r})\n"
            "with SSHConnection(t) as c:\n    print(c.run('echo', 'hi').stdout.strip(), 'paramiko' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["hi", "False"]  # ~0.3 s of start-up saved on every such run
