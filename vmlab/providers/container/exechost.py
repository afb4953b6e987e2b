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
        proc = self.engine.call("exec", "-i", "--user", "root", *self.ca_env(), self.container, *command.argv,
                                stdin=command.stdin)
        return RunResult(proc.returncode, proc.stdout.decode(errors="replace"),
                         proc.stderr.decode(errors="replace"))

    def ca_env(self) -> list[str]:
        """pip, requests and OpenSSL pointed at this machine's CA bundle when the builder has it mounted (see
        provider.HOST_CA); per command, so the image's environment never names it."""
        from vmlab.providers.container.provider import HOST_CA, HOST_CA_BUNDLE

        if not HOST_CA_BUNDLE.is_file():
            return []
        return [arg for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")
                for arg in ("-e", f"{name}={HOST_CA}")]

    def close(self) -> None:
        """Nothing to close: each command is its own `podman exec`."""

    def __enter__(self) -> ExecHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
