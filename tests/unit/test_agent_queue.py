"""The journal of pending paths: what a crash leaves is what the next run pushes."""

from __future__ import annotations

import time
from pathlib import Path

from vmlab.agent import queue
from vmlab.agent.queue import Pending, replay


def test_taken_paths_stay_journaled_until_done(tmp_path: Path) -> None:
    journal = tmp_path / "q.jsonl"
    q = Pending(journal)
    q.add("a.txt", at=0)
    q.add("dir/b.txt", at=0)
    assert q.take_ready(quiet_s=0.1, max_wait_s=10) == {"a.txt", "dir/b.txt"}
    # a crash now (the push did not finish) leaves both for the next run
    assert replay(journal) == {"a.txt", "dir/b.txt"}
    q.add("a.txt")  # written again while its push ran
    q.done({"a.txt", "dir/b.txt"})
    assert q.journaled() == {"a.txt"}
    q.close()
    assert replay(journal) == {"a.txt"}


def test_hold_journals_paths_a_full_pass_found(tmp_path: Path) -> None:
    journal = tmp_path / "q.jsonl"
    q = Pending(journal)
    q.hold("found-by-reconcile.txt")
    assert replay(journal) == {"found-by-reconcile.txt"}
    q.done(q.taken())
    assert replay(journal) == set()


def test_ready_waits_for_quiet_or_max_wait() -> None:
    q = Pending()
    now = time.monotonic()
    q.add("busy", at=now - 20)
    q.add("busy", at=now)  # still being written, but waiting for 20s
    q.add("fresh", at=now)
    q.add("quiet", at=now - 1)
    assert q.take_ready(quiet_s=0.5, max_wait_s=10) == {"busy", "quiet"}
    assert len(q) == 3  # "fresh" waits, two are taken


def test_torn_last_line_and_odd_names_are_handled(tmp_path: Path) -> None:
    journal = tmp_path / "q.jsonl"
    q = Pending(journal)
    q.add('new\nline "quoted".txt')
    q.add("ünïcode/ok")
    q.close()
    with journal.open("a") as f:
        f.write('["+", "cut sh')  # a power cut mid-line
    assert replay(journal) == {'new\nline "quoted".txt', "ünïcode/ok"}


def test_journal_is_compacted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(queue, "COMPACT_SLACK", 10)
    journal = tmp_path / "q.jsonl"
    q = Pending(journal)
    for i in range(100):
        q.add(f"f{i}")
        q.take_all()
        q.done({f"f{i}"})
    q.add("last")
    assert len(journal.read_text().splitlines()) < 30
    q.close()
    assert replay(journal) == {"last"}
    assert Pending(journal).journaled() == {"last"}


def test_size_of_counts_existing_files(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"12345")
    assert queue.size_of(tmp_path, ["a", "gone"]) == 5
