"""The sync loop: restore, then watch the folder (inotify through watchdog), push each path once it has been quiet
for a moment, reconcile the whole tree now and then to catch dropped events, and push everything pending before
exiting when `stop` is set (the CLI sets it on SIGTERM and SIGINT).

A file that fails to upload gets its own backoff (1 s doubling to 60 s) and is named in the status; the others
keep going. Every `check_s` one HEAD of a marker object (put at start) tells whether the bucket or prefix lost
its objects (deleted and re-created): then everything is uploaded again, and the status says so until it is;
the push on exit checks it once more. A pass that raises anything is logged and the loop goes on. A folder
replaced under the watch (another inode) is watched again and scanned whole.

Example::

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    run(SyncOptions(folder=Path("~/data").expanduser(), store=open_store(url), manifest=manifest), stop)
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from vmlab.agent.deletes import DeleteGuard, DeletePolicy
from vmlab.agent.keys import shown
from vmlab.agent.manifest import Excludes, Manifest
from vmlab.agent.marker import marker_there, put_marker
from vmlab.agent.queue import Pending, size_of
from vmlab.agent.restore import RestoreResult, restore
from vmlab.agent.status import AgentStatus
from vmlab.agent.stores import Store
from vmlab.agent.sync import PushResult, push
from vmlab.errors import VmlabError

log = logging.getLogger("vmlab.agent")

# Events that do not change a file: our own reads (and Jupyter's) would otherwise look like edits.
IGNORED_EVENTS = {"opened", "closed_no_write"}


@dataclass
class SyncOptions:
    """What `run` needs. `quiet_s`: a path is pushed once it saw no event for this long; `max_wait_s`: a path that
    never goes quiet is tried anyway after this long; `reconcile_s`: full pass against the manifest;
    `flush_s`: how long the final push may keep retrying on exit."""

    folder: Path
    store: Store
    manifest: Manifest
    excludes: Excludes = field(default_factory=Excludes)
    policy: DeletePolicy = field(default_factory=DeletePolicy)
    quiet_s: float = 0.4
    max_wait_s: float = 10.0
    reconcile_s: float = 300.0
    flush_s: float = 60.0
    tick_s: float = 0.1
    status_file: Path | None = None
    #: the journal of pending paths (None: memory only)
    queue_file: Path | None = None
    #: poll EC2's metadata service for spot notices (only happens on EC2, see vmlab.agent.imds)
    watch_imds: bool = True
    imds_interval_s: float = 5.0
    #: seconds between looks for the marker object (one HEAD); 0 never
    check_s: float = 60.0
    #: where held deletes and the delete window are kept (None: memory only)
    deletes_file: Path | None = None
    guard: DeleteGuard | None = None

    def __post_init__(self) -> None:
        if self.guard is None:
            self.guard = DeleteGuard(self.policy, self.deletes_file)


class Backoff:
    """Per-file retry times: a file that failed waits 1 s, then 2, 4, ... 60 s, while every other file goes on."""

    def __init__(self) -> None:
        self.paths: dict[str, tuple[float, float, str]] = {}  # path -> (retry at, last wait, why)

    def failed(self, rel: str, why: str, now: float) -> None:
        wait = min(self.paths[rel][1] * 2, 60.0) if rel in self.paths else 1.0
        self.paths[rel] = (now + wait, wait, why)

    def succeeded(self, rels: object) -> None:
        for rel in rels:  # type: ignore[attr-defined]
            self.paths.pop(rel, None)

    def waiting(self, rel: str, now: float) -> bool:
        return rel in self.paths and self.paths[rel][0] > now

    def reasons(self, limit: int = 20) -> dict[str, str]:
        return {shown(rel): why for rel, (_, _, why) in sorted(self.paths.items())[:limit]}


def _handler(folder: Path, excludes: Excludes, pending: Pending) -> Any:
    from watchdog.events import FileSystemEventHandler

    root = os.path.realpath(folder)

    class Handler(FileSystemEventHandler):  # type: ignore[misc]
        def on_any_event(self, event: Any) -> None:
            if event.event_type in IGNORED_EVENTS:
                return
            for raw in (event.src_path, getattr(event, "dest_path", "")):
                if not raw:
                    continue
                path = os.fsdecode(raw)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                if rel == "." or rel.startswith("../"):
                    continue
                if not excludes.matches(rel):
                    # a new or moved-in folder is walked when its path is pushed
                    pending.add(rel)

    return Handler()


class Tracker:
    """What the status file reports, updated after each pass; written at most every `every_s` unless forced."""

    def __init__(self, options: SyncOptions, every_s: float = 1.0) -> None:
        self.options = options
        self.status = AgentStatus(url=options.store.url, folder=str(options.folder))
        self.every_s = every_s
        self._written = (-1, 0.0)

    def after(self, result: PushResult, backoff: Backoff | None = None) -> None:
        _report(result)
        if result.failed:
            self.status.last_error = next(iter(result.failed.values()))
        else:
            self.status.last_sync = time.time()
            if not result.retry:
                self.status.last_error = ""
        guard = self.options.guard
        held = sorted(guard.held) if guard is not None else result.held_deletes
        self.status.held_deletes = len(held)
        self.status.held_paths = [shown(rel) for rel in held[:20]]
        self.status.stuck = backoff.reasons() if backoff is not None else {}

    def restored(self, result: RestoreResult) -> None:
        self.status.restore = result.summary()
        problems = {**result.skipped, **result.failed}
        self.status.restore_problems = {shown(key): why for key, why in sorted(problems.items())[:50]}
        self.status.conflicts = [shown(rel) for rel in result.conflicts[:50]]

    def write(self, pending: Pending, force: bool = False, extra: list[str] | None = None) -> None:
        if self.options.status_file is None:
            return
        now = time.monotonic()
        if not force and (now - self._written[1] < self.every_s
                          or (len(pending) == self._written[0] and now - self._written[1] < 30)):
            return
        paths = pending.journaled() | set(extra or ())
        self.status.pending = len(paths)
        self.status.pending_bytes = size_of(self.options.folder, paths)
        self.status.updated = time.time()
        self.status.write(self.options.status_file)
        self._written = (len(paths), now)


def run(options: SyncOptions, stop: threading.Event, restore_first: bool = True,
        on_ready: Callable[[], None] = lambda: None) -> PushResult:
    """Restore, watch and push until `stop` is set; then push everything pending. Returns the final push.
    A spot interruption or rebalance notice (on EC2) makes every later pass immediate and starts a full one.
    `on_ready` is called once the folder is restored and watched (`vmlab-agent run` then starts its command)."""
    from watchdog.observers import Observer

    from vmlab.agent.imds import InterruptionWatcher

    folder = options.folder
    pending = Pending(options.queue_file)
    if pending:
        log.info("%d paths left pending by the last run: pushing them first", len(pending))
    tracker = Tracker(options)
    if restore_first and not _restore_retrying(options, stop, pending, tracker):
        try:  # stopped while the store failed: one last try, the push is safe only after a restore
            if not _restore_retrying(options, _SET, pending, tracker):
                return _not_restored(options, pending, tracker)
            return flush(options, pending, tracker)
        finally:
            pending.close()
    folder.mkdir(parents=True, exist_ok=True)
    observer = Observer()
    handler = _handler(folder, options.excludes, pending)
    observer.schedule(handler, str(folder), recursive=True)
    observer.start()
    on_ready()
    urgent = threading.Event()
    watched = _identity(folder)

    def rewatch() -> bool:
        """Watch the folder again when it is another one now (a disk mounted over it, `mv data old; mkdir
        data`): the watch follows the inode it was given, so the new folder's changes would go unseen."""
        nonlocal watched
        now = _identity(folder)
        if now is None or now == watched:
            return False
        log.warning("%s is another folder now: watching it again and scanning it whole", folder)
        observer.unschedule_all()
        observer.schedule(handler, str(folder), recursive=True)
        watched = now
        return True

    def on_notice(text: str) -> None:
        tracker.status.interruption = text
        urgent.set()

    watcher = InterruptionWatcher(on_notice, options.imds_interval_s) if options.watch_imds else None
    if watcher is not None:
        watcher.start()
    try:
        _loop(options, stop, pending, tracker, urgent, rewatch)
    finally:
        observer.stop()
        observer.join(timeout=5)
        if watcher is not None:
            watcher.stop()
    try:
        return flush(options, pending, tracker)
    finally:
        pending.close()


def _identity(folder: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the folder (a symlink to it followed: a disk mounted elsewhere), None when missing."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _loop(options: SyncOptions, stop: threading.Event, pending: Pending, tracker: Tracker,
          urgent: threading.Event, rewatch: Callable[[], bool] = lambda: False) -> None:
    """Push what is ready until `stop`; files made before the watch started (or while the agent was down) are
    found by the first pass, a full one."""
    assert options.guard is not None
    backoff = Backoff()
    next_reconcile = 0.0
    next_check = time.monotonic() + options.check_s
    marker_ok = put_marker(options.store)
    refilled = False  # a full pass ran since the marker went missing
    while not stop.is_set():
        stop.wait(options.tick_s)
        now = time.monotonic()
        notice = urgent.is_set()
        urgent.clear()
        full = now >= next_reconcile or notice or options.guard.take_releases()
        try:
            full = rewatch() or full
        except OSError as e:  # the new folder cannot be watched yet: the next tick tries again
            log.error("cannot watch %s again: %s", options.folder, e)
        if options.check_s and marker_ok and now >= next_check:
            next_check = now + options.check_s
            if not marker_there(options, tracker):
                full, marker_ok, refilled = True, False, False
        quiet_s = 0.0 if tracker.status.interruption else options.quiet_s
        ready = pending.take_ready(quiet_s, options.max_wait_s)
        for rel in [rel for rel in ready if backoff.waiting(rel, now)]:
            ready.discard(rel)
            pending.add(rel)  # its own backoff is not over: the others go on
        if not ready and not full:
            pending.done(pending.taken())
            tracker.write(pending)
            continue
        try:
            result = push(options.folder, options.store, options.manifest, options.excludes,
                          only=None if full else ready, before_change=pending.hold, guard=options.guard,
                          settle=True, busy=partial(_busy, pending, backoff))
        except VmlabError as e:
            result = PushResult(failed={rel: str(e) for rel in ready or {""}})
            log.error("%s", e)
        except Exception as e:  # noqa: BLE001 - one bad pass (EIO, a bug) must not stop the agent with a stale status
            log.exception("sync pass failed")
            result = PushResult(failed={rel: f"{type(e).__name__}: {e}" for rel in ready or {""}})
            tracker.status.last_error = f"{type(e).__name__}: {e}"
        if full:
            next_reconcile = now + options.reconcile_s
        for rel, why in result.failed.items():
            if rel:
                backoff.failed(rel, why, now)
        backoff.succeeded([*result.uploaded, *result.deleted, *(ready - set(result.failed))])
        refilled = refilled or full
        if not marker_ok and refilled and not result.pending and not backoff.paths:
            marker_ok = put_marker(options.store)  # everything is there again
            tracker.status.lost = tracker.status.lost and not marker_ok
        tracker.after(result, backoff)
        for rel in result.pending:
            if rel:
                pending.add(rel)
        pending.done(pending.taken())  # this loop is the only taker: all of them were this push's
        tracker.write(pending, force=True)


def _busy(pending: Pending, backoff: Backoff) -> bool:
    """Events wait that no backoff holds back: a burst of deletes may not be over."""
    now = time.monotonic()
    return any(not backoff.waiting(rel, now) for rel in pending.waiting())


def _restore_retrying(options: SyncOptions, stop: threading.Event, pending: Pending, tracker: Tracker,
                      max_wait_s: float = 60.0) -> bool:
    """Restore, retrying a store that fails (missing bucket, refused credentials, outage) with exponential backoff
    until it works or `stop` is set (then False). Each failure is one logged line and the status file's
    `last_error`; nothing local is touched, since a failed listing says nothing about what to delete."""
    wait = 1.0
    while True:
        try:
            restored = restore(options.folder, options.store, options.manifest, options.excludes,
                               local_changes=pending.journaled())
        except Exception as e:  # noqa: BLE001 - a store error, EIO, EACCES: retried, the status says why
            log.error("restore from %s failed, retrying in %.0fs: %s", options.store.url, wait, e)
            tracker.status.last_error = str(e) if isinstance(e, VmlabError) else f"{type(e).__name__}: {e}"
            tracker.write(pending, force=True)
            if stop.wait(wait):
                return False
            wait = min(wait * 2, max_wait_s)
            continue
        log.info("restore from %s: %s", options.store.url, restored.summary())
        tracker.restored(restored)
        tracker.status.last_error = ""
        return True


#: a stop already asked: `_restore_retrying` with it tries once
_SET = threading.Event()
_SET.set()


def _not_restored(options: SyncOptions, pending: Pending, tracker: Tracker) -> PushResult:
    """No restore succeeded, not even the one tried at the stop: the folder was never compared with the store, so
    a push would put its files (an image's, an old volume's) over newer copies there, with no conflict copy. Nothing
    is pushed; the journal keeps its paths for the next start, which restores first."""
    why = "stopped before the restore succeeded: nothing pushed (the folder was never compared with the store)"
    log.error("%s", why)
    tracker.status.last_error = why
    tracker.status.stopped = True
    tracker.write(pending, force=True)
    return PushResult(failed={"": why})


def flush(options: SyncOptions, pending: Pending, tracker: Tracker | None = None) -> PushResult:
    """The push on exit: a full pass (so nothing pending or missed is lost), repeated while files change under
    it or the store fails, for at most `flush_s`. Deletes are judged at once (no settling), by the same rules.
    The journal is emptied only when nothing is left."""
    tracker = tracker or Tracker(options)
    deadline = time.monotonic() + options.flush_s
    delay = 0.2
    assert options.guard is not None
    options.guard.take_releases()
    if options.check_s:
        marker_there(options, tracker)  # a bucket re-created since the last check: the final push refills it
    while True:
        pending.take_all()
        try:
            result = push(options.folder, options.store, options.manifest, options.excludes,
                          before_change=pending.hold, guard=options.guard)
        except VmlabError as e:
            result = PushResult(failed={"": str(e)})
            log.error("%s", e)
        except Exception as e:  # noqa: BLE001 - retried until flush_s; the final status says not synced
            log.exception("final push failed")
            result = PushResult(failed={"": f"{type(e).__name__}: {e}"})
        tracker.after(result)
        if not result.pending:
            pending.done(pending.journaled())
            break
        if time.monotonic() + delay > deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
    if tracker.status.lost and not result.pending and put_marker(options.store):
        tracker.status.lost = False  # everything is there again
    if result.pending:
        log.error("exiting with %d files not synced: %s", len(result.pending),
                  ", ".join(shown(rel) for rel in result.pending[:10]))
    tracker.status.stopped = True
    tracker.write(pending, force=True, extra=[rel for rel in result.pending if rel])
    return result


def _report(result: PushResult) -> None:
    if result.uploaded or result.deleted:
        log.info("pushed %d, deleted %d%s", len(result.uploaded), len(result.deleted),
                 f", {len(result.held_deletes)} deletes held" if result.held_deletes else "")
    for rel, why in result.failed.items():
        if rel:
            log.warning("%s not synced: %s", shown(rel), why)
