"""Which deletes the agent may send to the store, judged over a sliding window rather than per batch.

The rules (also in docs/agent.md and `vmlab-agent sync --help`):

- A delete waits until no new delete has been seen for `settle_s` (3 s) and no other change is queued (at
  most 10 x `settle_s`), so a burst (`rm -rf`, or deletes paced by `xargs -n 40 ... sleep 0.7`) is judged as
  one.
- The deletes of the last `window_s` (10 minutes: the ones sent and the ones waiting) are held, all of them,
  when there are more than `min_count` (10) and they are more than `max_share` (half) of the files the manifest
  knew at the start of the window. A full pass that finds no file at all while the manifest knows some holds
  every delete too (an unmounted or wiped disk).
- Held deletes stay held (and counted in the status, whatever else is pushed) until a person runs
  `vmlab-agent release-deletes`, or the files come back. While any are held, new deletes join them.

The held paths and the window's sent deletes are kept in a small JSON file in the state folder, so a restart
neither forgets a hold nor restarts the window. `release-deletes` writes the paths it releases next to it.

Example::

    guard = DeleteGuard(DeletePolicy(), state / "deletes-abc.json")
    send = guard.judge(missing={"a.txt"}, present=set(), known=40, now=time.time())
    ... delete the keys in send ...; guard.sent(len(send), now)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from vmlab.fileio import write_atomic


@dataclass(frozen=True)
class DeletePolicy:
    """When deletes are held (see the module docstring). `force` sends every delete at once (`--force-deletes`).
    Example: `DeletePolicy(max_share=0.25, min_count=5)`."""

    max_share: float = 0.5
    min_count: int = 10
    window_s: float = 600.0
    settle_s: float = 3.0
    force: bool = False


class DeleteGuard:
    """The state of the rules: deletes waiting to settle, deletes held, and deletes sent within the window."""

    def __init__(self, policy: DeletePolicy | None = None, path: Path | None = None) -> None:
        self.policy = policy or DeletePolicy()
        self.path = path
        self.held: set[str] = set()
        self.waiting: dict[str, float] = {}  # path -> when its delete was first seen
        self.last_seen = 0.0
        self.window: list[tuple[float, int, int]] = []  # (when, deletes sent, files known before)
        self.released: set[str] = set()
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
            self.held = set(data.get("held", []))
            self.window = [(float(t), int(n), int(k)) for t, n, k in data.get("window", [])]
            self.released = set(data.get("released", []))
        except (OSError, ValueError, TypeError):
            pass
        self.take_releases()  # written while no agent ran

    def save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(self.path, json.dumps({"held": sorted(self.held), "window": self.window,
                                                "released": sorted(self.released)}))

    def take_releases(self) -> bool:
        """Read a release written by `release-deletes` (True when there was one)."""
        if self.path is None:
            return False
        release = release_file(self.path)
        try:
            paths = json.loads(release.read_text())
        except (OSError, ValueError):
            return False
        release.unlink(missing_ok=True)
        self.released |= set(paths)
        self.held -= self.released
        self.save()
        return True

    def judge(self, missing: Iterable[str], present: Iterable[str], known: int, now: float,
              settle: bool = True, everything_gone: bool = False, busy: bool = False,
              gone_now: Callable[[], int] | None = None) -> list[str]:
        """The deletes to send now, out of `missing` (known paths gone from the folder, in this pass's scope).
        `present`: paths of this scope that exist (a held or waiting one that came back is dropped); `known`:
        files the manifest knows now; `settle`: wait for a burst to end (off for a one-time or final push);
        `busy`: more events are queued (maybe more deletes): the burst is not over; `gone_now()`: how many known
        files are missing from the whole folder right now, asked just before a batch would be sent (a slow pass
        under load can see only the start of an `rm -rf`: the rest of it must count against the same limit)."""
        changed = False
        present = set(present)
        for rel in present:
            self.waiting.pop(rel, None)
            if rel in self.held:
                self.held.discard(rel)
                changed = True
        if self.released & present:  # released, then came back: a later delete of it is judged afresh
            self.released -= present
            changed = True
        missing = set(missing)
        released = sorted(missing & self.released)
        if released:
            self.released -= missing
            changed = True
        missing -= set(released)
        new = missing - self.held - set(self.waiting)
        for rel in new:
            self.waiting[rel] = now
        if new or (busy and self.waiting):
            self.last_seen = now
        self.window = [w for w in self.window if now - w[0] < self.policy.window_s]
        oldest = min(self.waiting.values(), default=now)
        # a folder that never goes quiet (a job writing a log) must not hold a delete back forever
        ready = (settle is False or now - self.last_seen >= self.policy.settle_s or self.policy.force
                 or now - oldest >= self.policy.settle_s * 10)
        if not self.waiting or not ready:
            if changed:
                self.save()
            return released
        batch = sorted(rel for rel in self.waiting if rel in missing)
        self.waiting = {rel: t for rel, t in self.waiting.items() if rel not in missing}
        if not batch:
            if changed:
                self.save()
            return released
        if not self.policy.force and (self.held or everything_gone or self._too_many(len(batch), known)
                                      or (gone_now is not None and self._too_many(gone_now(), known))):
            self.held |= set(batch)
            self.save()
            return released
        if changed:
            self.save()
        return released + batch

    def _too_many(self, count: int, known: int) -> bool:
        total = count + sum(n for _, n, _ in self.window)
        before = max([known] + [k for _, _, k in self.window])
        return total > self.policy.min_count and total > self.policy.max_share * before

    def sent(self, count: int, known_before: int, now: float) -> None:
        """Record `count` deletes sent (the manifest knew `known_before` files before them)."""
        if count:
            self.window.append((now, count, known_before))
            self.save()

    @property
    def waiting_count(self) -> int:
        return len(self.waiting)


def release_file(path: Path) -> Path:
    return path.with_name(path.name.replace("deletes-", "release-", 1))


def release(path: Path) -> list[str]:
    """Release every delete held in the guard file `path` (what `vmlab-agent release-deletes` does); the agent
    sends them within a second, or at its next start. Returns the released paths."""
    try:
        held = sorted(json.loads(path.read_text()).get("held", []))
    except (OSError, ValueError):
        return []
    if held:
        # readable by the agent's user when root runs `release-deletes` (it holds paths, never contents)
        write_atomic(release_file(path), json.dumps(held), mode=0o644)
    return held

