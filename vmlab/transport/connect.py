"""Opening an authenticated paramiko Transport to an `SSHTarget`, with retries and a diagnosis on failure.

Only transient failures are retried (nothing listening yet, no answer yet, a port forward that accepts and
drops while the VM boots, a handshake cut short); a rejected key, a changed host key, an unknown host name
or a broken key file fail at once, because waiting cannot fix them. The final error says which of those it was
(`ConnectError.reason`: refused, timeout, auth, hostkey, dns, protocol) and what to check.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from paramiko.ssh_exception import IncompatiblePeer

from vmlab.errors import BadInput, ConnectError, HostKeyMismatch
from vmlab.transport.hostkeys import HostKey, mismatch, offered_algorithms, verify_host_key
from vmlab.transport.target import SSHTarget

log = logging.getLogger("vmlab.transport")
# paramiko logs every failed attempt at ERROR with a traceback; with no handler configured Python's
# last-resort handler would print those to the user's terminal while vmlab is merely waiting for a VM to boot.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

KEEPALIVE_SECONDS = 15
FIRST_DELAY = 0.1
MAX_DELAY = 2.0
DEFAULT_KEY_FILES = ("id_ed25519", "id_ecdsa", "id_rsa")

_HINTS = {
    "refused": "is the VM up, and is this the right port?",
    "timeout": "a firewall or security group may be dropping SSH, or the address is wrong",
    "dns": "check the host name",
    "protocol": "is an SSH server listening there?",
}
# paramiko's words for a connection the server cut during the handshake (sshd starting, MaxStartups, a VM's
# port forward with nothing behind it yet).
_DROPPED = ("No existing session", "not active", "Negotiation failed", "Unable to open")


@dataclass
class Link:
    """An authenticated transport, plus the jump host's link it runs through (closed together)."""

    transport: paramiko.Transport
    via: Link | None = None

    @property
    def active(self) -> bool:
        return bool(self.transport.is_active())

    def close(self) -> None:
        self.transport.close()
        if self.via is not None:
            self.via.close()


def load_key(path: Path) -> paramiko.PKey:
    """The private key at `path`; BadInput when missing, too open (OpenSSH refuses those too) or
    unreadable."""
    if not path.is_file():
        raise BadInput(f"SSH key file {path} does not exist", "check key_file")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise BadInput(f"SSH key file {path} is accessible by group or others (mode {mode:04o})",
                       f"run `chmod 600 {path}`")
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        raise BadInput(f"SSH key file {path} is encrypted with a passphrase",
                       "load it into ssh-agent and leave key_file unset, or use a key without a passphrase",
                       ) from None
    except (paramiko.SSHException, ValueError, OSError) as exc:
        raise BadInput(f"SSH key file {path} is not a private key vmlab can read ({exc})",
                       "give the private key (not the .pub file) in OpenSSH or PEM format") from None


def _default_keys() -> list[paramiko.PKey]:
    """~/.ssh/id_* keys that load without a passphrase and with safe modes (like ssh without -i)."""
    keys = []
    for name in DEFAULT_KEY_FILES:
        path = Path.home() / ".ssh" / name
        if path.is_file():
            try:
                keys.append(load_key(path))
            except BadInput as exc:
                log.debug("not offering %s: %s", path, exc)
    return keys


def _authenticate(t: paramiko.Transport, target: SSHTarget, key: paramiko.PKey | None) -> None:
    """Public-key auth with exactly the given key, or with ssh-agent then default keys when there is none."""
    agent: paramiko.Agent | None = None
    try:
        if key is not None:
            candidates: list[Any] = [key]
        else:
            agent = paramiko.Agent()
            candidates = [*agent.get_keys(), *_default_keys()]
        for candidate in candidates:
            try:
                remaining = t.auth_publickey(target.user, candidate)
            except paramiko.BadAuthenticationType:
                raise
            except paramiko.AuthenticationException:
                continue
            if not remaining:  # a non-empty list means a second factor is wanted, which vmlab cannot give
                return
        raise paramiko.AuthenticationException(f"no key accepted ({len(candidates)} offered)")
    finally:
        if agent is not None:
            agent.close()


def _attempt(target: SSHTarget, key: paramiko.PKey | None, timeout: float, jump: Link | None,
             on_event: Callable[[str], None] | None) -> Link:
    sock: Any
    if jump is not None:
        sock = jump.transport.open_channel("direct-tcpip", (target.host, target.port), ("127.0.0.1", 0),
                                           timeout=timeout)
    elif target.proxy_command:
        command = target.proxy_command_argv() or ""
        try:
            sock = paramiko.ProxyCommand(command)
        except (OSError, ValueError) as exc:  # a typo in the command: retrying cannot help
            raise BadInput(f"cannot start proxy_command {command!r} of {target.name}: {exc}") from None
    else:
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
        # Without TCP_NODELAY every command waits on Nagle + delayed ACK: ~45 ms instead of ~3.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t = paramiko.Transport(sock)
    try:
        t.banner_timeout = t.handshake_timeout = t.auth_timeout = timeout
        known_hosts = target.known_hosts_path()
        offered = offered_algorithms(target.host_key_alias, known_hosts, target.pinned_host_key)
        if offered:
            options = t.get_security_options()
            usable = [alg for alg in offered if alg in options.key_types]
            if usable:
                options.key_types = usable
        done = threading.Event()
        t.start_client(event=done)
        if not done.wait(timeout):
            raise TimeoutError(f"SSH handshake did not finish within {timeout:.0f}s")
        if not t.is_active():
            failure = t.get_exception() or paramiko.SSHException("SSH negotiation failed")
            if offered and isinstance(failure, IncompatiblePeer) and "host key" in str(failure):
                recorded = HostKey.from_line(target.pinned_host_key) if target.pinned_host_key else None
                if recorded is None:
                    from vmlab.transport.hostkeys import KnownHosts

                    recorded = KnownHosts(known_hosts).lookup(target.host_key_alias)[0]
                raise mismatch(target.name, target.host_key_alias, recorded, None, known_hosts)
            raise failure
        presented = HostKey.from_blob(t.get_remote_server_key().asbytes())
        verify_host_key(presented, alias=target.host_key_alias, name=target.name, known_hosts=known_hosts,
                        pinned=target.pinned_host_key, on_event=on_event)
        _authenticate(t, target, key)
        t.set_keepalive(KEEPALIVE_SECONDS)
        return Link(t, via=jump)
    except BaseException:
        t.close()
        raise


def _classify(exc: BaseException, target: SSHTarget, timeout: float) -> tuple[str, bool, str]:
    """(reason, worth retrying, what happened) for a failed attempt."""
    where = f"{target.host}:{target.port}"
    if isinstance(exc, socket.gaierror):
        return "dns", False, f"cannot resolve host name {target.host!r} ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return "refused", True, f"nothing is listening on {where}"
    if isinstance(exc, paramiko.ChannelException):
        return "refused", True, f"the jump host could not reach {where} ({exc.text})"
    if isinstance(exc, paramiko.AuthenticationException):
        key = str(target.key_file) if target.key_file else "ssh-agent and ~/.ssh/id_* keys"
        return "auth", False, f"the server rejected {key} for user {target.user!r}"
    if isinstance(exc, paramiko.ProxyCommandFailure):
        return "protocol", True, f"the proxy command failed ({exc})"
    if isinstance(exc, TimeoutError):
        return "timeout", True, f"no answer from {where} within {timeout:.0f}s"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "timeout", True, f"no route to {where} ({exc.strerror})"
    dropped = (f"{where} accepted the connection but closed it before SSH was up "
               "(a VM still booting behind a port forward looks like this)")
    if isinstance(exc, paramiko.SSHException):
        text = str(exc)
        if "protocol banner" in text:
            if isinstance(exc.__context__, TimeoutError):
                return "timeout", True, (f"{where} accepted the connection but sent no SSH banner "
                                         f"within {timeout:.0f}s")
            return "refused", True, dropped
        if any(s in text for s in _DROPPED):
            return "refused", True, dropped
        return "protocol", False, f"SSH with {where} failed: {text}"
    if isinstance(exc, (EOFError, ConnectionError)):
        return "refused", True, dropped
    if isinstance(exc, OSError):
        return "refused", True, f"cannot connect to {where} ({exc.strerror or exc})"
    return "protocol", False, f"SSH with {where} failed: {exc!r}"


def connect(target: SSHTarget, *, retry_for: float = 0.0, retry_auth: bool = False,
            on_event: Callable[[str], None] | None = None) -> Link:
    """An authenticated link to `target`, retrying transient failures for up to `retry_for` seconds.

    `retry_auth` also retries rejected keys, for a VM whose cloud-init writes authorized_keys after sshd
    starts.
    Raises BadInput (key file problems), HostKeyMismatch (never retried) or ConnectError with a reason.

    Example::

        link = connect(SSHTarget("127.0.0.1", port=2222, key_file=key), retry_for=120)
        link.transport.open_session()
    """
    key = load_key(target.key_file) if target.key_file is not None else None
    jump_target = target.jump_target()
    started = time.monotonic()
    deadline = started + retry_for
    delay = FIRST_DELAY
    attempts = 0
    jump: Link | None = None
    last: BaseException
    while True:
        attempts += 1
        remaining = deadline - time.monotonic()
        timeout = target.connect_timeout
        if retry_for > 0:
            timeout = max(1.0, min(timeout, remaining))
        try:
            if jump_target is not None and (jump is None or not jump.active):
                jump = connect(jump_target, on_event=on_event)
            return _attempt(target, key, timeout, jump, on_event)
        except (BadInput, HostKeyMismatch):
            if jump is not None:
                jump.close()
            raise
        except ConnectError as exc:  # the jump host's own failure
            reason, detail, last = exc.reason, f"via {exc.message}", exc
            retryable = reason in ("refused", "timeout")
        except Exception as exc:
            reason, retryable, detail = _classify(exc, target, timeout)
            retryable = retryable or (reason == "auth" and retry_auth)
            last = exc
        # Sleep at most until the deadline and try once more there: a VM that comes up in the last second
        # still counts.
        remaining = deadline - time.monotonic()
        if not retryable or remaining <= 0:
            if jump is not None:
                jump.close()
            tries = ""
            if attempts > 1:
                tries = f" (gave up after {attempts} attempts in {time.monotonic() - started:.0f}s)"
            hint = _HINTS.get(reason)
            if reason == "auth":
                hint = f"check the user name ({target.user}) and key_file, and that the key is authorized"
            message = f"cannot SSH to {target.describe()}: {detail}{tries}"
            raise ConnectError(message, hint, reason=reason) from last
        log.debug("SSH to %s not up yet (%s); retrying in %.1fs", target.describe(), detail, delay)
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, MAX_DELAY)
