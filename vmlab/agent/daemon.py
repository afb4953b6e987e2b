"""The sync loop: restore, then watch the folder (inotify through watchdog), push each path once it has been quiet
for a moment, reconcile the whole tree now and then to catch dropped events, and push everything pending before
exiting when `stop` is set (the CLI sets it on SIGTERM and SIGINT).

Example::

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    run(SyncOptions(folder=Path("~/data").expanduser(), store=open_store(url), manifest=manifest), stop)
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmlab.agent.manifest import Excludes, Manifest
from vmlab.agent.stores import Store
from vmlab.agent.sync import DeletePolicy, PushResult, push, restore
from vmlab.errors import VmlabError
from vmlab.fileio import write_atomic

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


class Pending:
    """Relative paths with a recent event, and when they were first and last seen. Thread-safe: watchdog's
    thread adds, the loop takes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paths: dict[str, tuple[float, float]] = {}

    def add(self, rel: str, at: float | None = None) -> None:
        now = time.monotonic() if at is None else at
        with self._lock:
            first, _ = self._paths.get(rel, (now, now))
            self._paths[rel] = (min(first, now), now)

    def take_ready(self, quiet_s: float, max_wait_s: float) -> set[str]:
        now = time.monotonic()
        with self._lock:
            ready = {rel for rel, (first, last) in self._paths.items()
                     if now - last >= quiet_s or now - first >= max_wait_s}
            for rel in ready:
                del self._paths[rel]
        return ready

    def take_all(self) -> set[str]:
        with self._lock:
            paths, self._paths = set(self._paths), {}
        return paths

    def __len__(self) -> int:
        with self._lock:
            return len(self._paths)


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


def run(options: SyncOptions, stop: threading.Event, restore_first: bool = True) -> PushResult:
    """Restore, watch and push until `stop` is set; then push everything pending. Returns the final push."""
    from watchdog.observers import Observer

    folder = options.folder
    if restore_first and not _restore_retrying(options, stop):
        return flush(options, Pending())
    folder.mkdir(parents=True, exist_ok=True)
    pending = Pending()
    observer = Observer()
    observer.schedule(_handler(folder, options.excludes, pending), str(folder), recursive=True)
    observer.start()
    last_error = ""
    try:
        # Files made before the watch started (or while the agent was down) are found by a full pass.
        retry_at = 0.0
        next_reconcile = 0.0
        backoff = 1.0
        while not stop.is_set():
            stop.wait(options.tick_s)
            now = time.monotonic()
            ready = pending.take_ready(options.quiet_s, options.max_wait_s)
            full = now >= next_reconcile
            if not ready and not full:
                continue
            if now < retry_at and not full:
                for rel in ready:
                    pending.add(rel)
                continue
            try:
                result = push(folder, options.store, options.manifest, options.excludes,
                              only=None if full else ready, policy=options.policy)
            except VmlabError as e:
                result = PushResult(failed={rel: str(e) for rel in ready or {""}})
                log.error("%s", e)
            if full:
                next_reconcile = now + options.reconcile_s
            _report(result)
            if result.failed:
                last_error = next(iter(result.failed.values()))
                retry_at = now + backoff
                backoff = min(backoff * 2, 60.0)
            else:
                backoff = 1.0
            for rel in result.pending:
                pending.add(rel)
            _write_status(options, pending, last_error)
    finally:
        observer.stop()
        observer.join(timeout=5)
    return flush(options, pending)


def _restore_retrying(options: SyncOptions, stop: threading.Event, max_wait_s: float = 60.0) -> bool:
    """Restore, retrying a store that fails (missing bucket, refused credentials, outage) with exponential backoff
    until it works or `stop` is set (then False). Each failure is one logged line and the status file's
    `last_error`; nothing local is touched, since a failed listing says nothing about what to delete."""
    wait = 1.0
    while True:
        try:
            restored = restore(options.folder, options.store, options.manifest, options.excludes)
        except VmlabError as e:
            log.error("restore from %s failed, retrying in %.0fs: %s", options.store.url, wait, e)
            _write_status(options, Pending(), str(e))
            if stop.wait(wait):
                return False
            wait = min(wait * 2, max_wait_s)
            continue
        log.info("restored %d files (%d in sync, %d kept local, %d failed) from %s", len(restored.downloaded),
                 restored.in_sync, len(restored.kept_local), len(restored.failed), options.store.url)
        return True


def flush(options: SyncOptions, pending: Pending) -> PushResult:
    """The push on exit: a full pass (so nothing pending or missed is lost), repeated while files change under
    it or the store fails, for at most `flush_s`."""
    deadline = time.monotonic() + options.flush_s
    delay = 0.2
    while True:
        pending.take_all()
        try:
            result = push(options.folder, options.store, options.manifest, options.excludes, policy=options.policy)
        except VmlabError as e:
            result = PushResult(failed={"": str(e)})
            log.error("%s", e)
        _report(result)
        if not result.pending or time.monotonic() + delay > deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
    if result.pending:
        log.error("exiting with %d files not synced: %s", len(result.pending), ", ".join(result.pending[:10]))
    _write_status(options, pending, next(iter(result.failed.values()), ""), final=result)
    return result


def _report(result: PushResult) -> None:
    if result.uploaded or result.deleted:
        log.info("pushed %d, deleted %d%s", len(result.uploaded), len(result.deleted),
                 f", {len(result.held_deletes)} deletes held" if result.held_deletes else "")


def _write_status(options: SyncOptions, pending: Pending, last_error: str, final: PushResult | None = None) -> None:
    """A small JSON file for `vmlab ls`/`status` to read: pending count, held deletes, last error."""
    if options.status_file is None:
        return
    data = {
        "url": options.store.url,
        "folder": str(options.folder),
        "pending": len(pending) + (len(final.pending) if final else 0),
        "last_error": last_error,
        "updated": time.time(),
        "stopped": final is not None,
    }
    path = options.status_file
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data))
