"""The connection master's folder, names and settings (vmlab/transport/rundir.py) and its frames (mux.py)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from vmlab.transport import KnownHosts, SSHTarget
from vmlab.transport.hostkeys import HostKey
from vmlab.transport.mux import MAX_FRAME, recv_frame, send_frame
from vmlab.transport.rundir import (
    UnsafeRuntimeDir,
    check_folder,
    check_socket,
    identity,
    persist_seconds,
    runtime_dir,
    socket_path,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPmDbNO1C3+EwhKHBzvpyLq/6KUE0NVcvGo8vHa9dS8W"


@pytest.mark.parametrize(("env", "given", "expected"), [
    (None, None, 60.0), ("300", None, 300.0), ("0", None, 0.0), ("-5", None, 0.0), ("soon", None, 0.0),
    ("300", 5.0, 5.0), (None, 0.0, 0.0),
])
def test_persist_seconds(monkeypatch: pytest.MonkeyPatch, env: str | None, given: float | None,
                         expected: float) -> None:
    if env is None:
        monkeypatch.delenv("VMLAB_SSH_PERSIST", raising=False)
    else:
        monkeypatch.setenv("VMLAB_SSH_PERSIST", env)
    assert persist_seconds(given) == expected


def test_runtime_dir_is_created_private_under_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    folder = runtime_dir()
    assert folder == tmp_path / "vmlab" and folder.stat().st_mode & 0o777 == 0o700


def test_runtime_dir_falls_back_to_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert runtime_dir() == tmp_path / ".vmlab" / "run"


@pytest.mark.parametrize("mode", [0o720, 0o702, 0o777])
def test_a_folder_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    folder.chmod(mode)
    with pytest.raises(UnsafeRuntimeDir, match="writable by group or others"):
        check_folder(folder)
    folder.chmod(0o755)  # readable is fine: only writing would let others plant a socket
    check_folder(folder)


def test_a_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    if os.getuid() != 0:
        pytest.skip("only root can give a folder away")
    os.chown(folder, 65534, -1)
    with pytest.raises(UnsafeRuntimeDir, match="belongs to uid 65534"):
        check_folder(folder)


def test_check_socket_never_follows_a_symlink_or_accepts_a_file(tmp_path: Path) -> None:
    path = tmp_path / "x.sock"
    assert check_socket(path) is False
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        assert check_socket(path) is True
        link = tmp_path / "link.sock"
        link.symlink_to(path)
        with pytest.raises(UnsafeRuntimeDir, match="not a socket"):
            check_socket(link)
    plain = tmp_path / "plain.sock"
    plain.write_text("")
    with pytest.raises(UnsafeRuntimeDir, match="not a socket"):
        check_socket(plain)


def test_identity_changes_with_everything_that_names_the_target(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("k")
    known = tmp_path / "known_hosts"
    base = {"host": "10.0.0.5", "port": 22, "user": "ubuntu", "key_file": key, "known_hosts": known}
    first = identity(SSHTarget(**base))  # type: ignore[arg-type]
    assert identity(SSHTarget(**base)) == first  # type: ignore[arg-type]
    assert identity(SSHTarget(**base, name="another display name")) == first  # type: ignore[arg-type]
    variants = [{"host": "10.0.0.6"}, {"port": 2222}, {"user": "root"}, {"key_file": tmp_path / "other"},
                {"pinned_host_key": KEY}, {"proxy_jump": "bastion"}, {"proxy_command": "nc %h %p"},
                {"known_hosts": tmp_path / "elsewhere"}, {"host_key_alias": "i-0abc"}]
    seen = {first}
    for change in variants:
        seen.add(identity(SSHTarget(**{**base, **change})))  # type: ignore[arg-type]
    assert len(seen) == len(variants) + 1
    KnownHosts(known).record("10.0.0.5", HostKey.from_line(KEY))
    recorded = identity(SSHTarget(**base))  # type: ignore[arg-type]
    assert recorded != first
    KnownHosts(known).forget("10.0.0.5")
    KnownHosts(known).record("10.0.0.5", HostKey.from_line(OTHER))
    before = identity(SSHTarget(**base))  # type: ignore[arg-type]
    assert before not in (first, recorded)
    key.write_text("a replaced key")  # same path, another file
    assert identity(SSHTarget(**base)) != before  # type: ignore[arg-type]


def test_socket_path_is_none_when_too_long(tmp_path: Path) -> None:
    target = SSHTarget("h", known_hosts=tmp_path / "kh")
    assert socket_path(tmp_path, target) == tmp_path / f"{identity(target)}.sock"
    assert socket_path(tmp_path / ("x" * 100), target) is None


def test_frames_round_trip_and_refuse_oversize() -> None:
    a, b = socket.socketpair()
    with a, b:
        send_frame(a, {"op": "exec", "line": "echo é", "stdin": ""})
        assert recv_frame(b) == {"op": "exec", "line": "echo é", "stdin": ""}
        a.sendall((MAX_FRAME + 1).to_bytes(4, "big"))
        with pytest.raises(ValueError, match="over the"):
            recv_frame(b)
        a.sendall(b"\x00\x00\x00\x02[]")
        with pytest.raises(ValueError, match="JSON object"):
            recv_frame(b)
        a.sendall(b"\x00\x00\x00\x09{")
        a.close()
        with pytest.raises(ConnectionError, match="middle of a frame"):
            recv_frame(b)
