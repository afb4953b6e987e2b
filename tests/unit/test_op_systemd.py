"""systemd operations: plans from is-enabled/is-active states, bad arguments, real systemctl output."""

from __future__ import annotations

import hashlib
import shutil

import pytest
from planning import argvs, diff, read_fact

from vmlab.engine.command import RunResult
from vmlab.engine.facts import FileStat, FileText, PathInfo
from vmlab.errors import BadInput
from vmlab.operations._write import WRITE_SCRIPT
from vmlab.operations.systemd import DaemonReload, Service, Unit, UnitActiveState, UnitFileState

S = "lab.service"
UNIT = "[Service]\nExecStart=/opt/lab/bin/jupyter lab\n"
PATH = "/etc/systemd/system/lab.service"
RELOAD = ("systemctl", "daemon-reload")


def f(text: str, mode: str = "0644") -> PathInfo:
    return PathInfo("file", mode, "root", "root", len(text), hashlib.sha256(text.encode()).hexdigest())


@pytest.mark.parametrize("op, current, expected", [
    (Unit(S, UNIT), f(UNIT), []),
    (Unit(S, UNIT), None, [("sh", "-c", WRITE_SCRIPT, "sh", PATH, "0644", "", ""), RELOAD]),
    (Unit(S, UNIT), f("[Service]\n"), [("sh", "-c", WRITE_SCRIPT, "sh", PATH, "0644", "", ""), RELOAD]),
    (Unit(S, UNIT), f(UNIT, "0755"), [("chmod", "0644", PATH), RELOAD]),
])
def test_unit_plans(op, current, expected) -> None:
    assert argvs(op, {FileStat(PATH): current}) == expected


def test_unit_content_is_templated_and_diffed() -> None:
    op = Unit(S, "[Service]\nUser={{ user }}\n").render({"user": "lab"}, "t")
    assert op.content == "[Service]\nUser=lab\n"
    assert diff(op, {FileText(PATH): "[Service]\nUser=root\n"}).endswith("-User=root\n+User=lab\n")


@pytest.mark.parametrize("op, enabled, active, expected", [
    (Service(S, enabled=True, running=True), "enabled", "active", []),
    (Service(S, enabled=True, running=True), "disabled", "inactive",
     [("systemctl", "enable", S), ("systemctl", "start", S)]),
    (Service(S, enabled=True), "static", None, []),
    (Service(S, enabled=True), "alias", None, []),
    (Service(S, enabled=True), "not-found", None, [("systemctl", "enable", S)]),
    (Service(S, enabled=True), "masked", None, [("systemctl", "enable", S)]),
    (Service(S, enabled=False), "enabled", None, [("systemctl", "disable", S)]),
    (Service(S, enabled=False), "disabled", None, []),
    (Service(S, enabled=False), "static", None, []),
    (Service(S, running=True), None, "failed", [("systemctl", "start", S)]),
    (Service(S, running=True), None, "activating", []),
    (Service(S, running=False), None, "active", [("systemctl", "stop", S)]),
    (Service(S, running=False), None, "inactive", []),
    (Service(S, running=False), None, "failed", []),
    (Service(S, restarted=True), None, None, [("systemctl", "restart", S)]),
    (Service(S, enabled=True, running=True, restarted=True), "enabled", None, [("systemctl", "restart", S)]),
])
def test_service_plans(op, enabled, active, expected) -> None:
    facts = {}
    if enabled is not None:
        facts[UnitFileState(S)] = enabled
    if active is not None:
        facts[UnitActiveState(S)] = active
    assert argvs(op, facts) == expected


def test_daemon_reload_always_runs() -> None:
    assert argvs(DaemonReload()) == [RELOAD]


@pytest.mark.parametrize("make, message", [
    (lambda: Unit("lab", UNIT), "is not a systemd unit name"),
    (lambda: Unit("../lab.service", UNIT), "is not a systemd unit name"),
    (lambda: Unit(S, UNIT, mode="644x"), "is not an octal mode"),
    (lambda: Service(S), "nothing to do"),
    (lambda: Service("-now", running=True), "is not a systemd unit name"),
    (lambda: Service(S, running=False, restarted=True), "contradicts"),
])
def test_bad_arguments(make, message) -> None:
    with pytest.raises(BadInput, match=message):
        make()


@pytest.mark.parametrize("rc, out, state", [
    (0, "enabled\n", "enabled"),
    (1, "disabled\n", "disabled"),
    (0, "static\n", "static"),
    (1, "masked\n", "masked"),
    (1, "", "not-found"),  # systemd 252: "Failed to get unit file state for x.service: ..." on stderr
    (4, "not-found\n", "not-found"),
])
def test_unit_file_state_parses(rc, out, state) -> None:
    fact = UnitFileState(S)
    assert fact.command().argv == ("systemctl", "is-enabled", S) and rc in fact.command().ok_codes
    assert fact.parse(RunResult(rc, out, "")) == state


@pytest.mark.parametrize("rc, out, state", [(0, "active\n", "active"), (3, "inactive\n", "inactive"),
                                            (3, "failed\n", "failed"), (3, "activating\n", "activating")])
def test_unit_active_state_parses(rc, out, state) -> None:
    fact = UnitActiveState(S)
    assert fact.command().argv == ("systemctl", "is-active", S) and rc in fact.command().ok_codes
    # "System has not been booted with systemd" (exit 1) is an error, not "stopped"
    assert 1 not in fact.command().ok_codes
    assert fact.parse(RunResult(rc, out, "")) == state


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="needs systemctl")
def test_unit_file_state_on_this_machine() -> None:
    assert read_fact(UnitFileState("vmlab-no-such-unit.service")) == "not-found"
