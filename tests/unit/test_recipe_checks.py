"""Recipe checks: variable checks run before any host is contacted, host checks before a host's first step;
both refuse with BadInput and nothing changes; included recipes bring their checks under the include's `when`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vmlab.engine import Recipe
from vmlab.engine.facts import FileStat
from vmlab.engine.runner import apply, prepare
from vmlab.errors import BadInput
from vmlab.operations import files
from vmlab.transport.local import LocalHost


def _recipe(folder: Path) -> Recipe:
    r = Recipe("t", vars={"port": 8888, "folder": str(folder)})
    r.step("made", files.Directory("{{ folder }}/made"))
    return r


def test_variable_check_refuses_before_any_host(tmp_path: Path) -> None:
    r = _recipe(tmp_path)

    @r.check
    def port_is_a_user_port(v: Any) -> None:
        if not 1024 <= int(v["port"]) < 65536:
            raise BadInput(f"port {v['port']} is not a user port", "use -e port=8888")

    prepare(r, {**r.vars})
    with pytest.raises(BadInput, match="port 80 is not a user port"):
        prepare(r, {**r.vars, "port": 80})
    with pytest.raises(BadInput, match="port 80"):
        apply(r, LocalHost(), variables={"port": 80})
    assert not (tmp_path / "made").exists()


def test_host_check_reads_facts_and_refuses_before_the_first_step(tmp_path: Path) -> None:
    r = _recipe(tmp_path)
    seen: list[object] = []

    @r.check_host
    def needs_marker(ctx: Any) -> None:
        seen.append(ctx.vars["folder"])
        if ctx.facts.get(FileStat(ctx.vars["folder"] + "/marker")) is None:
            raise BadInput("no marker on this host", "create it")

    prepare(r, r.vars)  # host checks do not run without a host
    assert seen == []
    with pytest.raises(BadInput, match="no marker on this host"):
        apply(r, LocalHost())
    assert not (tmp_path / "made").exists()
    (tmp_path / "marker").write_text("")
    assert apply(r, LocalHost()).changed == 1
    assert seen == [str(tmp_path), str(tmp_path)]


def test_included_checks_follow_the_include_condition(tmp_path: Path) -> None:
    inner = Recipe("inner", vars={"level": 1})
    inner.step("x", files.Directory(str(tmp_path / "x")))
    calls: list[str] = []

    @inner.check
    def level_ok(v: Any) -> None:
        calls.append("vars")
        if v["level"] > 3:
            raise BadInput("level too high", "use -e level=1")

    @inner.check_host
    def host_ok(ctx: Any) -> None:
        calls.append("host")

    outer = Recipe("outer", vars={"use_inner": True})
    outer.include(inner, when="use_inner")
    with pytest.raises(BadInput, match="level too high"):
        prepare(outer, {**outer.vars, "level": 9})
    prepare(outer, {**outer.vars, "level": 9, "use_inner": False})  # skipped include: its checks too
    calls.clear()
    assert apply(outer, LocalHost(), variables={"use_inner": False}).skipped == 1
    assert calls == []
    assert apply(outer, LocalHost()).changed == 1
    assert calls == ["vars", "host"]


def test_callable_include_condition_guards_host_checks(tmp_path: Path) -> None:
    inner = Recipe("inner")
    inner.step("x", files.Directory(str(tmp_path / "x")))

    @inner.check_host
    def refuse(ctx: Any) -> None:
        raise BadInput("refused", "turn it off")

    outer = Recipe("outer", vars={"on": False})
    outer.include(inner, when=lambda ctx: bool(ctx.vars["on"]))
    assert apply(outer, LocalHost()).skipped == 1
    with pytest.raises(BadInput, match="refused"):
        apply(outer, LocalHost(), variables={"on": True})


def test_provision_reports_a_refused_host_and_goes_on_with_the_others(tmp_path: Path) -> None:
    from vmlab.inventory import InventoryHost
    from vmlab.workflows.provision import provision

    r = Recipe("t")
    r.step("made", files.Directory("{{ folder }}/{{ inventory_hostname }}"))

    @r.check_host
    def not_on_b(ctx: Any) -> None:
        if ctx.vars["inventory_hostname"] == "b":
            raise BadInput("host b runs an unsupported release", "leave it out with --limit")

    hosts = [InventoryHost(name, "localhost", connection="local", vars={"folder": str(tmp_path)})
             for name in ("a", "b")]
    a, b = provision(r, hosts)
    assert a.success and a.changed == 1 and (tmp_path / "a").is_dir()
    assert not b.success and b.failed == 1 and b.results == [] and b.refused and not a.refused
    assert b.error == "host b runs an unsupported release: leave it out with --limit"
    assert not (tmp_path / "b").exists()
