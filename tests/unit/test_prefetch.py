"""Batched fact reads: the batch framing, the probing that finds the facts of the coming steps, and the
invalidation that keeps a step from planning on facts an earlier step made stale. Runs on this machine through
LocalHost (real sh, real files in a temp folder); a counting wrapper tells how many commands reached the host."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vmlab.engine import Command, Operation, Recipe, RunResult
from vmlab.engine.batch import Batch, plan_batches
from vmlab.engine.facts import CommandSucceeds, Fact, FactCache, Facts, FileStat, FileText
from vmlab.engine.prefetch import probe_round
from vmlab.engine.runner import HostRecap, apply
from vmlab.errors import HostError
from vmlab.operations import files, shell
from vmlab.transport.local import LocalHost


class Counting:
    """LocalHost that records every command it runs; `batch_reads=False` makes it the old, one-read-a-command
    host, to compare against."""

    def __init__(self, batch_reads: bool = True) -> None:
        self.name = "local"
        self.batch_reads = batch_reads
        self.sent: list[Command] = []
        self._host = LocalHost()

    def execute(self, command: Command, *, sudo: bool = False) -> RunResult:
        self.sent.append(command)
        return self._host.execute(command, sudo=sudo)

    def labels(self) -> list[str]:
        return [c.label or c.argv[0] for c in self.sent]


def _report(recap: HostRecap) -> list[tuple[str, str, tuple[str, ...], str | None, str | None]]:
    return [(r.name, r.status, r.commands, r.diff, r.error) for r in recap.results]


# ---- the batch itself ---------------------------------------------------------------------------------------


TRICKY = [
    Command("sh", "-c", "printf 'a\\nb'; echo err >&2; exit 3"),
    Command("printf", "%s", "x y$(touch pwned) ' \" \\ *"),
    Command("no-such-program-here"),
    Command("true"),
    Command("sh", "-c", "printf '\\377\\376 not utf-8\\n'"),
    Command("sh", "-c", "cat; echo read-nothing"),
]


def test_batch_gives_each_command_what_running_it_alone_gives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    host = LocalHost()
    batch = Batch.of(TRICKY)
    # the boundary travels on stdin: other users of the host see command lines (ps), not stdin
    assert not any(batch.boundary in a for a in batch.command.argv)
    assert batch.command.stdin == f"{batch.boundary}\n".encode()
    got = batch.split(host.execute(batch.command))
    for command, one in zip(TRICKY, got, strict=True):
        assert one is not None
        if command.argv[0] == "no-such-program-here":  # a shell's answer (LocalHost itself runs no shell)
            assert one.rc == 127 and "not found" in one.stderr and one.stdout == ""
            continue
        alone = host.execute(command)
        assert (one.rc, one.stdout, one.stderr) == (alone.rc, alone.stdout, alone.stderr), command
    assert not (tmp_path / "pwned").exists()


def test_split_of_a_cut_or_garbled_batch_keeps_only_what_finished() -> None:
    batch = Batch.of([Command("a"), Command("b"), Command("c")])
    b = batch.boundary
    whole = RunResult(0, f"{b}:one{b}=0;{b}:two\n{b}=1;{b}:thr", f"{b}:{b}:oops\n{b}:")
    assert batch.split(whole) == [RunResult(0, "one", ""), RunResult(1, "two\n", "oops\n"), None]
    assert batch.split(RunResult(127, "", "sh: not found")) == [None, None, None]
    assert batch.split(RunResult(0, f"{b}:x{b}=zz;", f"{b}:")) == [None, None, None]


def test_batches_stay_under_the_command_line_limit() -> None:
    commands = [Command("echo", "x" * 1000) for _ in range(100)]
    groups = plan_batches(commands, limit=10_000)
    assert [i for g in groups for i in g] == list(range(100))
    assert len(groups) > 10 and all(len(g) <= 10 for g in groups)


# ---- probing and invalidation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NeedsTwo(Operation):
    """Reads a second fact only when the first says so (a chain: two probing rounds)."""

    first: str
    second: str

    def plan(self, facts: Facts) -> Iterator[Command]:
        if facts.get(FileStat(self.first)) is not None and facts.get(FileText(self.second)) != "ok\n":
            yield Command("sh", "-c", 'echo ok > "$1"', "sh", self.second)


def _noop_recipe(d: Path) -> Recipe:
    r = Recipe("many")
    for i in range(12):
        r.step(f"dir {i}", files.Directory(f"{d}/d{i}", mode="0755"))
    r.step("file", files.File(f"{d}/f.txt", content="hello\n", mode="0644"))
    r.step("line", files.Line(f"{d}/settings", line="debug = false", regexp="^debug"))
    r.step("guarded", shell.Shell(f"echo x >> {d}/g.log", unless=f"grep -q x {d}/g.log"))
    r.step("chain", NeedsTwo(f"{d}/f.txt", f"{d}/second"))
    return r


def test_noop_reapply_reads_all_facts_in_a_batch_per_round(tmp_path: Path) -> None:
    r = _noop_recipe(tmp_path)
    assert apply(r, LocalHost()).changed == 16
    host = Counting()
    recap = apply(r, host)
    assert (recap.changed, recap.ok, recap.failed) == (0, 16, 0)
    # one batch for the 15 facts of 16 steps (two read the same), one more for the fact the chain reads only
    # after seeing the first
    assert host.labels() == ["read 15 facts", "read 1 facts"]


def test_report_is_the_same_as_reading_facts_one_by_one(tmp_path: Path) -> None:
    runs: dict[bool, list[object]] = {}
    for batched in (True, False):
        d = tmp_path / str(batched)
        d.mkdir()
        r = _noop_recipe(d)
        reports = [_report(apply(r, Counting(batched), check=True, diff=True)),
                   _report(apply(r, Counting(batched), diff=True)),
                   _report(apply(r, Counting(batched), check=True, diff=True))]
        runs[batched] = [[tuple(str(x).replace(str(d), "D") for x in row) for row in rep] for rep in reports]
    assert runs[True] == runs[False]
    assert any(row[1] == "changed" for row in runs[True][0])


def test_a_step_never_plans_from_facts_an_earlier_change_made_stale(tmp_path: Path) -> None:
    conf = tmp_path / "app.conf"
    r = Recipe("stale")
    r.step("one", files.Directory(f"{tmp_path}/d", mode="0755"))
    r.step("write", files.File(str(conf), content="a = 1\n", mode="0644"))  # step 2 writes the file...
    r.step("three", files.Directory(f"{tmp_path}/e", mode="0755"))
    r.step("four", shell.Shell(f"touch {tmp_path}/four", creates=f"{tmp_path}/four"))
    r.step("edit", files.Line(str(conf), line="b = 2"))  # ...and step 5 edits what it wrote
    first = apply(r, Counting())
    assert conf.read_text() == "a = 1\nb = 2\n"
    assert [s.status for s in first.results] == ["changed"] * 5
    # only step 2 has something to do now; step 5 must see what it wrote, not what was there before
    conf.write_text("something else\n")
    host = Counting()
    again = apply(r, host)
    assert [s.status for s in again.results] == ["ok", "changed", "ok", "ok", "changed"]
    assert conf.read_text() == "a = 1\nb = 2\n"
    assert host.labels()[0] == "read 5 facts"  # all five steps' facts first, optimistic
    assert host.labels().count("read 3 facts") == 1  # re-read for steps 3-5 after step 2 changed the file
    # (with facts read before step 2 ran, step 5 would have kept "something else" and dropped "a = 1")


def test_probing_stops_after_the_first_step_that_would_change(tmp_path: Path) -> None:
    (tmp_path / "there").touch()
    cache = FactCache(Counting())
    steps = [FileStat(str(tmp_path / "there")), FileStat(str(tmp_path / "missing")), FileStat(str(tmp_path / "x"))]

    def unit(fact: FileStat) -> tuple[object, bool]:
        return (lambda facts: facts.get(fact) is None), False

    units = [unit(f) for f in steps]
    missing, covered = probe_round(cache, units, stop_at_change=True)  # type: ignore[arg-type]
    assert [m[0] for m in missing] == steps and covered == 3  # nothing cached: optimistic, all of them
    cache.load(missing)
    missing, covered = probe_round(cache, units, stop_at_change=True)  # type: ignore[arg-type]
    assert missing == [] and covered == 2  # step 2 would create its file: step 3's facts wait for that
    missing, covered = probe_round(cache, units, stop_at_change=False)  # type: ignore[arg-type]
    assert covered == 3  # check mode changes nothing, so every step is read ahead


@dataclass(frozen=True)
class Broken(Fact[str]):
    def command(self) -> Command:
        return Command("sh", "-c", "echo cannot read this >&2; exit 5")

    def parse(self, result: RunResult) -> str:
        return result.stdout


@dataclass(frozen=True)
class ReadsBroken(Operation):
    def plan(self, facts: Facts) -> Iterator[Command]:
        facts.get(Broken())
        yield Command("true")


def test_a_fact_that_fails_in_a_batch_fails_only_the_step_that_reads_it(tmp_path: Path) -> None:
    r = Recipe("t")
    r.step("fine", files.Directory(f"{tmp_path}/a", mode="0755"))
    r.step("reads a broken fact", ReadsBroken())
    r.step("never", files.Directory(f"{tmp_path}/b", mode="0755"))
    (tmp_path / "a").mkdir()
    reports = [_report(apply(r, Counting(batched))) for batched in (True, False)]
    assert reports[0] == reports[1]
    assert [row[1] for row in reports[0]] == ["ok", "failed"]
    assert reports[0][1][4] == "local: reading Broken failed (exit 5): cannot read this"
    cache = FactCache(Counting())
    unless = CommandSucceeds("exit 7")
    cache.load([(FileStat(str(tmp_path / "a")), False), (unless, False)])
    assert cache.get(unless, False) is False  # the fact's own ok_codes decide, as when read alone
    assert cache.get(FileStat(str(tmp_path / "a")), False) is not None
    assert cache.reads == 1


def test_hosts_that_answer_commands_themselves_can_opt_out(tmp_path: Path) -> None:
    host = Counting(batch_reads=False)
    apply(_noop_recipe(tmp_path), host, check=True)
    assert not any((c.label or "").startswith("read ") and c.label.endswith(" facts") for c in host.sent)


def test_file_with_a_backslash_in_its_name_is_left_alone_the_second_time(tmp_path: Path) -> None:
    # sha256sum escapes such names and prefixes its line with "\": the digest must not take that in
    path = tmp_path / "a\\b"
    r = Recipe("t")
    r.step("odd name", files.File(str(path), content="hi\n", mode="0644"))
    assert apply(r, LocalHost()).changed == 1
    info = FactCache(LocalHost()).get(FileStat(str(path)), False)
    assert info is not None and info.sha256 == "98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4"
    assert apply(r, LocalHost()).changed == 0


class NoSudo(Counting):
    """A host where sudo asks for a password: every command as root is refused, batched or not."""

    def execute(self, command: Command, *, sudo: bool = False) -> RunResult:
        if sudo:
            self.sent.append(command)
            raise HostError("passwordless sudo is required for me on local")
        return super().execute(command, sudo=sudo)


def test_a_batch_the_host_refuses_fails_the_step_as_a_single_read_would(tmp_path: Path) -> None:
    r = Recipe("t")
    r.step("mine", files.Directory(f"{tmp_path}/a", mode="0755"))
    r.step("as root", files.Directory(f"{tmp_path}/b", mode="0755"), become=True)
    reports = []
    for batched in (True, False):
        host = NoSudo(batched)
        reports.append(_report(apply(r, host, check=True)))
    assert reports[0] == reports[1]
    assert [row[1] for row in reports[0]] == ["changed", "failed"]
    assert reports[0][1][4] == "passwordless sudo is required for me on local"
