"""The sync loop: restore, then watch the folder (inotify through watchdog), push each path once it has been quiet
for a moment, reconcile the whole tree now and then to catch dropped events, and push everything pending before
exiting when `stop` is set (the CLI sets it on SIGTERM and SIGINT).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmlab.agent.manifest import Excludes, Manifest
from vmlab.agent.queue import Pending, size_of
from vmlab.agent.status import AgentStatus
from vmlab.agent.stores import Store
from vmlab.agent.sync import DeletePolicy, PushResult, push, restore
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

    def after(self, result: PushResult) -> None:
        _report(result)
        if result.failed:
            self.status.last_error = next(iter(result.failed.values()))
        else:
            self.status.last_sync = time.time()
            if not result.retry:
                self.status.last_error = ""
        self.status.held_deletes = len(result.held_deletes)

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


def run(options: SyncOptions, stop: threading.Event, restore_first: bool = True) -> PushResult:
    """Restore, watch and push until `stop` is set; then push everything pending. Returns the final push.
    A spot interruption or rebalance notice (on EC2) makes every later pass immediate and starts a full one."""
    from watchdog.observers import Observer

    from vmlab.agent.imds import InterruptionWatcher

    folder = options.folder
    pending = Pending(options.queue_file)
    if pending:
        log.info("%d paths left pending by the last run: pushing them first", len(pending))
    tracker = Tracker(options)
    if restore_first and not _restore_retrying(options, stop, pending, tracker):
        try:
            return flush(options, pending, tracker)
        finally:
            pending.close()
    folder.mkdir(parents=True, exist_ok=True)
    observer = Observer()
    observer.schedule(_handler(folder, options.excludes, pending), str(folder), recursive=True)
    observer.start()
    urgent = threading.Event()

    def on_notice(text: str) -> None:
        tracker.status.interruption = text
        urgent.set()

    watcher = InterruptionWatcher(on_notice, options.imds_interval_s) if options.watch_imds else None
    if watcher is not None:
        watcher.start()
    try:
        # Files made before the watch started (or while the agent was down) are found by a full pass.
        retry_at = 0.0
        next_reconcile = 0.0
        backoff = 1.0
        while not stop.is_set():
            stop.wait(options.tick_s)
            now = time.monotonic()
            notice = urgent.is_set()
            urgent.clear()
            quiet_s = 0.0 if tracker.status.interruption else options.quiet_s
            ready = pending.take_ready(quiet_s, options.max_wait_s)
            full = now >= next_reconcile or notice
            if not ready and not full:
                tracker.write(pending)
                continue
            if now < retry_at and not full:
                for rel in ready:
                    pending.add(rel)
                pending.done(ready)
                tracker.write(pending)
                continue
            try:
                result = push(folder, options.store, options.manifest, options.excludes,
                              only=None if full else ready, policy=options.policy, before_change=pending.hold)
            except VmlabError as e:
                result = PushResult(failed={rel: str(e) for rel in ready or {""}})
                log.error("%s", e)
            if full:
                next_reconcile = now + options.reconcile_s
            tracker.after(result)
            if result.failed:
                retry_at = now + backoff
                backoff = min(backoff * 2, 60.0)
            else:
                backoff = 1.0
            for rel in result.pending:
                if rel:
                    pending.add(rel)
            pending.done(pending.taken())  # this loop is the only taker: all of them were this push's
            tracker.write(pending, force=True)
    finally:
        observer.stop()
        observer.join(timeout=5)
        if watcher is not None:
            watcher.stop()
    try:
        return flush(options, pending, tracker)
    finally:
        pending.close()


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
        except VmlabError as e:
            log.error("restore from %s failed, retrying in %.0fs: %s", options.store.url, wait, e)
            tracker.status.last_error = str(e)
            tracker.write(pending, force=True)
            if stop.wait(wait):
                return False
            wait = min(wait * 2, max_wait_s)
            continue
        log.info("restored %d files (%d in sync, %d kept local, %d failed) from %s", len(restored.downloaded),
                 restored.in_sync, len(restored.kept_local), len(restored.failed), options.store.url)
        tracker.status.last_error = ""
        return True


def flush(options: SyncOptions, pending: Pending, tracker: Tracker | None = None) -> PushResult:
    """The push on exit: a full pass (so nothing pending or missed is lost), repeated while files change under
    it or the store fails, for at most `flush_s`. The journal is emptied only when nothing is left."""
    tracker = tracker or Tracker(options)
    deadline = time.monotonic() + options.flush_s
    delay = 0.2
    while True:
        pending.take_all()
        try:
            result = push(options.folder, options.store, options.manifest, options.excludes, policy=options.policy,
                          before_change=pending.hold)
        except VmlabError as e:
            result = PushResult(failed={"": str(e)})
            log.error("%s", e)
        tracker.after(result)
        if not result.pending:
            pending.done(pending.journaled())
            break
        if time.monotonic() + delay > deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
    if result.pending:
        log.error("exiting with %d files not synced: %s", len(result.pending), ", ".join(result.pending[:10]))
    tracker.status.stopped = True
    tracker.write(pending, force=True, extra=[rel for rel in result.pending if rel])
    return result


def _report(result: PushResult) -> None:
    if result.uploaded or result.deleted:
        log.info("pushed %d, deleted %d%s", len(result.uploaded), len(result.deleted),
                 f", {len(result.held_deletes)} deletes held" if result.held_deletes else "")
