"""What the engine needs from a host: run a command, optionally as root. Transports implement it."""

from __future__ import annotations

from typing import Protocol

from vmlab.engine.command import Command, RunResult


class Host(Protocol):
    """A place commands run. `vmlab.transport.ssh.SSHConnection` is the real one."""

    name: str

    def execute(self, command: Command, *, sudo: bool = False) -> RunResult:
        """Run `command` (as root when `sudo`), feeding its stdin; never raises for a non-zero exit."""
        ...
