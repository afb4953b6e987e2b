"""Where persistent SSH masters listen, and how a target is named there (no paramiko import here).

A master's unix socket lives in a per-user folder: `$XDG_RUNTIME_DIR/vmlab`, else `~/.vmlab/run`, created
0700. A folder that is a symlink, belongs to another user, or is writable by group or others is refused (then
vmlab connects directly): in such a folder another user could plant a socket of their own. The socket's name is
a hash of everything that identifies the target, so a changed host key record, key file, user or proxy never
reaches a master made for the old one.

Example::

    folder = runtime_dir()                  # None when no safe folder can be had
    path = socket_path(folder, target)      # <folder>/<32 hex digits>.sock
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from pathlib import Path

from vmlab.transport.target import SSHTarget

log = logging.getLogger("vmlab.transport")

PROTOCOL = 1  # bump when the frames between client and master change: old masters are then never found
ENV_PERSIST = "VMLAB_SSH_PERSIST"
DEFAULT_PERSIST_SECONDS = 60.0
# sun_path holds 108 bytes with its NUL; a longer path cannot be bound, so persistence is off for it.
MAX_SOCKET_PATH = 107


class UnsafeRuntimeDir(Exception):
    """The socket folder (or a socket in it) could be someone else's: never use it."""


def persist_seconds(value: float | None = None) -> float:
    """How long a master outlives its last client: `value`, else `$VMLAB_SSH_PERSIST`, else 60; 0 disables.
    An unreadable setting disables persistence (logged) rather than failing the run."""
    if value is not None:
        return max(0.0, float(value))
    text = os.environ.get(ENV_PERSIST, "").strip()
    if not text:
        return DEFAULT_PERSIST_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        log.warning("%s=%r is not a number of seconds; SSH connection persistence is off", ENV_PERSIST, text)
        return 0.0
    return seconds if seconds > 0 else 0.0


def runtime_dir() -> Path:
    """The per-user socket folder, created 0700 if missing; UnsafeRuntimeDir when it cannot be trusted."""
    base = os.environ.get("XDG_RUNTIME_DIR", "").strip()
    folder = Path(base) / "vmlab" if base else Path.home() / ".vmlab" / "run"
    try:
        folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise UnsafeRuntimeDir(f"cannot create {folder}: {exc.strerror}") from None
    check_folder(folder)
    return folder


def check_folder(folder: Path) -> None:
    """UnsafeRuntimeDir unless `folder` is a real directory (not a symlink) of this user that only this user
    may write to."""
    st = os.lstat(folder)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafeRuntimeDir(f"{folder} is not a directory (a symlink is refused)")
    if st.st_uid != os.getuid():
        raise UnsafeRuntimeDir(f"{folder} belongs to uid {st.st_uid}, not to this user ({os.getuid()})")
    if st.st_mode & 0o022:
        raise UnsafeRuntimeDir(f"{folder} is writable by group or others (mode {st.st_mode & 0o777:04o})")


def check_socket(path: Path) -> bool:
    """True when `path` is a socket of this user (never following a symlink); False when nothing is there.
    UnsafeRuntimeDir for anything else at that name."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(st.st_mode):
        raise UnsafeRuntimeDir(f"{path} is not a socket (a symlink or file there is never followed)")
    if st.st_uid != os.getuid():
        raise UnsafeRuntimeDir(f"{path} belongs to uid {st.st_uid}, not to this user")
    return True


def identity(target: SSHTarget) -> str:
    """A hash of what identifies `target`: address, user, key file (path and file identity), host key
    trust (pinned key, known_hosts file and the keys recorded there) and proxy settings."""
    from vmlab.transport.hostkeys import KnownHosts

    known_hosts = target.known_hosts_path()
    jump = target.jump_target()
    parts = {
        "protocol": PROTOCOL,
        "host": target.host, "port": target.port, "user": target.user,
        "key_file": _file_identity(target.key_file),
        "alias": target.host_key_alias, "pinned": target.pinned_host_key,
        "known_hosts": str(known_hosts.resolve()),
        "recorded": sorted(key.line() for key in KnownHosts(known_hosts).lookup(target.host_key_alias)),
        "proxy_command": target.proxy_command, "proxy_jump": target.proxy_jump,
        "jump_recorded": sorted(key.line() for key in KnownHosts(known_hosts).lookup(jump.host_key_alias))
        if jump is not None else None,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _file_identity(path: Path | None) -> list[object] | None:
    """A key file's resolved path plus inode, size and mtime: a replaced key makes a new identity."""
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return [str(path)]
    return [str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns]


def socket_path(folder: Path, target: SSHTarget) -> Path | None:
    """`<folder>/<identity>.sock`, or None when that path is too long for a unix socket."""
    path = folder / f"{identity(target)}.sock"
    return path if len(os.fsencode(path)) <= MAX_SOCKET_PATH else None
