"""Commands: what operations plan and transports run. An argument tuple, never shell text.

Quoting happens once, in the transport (`shlex.join`), so a path with spaces or quotes is always one argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Command:
    """One command for a host: `Command("mkdir", "-p", path)`.

    `stdin` is fed to the command (file contents travel this way, so they never touch a command line);
    `ok_codes` are the exit statuses that count as success; `label` is shown instead of the argv in check mode
    and logs when the argv would be noisy (a `sh -c` script) or carries file contents.
    """

    argv: tuple[str, ...]
    stdin: bytes | None = field(default=None, repr=False)
    ok_codes: tuple[int, ...] = (0,)
    label: str | None = None

    def __init__(
        self,
        *argv: str,
        stdin: bytes | str | None = None,
        ok_codes: tuple[int, ...] = (0,),
        label: str | None = None,
    ) -> None:
        if not argv:
            raise ValueError("a Command needs at least one argument")
        for a in argv:
            if not isinstance(a, str):
                raise TypeError(f"Command arguments must be str, got {type(a).__name__}: {a!r}")
        object.__setattr__(self, "argv", tuple(argv))
        object.__setattr__(self, "stdin", stdin.encode() if isinstance(stdin, str) else stdin)
        object.__setattr__(self, "ok_codes", ok_codes)
        object.__setattr__(self, "label", label)

    def describe(self) -> str:
        import shlex

        if self.label:
            return self.label
        text = shlex.join(self.argv)
        if self.stdin is not None:
            text += f"  < {len(self.stdin)} bytes"
        return text


def sh(script: str, *args: str, label: str | None = None, stdin: bytes | str | None = None,
       ok_codes: tuple[int, ...] = (0,)) -> Command:
    """A fixed POSIX sh script with its variable parts passed as positional arguments ($1, $2, ...).

    The script must be a constant written by vmlab; data only ever travels in `args`, so it needs no quoting.
    """
    return Command("sh", "-c", script, "sh", *args, label=label, stdin=stdin, ok_codes=ok_codes)


@dataclass(frozen=True)
class RunResult:
    """What running a command on a host gave back."""

    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0
