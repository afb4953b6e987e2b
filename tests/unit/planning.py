"""Test helpers: plan an operation against fixed facts (no host), and read facts from this machine.

    from planning import argvs, plan

    assert argvs(Directory("/srv/d"), {FileStat("/srv/d"): None}) == [("mkdir", "-p", "/srv/d")]
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from typing import Any, TypeVar, cast

from vmlab.engine.command import Command, RunResult
from vmlab.engine.facts import Fact, Facts
from vmlab.engine.operation import Operation

T = TypeVar("T")


class StaticFacts:
    """Stands in for `Facts`: answers from a dict {fact: value}; any other fact is a test failure. `throwaway`:
    the host is a bake's builder."""

    def __init__(self, values: Mapping[Fact[Any], object] | None = None, sudo: bool = False,
                 throwaway: bool = False) -> None:
        self.values = dict(values or {})
        self.sudo = sudo
        self.throwaway = throwaway
        self.asked: list[Fact[Any]] = []

    def get(self, fact: Fact[T]) -> T:
        if fact not in self.values:
            known = ", ".join(repr(f) for f in self.values) or "none"
            raise AssertionError(f"the operation asked for an unexpected fact {fact!r} (the test gives: "
                                 f"{known})")
        self.asked.append(fact)
        return cast(T, self.values[fact])


def _facts(values: Mapping[Fact[Any], object] | None, throwaway: bool = False) -> Facts:
    return cast(Facts, StaticFacts(values, throwaway=throwaway))


def plan(op: Operation, values: Mapping[Fact[Any], object] | None = None, *, throwaway: bool = False) -> list[Command]:
    """The commands `op` plans when the host has exactly these facts (`throwaway`: a bake's builder)."""
    return list(op.plan(_facts(values, throwaway)))


def argvs(op: Operation, values: Mapping[Fact[Any], object] | None = None, *,
          throwaway: bool = False) -> list[tuple[str, ...]]:
    """Just the argument tuples of `plan(op, values)`."""
    return [c.argv for c in plan(op, values, throwaway=throwaway)]


def diff(op: Operation, values: Mapping[Fact[Any], object] | None = None) -> str | None:
    return op.diff(_facts(values))


def run_local(command: Command) -> RunResult:
    """Run a planned command on this machine (only for harmless ones: reads, or writes under tmp_path)."""
    done = subprocess.run(command.argv, input=command.stdin or b"", capture_output=True, timeout=60)
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    return RunResult(done.returncode, out, err)


class LocalFacts:
    """Stands in for `Facts` by reading each fact from this machine, uncached (for ops under tmp_path)."""

    sudo = False

    def get(self, fact: Fact[T]) -> T:
        return read_fact(fact)


def apply_locally(op: Operation) -> list[Command]:
    """Plan `op` against this machine and run what it planned; returns the commands (asserts they succeed)."""
    commands = list(op.plan(cast(Facts, LocalFacts())))
    for command in commands:
        result = run_local(command)
        assert result.rc in command.ok_codes, f"{command.describe()} exited {result.rc}: {result.stderr}"
    return commands


def read_fact(fact: Fact[T]) -> T:
    """A fact read from this machine, the way the engine reads it from a host."""
    command = fact.command()
    result = run_local(command)
    assert result.rc in command.ok_codes, f"{command.describe()} exited {result.rc}: {result.stderr}"
    return fact.parse(result)
