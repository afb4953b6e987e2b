"""The recipe engine: Recipe, Step, Operation, Fact, and the runner that applies a recipe to a host."""

from __future__ import annotations

from vmlab.engine.command import Command, RunResult, sh
from vmlab.engine.facts import Fact, Facts
from vmlab.engine.operation import Operation
from vmlab.engine.recipe import Recipe, Step

__all__ = ["Command", "Fact", "Facts", "Operation", "Recipe", "RunResult", "Step", "sh"]
