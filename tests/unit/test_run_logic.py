"""The pure parts of `vmlab run`: gitignore-style excludes, the quick check that picks changed files, output paths
that must stay inside their folder (also through local symlinks), env names and values."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmlab.errors import BadInput, HostError
from vmlab.workflows.outputs import _local_target, check_paths
from vmlab.workflows.runjob import env_values
from vmlab.workflows.runlab import remote_folder_name
from vmlab.workflows.workdir import LocalFile, changed, excluded, parse_rules, scan, under

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


def test_only_files_whose_size_or_second_differ_are_changed() -> None:
    local = {"same": LocalFile(Path("a"), 3, 100, 0o644), "newer": LocalFile(Path("b"), 3, 101, 0o644),
             "bigger": LocalFile(Path("c"), 4, 100, 0o644), "new": LocalFile(Path("d"), 1, 1, 0o644)}
    remote = {"same": [3, 100], "newer": [3, 100], "bigger": [3, 100], "gone-locally": [1, 1]}
    assert changed(local, remote) == ["newer", "bigger", "new"]


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
