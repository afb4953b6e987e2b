"""Commands the recipe writes itself: Shell (a script for `sh -c`) and Run (an argv), with guards.

Without a guard they run every time (and always report a change); guards make them idempotent::

    recipe.step("conda", shell.Shell("sh /opt/miniconda.sh -b -p /opt/conda", creates="/opt/conda/bin/conda"))
    recipe.step("kernel", shell.Run(("/opt/lab/bin/python", "-m", "ipykernel", "install"),
                                    unless="test -d /usr/local/share/jupyter/kernels/python3"))
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from vmlab.engine.command import Command, sh
from vmlab.engine.facts import CommandSucceeds, Facts, FileStat
from vmlab.engine.operation import Operation
from vmlab.errors import BadInput
from vmlab.operations._write import check_path, check_strings


def _check_guards(op: object) -> None:
    for name in ("creates", "removes", "chdir"):
        if hasattr(op, name):
            check_path(op, name, optional=True)
    for name in ("unless", "onlyif"):
        value = getattr(op, name, None)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise BadInput(f"{type(op).__name__}: {name} must be a shell command, got {value!r}",
                           f'e.g. {name}="test -d /opt/conda"')


def _guards_pass(facts: Facts, creates: str | None = None, removes: str | None = None,
                 unless: str | None = None, onlyif: str | None = None) -> bool:
    """Whether the command should run; cheapest guards first, and no guard runs once one says skip."""
    if creates is not None and facts.get(FileStat(creates)) is not None:
        return False
    if removes is not None and facts.get(FileStat(removes)) is None:
        return False
    if unless is not None and facts.get(CommandSucceeds(unless)):
        return False
    return not (onlyif is not None and not facts.get(CommandSucceeds(onlyif)))


@dataclass(frozen=True)
class Shell(Operation):
    """A shell script run with `sh -c` when its guards allow; the one place recipes write shell text.

    Skipped when `creates` exists, when `removes` does not, when `unless` succeeds or when `onlyif` fails
    (`unless`/`onlyif` are shell commands too: keep them read-only). `chdir` is the script's working
    directory. The script is rendered with the run's variables like any field, and a rendered value lands in
    shell text as it is: quote it yourself, or use `Run` with an argv. Example::

        shell.Shell("tar -xzf /tmp/tool.tgz -C /opt", creates="/opt/tool/bin/tool")
    """

    script: str
    creates: str | None = None
    removes: str | None = None
    unless: str | None = None
    onlyif: str | None = None
    chdir: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.script, str) or not self.script.strip():
            raise BadInput(f"Shell: script must be a non-empty shell command, got {self.script!r}",
                           'e.g. shell.Shell("make install", chdir="/opt/src")')
        _check_guards(self)

    def plan(self, facts: Facts) -> Iterator[Command]:
        if not _guards_pass(facts, self.creates, self.removes, self.unless, self.onlyif):
            return
        if self.chdir is None:
            yield Command("sh", "-c", self.script)
        else:
            yield sh('cd -- "$1" && exec sh -c "$2"', self.chdir, self.script,
                     label=f"cd {self.chdir} && {self.script}")


@dataclass(frozen=True)
class Run(Operation):
    """A program run with an argument list (no shell) when its guards allow; see `Shell` for the guards.

    Example: ``shell.Run(("/opt/conda/bin/conda", "clean", "-afy"))``.
    """

    argv: tuple[str, ...]
    creates: str | None = None
    unless: str | None = None

    def __post_init__(self) -> None:
        check_strings(self, "argv", "arguments")
        _check_guards(self)

    def plan(self, facts: Facts) -> Iterator[Command]:
        if _guards_pass(facts, creates=self.creates, unless=self.unless):
            yield Command(*self.argv)


__all__ = ["Run", "Shell"]
