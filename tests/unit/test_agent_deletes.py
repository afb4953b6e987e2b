"""The delete rules (vmlab.agent.deletes), the escaped keys of non-UTF-8 names (vmlab.agent.keys) and the
conflict copy's name: pure logic, no store."""

from __future__ import annotations

import os
from pathlib import Path

from vmlab.agent.deletes import DeleteGuard, DeletePolicy, release
from vmlab.agent.keys import key_of, rel_of, shown
from vmlab.agent.restore import conflict_name


def paths(n: int, start: int = 0) -> set[str]:
    return {f"f{i}" for i in range(start, start + n)}


def test_a_burst_waits_to_settle_then_is_judged_whole() -> None:
    guard = DeleteGuard(DeletePolicy(settle_s=3))
    assert guard.judge(paths(40), set(), 2000, now=0.0) == []  # settling
    assert guard.judge(paths(80), set(), 2000, now=2.0) == []  # more came: still settling
    assert guard.judge(paths(80), set(), 2000, now=4.0, busy=True) == []  # events queued: not over
    assert guard.judge(paths(80), set(), 2000, now=7.5) == sorted(paths(80))  # 4% of the tree: sent
    busy = DeleteGuard(DeletePolicy(settle_s=3))
    assert busy.judge({"a"}, set(), 100, now=0.0, busy=True) == []
    assert busy.judge({"a"}, set(), 100, now=29.0, busy=True) == []
    assert busy.judge({"a"}, set(), 100, now=30.0, busy=True) == ["a"]  # a folder that never goes quiet


def test_deletes_over_the_window_are_held_and_new_ones_join_them(tmp_path: Path) -> None:
    guard = DeleteGuard(DeletePolicy(settle_s=0), tmp_path / "deletes-x.json")
    sent = guard.judge(paths(9), set(), 20, now=0.0)
    assert len(sent) == 9  # 9 <= min_count
    guard.sent(9, 20, 0.0)
    assert guard.judge(paths(9, 9), set(), 11, now=10.0) == []  # 18 of 20 within the window
    assert guard.held == paths(9, 9)
    assert guard.judge({"other"}, set(), 11, now=20.0) == []  # while any is held, new ones join
    assert guard.judge(set(), {"f9"}, 11, now=21.0) == []  # a held file that came back is dropped
    assert "f9" not in guard.held
    # across a restart, and released by a person
    again = DeleteGuard(DeletePolicy(settle_s=0), tmp_path / "deletes-x.json")
    assert again.held == guard.held
    assert sorted(release(tmp_path / "deletes-x.json")) == sorted(guard.held)
    assert again.take_releases() and again.held == set()
    assert sorted(again.judge(paths(8, 10) | {"other"}, set(), 11, now=22.0)) == sorted(paths(8, 10) | {"other"})


def test_the_window_slides_and_an_empty_folder_holds_everything() -> None:
    guard = DeleteGuard(DeletePolicy(settle_s=0, window_s=600))
    guard.sent(15, 40, 0.0)
    assert guard.judge(paths(15), set(), 25, now=10.0) == []  # 30 of 40 within 10 minutes
    later = DeleteGuard(DeletePolicy(settle_s=0, window_s=600))
    later.sent(15, 40, 0.0)
    assert len(later.judge(paths(15), set(), 40, now=700.0)) == 15  # the first ones left the window
    assert DeleteGuard(DeletePolicy(settle_s=0)).judge(paths(3), set(), 3, 0.0, everything_gone=True) == []
    assert len(DeleteGuard(DeletePolicy(force=True)).judge(paths(30), set(), 30, 0.0)) == 30


def test_non_utf8_names_get_reversible_keys() -> None:
    for raw in (b"caf\xe9.txt", "x\uf7e9y\uf700".encode(), b"plain.txt", "é/ü".encode(), b"\xff\xfe/\x80"):
        rel = os.fsdecode(raw)
        key = key_of(rel)
        key.encode("utf-8")  # a valid key
        assert rel_of(key) == rel and os.fsencode(rel_of(key)) == raw
    assert key_of("notes.ipynb") == "notes.ipynb" and key_of("é.txt") == "é.txt"
    assert key_of(os.fsdecode(b"caf\xe9.txt")) == "caf\uf7e9.txt"
    assert shown(os.fsdecode(b"caf\xe9.txt")) == "caf\\xe9.txt"


def test_conflict_copy_names() -> None:
    assert conflict_name("notes.ipynb", "lab-1", 0) == "notes.conflict-lab-1-19700101T000000Z.ipynb"
    assert conflict_name("Makefile", "h", 0) == "Makefile.conflict-h-19700101T000000Z"
    assert conflict_name(".bashrc", "h", 0) == ".bashrc.conflict-h-19700101T000000Z"
    assert conflict_name("a.tar.gz", "my host/x", 0) == "a.tar.conflict-my_host_x-19700101T000000Z.gz"


def test_released_and_held_state_is_saved_and_a_file_that_came_back_is_judged_again(tmp_path: Path) -> None:
    state = tmp_path / "deletes-y.json"
    guard = DeleteGuard(DeletePolicy(settle_s=0, min_count=0), state)
    assert guard.judge({"h"}, set(), 1, now=0.0, everything_gone=True) == []
    assert guard.held == {"h"}
    # h came back while another delete goes through in the same pass: the saved state drops h too
    assert guard.judge({"w"}, {"h"}, 10, now=1.0) == ["w"]
    assert DeleteGuard(DeletePolicy(), state).held == set()
    # a release survives a restart before the delete is sent
    guard.judge({"h"}, set(), 1, now=2.0, everything_gone=True)
    release(state)
    assert guard.take_releases()
    restarted = DeleteGuard(DeletePolicy(settle_s=0), state)
    assert restarted.released == {"h"}
    # a released path that came back loses its release: its next delete is judged by the rules
    restarted.judge(set(), {"h"}, 1, now=3.0)
    assert restarted.released == set()
    assert DeleteGuard(DeletePolicy(), state).released == set()
    assert restarted.judge({"h"}, set(), 1, now=4.0, everything_gone=True) == []


def test_long_non_ascii_names_are_cut_by_bytes_keeping_the_suffix(tmp_path: Path) -> None:
    from vmlab.agent import safefs

    name = "é" * 120 + ".ipynb"  # 246 bytes: a valid name, 126 characters
    copy = conflict_name(name, "lab-1", 0)
    assert len(os.fsencode(copy)) <= 255 and copy.endswith(".conflict-lab-1-19700101T000000Z.ipynb")
    undecodable = os.fsdecode(b"\xe9" * 250)
    assert len(os.fsencode(conflict_name(undecodable, "h", 0))) <= 255
    # a restore of a 254-byte name: its temporary must fit too
    long = "é" * 127
    safefs.write_under(tmp_path, long, lambda f: f.write(b"x"))
    assert (tmp_path / long).read_bytes() == b"x"


def test_a_batch_is_held_when_the_whole_folder_shows_a_mass_delete() -> None:
    """A slow pass under load may see only the start of an `rm -rf` (300 of 2,000 files): what is gone from the
    whole folder when the batch would be sent decides, so those 300 are held with the rest, not sent first."""
    guard = DeleteGuard(DeletePolicy())
    first = [f"f{i}" for i in range(300)]
    assert guard.judge(first, [], 2000, 0.0) == []  # waiting for the burst to settle
    sent = guard.judge(first, [], 2000, 10.0, gone_now=lambda: 1800)
    assert sent == [] and guard.held == set(first)
    calm = DeleteGuard(DeletePolicy())
    calm.judge(first, [], 2000, 0.0)
    assert calm.judge(first, [], 2000, 10.0, gone_now=lambda: 300) == sorted(first)
