"""The engine's Host for a container: each command is `podman exec -i CONTAINER ARGV...`, an argument list (no
shell on this machine, none in the container unless the command is `sh -c` itself), stdin fed through.

Example::

    host = ExecHost(engine, "3f9c0a1b2d4e", "vmlab-builder-bake-1a2b")
    apply(recipe, host)                 # vmlab.engine.runner
"""

from __future__ import annotations

from vmlab.engine.command import Command, RunResult
from vmlab.providers.container.engine import Podman


class ExecHost:
    """Runs commands in a running container as root (the only user a container image starts with; `sudo` asks
    for nothing more)."""

    def __init__(self, engine: Podman, container: str, name: str) -> None:
        self.engine = engine
        self.container = container
        self.name = name

    def execute(self, command: Command, *, sudo: bool = False) -> RunResult:
        proc = self.engine.call("exec", "-i", "--user", "root", self.container, *command.argv,
                                stdin=command.stdin)
        return RunResult(proc.returncode, proc.stdout.decode(errors="replace"),
                         proc.stderr.decode(errors="replace"))

    def close(self) -> None:
        """Nothing to close: each command is its own `podman exec`."""

    def __enter__(self) -> ExecHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
