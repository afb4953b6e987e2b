"""Run commands on this machine: the `local` connection (`ansible_connection: local` in an inventory)."""

from __future__ import annotations

import os
import subprocess

from vmlab.engine.command import Command, RunResult


class LocalHost:
    """The engine's Host protocol on the local machine, via subprocess with an argument list (no shell).

    Example::

        from vmlab.engine.runner import apply
        apply(recipe, LocalHost())
    """

    def __init__(self, name: str = "localhost") -> None:
        self.name = name

    def execute(self, command: Command, *, sudo: bool = False) -> RunResult:
        argv = list(command.argv)
        if sudo and os.geteuid() != 0:
            argv = ["sudo", "-n", "-H", "--", *argv]
        proc = subprocess.run(argv, input=command.stdin if command.stdin is not None else b"",
                              capture_output=True, check=False)
        return RunResult(proc.returncode, proc.stdout.decode(errors="replace"),
                         proc.stderr.decode(errors="replace"))

    def close(self) -> None:
        """Nothing to close; present so callers can treat every host alike."""

    def __enter__(self) -> LocalHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
