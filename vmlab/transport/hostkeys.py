"""Host keys: vmlab's own known_hosts file and the trust policy for SSH servers.

Policy, in order: a pinned key (from an inventory or a lab record) must match exactly; otherwise the key
recorded for the host's alias must match; otherwise the key is trusted on first use and recorded. A key that
differs from the recorded one is refused with `HostKeyMismatch`; nothing is ever accepted silently (no
AutoAddPolicy; reviewed: named only to say it is not used).

The file is OpenSSH's format (`alias keytype base64`), mode 0600, rewritten atomically under an fcntl lock, so
parallel `vmlab provision` runs never lose each other's entries. No paramiko import: fingerprints are computed
from the key blobs.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import logging
import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vmlab.errors import BadInput, HostKeyMismatch
from vmlab.fileio import write_atomic

log = logging.getLogger("vmlab.transport")

# The host key algorithms (what the server signs with) that present a key of each known_hosts type; offering
# only these makes a server with several host keys show the one we recorded.
_ALGORITHMS: dict[str, tuple[str, ...]] = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}


@dataclass(frozen=True)
class HostKey:
    """A server's public key: its type and the raw SSH blob.

    Example::

        key = HostKey.from_line("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... root@lab")
        key.fingerprint        # 'SHA256:...' as `ssh-keygen -lf` prints it
    """

    keytype: str
    blob: bytes

    @classmethod
    def from_line(cls, line: str, what: str = "host key") -> HostKey:
        """Parse `TYPE BASE64 [comment]`; BadInput if it is not a well-formed public key."""
        parts = line.split()
        if len(parts) < 2:
            raise BadInput(f"{what} {line!r} is not an OpenSSH public key",
                           "expected 'ssh-ed25519 AAAA...', as in a .pub file or `ssh-keyscan` output")
        try:
            blob = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):
            raise BadInput(f"{what} {line[:40]!r}... has invalid base64") from None
        key = cls.from_blob(blob)
        if key.keytype != parts[0]:
            raise BadInput(f"{what} says {parts[0]} but its data is a {key.keytype} key")
        return key

    @classmethod
    def from_blob(cls, blob: bytes) -> HostKey:
        """From the wire blob (which starts with its own type name as an SSH string)."""
        if len(blob) < 4:
            raise BadInput("host key blob is too short")
        (n,) = struct.unpack(">I", blob[:4])
        if n > 64 or len(blob) < 4 + n:
            raise BadInput("host key blob is malformed")
        return cls(blob[4:4 + n].decode("ascii", errors="replace"), blob)

    @property
    def fingerprint(self) -> str:
        """`SHA256:<base64 without padding>`, the form OpenSSH prints."""
        digest = hashlib.sha256(self.blob).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def line(self) -> str:
        """`TYPE BASE64`, as written to known_hosts after the alias."""
        return f"{self.keytype} {base64.b64encode(self.blob).decode()}"

    def algorithms(self) -> tuple[str, ...]:
        return _ALGORITHMS.get(self.keytype, (self.keytype,))


def _name_matches(pattern: str, alias: str) -> bool:
    if pattern.startswith("|1|"):
        # Hashed entry (HashKnownHosts): |1|base64(salt)|base64(HMAC-SHA1(salt, name)).
        try:
            _, _, salt64, hash64 = pattern.split("|", 3)
            salt = base64.b64decode(salt64)
            expected = base64.b64decode(hash64)
        except (ValueError, binascii.Error):
            return False
        return hmac.compare_digest(hmac.new(salt, alias.encode(), hashlib.sha1).digest(), expected)
    return pattern == alias


def _entries(lines: list[str]) -> Iterator[tuple[int, list[str], HostKey]]:
    """(line index, host names, key) of each usable line. Markers (@cert-authority, @revoked), wildcards and
    broken lines are skipped for matching but kept when the file is rewritten."""
    for i, raw in enumerate(lines):
        text = raw.strip()
        if not text or text.startswith(("#", "@")):
            continue
        fields = text.split()
        if len(fields) < 3:
            continue
        try:
            key = HostKey.from_line(f"{fields[1]} {fields[2]}")
        except BadInput:
            log.debug("skipping unreadable known_hosts line %d", i + 1)
            continue
        yield i, fields[0].split(","), key


class KnownHosts:
    """vmlab's known_hosts file (OpenSSH format), read without a lock and written under one.

    Example::

        kh = KnownHosts(paths.known_hosts_file())
        kh.lookup("i-0abc123")          # [HostKey(...)] or []
        kh.forget("i-0abc123")          # after terminating that instance
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _read(self) -> list[str]:
        try:
            return self.path.read_text().splitlines()
        except FileNotFoundError:
            return []

    def lookup(self, alias: str) -> list[HostKey]:
        """Every key recorded for `alias` (a server may have one per key type)."""
        return [key for _, names, key in _entries(self._read())
                if any(_name_matches(n, alias) for n in names)]

    def record(self, alias: str, key: HostKey) -> HostKey | None:
        """Add `alias key` unless present. Returns the conflicting recorded key of the same type, if another
        process recorded one meanwhile (then nothing is written and the caller must refuse)."""
        conflict: HostKey | None = None

        def update(lines: list[str]) -> list[str]:
            nonlocal conflict
            for _, names, known in _entries(lines):
                if any(_name_matches(n, alias) for n in names):
                    if known == key:
                        return lines
                    if known.keytype == key.keytype:
                        conflict = known
                        return lines
            return [*lines, f"{alias} {key.line()}"]

        self._update(update)
        return conflict

    def forget(self, alias: str) -> int:
        """Remove `alias` from every line (dropping lines left with no name); returns how many lines were
        touched."""
        touched = 0

        def update(lines: list[str]) -> list[str]:
            nonlocal touched
            out = list(lines)
            for i, names, _ in reversed(list(_entries(lines))):
                keep = [n for n in names if not _name_matches(n, alias)]
                if len(keep) == len(names):
                    continue
                touched += 1
                if keep:
                    out[i] = " ".join([",".join(keep), *lines[i].split()[1:]])
                else:
                    del out[i]
            return out

        self._update(update)
        return touched

    def _update(self, change: Callable[[list[str]], list[str]]) -> None:
        with self._locked():
            before = self._read()
            after = change(before)
            if after != before:
                self._write(after)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # A sidecar lock file: the data file itself is replaced by rename, so a lock on it would not hold.
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, lines: list[str]) -> None:
        write_atomic(self.path, "".join(line + "\n" for line in lines))


def offered_algorithms(alias: str, known_hosts: Path, pinned: str | None) -> list[str] | None:
    """Host key algorithms to offer so the server presents the key we hold, or None (first contact: any)."""
    keys = [HostKey.from_line(pinned)] if pinned else KnownHosts(known_hosts).lookup(alias)
    if not keys:
        return None
    return [alg for key in keys for alg in key.algorithms()]


def verify_host_key(presented: HostKey, *, alias: str, name: str, known_hosts: Path,
                    pinned: str | None = None, on_event: Callable[[str], None] | None = None) -> None:
    """Accept `presented` for `alias` or raise HostKeyMismatch; records it on first use (and says so)."""
    if pinned:
        expected = HostKey.from_line(pinned, what=f"pinned host key of {name}")
        if presented != expected:
            raise HostKeyMismatch(
                f"host key of {name} ({alias}) does not match its pinned key: "
                f"expected {expected.fingerprint}, the server presents {presented.fingerprint}",
                "if the host was rebuilt, update its pinned host key; otherwise do not connect: "
                "the connection may be intercepted")
        return
    kh = KnownHosts(known_hosts)
    known = kh.lookup(alias)
    if presented in known:
        return
    conflict = next((k for k in known if k.keytype == presented.keytype), known[0] if known else None)
    if conflict is None:
        conflict = kh.record(alias, presented)
    if conflict is not None:
        raise mismatch(name, alias, conflict, presented, known_hosts)
    message = f"recorded new host key {presented.fingerprint} for {name} ({alias}) in {known_hosts}"
    log.info(message)
    if on_event is not None:
        on_event(message)


def mismatch(name: str, alias: str, recorded: HostKey, presented: HostKey | None,
             known_hosts: Path) -> HostKeyMismatch:
    """The error for a changed key; `presented` is None when the server no longer offers the recorded type."""
    now = (f"the server now presents {presented.fingerprint}" if presented is not None
           else f"the server no longer offers a key of the recorded type {recorded.keytype}")
    return HostKeyMismatch(
        f"host key of {name} changed: {alias} was recorded with {recorded.fingerprint} in {known_hosts}, "
        f"{now}",
        f"if {name} was legitimately rebuilt, remove the line for {alias} from {known_hosts}; "
        "otherwise do not connect: the connection may be intercepted")


def forget(alias: str, known_hosts: Path | None = None) -> int:
    """Drop `alias` from vmlab's known_hosts (when vmlab terminates a VM it made); returns lines touched."""
    if known_hosts is None:
        from vmlab.paths import known_hosts_file

        known_hosts = known_hosts_file()
    return KnownHosts(known_hosts).forget(alias)
