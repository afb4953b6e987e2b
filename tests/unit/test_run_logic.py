"""The pure parts of `vmlab run`: gitignore-style excludes, the choice of the files to send (from the lab's listing,
the record of what was sent and the local stat and content), output paths that must stay inside their folder (also
through local symlinks), env names and values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmlab.errors import BadInput, HostError
from vmlab.state import LabStore
from vmlab.workflows.outputs import _local_target, check_paths
from vmlab.workflows.runjob import LIST_RUNS, env_values
from vmlab.workflows.runlab import remote_folder_name
from vmlab.workflows.sentfiles import RACY_NS, Sent, SentFiles, sha256_of
from vmlab.workflows.workdir import LocalFile, excluded, parse_rules, plan, scan, under

RULES = parse_rules(["# comment", "", "*.log", "!keep.log", "build/", "/top.txt", "docs/**/*.tmp", ".git/"])


@pytest.mark.parametrize(("rel", "is_dir", "out"), [
    ("a.log", False, True), ("sub/deep/b.log", False, True), ("keep.log", False, False),
    ("build", True, True), ("build", False, False), ("src/build", True, True),
    ("top.txt", False, True), ("sub/top.txt", False, False), ("docs/x/y.tmp", False, True),
    ("docs/y.tmp", False, True), ("train.py", False, False), (".git", True, True),
])
def test_gitignore_style_rules(rel: str, is_dir: bool, out: bool) -> None:
    assert excluded(RULES, rel, is_dir) is out


def test_scan_applies_both_ignore_files_and_skips_symlinks(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.bin").write_bytes(b"1")
    (tmp_path / "run.py").write_text("print(1)\n")
    (tmp_path / "secret.env").write_text("K=V\n")
    (tmp_path / ".vmlabignore").write_text("data/\n")
    (tmp_path / ".gitignore").write_text("*.env\n")
    (tmp_path / "link").symlink_to("/etc/hostname")
    (tmp_path / "linkdir").symlink_to("/etc")
    assert sorted(scan(tmp_path)) == [".gitignore", ".vmlabignore", "run.py"]
    with pytest.raises(BadInput):
        scan(tmp_path / "missing")


def _file(root: Path, name: str, text: str, mtime: int = 1_700_000_000) -> LocalFile:
    path = root / name
    path.write_text(text)
    os.utime(path, (mtime, mtime))
    return LocalFile(path, path.lstat())


def _sent(f: LocalFile, stat_at_ns: int, content: str | None = None) -> Sent:
    return Sent.of(f.stat, content or sha256_of(f.path), stat_at_ns, f.second)


def test_the_plan_reads_only_what_it_must_and_misses_no_edit(tmp_path: Path) -> None:
    now = time.time_ns() + 2 * RACY_NS  # records taken well after the files' ctimes: not racy
    reads: list[Path] = []

    def digest(path: Path) -> str:
        reads.append(path)
        return sha256_of(path)

    same = _file(tmp_path, "same", "aaa")
    touched = _file(tmp_path, "touched", "bbb")
    old_touched = _sent(touched, now)
    os.utime(touched.path, (1_700_000_100, 1_700_000_100))  # new mtime, same content: read, not sent
    touched = LocalFile(touched.path, touched.path.lstat())
    edited = _file(tmp_path, "edited", "ccc")
    old_edited = _sent(edited, now)
    edited.path.write_text("CCC")  # same size, mtime put back to the same nanosecond: only ctime moved
    os.utime(edited.path, ns=(edited.stat.st_atime_ns, edited.stat.st_mtime_ns))
    edited = LocalFile(edited.path, edited.path.lstat())
    new = _file(tmp_path, "new", "d")
    changed_there = _file(tmp_path, "changed-there", "eee")
    unrecorded_match = _file(tmp_path, "unrecorded-match", "fff")
    unrecorded_other = _file(tmp_path, "unrecorded-other", "ggg")
    local = {f.path.name: f for f in (same, touched, edited, new, changed_there, unrecorded_match,
                                      unrecorded_other)}
    remote = {"same": [3, same.second], "touched": [3, 1_700_000_000], "edited": [3, 1_700_000_000],
              "changed-there": [3, 1_700_000_005], "unrecorded-match": [3, unrecorded_match.second],
              "unrecorded-other": [4, unrecorded_other.second], "gone-locally": [1, 1]}
    known = {"same": _sent(same, now), "touched": old_touched, "edited": old_edited,
             "changed-there": _sent(changed_there, now)}
    decided = plan(local, remote, known, now + 1, digest)
    assert decided.send == ["edited", "new", "changed-there", "unrecorded-other"]
    assert list(decided.verify) == ["unrecorded-match"]  # compared with the lab's hash
    assert decided.keep["same"] is known["same"]
    refreshed = decided.keep["touched"]
    assert refreshed.mtime_ns == touched.stat.st_mtime_ns and refreshed.lab_mtime == 1_700_000_000
    assert sorted(p.name for p in reads) == ["edited", "touched", "unrecorded-match"]
    assert decided.hashed == 3


def test_a_racy_record_is_checked_by_content(tmp_path: Path) -> None:
    """A filesystem clock that did not tick between two same-size writes leaves even ctime as it was: a record
    whose stat was taken within RACY_NS of the file's mtime is not trusted."""
    f = _file(tmp_path, "train.py", "v1", mtime=1_700_000_000)
    racy_at = max(f.stat.st_mtime_ns, f.stat.st_ctime_ns) + RACY_NS // 2
    stale = Sent.of(f.stat, "0" * 64, racy_at, f.second)  # the same stat, another content
    remote = {"train.py": [2, f.second]}
    assert plan({"train.py": f}, remote, {"train.py": stale}, 0).send == ["train.py"]
    settled = Sent(**{**stale.__dict__, "stat_at_ns": racy_at + 2 * RACY_NS})
    assert plan({"train.py": f}, remote, {"train.py": settled}, 0).send == []  # trusted: a stat that settled


def test_the_record_belongs_to_one_instance_of_the_lab(tmp_path: Path) -> None:
    store = LabStore(tmp_path / "labs")
    f = _file(tmp_path, "a.txt", "x")
    memory = SentFiles.open(store, "gpu", "i-1", tmp_path, "/home/u/work/p")
    assert memory.files == {}
    memory.save({"a.txt": _sent(f, 5)})
    assert SentFiles.open(store, "gpu", "i-1", tmp_path, "/home/u/work/p").files == {"a.txt": _sent(f, 5)}
    assert SentFiles.open(store, "gpu", "i-2", tmp_path, "/home/u/work/p").files == {}  # re-created lab
    assert SentFiles.open(store, "gpu", "i-1", tmp_path, "/home/u/work/other").files == {}
    assert memory.path.stat().st_mode & 0o777 == 0o600
    stale = SentFiles.open(store, "gpu", "i-1", tmp_path, "/home/u/work/p")
    memory.save({})  # another run, meanwhile
    with stale.locked():
        assert stale.files == {}  # read again under the lock: never plans from what another run replaced
    memory.path.write_text("{not json")
    assert SentFiles.open(store, "gpu", "i-1", tmp_path, "/home/u/work/p").files == {}


@pytest.mark.parametrize("bad", ["../up", "/etc", "a/../../b", "", "x\x00y", ".", "./"])  # ".": fetched nothing
def test_output_paths_must_stay_inside(bad: str) -> None:
    with pytest.raises(BadInput) as refused:
        check_paths([bad])
    assert "is not a path inside the run's folder" in str(refused.value)


def test_a_file_from_the_lab_is_never_written_through_a_local_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "work"
    root.mkdir()
    (root / "results").symlink_to(outside)
    with pytest.raises(HostError) as refused:
        _local_target(root, "results/a.txt")
    assert "is a symlink or a file" in str(refused.value)
    assert _local_target(root, "other/a.txt") == root / "other" / "a.txt"
    with pytest.raises(BadInput):
        _local_target(root, "../a.txt")  # a name from the lab is data, checked again


def test_env_values_come_from_the_callers_environment() -> None:
    assert env_values(["A_1"], {"A_1": "v", "B": "w"}) == {"A_1": "v"}
    for name, fragment in (("1A", "is not an environment variable name"), ("A=B", "not an environment"),
                           ("MISSING", "MISSING is not set")):
        with pytest.raises(BadInput) as refused:
            env_values([name], {})
        assert fragment in str(refused.value)


def test_the_labs_folder_is_named_after_the_local_one_when_plain(tmp_path: Path) -> None:
    (tmp_path / "my-proj.v2").mkdir()
    (tmp_path / "bad name;x").mkdir()
    assert remote_folder_name(tmp_path / "my-proj.v2") == "my-proj.v2"
    assert remote_folder_name(tmp_path / "bad name;x") == "workdir"


def test_files_under_an_output_path_are_recognised() -> None:
    assert under("results/a.txt", ["results"]) and under("results/a.txt", ["results/"])
    assert under("model.pt", ["model.pt"]) and not under("results2/a.txt", ["results"])
    assert not under("a.txt", [])


def test_runs_of_one_second_are_listed_in_the_order_they_started(tmp_path: Path) -> None:
    """Run ids of the same second differ only by their random part: the list goes by when each started."""
    for n, run_id in enumerate(("20261206-051500-ffffff", "20261206-051500-000000")):  # started in this order
        folder = tmp_path / run_id
        folder.mkdir()
        (folder / "argv.json").write_text(json.dumps([f"run{n}"]))
        os.utime(folder / "argv.json", ns=(0, 10**18 + n * 10**6))
    listed = subprocess.run([sys.executable, "-c", LIST_RUNS, str(tmp_path)], capture_output=True, text=True,
                            check=True)
    assert [run[0] for run in json.loads(listed.stdout)] == ["20261206-051500-ffffff", "20261206-051500-000000"]
