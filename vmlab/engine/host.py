"""What the engine needs from a host: run a command, optionally as root. Transports implement it."""

from __future__ import annotations

from typing import Protocol

from vmlab.engine.command import Command, RunResult


class Host(Protocol):
    """A place commands run. `vmlab.transport.ssh.SSHConnection` is the real one.

    The runner reads facts in batches: one `sh` script runs many fact commands (`vmlab.engine.batch`). A host
    that answers commands itself instead of running them (a test double) sets `batch_reads = False` and gets
    one command per fact.
    """

    name: str

    def execute(self, command: Command, *, sudo: bool = False) -> RunResult:
        """Run `command` (as root when `sudo`), feeding its stdin; never raises for a non-zero exit."""
        ...


class Session(Host, Protocol):
    """A Host the caller closes when done: an SSH connection, or a provider's own channel (`podman exec`)."""

    def close(self) -> None: ...
