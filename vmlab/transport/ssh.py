"""`SSHConnection`: the engine's Host over one persistent paramiko transport (no Fabric, no shell text).

A command is an argument tuple quoted once here with `shlex.join`; it runs through the login shell sshd
starts, so quoting is exactly what keeps `$(...)`, spaces and quotes literal. Commands reuse one
transport (a channel each, ~3 ms on loopback); a transport that died (VM rebooted, network blip) is reopened
once, transparently, before a command starts, never in the middle of one (a half-run command is reported, not
repeated). With persistence on (`VMLAB_SSH_PERSIST`, default 60 s), commands go through a connection master
left by an earlier run when there is one (`vmlab.transport.mux`); files, forwards and stdin over 8 MiB always use
a direct connection.
"""

from __future__ import annotations

import io
import logging
import os
import shlex
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from vmlab.engine.command import Command, RunResult
from vmlab.errors import CommandFailed, HostError
from vmlab.transport.forward import Forward
from vmlab.transport.mux import MAX_STDIN, MuxClient, NotSent, attach, spawn
from vmlab.transport.rundir import persist_seconds
from vmlab.transport.spare import SpareSession
from vmlab.transport.target import SSHTarget

if TYPE_CHECKING:
    import paramiko

    from vmlab.transport.connect import Link

__all__ = ["Forward", "SSHConnection", "SSHTarget"]

log = logging.getLogger("vmlab.transport")

SUDO_PREFIX = ("sudo", "-n", "-H", "--")
_SUDO_PASSWORD = ("a password is required", "a terminal is required", "no tty present")


class SSHConnection:
    """A persistent SSH connection implementing the engine's `Host` protocol, plus files and port forwards.

    Opened lazily by the first call, or explicitly with `open(retry_for=...)` to wait for a booting VM.

    Example::

        target = SSHTarget("127.0.0.1", port=2222, user="debian", key_file=key, host_key_alias="vm-1")
        with SSHConnection(target).open(retry_for=180) as conn:
            conn.run("mkdir", "-p", "/srv/lab dir")           # one argument, spaces and all
            conn.put(b"TOKEN=...\\n", "/etc/lab.env", mode=0o600)
            result = conn.execute(Command("apt-get", "update"), sudo=True)
    """

    def __init__(self, target: SSHTarget, *, on_event: Callable[[str], None] | None = None,
                 persist: float | None = None) -> None:
        self.target = target
        # Seconds a connection master outlives this connection (None: $VMLAB_SSH_PERSIST, else 60; 0: off).
        self.persist = persist_seconds(persist)
        self._mux: MuxClient | None = None
        self.name = target.name
        self._on_event = on_event
        self._link: Link | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._sftp_link: Link | None = None
        # Opening and reopening must not race when several threads share the connection (forwards do).
        self._lock = threading.RLock()
        self.commands = 0  # commands run (a session channel each): what a benchmark counts as round trips
        self._spare = SpareSession(lambda link: link.transport.open_session(timeout=target.connect_timeout))

    # -- life cycle ---------------------------------------------------------------------------------------

    def open(self, retry_for: float = 0.0, *, retry_auth: bool = False) -> SSHConnection:
        """Connect now (no-op when open), retrying transient failures for `retry_for` seconds; returns
        self. With persistence on, a live connection master for the target is used instead of connecting
        (see `vmlab.transport.mux`), and a direct connection leaves a new master behind."""
        with self._lock:
            if self._mux is not None:
                return self
            if self._link is None and self.persist > 0:
                self._mux = attach(self.target)
                if self._mux is not None:
                    return self
            return self._open_direct(retry_for, retry_auth=retry_auth)

    def _open_direct(self, retry_for: float = 0.0, *, retry_auth: bool = False) -> SSHConnection:
        """A direct SSH connection (for files, forwards, large stdin, or when no master can be used). paramiko
        is imported here, not before: a run whose commands all go through a master never loads it."""
        from vmlab.transport.connect import connect

        with self._lock:
            if self._link is not None:
                if self._link.active:
                    return self
                # It was open and died since (reboot, network): give a restarting host a moment.
                self._lost("the transport closed")
                retry_for = max(retry_for, self.target.connect_timeout)
            self._link = connect(self.target, retry_for=retry_for, retry_auth=retry_auth,
                                 on_event=self._on_event)
            if self.persist > 0 and self._mux is None:
                spawn(self.target, self.persist)  # the host key is verified (or recorded) by now
            # the first command's channel opens while the caller gets ready (a recipe renders its steps)
            self._spare.refill(self._link)
            return self

    def _lost(self, why: object) -> None:
        """Forget a dead link, and say so: a reconnect is worth a line in the user's progress output."""
        self._drop()
        log.info("connection to %s was lost (%s); reconnecting", self.target.describe(), why)
        if self._on_event is not None:
            self._on_event(f"connection to {self.name} was lost; reconnecting")

    @property
    def is_open(self) -> bool:
        return self._mux is not None or (self._link is not None and self._link.active)

    def close(self) -> None:
        """Close the connection (forwards made from it stop working). Safe to call twice."""
        with self._lock:
            self._drop()

    def __enter__(self) -> SSHConnection:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SSHConnection({self.target.describe()}, {'open' if self.is_open else 'closed'})"

    def _drop_sftp(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:  # closing a dead SFTP session: nothing to report
                pass
        self._sftp = self._sftp_link = None

    def _drop(self) -> None:
        self._detach()
        self._spare.discard()
        self._drop_sftp()
        if self._link is not None:
            self._link.close()
            self._link = None

    def _detach(self) -> None:
        if self._mux is not None:
            self._mux.close()
            self._mux = None

    def _with_transport(self, what: str, use: Callable[[paramiko.Transport], Any]) -> Any:
        """Run `use(transport)`, reopening the connection once if the transport turned out to be dead.

        Only the step that opens a channel goes through here, so nothing is ever sent twice.
        """
        import paramiko

        from vmlab.transport.channel import CHANNEL_ERRORS

        with self._lock:
            link = self._open_direct()._link
        assert link is not None
        try:
            return use(link.transport)
        except paramiko.ChannelException as exc:  # the server refused this channel; the link is fine
            raise HostError(f"{self.name} refused to {what}: {exc.text}") from None
        except CHANNEL_ERRORS as exc:
            # EOF or a socket error means the link is gone even if paramiko's thread has not noticed yet.
            if link.active and not isinstance(exc, (EOFError, OSError)):
                raise HostError(f"cannot {what} on {self.name}: {exc}") from None
            first = exc
        with self._lock:
            if self._link is link:
                self._lost(first)
            link = self._open_direct(self.target.connect_timeout)._link
        assert link is not None
        try:
            return use(link.transport)
        except CHANNEL_ERRORS as exc:
            raise HostError(f"cannot {what} on {self.name} even after reconnecting: {exc}") from None

    # -- commands -----------------------------------------------------------------------------------------

    def execute(self, command: Command, *, sudo: bool = False) -> RunResult:
        """Run `command` (as root when `sudo`); returns its exit status and output, whatever the status.

        Raises HostError when the connection is lost mid-command, or when sudo needs a password.
        """
        line = remote_command(command.argv, sudo=sudo, user=self.target.user)
        self.commands += 1
        stdin = command.stdin or b""
        mux = self.open()._mux if len(stdin) <= MAX_STDIN else None
        result = None
        if mux is not None:
            try:
                result = mux.execute(line, stdin, command.describe())
            except NotSent as exc:  # nothing reached the host: running it directly cannot run it twice
                log.info("connection master for %s unusable (%s); connecting directly", self.name, exc)
                with self._lock:
                    if self._mux is mux:
                        self._detach()
        if result is None:
            result = self._execute_direct(line, command)
        if sudo and self.target.user != "root":
            refused = sudo_refusal(result, user=self.target.user, host=self.name)
            if refused is not None:
                raise refused
        return result

    def _execute_direct(self, line: str, command: Command) -> RunResult:
        from vmlab.transport.channel import CHANNEL_ERRORS, collect

        chan = self._session()
        try:
            # Not retried: once the request is sent the command may have started, and running it twice is
            # worse than reporting the failure.
            try:
                chan.exec_command(os.fsencode(line))  # a non-UTF-8 file name: its own bytes
            except CHANNEL_ERRORS as exc:
                raise HostError(
                    f"connection to {self.name} failed while starting: {command.describe()} ({exc})",
                    "the command may or may not have started; check the host, then retry") from None
            result = collect(chan, command.stdin or b"", self.name, command.describe())
        finally:
            chan.close()
        return result

    def _session(self) -> paramiko.Channel:
        """A session channel for the next command: the one opened ahead if it is still good, else a new one;
        then, if opens are slow enough for it to pay, the channel after it starts opening while this command
        runs (see `vmlab.transport.spare`)."""
        link = self._link
        chan = self._spare.take(link) if link is not None else None
        if chan is None:
            chan = self._spare.timed(lambda: self._with_transport(
                "open a session", lambda t: t.open_session(timeout=self.target.connect_timeout)))
        if self._link is not None:
            self._spare.refill(self._link)
        return chan

    def run(self, *argv: str, sudo: bool = False, stdin: bytes | str | None = None,
            check: bool = True) -> RunResult:
        """Convenience: `conn.run("ls", "-l", path)`; raises CommandFailed on a non-zero exit when `check`."""
        command = Command(*argv, stdin=stdin)
        result = self.execute(command, sudo=sudo)
        if check and result.rc != 0:
            raise command_failed(self.name, command, result)
        return result

    # -- files --------------------------------------------------------------------------------------------

    def _sftp_client(self) -> paramiko.SFTPClient:
        import paramiko

        with self._lock:
            if self._sftp is not None and self._sftp_link is self._link and self.is_open:
                return self._sftp

            def start(t: paramiko.Transport) -> paramiko.SFTPClient:
                client = paramiko.SFTPClient.from_transport(t)
                if client is None:
                    raise paramiko.SSHException("the server did not start an SFTP session")
                return client

            self._sftp = self._with_transport("start SFTP", start)
            self._sftp_link = self._link
            return self._sftp

    def put(self, source: str | Path | bytes, remote_path: str, mode: int | None = None) -> None:
        """Upload a local file (path) or `bytes` to `remote_path`; `mode` (e.g. 0o600) is set before any byte
        is written, so a secret is never readable with a looser mode, even briefly."""
        from vmlab.transport.channel import CHANNEL_ERRORS, READ_CHUNK

        sftp = self._sftp_client()
        src: IO[bytes] = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
        try:
            fh = sftp.open(os.fsencode(remote_path), "wb")  # non-UTF-8 names: their bytes
            try:
                if mode is not None:
                    fh.chmod(mode)
                fh.set_pipelined(True)
                while chunk := src.read(READ_CHUNK):
                    fh.write(chunk)
            except BaseException:
                # a Ctrl-C/SIGTERM (or an error) in the middle of a packet leaves the SFTP stream unusable: closing
                # the file would wait forever for its answer, so the session is dropped (the next use opens one)
                self._drop_sftp()
                raise
            fh.close()
        except CHANNEL_ERRORS as exc:
            raise HostError(f"cannot write {remote_path} on {self.name}: {exc}") from None
        finally:
            src.close()

    def get(self, remote_path: str, local_path: str | Path) -> Path:
        """Download `remote_path` to `local_path`; returns the local path."""
        from vmlab.transport.channel import CHANNEL_ERRORS

        sftp = self._sftp_client()
        local = Path(local_path)
        try:
            sftp.get(os.fsencode(remote_path), str(local))
        except CHANNEL_ERRORS as exc:
            raise HostError(f"cannot read {remote_path} on {self.name}: {exc}") from None
        return local

    # -- port forwarding ----------------------------------------------------------------------------------

    def forward_local(self, local_port: int, remote_host: str, remote_port: int) -> Forward:
        """Listen on 127.0.0.1:`local_port` (0 picks a free one) and carry each connection to
        `remote_host:remote_port` as seen from the server. Close the returned Forward when done."""

        def open_channel(origin: tuple[str, int]) -> paramiko.Channel:
            return self._with_transport(
                f"forward to {remote_host}:{remote_port}",
                lambda t: t.open_channel("direct-tcpip", (remote_host, remote_port), origin,
                                         timeout=self.target.connect_timeout))

        return Forward(open_channel, local_port, f"{self.name} -> {remote_host}:{remote_port}")


def remote_command(argv: tuple[str, ...], *, sudo: bool, user: str) -> str:
    """The command line sent to sshd: argv quoted once, behind `sudo -n -H --` when root is wanted and the
    user is not root (`-n`: fail instead of waiting for a password nobody will type)."""
    if sudo and user != "root":
        argv = (*SUDO_PREFIX, *argv)
    return shlex.join(argv)


def sudo_refusal(result: RunResult, *, user: str, host: str) -> HostError | None:
    """The HostError for a command sudo refused to run (password needed, user not allowed), else None."""
    if result.rc == 127 and "sudo: " in result.stderr and "not found" in result.stderr:
        # The shell's words for a missing sudo; sudo's own "command not found" (for the program) exits 1.
        return HostError(f"sudo is not installed on {host}", "install sudo there, or connect as root")
    if result.rc != 1:
        return None
    if any(s in result.stderr for s in _SUDO_PASSWORD):
        return HostError(f"passwordless sudo is required for {user} on {host}",
                         f"allow it with a sudoers line `{user} ALL=(ALL) NOPASSWD:ALL`, or connect as root")
    if "not in the sudoers file" in result.stderr or "is not allowed to run sudo" in result.stderr:
        return HostError(f"{user} may not use sudo on {host}",
                         "connect as a user with passwordless sudo, or as root")
    return None


def command_failed(host: str, command: Command, result: RunResult) -> CommandFailed:
    """The CommandFailed for `result`: host, command, exit status and the last stderr line."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    tail = f": {lines[-1].strip()}" if lines else ""
    return CommandFailed(f"`{command.describe()}` failed on {host} with exit status {result.rc}{tail}",
                         rc=result.rc, stdout=result.stdout, stderr=result.stderr)
