"""The paths waiting to be pushed, kept in memory for the loop and in a journal on disk so a crash loses none.

A path is added when watchdog reports an event for it, taken when it has been quiet long enough, and marked done
once the push that took it has finished. Until then it stays in the journal: a `kill -9` (or a crash, or an
out-of-memory kill) between an event and the end of its push leaves the path there, and the next start pushes it
first and keeps `restore` from overwriting it. The journal is an append-only file of JSON lines (`["+", path]`,
`["-", path]`), flushed to the kernel on every line (that survives the death of the process; only a power cut can
lose the last lines, and the full pass at start-up covers those) and compacted when it grows.

Example::

    queue = Pending(state / "queue-abc.jsonl")   # replays what an earlier run left
    queue.add("notebooks/a.ipynb")
    ready = queue.take_ready(quiet_s=0.4, max_wait_s=10)
    ... push(only=ready) ...
    queue.done(ready)
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from vmlab.fileio import write_atomic

# Rewrite the journal with only the live paths once it holds this many lines more than live paths.
COMPACT_SLACK = 10_000


class Pending:
    """Relative paths with a recent event (and when they were first and last seen), plus the paths taken by a
    push that has not finished. Thread-safe: watchdog's thread adds, the loop takes. Without a journal path it is
    memory-only."""

    def __init__(self, journal: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._paths: dict[str, tuple[float, float]] = {}
        self._taken: set[str] = set()
        self._journal = journal
        self._file: IO[str] | None = None
        self._lines = 0
        if journal is not None:
            now = time.monotonic()
            for rel in replay(journal):
                self._paths[rel] = (now, now)
            self._compact()

    def _compact(self) -> None:
        """Rewrite the journal with the live paths only (caller holds the lock, or no thread runs yet)."""
        if self._journal is None:
            return
        if self._file is not None:
            self._file.close()
        live = sorted(set(self._paths) | self._taken)
        self._journal.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self._journal, "".join(json.dumps(["+", rel]) + "\n" for rel in live))
        self._file = self._journal.open("a", encoding="utf-8")
        self._lines = len(live)

    def _log(self, op: str, rels: Iterable[str]) -> None:
        if self._file is None:
            return
        lines = "".join(json.dumps([op, rel]) + "\n" for rel in rels)
        if not lines:
            return
        self._file.write(lines)
        self._file.flush()
        self._lines += lines.count("\n")
        if self._lines > len(self._paths) + len(self._taken) + COMPACT_SLACK:
            self._compact()

    def add(self, rel: str, at: float | None = None) -> None:
        now = time.monotonic() if at is None else at
        with self._lock:
            known = rel in self._paths or rel in self._taken
            first, _ = self._paths.get(rel, (now, now))
            self._paths[rel] = (min(first, now), now)
            if not known:
                self._log("+", [rel])

    def take_ready(self, quiet_s: float, max_wait_s: float) -> set[str]:
        """Paths quiet for `quiet_s` (or waiting for `max_wait_s`); they stay in the journal until `done`."""
        now = time.monotonic()
        with self._lock:
            ready = {rel for rel, (first, last) in self._paths.items()
                     if now - last >= quiet_s or now - first >= max_wait_s}
            for rel in ready:
                del self._paths[rel]
            self._taken |= ready
        return ready

    def take_all(self) -> set[str]:
        with self._lock:
            paths = set(self._paths)
            self._taken |= paths
            self._paths = {}
        return paths

    def hold(self, rel: str) -> None:
        """Journal `rel` as taken by the running push (one that found it without an event: a full pass)."""
        with self._lock:
            if rel not in self._paths and rel not in self._taken:
                self._log("+", [rel])
            self._taken.add(rel)

    def waiting(self) -> set[str]:
        """Paths with an event that no push has taken yet."""
        with self._lock:
            return set(self._paths)

    def taken(self) -> set[str]:
        with self._lock:
            return set(self._taken)

    def done(self, rels: Iterable[str]) -> None:
        """The push that took `rels` finished (synced, or held back for a reason that a retry will not change).
        A path with a new event since it was taken stays queued."""
        with self._lock:
            finished = [rel for rel in rels if rel in self._taken]
            self._taken.difference_update(finished)
            self._log("-", [rel for rel in finished if rel not in self._paths])

    def journaled(self) -> set[str]:
        """Every path not yet synced: waiting, and taken by an unfinished push."""
        with self._lock:
            return set(self._paths) | self._taken

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._paths) + len(self._taken)


def replay(journal: Path) -> set[str]:
    """The paths a journal holds as not yet synced (read only; an unfinished last line is skipped)."""
    live: set[str] = set()
    try:
        text = journal.read_text(errors="replace")
    except FileNotFoundError:
        return live
    for line in text.splitlines():
        try:
            op, rel = json.loads(line)
        except (ValueError, TypeError):
            continue  # a line cut short by a power loss
        if op == "+":
            live.add(rel)
        elif op == "-":
            live.discard(rel)
    return live


def size_of(folder: Path, rels: Iterable[str]) -> int:
    """Bytes of the files among `rels` that exist (for the status file's pending bytes)."""
    total = 0
    for rel in rels:
        try:
            total += os.lstat(folder / rel).st_size
        except OSError:
            continue
    return total
