"""Round trips over a real sshd: a no-op re-apply of a many-step recipe sends a handful of commands (counted at
the transport, one session channel each), a step still sees what an earlier step changed, and check/diff
reports are the same as when every fact is read on its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.emulators.sshd import SSHD
from vmlab.engine import Command, Recipe, RunResult
from vmlab.engine.runner import HostRecap, apply
from vmlab.operations import files, pip, shell
from vmlab.transport.ssh import SSHConnection

pytestmark = pytest.mark.sshd


def many_steps(root: Path) -> Recipe:
    r = Recipe("many")
    for name in ("app", "app/conf", "app/data", "app/logs", "app/bin", "app/www"):
        r.step(f"dir {name}", files.Directory(f"{root}/{name}", mode="0755"))
    for i in range(5):
        r.step(f"file {i}", files.File(f"{root}/app/conf/f{i}.txt", content=f"file {i}\n", mode="0644"))
    for i in range(4):
        r.step(f"template {i}", files.Template(f"{root}/app/conf/t{i}.conf",
                                               source="n={{ n }}\nhost={{ inventory_hostname }}\n", mode="0640"))
    r.step("line", files.Line(f"{root}/app/conf/settings.ini", line="debug = false", regexp=r"^debug\s*="))
    r.step("venv", pip.Packages(("pip",), venv=f"{root}/venv"))
    r.step("stamp", shell.Shell(f"echo built > {root}/app/data/stamp", creates=f"{root}/app/data/stamp"))
    r.step("init", shell.Shell(f"echo init >> {root}/app/logs/init.log",
                               unless=f"grep -q init {root}/app/logs/init.log"))
    return r


class OneByOne:
    """The connection with batching turned off: every fact is one command, as before batching."""

    batch_reads = False

    def __init__(self, conn: SSHConnection) -> None:
        self.name = conn.name
        self._conn = conn

    def execute(self, command: Command, *, sudo: bool = False) -> RunResult:
        return self._conn.execute(command, sudo=sudo)


def _report(recap: HostRecap, root: Path) -> list[tuple[str, ...]]:
    return [tuple(str(x).replace(str(root), "ROOT") for x in (r.name, r.status, r.commands, r.diff, r.error))
            for r in recap.results]


def test_noop_reapply_takes_at_most_four_commands(sshd: SSHD, tmp_path: Path) -> None:
    root = tmp_path / "t"
    recipe = many_steps(root)
    with SSHConnection(sshd.target()) as conn:
        first = apply(recipe, conn, variables={"n": 1})
        assert first.success and first.changed == len(recipe.steps)
    with SSHConnection(sshd.target()) as conn:
        again = apply(recipe, conn, variables={"n": 1})
        assert (again.changed, again.ok, again.failed) == (0, len(recipe.steps), 0)
        assert conn.commands <= 4, conn.commands  # 20 steps: it was 21 commands, one fact read each
    # a changed variable is still seen: the templates change, nothing else does
    with SSHConnection(sshd.target()) as conn:
        third = apply(recipe, conn, variables={"n": 2})
        assert [r.name for r in third.results if r.status == "changed"] == [f"template {i}" for i in range(4)]
    assert (root / "app/conf/t3.conf").read_text().startswith("n=2\n")


def test_step_five_reads_what_step_two_wrote(sshd: SSHD, tmp_path: Path) -> None:
    conf = tmp_path / "app.conf"
    r = Recipe("stale")
    r.step("one", files.Directory(f"{tmp_path}/d", mode="0755"))
    r.step("two writes", files.File(str(conf), content="a = 1\n", mode="0644"))
    r.step("three", files.Directory(f"{tmp_path}/e", mode="0755"))
    r.step("four", shell.Shell(f"touch {tmp_path}/four", creates=f"{tmp_path}/four"))
    r.step("five edits", files.Line(str(conf), line="b = 2"))
    with SSHConnection(sshd.target()) as conn:
        apply(r, conn)
        assert conf.read_text() == "a = 1\nb = 2\n"
        conf.write_text("stale\n")  # now only step 2 has work; step 5 must edit what step 2 writes
        again = apply(r, conn)
    assert [s.status for s in again.results] == ["ok", "changed", "ok", "ok", "changed"]
    assert conf.read_text() == "a = 1\nb = 2\n"


def test_check_and_diff_reports_match_one_fact_at_a_time(sshd: SSHD, tmp_path: Path) -> None:
    reports = []
    for name in ("batched", "one-by-one"):
        root = tmp_path / name
        recipe = many_steps(root)
        with SSHConnection(sshd.target()) as conn:
            host = conn if name == "batched" else OneByOne(conn)
            run = [_report(apply(recipe, host, variables={"n": 1}, check=True, diff=True), root)]
            (root / "app/conf").mkdir(parents=True)
            (root / "app/conf/settings.ini").write_text("debug = true\nx = 1\n")
            (root / "app/conf/f2.txt").write_text("old\n")
            run.append(_report(apply(recipe, host, variables={"n": 1}, check=True, diff=True), root))
            assert not (root / "app/www").exists()  # check mode changed nothing
        reports.append(run)
    assert reports[0] == reports[1]
    diffs = [row for row in reports[0][1] if row[3] != "None"]
    assert any("-debug = true" in row[3] and "+debug = false" in row[3] for row in diffs)
    assert any("-old" in row[3] for row in diffs)
