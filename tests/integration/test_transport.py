"""vmlab.transport against a real OpenSSH sshd on 127.0.0.1: commands, stdin, quoting, files, host keys,
failure diagnosis, forwarding, reconnects and proxies."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.emulators.sshd import SSHD, free_port, make_keypair, public_key_line
from vmlab.engine.command import Command, RunResult
from vmlab.errors import BadInput, CommandFailed, ConnectError, HostError, HostKeyMismatch
from vmlab.transport import KnownHosts, SSHConnection, SSHTarget, forget
from vmlab.transport.hostkeys import HostKey
from vmlab.transport.ssh import remote_command, sudo_refusal

pytestmark = pytest.mark.sshd


@pytest.fixture
def conn(sshd: SSHD) -> Iterator[SSHConnection]:
    with SSHConnection(sshd.target()) as c:
        yield c


@pytest.fixture
def other_key(tmp_path: Path) -> Path:
    """A valid key pair that the test sshd does not accept (and whose public half is not its host key)."""
    return make_keypair(tmp_path, "other_ed25519")


# -- commands ----------------------------------------------------------------------------------------------

def test_execute_returns_rc_stdout_stderr_without_raising(conn: SSHConnection) -> None:
    result = conn.execute(Command("sh", "-c", "echo out; echo err >&2; exit 3"))
    assert result == RunResult(3, "out\n", "err\n")


def test_connection_opens_lazily_and_context_manager_closes(sshd: SSHD) -> None:
    with SSHConnection(sshd.target()) as c:
        assert not c.is_open
        assert c.run("echo", "hi").stdout == "hi\n"
        assert c.is_open
    assert not c.is_open


def test_stdin_round_trip_of_1mb_binary(conn: SSHConnection) -> None:
    data = os.urandom(1 << 20)
    result = conn.execute(Command("sh", "-c", "wc -c; sha256sum", stdin=data))
    # `wc` consumes all stdin; checksum the same bytes in a second run to compare content, not just length.
    assert result.rc == 0 and result.stdout.split()[0] == str(len(data))
    digest = conn.execute(Command("sha256sum", stdin=data)).stdout.split()[0]
    assert digest == hashlib.sha256(data).hexdigest()


def test_large_stdin_echoed_back_does_not_deadlock(conn: SSHConnection) -> None:
    # 6 MB through `cat` exceeds both channel windows: writing everything before reading would hang.
    data = (b"0123456789abcdef" * 65536) * 6
    result = conn.execute(Command("cat", stdin=data))
    assert result.rc == 0 and result.stdout.encode() == data


def test_large_output_on_both_streams(conn: SSHConnection) -> None:
    script = "head -c 5000000 /dev/zero | tr '\\0' a; head -c 5000000 /dev/zero | tr '\\0' b >&2"
    result = conn.execute(Command("sh", "-c", script))
    assert (result.rc, len(result.stdout), len(result.stderr)) == (0, 5_000_000, 5_000_000)
    assert set(result.stdout) == {"a"} and set(result.stderr) == {"b"}


def test_invalid_utf8_is_replaced_not_fatal(conn: SSHConnection) -> None:
    result = conn.execute(Command("printf", "ok\\377\\n"))
    assert result.stdout == "ok\ufffd\n"


def test_arguments_stay_literal(conn: SSHConnection, tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    args = ["two words", "it's", 'say "hi"', f"$(touch {canary})", f"`touch {canary}`", "*", "a;b", "x && y",
            "$HOME", "back\\slash", "new\nline", ""]
    result = conn.execute(Command("printf", "[%s]\\n", *args))
    assert result.stdout == "".join(f"[{a}]\n" for a in args)
    assert not canary.exists()


def test_run_raises_command_failed_naming_host_command_rc_and_stderr(conn: SSHConnection) -> None:
    with pytest.raises(CommandFailed) as info:
        conn.run("sh", "-c", "echo first >&2; echo 'the real reason' >&2; exit 7")
    err = info.value
    assert err.rc == 7 and "the real reason" in err.stderr
    text = str(err)
    assert "test-sshd" in text and "exit status 7" in text and "the real reason" in text and "sh -c" in text
    assert conn.run("false", check=False).rc == 1


def test_command_killed_by_signal_gets_a_status(conn: SSHConnection) -> None:
    result = conn.execute(Command("sh", "-c", "kill -9 $$"))
    assert result.rc != 0 and "signal" in result.stderr


def test_command_round_trip_is_fast(conn: SSHConnection) -> None:
    """TCP_NODELAY and one persistent transport: a no-op command costs a few ms, not Nagle's ~45."""
    conn.open()
    samples = []
    for _ in range(50):
        started = time.perf_counter()
        conn.execute(Command("true"))
        samples.append(time.perf_counter() - started)
    median_ms = statistics.median(samples) * 1000
    print(f"execute(Command('true')) median round trip: {median_ms:.2f} ms")
    assert median_ms < 20


def test_sudo_wrapping_and_refusals() -> None:
    assert remote_command(("id", "-u"), sudo=True, user="root") == "id -u"
    assert remote_command(("ls", "a b"), sudo=True, user="debian") == "sudo -n -H -- ls 'a b'"
    needs_password = RunResult(1, "", "sudo: a password is required\n")
    err = sudo_refusal(needs_password, user="debian", host="lab")
    assert isinstance(err, HostError) and "passwordless sudo is required for debian on lab" in str(err)
    assert sudo_refusal(RunResult(1, "", "plain failure\n"), user="debian", host="lab") is None


def test_sudo_as_root_runs_directly(conn: SSHConnection) -> None:
    # The test user is root and this machine has no sudo binary: the prefix must not be added.
    assert conn.run("id", "-u", sudo=True).stdout.strip() == "0"


# -- files -------------------------------------------------------------------------------------------------

def test_put_and_get_round_trip_with_mode(conn: SSHConnection, tmp_path: Path) -> None:
    remote = tmp_path / "remote dir"
    remote.mkdir()
    payload = os.urandom(300_000)
    conn.put(payload, str(remote / "secret.env"), mode=0o600)
    assert conn.run("stat", "-c", "%a", str(remote / "secret.env")).stdout.strip() == "600"
    local = tmp_path / "source.txt"
    local.write_text("from a file\n")
    conn.put(local, str(remote / "copy.txt"), mode=0o640)
    assert conn.run("stat", "-c", "%a", str(remote / "copy.txt")).stdout.strip() == "640"
    back = conn.get(str(remote / "secret.env"), tmp_path / "back.bin")
    assert back.read_bytes() == payload
    assert conn.get(str(remote / "copy.txt"), tmp_path / "copy.txt").read_text() == "from a file\n"


def test_get_missing_file_is_a_host_error(conn: SSHConnection, tmp_path: Path) -> None:
    with pytest.raises(HostError, match="nope"):
        conn.get(str(tmp_path / "nope"), tmp_path / "x")


# -- host keys ---------------------------------------------------------------------------------------------

def test_first_use_records_key_then_next_connection_trusts_it(sshd: SSHD, tmp_path: Path) -> None:
    known = tmp_path / "kh" / "known_hosts"
    events: list[str] = []
    target = sshd.target(known_hosts=known)
    with SSHConnection(target, on_event=events.append) as c:
        c.open()
    fingerprint = HostKey.from_line(sshd.host_key_pub).fingerprint
    assert events == [f"recorded new host key {fingerprint} for test-sshd ([127.0.0.1]:{sshd.port}) in {known}"]
    assert known.read_text() == f"[127.0.0.1]:{sshd.port} {sshd.host_key_pub}\n"
    assert known.stat().st_mode & 0o777 == 0o600
    with SSHConnection(target, on_event=events.append) as c:
        assert c.run("echo", "again").stdout == "again\n"
    assert len(events) == 1 and known.read_text().count("\n") == 1


def test_default_known_hosts_is_vmlabs_own_file(sshd: SSHD) -> None:
    from vmlab.paths import known_hosts_file

    with SSHConnection(sshd.target(known_hosts=None)) as c:
        c.open()
    assert KnownHosts(known_hosts_file()).lookup(f"[127.0.0.1]:{sshd.port}") == [
        HostKey.from_line(sshd.host_key_pub)]


def test_host_key_alias_and_forget(sshd: SSHD, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    with SSHConnection(sshd.target(known_hosts=known, host_key_alias="i-0abc123")) as c:
        c.open()
    assert known.read_text().startswith("i-0abc123 ssh-ed25519 ")
    assert forget("i-0abc123", known) == 1
    assert KnownHosts(known).lookup("i-0abc123") == []
    assert forget("i-0abc123", known) == 0


def test_pinned_key_must_match_and_skips_known_hosts(sshd: SSHD, other_key: Path, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    with SSHConnection(sshd.target(known_hosts=known, pinned_host_key=sshd.host_key_pub)) as c:
        assert c.run("true").rc == 0
    assert not known.exists()  # a pinned key is not trust-on-first-use: nothing recorded
    wrong = public_key_line(other_key)
    with pytest.raises(HostKeyMismatch) as info:
        SSHConnection(sshd.target(known_hosts=known, pinned_host_key=wrong)).open(retry_for=30)
    text = str(info.value)
    assert info.value.reason == "hostkey"
    assert HostKey.from_line(wrong).fingerprint in text
    assert HostKey.from_line(sshd.host_key_pub).fingerprint in text


def test_tampered_known_hosts_entry_is_refused_fast(sshd: SSHD, other_key: Path, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    alias = f"[127.0.0.1]:{sshd.port}"
    known.write_text(f"{alias} {public_key_line(other_key)}\n")
    started = time.monotonic()
    with pytest.raises(HostKeyMismatch) as info:
        SSHConnection(sshd.target(known_hosts=known)).open(retry_for=30)
    assert time.monotonic() - started < 5  # never retried
    text = str(info.value)
    assert "test-sshd" in text and str(known) in text and "remove the line" in text
    assert HostKey.from_line(public_key_line(other_key)).fingerprint in text
    assert HostKey.from_line(sshd.host_key_pub).fingerprint in text
    assert known.read_text() == f"{alias} {public_key_line(other_key)}\n"  # left alone


def test_recorded_key_type_no_longer_offered_is_refused(sshd: SSHD, tmp_path: Path) -> None:
    # Only the recorded type is offered, so a server that dropped it cannot slip in another, unchecked key.
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(tmp_path / "ecdsa")], check=True)
    recorded = public_key_line(tmp_path / "ecdsa")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {recorded}\n")
    with pytest.raises(HostKeyMismatch, match="no longer offers a key of the recorded type ecdsa-sha2-nistp256"):
        SSHConnection(sshd.target(known_hosts=known)).open(retry_for=10)


# -- diagnosis ---------------------------------------------------------------------------------------------

def test_closed_port_is_refused_and_retried_until_deadline(sshd: SSHD) -> None:
    target = sshd.target(port=free_port())
    with pytest.raises(ConnectError) as info:
        SSHConnection(target).open()
    assert info.value.reason == "refused" and "nothing is listening" in str(info.value)
    started = time.monotonic()
    with pytest.raises(ConnectError) as info:
        SSHConnection(target).open(retry_for=1.5)
    elapsed = time.monotonic() - started
    assert info.value.reason == "refused" and "gave up after" in str(info.value)
    assert 1.0 < elapsed < 4.0


def test_unknown_host_name_is_dns(sshd: SSHD) -> None:
    with pytest.raises(ConnectError) as info:
        SSHConnection(sshd.target(host="no-such-host.invalid")).open(retry_for=10)
    assert info.value.reason == "dns"


def test_wrong_key_is_auth_and_not_retried(sshd: SSHD, other_key: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ConnectError) as info:
        SSHConnection(sshd.target(key_file=other_key)).open(retry_for=30)
    assert time.monotonic() - started < 5
    assert info.value.reason == "auth"
    assert str(other_key) in str(info.value) and sshd.user in str(info.value)


def test_key_file_readable_by_others_is_bad_input(sshd: SSHD, tmp_path: Path) -> None:
    loose = tmp_path / "loose_key"
    shutil.copy(sshd.client_key, loose)
    loose.chmod(0o644)
    with pytest.raises(BadInput) as info:
        SSHConnection(sshd.target(key_file=loose)).open()
    assert f"chmod 600 {loose}" in str(info.value)
    with pytest.raises(BadInput, match="does not exist"):
        SSHConnection(sshd.target(key_file=tmp_path / "missing")).open()


def test_port_that_accepts_and_drops_looks_like_a_booting_vm(sshd: SSHD) -> None:
    # QEMU's hostfwd accepts the TCP connection even before the guest's sshd runs, then closes it.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def drop() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except OSError:
                pass

    threading.Thread(target=drop, daemon=True).start()
    try:
        with pytest.raises(ConnectError) as info:
            SSHConnection(sshd.target(port=server.getsockname()[1])).open(retry_for=0.5)
    finally:
        stop.set()
        server.close()
    assert info.value.reason == "refused" and "still booting" in str(info.value)


# -- forwarding, reconnects, proxies -----------------------------------------------------------------------

@pytest.fixture
def echo_server() -> Iterator[int]:
    """A TCP echo server on 127.0.0.1; yields its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve(client: socket.socket) -> None:
        with client:
            while data := client.recv(65536):
                client.sendall(data)

    def accept() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(client,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def test_forward_local_carries_bytes_both_ways(conn: SSHConnection, echo_server: int) -> None:
    payload = os.urandom(200_000)
    with conn.forward_local(0, "127.0.0.1", echo_server) as fwd:
        assert fwd.local_port > 0
        for _ in range(2):  # two connections through the same forward
            with socket.create_connection(("127.0.0.1", fwd.local_port), timeout=10) as s:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)  # the half-close must travel to the echo server
                received = b""
                while chunk := s.recv(65536):
                    received += chunk
            assert received == payload
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", fwd.local_port), timeout=2).close()


def test_reconnects_transparently_after_sshd_restart(sshd: SSHD) -> None:
    events: list[str] = []
    with SSHConnection(sshd.target(), on_event=events.append) as c:
        first = c.run("sh", "-c", "echo $PPID").stdout
        sshd.restart()
        second = c.run("sh", "-c", "echo $PPID").stdout
        assert first != second  # a different sshd session process: it really reconnected
        assert any("reconnecting" in e for e in events)
        c.put(b"after restart", "/dev/null")  # SFTP reopened on the new transport too


def test_connection_lost_mid_command_is_a_host_error(sshd: SSHD) -> None:
    with SSHConnection(sshd.target()) as c:
        c.open()
        killer = threading.Timer(0.5, sshd.stop)
        killer.start()
        try:
            with pytest.raises(HostError, match="lost while running"):
                c.execute(Command("sleep", "20"))
        finally:
            killer.join()
            sshd.start()


def test_proxy_command(sshd: SSHD, tmp_path: Path) -> None:
    relay = tmp_path / "relay.py"
    relay.write_text(
        "import socket, sys, threading\n"
        "s = socket.create_connection((sys.argv[1], int(sys.argv[2])))\n"
        "def up():\n"
        "    while data := sys.stdin.buffer.read1(65536):\n"
        "        s.sendall(data)\n"
        "    s.shutdown(socket.SHUT_WR)\n"
        "threading.Thread(target=up, daemon=True).start()\n"
        "while data := s.recv(65536):\n"
        "    sys.stdout.buffer.write(data); sys.stdout.buffer.flush()\n")
    target = sshd.target(host="127.0.0.1", proxy_command=f"{sys.executable} {relay} %h %p")
    with SSHConnection(target) as c:
        assert c.run("echo", "via proxy").stdout == "via proxy\n"


def test_proxy_command_that_cannot_start_is_bad_input(sshd: SSHD) -> None:
    with pytest.raises(BadInput, match="no-such-proxy-binary"):
        SSHConnection(sshd.target(proxy_command="/nonexistent/no-such-proxy-binary %h %p")).open(retry_for=30)


def test_proxy_jump(sshd: SSHD, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    target = sshd.target(known_hosts=known, proxy_jump=f"{sshd.user}@127.0.0.1:{sshd.port}",
                         host_key_alias="behind-the-bastion")
    with SSHConnection(target) as c:
        assert c.run("echo", "via jump").stdout == "via jump\n"
    names = {line.split()[0] for line in known.read_text().splitlines()}
    assert names == {"behind-the-bastion", f"[127.0.0.1]:{sshd.port}"}


# -- targets -----------------------------------------------------------------------------------------------

def test_target_defaults_and_parsing() -> None:
    t = SSHTarget("10.0.0.5", port=2222, user="debian")
    assert (t.name, t.host_key_alias) == ("10.0.0.5", "[10.0.0.5]:2222")
    assert SSHTarget("h", user="u").host_key_alias == "h"
    p = SSHTarget.parse("ubuntu@[::1]:2200", name="lab")
    assert (p.user, p.host, p.port, p.name) == ("ubuntu", "::1", 2200, "lab")
    proxied = SSHTarget("h", port=2200, user="u", proxy_command="nc %h %p # %r %%")
    assert proxied.proxy_command_argv() == "nc h 2200 # u %"
    jump = SSHTarget("h", user="u", proxy_jump="bastion:2022").jump_target()
    assert jump is not None and (jump.user, jump.host, jump.port) == ("u", "bastion", 2022)
    with pytest.raises(BadInput):
        SSHTarget("h", proxy_command="x", proxy_jump="y")
    with pytest.raises(BadInput):
        SSHTarget("h", pinned_host_key="ssh-ed25519 not-base64!")
