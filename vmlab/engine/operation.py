"""Operations: the desired state of one thing on a host. Facts in, commands out.

An operation is a frozen dataclass whose `plan(facts)` yields the commands that move the host to the desired
state; yielding nothing means "already there" (reported ok). Check mode is then free: plan, print, stop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from vmlab.engine.command import Command
from vmlab.engine.facts import Facts
from vmlab.engine.templates import render


class Operation:
    """Base of every operation.

    Example::

        @dataclass(frozen=True)
        class Directory(Operation):
            path: str
            mode: str = "0755"

            def plan(self, facts: Facts) -> Iterator[Command]:
                st = facts.get(FileStat(self.path))
                if st is None:
                    yield Command("mkdir", "-p", self.path)
                if st is None or st.mode != self.mode:
                    yield Command("chmod", self.mode, self.path)

    String fields (and strings inside tuples, lists and dicts) are rendered as Jinja templates with the run's
    variables before planning, so `Directory("/home/{{ user }}/data")` works; fields named in `raw_fields` are
    left as they are (literal file contents, for instance).
    """

    raw_fields: ClassVar[frozenset[str]] = frozenset()

    def plan(self, facts: Facts) -> Iterator[Command]:
        raise NotImplementedError

    def diff(self, facts: Facts) -> str | None:
        """A unified diff of the content this operation would write, for `--diff`; None if not applicable."""
        return None

    def fingerprint(self) -> str:
        """What identifies this operation in a recipe's digest; operations that read local files add their hash."""
        return repr(self)

    def render(self, variables: Mapping[str, Any], where: str) -> Operation:
        """A copy with templated fields rendered."""
        if not dataclasses.is_dataclass(self):
            return self
        changes = {}
        for f in dataclasses.fields(self):
            if f.name in self.raw_fields:
                continue
            value = getattr(self, f.name)
            new = _render_value(value, variables, f"{where}: {f.name}")
            if new is not value:
                changes[f.name] = new
        return dataclasses.replace(self, **changes) if changes else self  # type: ignore[type-var]


def _render_value(value: Any, variables: Mapping[str, Any], where: str) -> Any:
    if isinstance(value, str):
        out = render(value, variables, where)
        return value if out == value else out
    if isinstance(value, tuple):
        items = tuple(_render_value(v, variables, where) for v in value)
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if isinstance(value, list):
        return [_render_value(v, variables, where) for v in value]
    if isinstance(value, dict):
        return {k: _render_value(v, variables, where) for k, v in value.items()}
    return value


def unified_diff(old: str | None, new: str, path: str) -> str | None:
    """A unified diff between the current and the desired text of `path`, or None when they are equal."""
    import difflib

    if old == new:
        return None
    lines = difflib.unified_diff((old or "").splitlines(keepends=True), new.splitlines(keepends=True),
                                 fromfile=f"{path} (current)" if old is not None else "/dev/null",
                                 tofile=f"{path} (desired)")
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                   for line in lines)


__all__ = ["Command", "Facts", "Operation", "unified_diff"]
