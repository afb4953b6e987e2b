"""Apply a recipe to one host: plan each step just before it runs, run its commands, report, recap.

Facts are read ahead in batches (`vmlab.engine.prefetch`), from a cache that every change clears, so a no-op
run costs a few round trips and a step still never plans from facts an earlier step made stale.

Check mode is a phase, not a flag threaded everywhere: the runner plans and reports but executes nothing;
transports never see it. Every template and condition over variables is resolved before the first command, so
a recipe error changes nothing on the host.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vmlab.engine.command import Command
from vmlab.engine.facts import FactCache, Facts
from vmlab.engine.host import Host
from vmlab.engine.operation import Operation
from vmlab.engine.prefetch import Probe, prefetch
from vmlab.engine.recipe import Recipe, Step
from vmlab.engine.templates import evaluate
from vmlab.errors import CommandFailed, VmlabError

STATUSES = ("ok", "changed", "skipped", "failed")


@dataclass
class StepResult:
    """How one step went on one host. In check mode `changed` means "would change"."""

    host: str
    index: int
    name: str
    status: str
    elapsed: float
    commands: tuple[str, ...] = ()
    diff: str | None = None
    error: str | None = None
    handler: bool = False

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class HostRecap:
    """Counts for one host after a run; `unreachable` when it could not even be connected to, `refused` when a
    recipe check turned the host down before any step (bad input for that host)."""

    host: str
    ok: int = 0
    changed: int = 0
    skipped: int = 0
    failed: int = 0
    unreachable: bool = False
    refused: bool = False
    error: str | None = None
    elapsed: float = 0.0
    check: bool = False
    results: list[StepResult] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.failed and not self.unreachable

    def add(self, result: StepResult) -> None:
        self.results.append(result)
        setattr(self, result.status, getattr(self, result.status) + 1)

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "ok": self.ok, "changed": self.changed, "skipped": self.skipped,
                "failed": self.failed, "unreachable": self.unreachable, "refused": self.refused, "error": self.error,
                "elapsed": round(self.elapsed, 3), "check": self.check,
                "steps": [r.to_json() for r in self.results]}


@dataclass(frozen=True)
class StepContext:
    """What a callable `when` condition receives: the run's variables and the host's facts."""

    vars: Mapping[str, Any]
    facts: Facts


Reporter = Callable[[StepResult], None]


def apply(recipe: Recipe, host: Host, *, variables: Mapping[str, Any] | None = None, check: bool = False,
          diff: bool = False, report: Reporter | None = None, throwaway: bool = False) -> HostRecap:
    """Apply `recipe` to `host`. `variables` override the recipe's own. Stops at the first failed step;
    handlers run only when every step succeeded. Returns the recap; raises only for bad input (recipe errors,
    or a host check refusing this host), before anything ran. `throwaway`: the host is a bake's builder,
    discarded on failure (operations see it as `Facts.throwaway`)."""
    started = time.perf_counter()
    env: dict[str, Any] = {**recipe.vars, **(variables or {})}
    env.setdefault("inventory_hostname", host.name)
    planned, prepared_handlers = prepare(recipe, env)
    recap = HostRecap(host=host.name, check=check)
    cache = FactCache(host, throwaway)
    check_host(recipe, env, Facts(cache, recipe.become))
    ahead = _Lookahead(cache, recipe, env, check, diff)
    notified: list[str] = []

    def emit(result: StepResult) -> None:
        recap.add(result)
        if report:
            report(result)

    for index, (step, op) in enumerate(planned, start=1):
        reading = ahead.before(planned, index - 1)
        result = _run_step(host, cache, index, step, op, recipe, env, check, diff)
        result.elapsed += reading
        ahead.after(result, index - 1)
        emit(result)
        if result.status == "failed":
            break
        if result.status == "changed":
            notified.extend(n for n in step.notify if n not in notified)
    else:
        handlers = [h for h in prepared_handlers if h[0].name in notified]
        ahead.reset()
        for offset, (h, op) in enumerate(handlers, start=len(planned) + 1):
            reading = ahead.before(handlers, offset - len(planned) - 1)
            result = _run_step(host, cache, offset, h, op, recipe, env, check, diff)
            result.elapsed += reading
            ahead.after(result, offset - len(planned) - 1)
            result.handler = True
            emit(result)
            if result.status == "failed":
                break
    recap.elapsed = time.perf_counter() - started
    return recap


Prepared = list[tuple[Step, "Operation | None"]]


def prepare(recipe: Recipe, env: Mapping[str, Any]) -> tuple[Prepared, Prepared]:
    """Validate the recipe, run its variable checks and render its steps and handlers with `env`; raises
    BadInput, touches no host."""
    recipe.validate()
    for c in recipe.checks:
        where = f"recipe {recipe.name!r} check {getattr(c.fn, '__name__', '?')}"
        if not c.host and all(evaluate(x, env, where) for x in c.conditions if isinstance(x, str)):
            c.fn(env)
    return _prepare(recipe.steps, recipe, env), _prepare(recipe.handlers, recipe, env)


def check_host(recipe: Recipe, env: Mapping[str, Any], facts: Facts) -> None:
    """Run the recipe's host checks whose conditions hold on this host; raises BadInput before any step ran."""
    ctx = StepContext(env, facts)
    for c in recipe.checks:
        where = f"recipe {recipe.name!r} check {getattr(c.fn, '__name__', '?')}"
        if c.host and all(evaluate(x, env, where) if isinstance(x, str) else x(ctx) for x in c.conditions):
            c.fn(ctx)


def _prepare(steps: list[Step], recipe: Recipe, env: Mapping[str, Any]) -> list[tuple[Step, Operation | None]]:
    """Render every step's operation up front (None when a variable condition already skips it)."""
    out: list[tuple[Step, Operation | None]] = []
    for index, step in enumerate(steps, start=1):
        where = f"recipe {recipe.name!r} step {index} {step.name!r}"
        skip = any(isinstance(c, str) and not evaluate(c, env, where) for c in step.all_conditions())
        out.append((step, None if skip else step.operation.render(env, where)))
    return out


class _Lookahead:
    """When to batch-read the facts of the coming steps (see `vmlab.engine.prefetch`): before the first step,
    and again before the first step that is not covered, or that follows a step which changed the host."""

    def __init__(self, cache: FactCache, recipe: Recipe, env: Mapping[str, Any], check: bool, diff: bool) -> None:
        self.cache, self.recipe, self.env, self.check, self.diff = cache, recipe, env, check, diff
        self.horizon = 0  # the steps before this index have had their facts read since the last change

    def units(self, items: Prepared) -> list[tuple[Probe, bool]]:
        def unit(step: Step, op: Operation | None) -> Probe:
            return lambda facts: bool(_plan(step, op, self.env, facts, self.diff)[0])

        return [(unit(s, op), _sudo(s, self.recipe)) for s, op in items]

    def before(self, items: Prepared, i: int) -> float:
        """Read ahead if step `i` is not covered; returns the seconds that took (counted in step i's time)."""
        if i < self.horizon:
            return 0.0
        t0 = time.perf_counter()
        self.horizon = i + prefetch(self.cache, self.units(items[i:]), stop_at_change=not self.check)
        return time.perf_counter() - t0

    def after(self, result: StepResult, i: int) -> None:
        if result.status in ("changed", "failed") and not self.check:
            self.horizon = i + 1  # the cache was cleared: read ahead again from the next step

    def reset(self) -> None:
        self.horizon = 0


def _sudo(step: Step, recipe: Recipe) -> bool:
    return step.become if step.become is not None else recipe.become


def _plan(step: Step, op: Operation | None, env: Mapping[str, Any], facts: Facts,
          diff: bool) -> tuple[list[Command], str | None, bool]:
    """(commands, diff, skipped) of a step planned from `facts`: its conditions, then its operation's plan."""
    if op is None or not all(c(StepContext(env, facts)) for c in step.all_conditions() if callable(c)):
        return [], None, True
    commands = list(op.plan(facts))
    return commands, op.diff(facts) if diff and commands else None, False


def _run_step(host: Host, cache: FactCache, index: int, step: Step, op: Operation | None, recipe: Recipe,
              env: Mapping[str, Any], check: bool, diff: bool) -> StepResult:
    t0 = time.perf_counter()
    sudo = _sudo(step, recipe)
    facts = Facts(cache, sudo)

    def result(status: str, **kw: Any) -> StepResult:
        return StepResult(host.name, index, step.name, status, time.perf_counter() - t0, **kw)

    try:
        commands, change, skipped = _plan(step, op, env, facts, diff)
        if skipped:
            return result("skipped")
        if not commands:
            return result("ok")
        text = tuple(c.describe() for c in commands)
        if not check:
            try:
                for command in commands:
                    r = host.execute(command, sudo=sudo)
                    if r.rc not in command.ok_codes:
                        last = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or [""]
                        raise CommandFailed(f"`{command.describe()}` exited {r.rc}: {last[0]}",
                                            r.rc, r.stdout, r.stderr)
            finally:
                cache.clear()  # the host changed (maybe partly): later steps must re-read facts
        return result("changed", commands=text, diff=change)
    except VmlabError as exc:
        return result("failed", error=str(exc))
    except Exception as exc:  # an operation's own bug must not take the other hosts down with it
        return result("failed", error=f"{type(exc).__name__}: {exc}")
