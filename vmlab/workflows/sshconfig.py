"""`vmlab ssh-config`: an OpenSSH config with one `Host` entry per lab, so `ssh NAME`, `scp` and VS Code's
Remote-SSH reach a lab with its own key and pinned host key.

The entries live in a file vmlab owns and rewrites whole (a lab that is gone loses its entry); `install` adds
one `Include` line to the top of `~/.ssh/config`, where OpenSSH reads it for every host. Every value is checked
first (`vmlab.safetext.check_record`): a lab whose record holds a line break or space where a word belongs (a user
copied from a hostile image tag, say) is left out and reported, never written as config.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmlab import paths
from vmlab.errors import BadInput
from vmlab.fileio import write_atomic
from vmlab.safetext import check_record
from vmlab.state import LabRecord, LabStore
from vmlab.workflows.tunnel import known_hosts_for

HEADER = "# Written by `vmlab ssh-config`; it is rewritten whole, so edits here are lost.\n"
INCLUDE_COMMENT = "# vmlab labs (`vmlab ssh-config --install`)"


@dataclass
class SSHConfigResult:
    path: Path
    hosts: list[str]
    user_config: Path | None = None
    #: whether `install` added the Include line now (False: it was already there, or not asked)
    included: bool = False
    skipped: list[str] = field(default_factory=list)
    #: labs left out because a value in their record is unsafe: name -> why
    refused: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "hosts": self.hosts, "skipped": self.skipped, "refused": self.refused,
                "user_config": str(self.user_config) if self.user_config else None, "included": self.included}


def config_path() -> Path:
    return paths.state_dir() / "ssh_config"


def _arg(value: str) -> str:
    """A path as an ssh_config argument: `%` would start a token, and spaces need quotes."""
    if '"' in value or "\n" in value:
        raise BadInput(f"cannot write the path {value!r} into an SSH config", "move the file to a simpler path")
    value = value.replace("%", "%%")
    return f'"{value}"' if any(c.isspace() for c in value) else value


def entry(record: LabRecord) -> str:
    """The `Host` block of one lab (BadInput when a value in its record is unsafe to write)."""
    check_record(record)
    # `%` starts an ssh token; an IPv6 zone (fe80::1%eth0) must reach ssh as written
    options = [("HostName", str(record.host).replace("%", "%%")), ("Port", str(record.port)),
               ("User", record.user),
               ("IdentityFile", _arg(record.key_file)), ("IdentitiesOnly", "yes"),
               ("HostKeyAlias", f"vmlab-{record.instance_id}"),
               ("UserKnownHostsFile", _arg(str(known_hosts_for(record)))),
               ("StrictHostKeyChecking", "yes"), ("ServerAliveInterval", "15")]
    return f"Host {record.name}\n" + "".join(f"    {key} {value}\n" for key, value in options)


def write_config(store: LabStore | None = None) -> SSHConfigResult:
    """Rewrite vmlab's SSH config from the lab records (a lab without an address, e.g. stopped, or without an SSH
    key, e.g. a container lab reached by `podman exec`, is skipped)."""
    store = store or LabStore()
    path = config_path()
    with store.locked():
        records = store.all()
        blocks: dict[str, str] = {}
        refused: dict[str, str] = {}
        for r in records:
            if not r.host or not r.key_file:
                continue
            try:
                blocks[r.name] = entry(r)
            except BadInput as exc:
                refused[r.name] = str(exc)
        _replace(path, HEADER + "".join("\n" + b for b in blocks.values()), 0o600)
    return SSHConfigResult(path, list(blocks), skipped=[r.name for r in records if not r.host or not r.key_file],
                          refused=refused)


def refresh(store: LabStore | None = None) -> SSHConfigResult | None:
    """Rewrite vmlab's SSH config if the user ever wrote one, so `up`/`down`/`start`/`stop` never leave a stale
    address or a gone lab in it; None when there is none (then nothing is created)."""
    if not config_path().exists():
        return None
    return write_config(store)


def install(result: SSHConfigResult, user_config: Path | None = None) -> SSHConfigResult:
    """Add `Include <vmlab's file>` at the top of ~/.ssh/config unless it is there already (under a lock)."""
    target = user_config or Path.home() / ".ssh" / "config"
    # a config kept in a dotfiles repo is often a symlink: edit the file it points to, keep the link
    real = target.resolve() if target.is_symlink() else target
    real.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = f"Include {_arg(str(result.path))}"
    with _file_lock(paths.state_dir() / ".ssh_config.lock"):
        old = real.read_text() if real.exists() else ""
        result.user_config = target
        if line in (s.strip() for s in old.splitlines()):
            return result
        # Include must come before the first Host/Match block: inside one it applies to that block only
        mode = real.stat().st_mode & 0o777 if real.exists() else 0o600
        _replace(real, f"{INCLUDE_COMMENT}\n{line}\n\n{old}", mode)
        result.included = True
    return result


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _replace(path: Path, text: str, mode: int) -> None:
    """Write `text` to `path` atomically (a reader never sees half a config)."""
    write_atomic(path, text, mode)
