"""The errors vmlab raises. Each carries a one-line message that says what is wrong and how to fix it.

The CLI maps them to exit codes in one place (`vmlab.cli.render`): bad input exits 2, a failure of a host or
cloud exits 1.
"""

from __future__ import annotations


class VmlabError(Exception):
    """Base of every error vmlab reports to a user; `exit_code` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}: {self.hint}" if self.hint else self.message


class BadInput(VmlabError):
    """The user's input (arguments, recipe file, inventory) is wrong; nothing was changed."""

    exit_code = 2


class HostError(VmlabError):
    """A host could not be reached or a command on it failed."""


class LabNotStopped(HostError):
    """A lab's instance is between running and stopped (stopping, paused): its data cannot be checked yet."""


class ConnectError(HostError):
    """SSH never came up; `reason` is one of refused, timeout, auth, hostkey, dns, protocol."""

    def __init__(self, message: str, hint: str | None = None, reason: str = "protocol") -> None:
        super().__init__(message, hint)
        self.reason = reason


class HostKeyMismatch(ConnectError):
    """The host presented a key that differs from the one vmlab recorded for it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint, reason="hostkey")


class CommandFailed(HostError):
    """A command run on a host exited with a status the operation did not accept."""

    def __init__(self, message: str, rc: int, stdout: str = "", stderr: str = "") -> None:
        super().__init__(message)
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr


class StoreError(VmlabError):
    """An object store (S3 bucket prefix) refused or failed a request; local files are left as they are."""


class DeleteGuard(VmlabError):
    """A sync would delete a large share of the synced tree at once; the deletes were held for review."""
