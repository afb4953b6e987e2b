"""The runner against this machine through LocalHost, in a temporary folder: statuses, check mode, handlers,
facts re-read after changes, conditions, and recipe errors caught before anything runs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vmlab.engine import Command, Operation, Recipe
from vmlab.engine.facts import Facts, FileStat
from vmlab.engine.runner import StepResult, apply
from vmlab.errors import BadInput
from vmlab.transport.local import LocalHost


@dataclass(frozen=True)
class Touch(Operation):
    path: str

    def plan(self, facts: Facts) -> Iterator[Command]:
        if facts.get(FileStat(self.path)) is None:
            yield Command("touch", self.path)


@dataclass(frozen=True)
class Append(Operation):
    """Always changes: appends a line (a handler-like operation)."""

    path: str
    text: str

    def plan(self, facts: Facts) -> Iterator[Command]:
        yield Command("sh", "-c", 'printf "%s\\n" "$1" >> "$2"', "sh", self.text, self.path)


@dataclass(frozen=True)
class Fail(Operation):
    def plan(self, facts: Facts) -> Iterator[Command]:
        yield Command("false")


@dataclass(frozen=True)
class SaysWhere(Operation):
    def plan(self, facts: Facts) -> Iterator[Command]:
        yield Command("echo", "builder" if facts.throwaway else "kept")


def test_operations_see_whether_the_host_is_thrown_away() -> None:
    """`throwaway` (set by `bake` only) reaches each operation's plan, the probes of the read-ahead included."""
    r = Recipe("t")
    r.step("a", SaysWhere())
    r.step("b", SaysWhere())
    for flag, word in ((True, "builder"), (False, "kept")):
        recap = apply(r, LocalHost(), check=True, throwaway=flag)
        assert [res.commands for res in recap.results] == [(f"echo {word}",)] * 2
    assert apply(r, LocalHost(), check=True).results[0].commands == ("echo kept",)


def test_a_bake_applies_its_recipe_to_a_throwaway_host() -> None:
    from vmlab.workflows.bake import _apply

    r = Recipe("t")
    r.step("a", SaysWhere())
    (recap,) = _apply(r, LocalHost(), {}, verify=False, report=None)
    assert recap.results[0].commands == ("echo builder",)


def test_second_run_changes_nothing(tmp_path: Path) -> None:
    r = Recipe("t", vars={"d": str(tmp_path)})
    r.step("a", Touch("{{ d }}/a"))
    r.step("b", Touch("{{ d }}/b"))
    first = apply(r, LocalHost())
    assert (first.changed, first.ok, first.failed) == (2, 0, 0)
    assert (tmp_path / "a").exists() and (tmp_path / "b").exists()
    second = apply(r, LocalHost())
    assert (second.changed, second.ok) == (0, 2)
    assert all(s.elapsed >= 0 for s in second.results)


def test_check_mode_plans_and_changes_nothing(tmp_path: Path) -> None:
    r = Recipe("t")
    r.step("a", Touch(str(tmp_path / "a")), notify="log")
    r.handler("log", Append(str(tmp_path / "log"), "x"))
    recap = apply(r, LocalHost(), check=True)
    assert recap.changed == 2 and recap.check
    assert recap.results[0].commands == (f"touch {tmp_path / 'a'}",)
    assert recap.results[1].handler
    assert list(tmp_path.iterdir()) == []


def test_handler_runs_once_and_only_when_notified_step_changed(tmp_path: Path) -> None:
    log = tmp_path / "log"
    r = Recipe("t")
    r.step("a", Touch(str(tmp_path / "a")), notify="log")
    r.step("b", Touch(str(tmp_path / "b")), notify="log")
    r.handler("log", Append(str(log), "ran"))
    apply(r, LocalHost())
    assert log.read_text() == "ran\n"
    recap = apply(r, LocalHost())
    assert log.read_text() == "ran\n"  # nothing changed, handler not run
    assert not any(s.handler for s in recap.results)


def test_failure_stops_host_and_skips_handlers(tmp_path: Path) -> None:
    r = Recipe("t")
    r.step("a", Touch(str(tmp_path / "a")), notify="log")
    r.step("boom", Fail())
    r.step("never", Touch(str(tmp_path / "never")))
    r.handler("log", Append(str(tmp_path / "log"), "x"))
    recap = apply(r, LocalHost())
    assert [s.status for s in recap.results] == ["changed", "failed"]
    assert "`false` exited 1" in (recap.results[1].error or "")
    assert not recap.success
    assert not (tmp_path / "never").exists() and not (tmp_path / "log").exists()


def test_facts_are_reread_after_a_change(tmp_path: Path) -> None:
    # both steps ask the same fact; the second must see the file the first created
    r = Recipe("t")
    r.step("first", Touch(str(tmp_path / "a")))
    r.step("same again", Touch(str(tmp_path / "a")))
    recap = apply(r, LocalHost())
    assert [s.status for s in recap.results] == ["changed", "ok"]


def test_conditions_skip_steps(tmp_path: Path) -> None:
    r = Recipe("t", vars={"gpu": False})
    r.step("gpu only", Touch(str(tmp_path / "gpu")), when="gpu")
    r.step("callable", Touch(str(tmp_path / "c")), when=lambda ctx: ctx.facts.get(FileStat("/")) is not None)
    seen: list[StepResult] = []
    recap = apply(r, LocalHost(), report=seen.append)
    assert [s.status for s in seen] == ["skipped", "changed"]
    assert recap.skipped == 1 and not (tmp_path / "gpu").exists()
    recap = apply(r, LocalHost(), variables={"gpu": True})
    assert (tmp_path / "gpu").exists()


def test_undefined_variable_is_caught_before_any_change(tmp_path: Path) -> None:
    r = Recipe("t")
    r.step("fine", Touch(str(tmp_path / "a")))
    r.step("broken", Touch("{{ nowhere }}/b"))
    with pytest.raises(BadInput, match="'nowhere' is undefined"):
        apply(r, LocalHost())
    assert not (tmp_path / "a").exists()


def test_commands_keep_arguments_literal(tmp_path: Path) -> None:
    tricky = tmp_path / "a b; $(touch pwned) 'q'"
    r = Recipe("t")
    r.step("tricky", Touch(str(tricky)))
    apply(r, LocalHost())
    assert tricky.exists()
    assert not (Path.cwd() / "pwned").exists() and not (tmp_path / "pwned").exists()
