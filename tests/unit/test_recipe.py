"""Recipe building, validation, composition and digest: pure logic."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from vmlab.engine import Command, Operation, Recipe
from vmlab.engine.facts import Facts
from vmlab.errors import BadInput


@dataclass(frozen=True)
class Echo(Operation):
    text: str

    def plan(self, facts: Facts) -> Iterator[Command]:
        yield Command("echo", self.text)


def test_steps_keep_order_and_names() -> None:
    r = Recipe("r")
    r.step("one", Echo("1"))
    r.step("two", Echo("2"), notify="h")
    r.handler("h", Echo("h"))
    r.validate()
    assert [s.name for s in r.steps] == ["one", "two"]
    assert r.steps[1].notify == ("h",)


@pytest.mark.parametrize("build, message", [
    (lambda r: r.step("a", Echo("1")) and r.step("a", Echo("2")), "two steps are named 'a'"),
    (lambda r: r.step("", Echo("1")), "non-empty name"),
    (lambda r: r.step("x", "not an op"), "is not an operation"),
    (lambda r: r.handler("h", Echo("1")) and r.handler("h", Echo("2")), "two different handlers"),
])
def test_bad_definitions_are_bad_input(build, message) -> None:
    with pytest.raises(BadInput, match=message):
        build(Recipe("r"))


def test_notify_of_unknown_handler_fails_validation() -> None:
    r = Recipe("r")
    r.step("one", Echo("1"), notify="restart nothing")
    with pytest.raises(BadInput, match="notifies 'restart nothing', which is no handler"):
        r.validate()


def test_empty_recipe_fails_validation() -> None:
    with pytest.raises(BadInput, match="has no steps"):
        Recipe("r").validate()


def test_include_prefixes_names_merges_vars_and_handlers() -> None:
    base = Recipe("base", vars={"a": 1, "b": 2}, become=True)
    base.step("s", Echo("{{ a }}"), notify="h")
    base.handler("h", Echo("h"))
    top = Recipe("top", vars={"a": 10})
    top.include(base, when="gpu")
    top.step("own", Echo("x"))
    assert [s.name for s in top.steps] == ["base: s", "own"]
    assert top.vars == {"a": 10, "b": 2}  # the including recipe's values win
    assert top.steps[0].become is True and top.steps[0].all_conditions() == ("gpu",)
    assert [h.name for h in top.handlers] == ["h"]
    with pytest.raises(BadInput, match="included twice"):
        top.include(base)


def test_digest_is_stable_and_tracks_changes() -> None:
    def make(text: str, var: int) -> Recipe:
        r = Recipe("r", vars={"v": var})
        r.step("s", Echo(text))
        return r

    assert make("a", 1).digest() == make("a", 1).digest()
    assert make("a", 1).digest() != make("b", 1).digest()
    assert make("a", 1).digest() != make("a", 2).digest()
    assert len(make("a", 1).digest()) == 16
