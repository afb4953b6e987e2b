"""A real OpenSSH sshd on 127.0.0.1 for tests: own host key, own client key, own port, own temp dir.

It runs as the current user (root here), so the tests log in as that user with a key written to a private
`authorized_keys`. Nothing outside the temp dir is touched except `/run/sshd`, the privilege-separation
directory sshd insists on.

Example::

    server = SSHD.start_new()
    target = server.target()            # an SSHTarget for vmlab.transport
    ...
    server.stop()
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

SSHD_BIN = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the usual small race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_keypair(directory: Path, name: str = "id_ed25519") -> Path:
    """Write an unencrypted ed25519 key pair `directory/name` (+ `.pub`), mode 0600; returns the private key
    path."""
    path = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    path.chmod(0o600)
    return path


def public_key_line(private_key: Path) -> str:
    """`TYPE BASE64` of a key pair's public half, without the comment."""
    keytype, blob = private_key.with_name(private_key.name + ".pub").read_text().split()[:2]
    return f"{keytype} {blob}"


def wait_for_banner(host: str, port: int, timeout: float) -> None:
    """Block until `host:port` answers with an SSH banner, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.02)
    raise TimeoutError(f"sshd on {host}:{port} gave no SSH banner within {timeout}s (last error: {last})")


def _descendants(pid: int) -> list[int]:
    """Pids of all processes below `pid`: sshd's per-connection children call setsid(), so killing the
    listener's process group would leave live sessions behind (a rebooted VM leaves none)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name in field 2 may hold spaces and parentheses; fields after the last ')' are fixed.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class SSHD:
    """One sshd process serving 127.0.0.1:`port` from its own temp dir.

    Attributes: `host` ("127.0.0.1"), `port`, `user` (the current user), `client_key` (private key path that
    `authorized_keys` accepts), `host_key_pub` ("ssh-ed25519 AAAA..." line of the server's host key),
    `workdir`, `log_path` (sshd's own log, for a failing test's post-mortem).
    """

    host = "127.0.0.1"

    def __init__(self, workdir: Path | None = None, port: int | None = None) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="vmlab-sshd-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.user = getpass.getuser()
        self.host_key = make_keypair(self.workdir, "ssh_host_ed25519_key")
        self.host_key_pub = public_key_line(self.host_key)
        self.client_key = make_keypair(self.workdir, "client_ed25519")
        authorized = self.workdir / "authorized_keys"
        authorized.write_text(public_key_line(self.client_key) + "\n")
        authorized.chmod(0o600)
        self.home = self.workdir / "home"
        self.home.mkdir(exist_ok=True)
        self.config = self.workdir / "sshd_config"
        self.log_path = self.workdir / "sshd.log"
        self.config.write_text(self._config_text())
        self._proc: subprocess.Popen[bytes] | None = None

    def _config_text(self) -> str:
        w = self.workdir
        return "\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"PidFile {w / 'sshd.pid'}",
            f"AuthorizedKeysFile {w / 'authorized_keys'}",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UseDNS no",
            "PrintMotd no",
            "AllowTcpForwarding yes",
            "MaxStartups 100:30:200",
            "MaxSessions 100",
            f"Subsystem sftp {SFTP_SERVER}",
            # root's ~/.bashrc runs `pyenv init` (+110 ms a command); a HOME without one keeps timings honest.
            f"SetEnv HOME={self.home}",
            "LogLevel VERBOSE",
            "",
        ])

    # -- life cycle -------------------------------------------------------------------------------------

    @classmethod
    def start_new(cls, workdir: Path | None = None) -> SSHD:
        server = cls(workdir)
        server.start()
        return server

    def start(self, timeout: float = 10.0) -> None:
        """Start sshd and wait until it answers with a banner."""
        if self._proc is not None and self._proc.poll() is None:
            return
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                [SSHD_BIN, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        finally:
            log.close()
        try:
            wait_for_banner(self.host, self.port, timeout)
        except TimeoutError as exc:
            self.stop()
            raise TimeoutError(f"{exc}\n--- sshd log ---\n{self.log()}") from None

    def stop(self) -> None:
        """Kill sshd and every session it serves, like a VM going away."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # the listener's own process group, then any session that left it; listed before the listener dies so
        # orphans (re-parented to init) are still found
        sessions = _descendants(proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in [proc.pid, *sessions]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again on the same port with the same keys (reconnect tests)."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- for tests ---------------------------------------------------------------------------------------

    def target(self, **overrides: Any) -> Any:
        """An `SSHTarget` for this sshd with the client key; keyword arguments override any field.

        known_hosts defaults to vmlab's own file, which the tests' autouse fixture puts in a per-test temp dir
        (outside a test, a file in this server's workdir), so each test starts with no recorded host key.
        """
        from vmlab.transport.target import SSHTarget

        if "known_hosts" not in overrides:
            if os.environ.get("VMLAB_STATE_DIR"):
                from vmlab.paths import known_hosts_file

                overrides["known_hosts"] = known_hosts_file()
            else:
                overrides["known_hosts"] = self.workdir / "known_hosts"
        fields: dict[str, Any] = {"host": self.host, "port": self.port, "user": self.user,
                                  "key_file": self.client_key, "name": "test-sshd"}
        fields.update(overrides)
        return SSHTarget(**fields)
