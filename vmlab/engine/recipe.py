"""Recipes: an ordered list of named steps, variables and handlers.

A recipe file is plain Python that builds a `Recipe` and assigns it to a module variable named `recipe`::

    from vmlab.engine import Recipe
    from vmlab.operations import files, systemd

    recipe = Recipe("hello", vars={"greeting": "hi"}, become=True)
    recipe.step("data folder", files.Directory("/srv/data", mode="0755"))
    recipe.step("motd", files.Template("/etc/motd", source="{{ greeting }} from {{ inventory_hostname }}\\n"))
    recipe.step("unit", systemd.Unit("hello.service", content="..."), notify="restart hello")
    recipe.handler("restart hello", systemd.Service("hello.service", restarted=True))

A step is identified by its name and position; `notify` names handlers that run once, at the end, if any step
that notified them changed something.

Checks turn bad variables and unsupported hosts into one-line errors before anything is installed::

    @recipe.check                 # variables only: runs before any host is contacted
    def _port(vars):
        if not 1024 <= int(vars["port"]) < 65536:
            raise BadInput(f"port {vars['port']} is not a user port", "use -e port=8888")

    @recipe.check_host            # vars and facts: runs on each host before its first step
    def _os(ctx):
        if ctx.facts.get(OsRelease()).get("ID") != "debian":
            raise BadInput("this recipe needs Debian", "use a Debian base image")
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vmlab.engine.operation import Operation
from vmlab.errors import BadInput


@dataclass(frozen=True)
class Step:
    """One named operation of a recipe (or a handler)."""

    name: str
    operation: Operation
    become: bool | None = None
    when: str | Callable[[Any], bool] | None = None
    notify: tuple[str, ...] = ()
    conditions: tuple[str | Callable[[Any], bool], ...] = field(default=(), repr=False)

    def all_conditions(self) -> tuple[str | Callable[[Any], bool], ...]:
        return self.conditions + ((self.when,) if self.when is not None else ())


VarsCheck = Callable[[Mapping[str, Any]], None]
HostCheck = Callable[[Any], None]


@dataclass(frozen=True)
class Check:
    """A validation a recipe runs before it changes anything; `host` checks also read facts."""

    fn: Callable[[Any], None]
    host: bool
    conditions: tuple[str | Callable[[Any], bool], ...] = ()


class Recipe:
    """An ordered list of steps with variables and handlers; see the module docstring for an example."""

    def __init__(self, name: str, *, vars: Mapping[str, Any] | None = None, become: bool = False,
                 description: str = "") -> None:
        if not name or not isinstance(name, str):
            raise BadInput("Recipe() needs a name", 'write Recipe("my-lab", ...)')
        self.name = name
        self.vars: dict[str, Any] = dict(vars or {})
        self.become = become
        self.description = description
        self.steps: list[Step] = []
        self.handlers: list[Step] = []
        self.checks: list[Check] = []

    # ---- building ------------------------------------------------------------------------------------------

    def step(self, name: str, operation: Operation, *, become: bool | None = None,
             when: str | Callable[[Any], bool] | None = None,
             notify: str | Iterable[str] = ()) -> Step:
        """Append a step; returns it. `when` skips it unless true; `notify` names handlers to run if it changed."""
        _check_operation(name, operation)
        if any(s.name == name for s in self.steps):
            raise BadInput(f"recipe {self.name!r}: two steps are named {name!r}", "give each step its own name")
        notify_t = (notify,) if isinstance(notify, str) else tuple(notify)
        step = Step(name, operation, become, when, notify_t)
        self.steps.append(step)
        return step

    def handler(self, name: str, operation: Operation, *, become: bool | None = None) -> Step:
        """Declare a handler: runs once, after all steps, if a step that notified it changed something."""
        _check_operation(name, operation)
        existing = next((h for h in self.handlers if h.name == name), None)
        if existing is not None:
            if existing.operation == operation and existing.become == become:
                return existing
            raise BadInput(f"recipe {self.name!r}: two different handlers are named {name!r}",
                           "rename one of them")
        step = Step(name, operation, become)
        self.handlers.append(step)
        return step

    def check(self, fn: VarsCheck) -> VarsCheck:
        """Register `fn(vars)`, run before any host is contacted; it raises BadInput for bad variables.
        Returns `fn`, so it works as a decorator."""
        self.checks.append(Check(fn, host=False))
        return fn

    def check_host(self, fn: HostCheck) -> HostCheck:
        """Register `fn(ctx)` (ctx.vars, ctx.facts), run on each host before its first step; it raises BadInput
        for a host the recipe cannot handle (unsupported OS release, ...). Returns `fn`."""
        self.checks.append(Check(fn, host=True))
        return fn

    def include(self, other: Recipe, *, when: str | Callable[[Any], bool] | None = None) -> None:
        """Append another recipe's steps (named "OTHER: step"), handlers, checks and variable defaults.

        The other recipe's `become` applies to its steps; `when` guards all of them and its checks.
        """
        for key, value in other.vars.items():
            self.vars.setdefault(key, value)
        for h in other.handlers:
            self.handler(h.name, h.operation, become=h.become if h.become is not None else other.become)
        for s in other.steps:
            name = f"{other.name}: {s.name}"
            if any(x.name == name for x in self.steps):
                raise BadInput(f"recipe {self.name!r}: {other.name!r} is included twice",
                               "include each recipe once")
            extra = s.conditions + ((when,) if when is not None else ())
            self.steps.append(Step(name, s.operation, s.become if s.become is not None else other.become,
                                   s.when, s.notify, extra))
        for c in other.checks:
            self.checks.append(Check(c.fn, c.host, c.conditions + ((when,) if when is not None else ())))

    # ---- checks and identity -------------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise BadInput for a notify that names no handler, or a recipe with no steps."""
        if not self.steps:
            raise BadInput(f"recipe {self.name!r} has no steps", "add steps with recipe.step(NAME, OPERATION)")
        names = {h.name for h in self.handlers}
        for s in self.steps:
            for n in s.notify:
                if n not in names:
                    raise BadInput(f"recipe {self.name!r}: step {s.name!r} notifies {n!r}, which is no handler",
                                   f"declare it with recipe.handler({n!r}, OPERATION)")

    def digest(self) -> str:
        """A stable hash of what the recipe does (steps, handlers, variables); images are tagged with it."""
        h = hashlib.sha256()
        h.update(repr(sorted((k, repr(v)) for k, v in self.vars.items())).encode())
        for kind, items in (("step", self.steps), ("handler", self.handlers)):
            for s in items:
                conds = [c if isinstance(c, str) else getattr(c, "__qualname__", repr(c))
                         for c in s.all_conditions()]
                h.update(repr((kind, s.name, s.operation.fingerprint(), s.become, conds, s.notify)).encode())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Recipe({self.name!r}, {len(self.steps)} steps, {len(self.handlers)} handlers)"


def _check_operation(name: str, operation: object) -> None:
    if not isinstance(name, str) or not name.strip():
        raise BadInput("a step needs a non-empty name", 'write recipe.step("what it does", OPERATION)')
    if not isinstance(operation, Operation):
        raise BadInput(f"step {name!r}: {operation!r} is not an operation",
                       "pass an operation such as files.Directory(...) from vmlab.operations")
