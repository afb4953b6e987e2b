"""systemd units and services: Unit, Service, DaemonReload, and the unit-state facts.

Example::

    recipe.step("unit", systemd.Unit("lab.service", content=UNIT), notify="restart lab")
    recipe.step("lab on", systemd.Service("lab.service", enabled=True, running=True))
    recipe.handler("restart lab", systemd.Service("lab.service", restarted=True))
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from vmlab.engine.command import Command, RunResult
from vmlab.engine.facts import Fact, Facts
from vmlab.engine.operation import Operation
from vmlab.errors import BadInput
from vmlab.operations._write import check_mode, is_pending
from vmlab.operations.files import diff_content, plan_content

_UNIT_NAME = re.compile(r"[A-Za-z0-9:_@\\][A-Za-z0-9:_.@\\-]*")  # never starts with "-": not an option
_UNIT_TYPES = "service|socket|timer|target|path|mount|automount|swap|slice"
_UNIT_FILE = re.compile(_UNIT_NAME.pattern + rf"\.({_UNIT_TYPES})")

# `systemctl is-enabled` states it reports with exit 0 (see systemctl(1)): the unit starts at boot or cannot
# be enabled (static, generated, transient) anyway
ENABLED_STATES = frozenset({"enabled", "enabled-runtime", "alias", "static", "indirect", "generated",
                            "transient"})
ACTIVE_STATES = frozenset({"active", "reloading", "activating"})


def _check_name(op: Unit | Service, pattern: re.Pattern[str], example: str) -> None:
    name = op.name
    if not is_pending(name) and not (isinstance(name, str) and pattern.fullmatch(name)):
        raise BadInput(f"{type(op).__name__}: {name!r} is not a systemd unit name", f"e.g. {example!r}")


# ---- facts ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitFileState(Fact[str]):
    """`systemctl is-enabled NAME`: enabled, disabled, static, masked, ... or "not-found"."""

    name: str

    def command(self) -> Command:
        # non-zero exits only mean "not enabled" (1) or "no such unit" (4, or 1 with a message on stderr)
        return Command("systemctl", "is-enabled", self.name, ok_codes=(0, 1, 4))

    def parse(self, result: RunResult) -> str:
        lines = result.stdout.split()
        return lines[0] if lines else "not-found"


@dataclass(frozen=True)
class UnitActiveState(Fact[str]):
    """`systemctl is-active NAME`: active, inactive, failed, activating, ... ("inactive" for unknown units).

    Exit 1 with no state (systemd not running) is left to fail: there is no service to manage then.
    """

    name: str

    def command(self) -> Command:
        return Command("systemctl", "is-active", self.name, ok_codes=(0, 3, 4))

    def parse(self, result: RunResult) -> str:
        lines = result.stdout.split()
        return lines[0] if lines else "unknown"


# ---- operations -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit(Operation):
    """A unit file in /etc/systemd/system, followed by `systemctl daemon-reload` when it changed.

    `content` is rendered with the run's variables (wrap a literal ``{{`` in ``{% raw %}``). Example::

        systemd.Unit("lab.service", content=(
            "[Service]\\nUser={{ lab_user }}\\nExecStart=/opt/lab/bin/jupyter lab --no-browser\\n"
            "[Install]\\nWantedBy=multi-user.target\\n"))
    """

    name: str
    content: str
    mode: str = "0644"

    def __post_init__(self) -> None:
        _check_name(self, _UNIT_FILE, "lab.service")
        check_mode(self)
        if not isinstance(self.content, str):
            raise BadInput(f"Unit: content must be text, got {type(self.content).__name__}",
                           "pass the unit file's text")

    @property
    def path(self) -> str:
        return f"/etc/systemd/system/{self.name}"

    def plan(self, facts: Facts) -> Iterator[Command]:
        commands = list(plan_content(facts, self.path, self.content.encode(), self.mode, None, None))
        if commands:
            yield from commands
            yield Command("systemctl", "daemon-reload")

    def diff(self, facts: Facts) -> str | None:
        return diff_content(facts, self.path, self.content.encode())


@dataclass(frozen=True)
class Service(Operation):
    """A service enabled at boot or not, running or not; `restarted=True` restarts it every time it runs.

    Leave `enabled`/`running` as None to not care. `restarted=True` is meant for handlers::

        recipe.step("lab on", systemd.Service("lab.service", enabled=True, running=True))
        recipe.handler("restart lab", systemd.Service("lab.service", restarted=True))

    A static unit (no [Install] section) counts as enabled; `enabled=True` on a masked unit fails (unmask it).
    """

    name: str
    enabled: bool | None = None
    running: bool | None = None
    restarted: bool = False

    def __post_init__(self) -> None:
        _check_name(self, _UNIT_NAME, "ssh.service")
        if self.enabled is None and self.running is None and not self.restarted:
            raise BadInput(f"Service {self.name!r}: nothing to do",
                           "set enabled=, running= or restarted=True")
        if self.restarted and self.running is False:
            raise BadInput(f"Service {self.name!r}: restarted=True contradicts running=False",
                           "drop one of them")

    def plan(self, facts: Facts) -> Iterator[Command]:
        if self.enabled is not None:
            state = facts.get(UnitFileState(self.name))
            if self.enabled and state not in ENABLED_STATES:
                yield Command("systemctl", "enable", self.name)
            elif not self.enabled and state in ("enabled", "enabled-runtime"):
                yield Command("systemctl", "disable", self.name)
        if self.restarted:
            yield Command("systemctl", "restart", self.name)
        elif self.running is not None:
            active = facts.get(UnitActiveState(self.name)) in ACTIVE_STATES
            if self.running and not active:
                yield Command("systemctl", "start", self.name)
            elif not self.running and active:
                yield Command("systemctl", "stop", self.name)


@dataclass(frozen=True)
class DaemonReload(Operation):
    """`systemctl daemon-reload`, every time (`Unit` already reloads after changing a unit file).

    Example, after unit files written some other way: ``systemd.DaemonReload()``.
    """

    def plan(self, facts: Facts) -> Iterator[Command]:
        yield Command("systemctl", "daemon-reload")


__all__ = ["ACTIVE_STATES", "ENABLED_STATES", "DaemonReload", "Service", "Unit", "UnitActiveState",
           "UnitFileState"]
