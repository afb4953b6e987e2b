"""Push a folder's changes to a store, with the manifest as the record of what is in sync (`restore` is in
vmlab.agent.restore).

`push` costs O(1) requests per changed file and never lists: new and changed files are PUT (several at once),
files deleted locally are deleted from the store only when the manifest knows their key and the delete rules of
vmlab.agent.deletes allow it. Every file is read through vmlab.agent.safefs (no symlink on the way is followed,
checked again at upload time), and its key is `keys.key_of` its path (names that are not UTF-8 get escaped keys).

Example::

    store = open_store("s3://my-bucket/alice")
    manifest = Manifest.load(state / "manifest.json", store.url)
    result = push(Path("~/data").expanduser(), store, manifest)      # or only=["notebooks/a.ipynb"]
    print(result.uploaded, result.deleted, result.held_deletes)
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO

from vmlab.agent import safefs
from vmlab.agent.deletes import DeleteGuard, DeletePolicy
from vmlab.agent.keys import key_of, shown
from vmlab.agent.manifest import (
    PARTS_DIGEST,
    UNVERIFIED,
    Entry,
    Excludes,
    Manifest,
    Stat,
    diff,
    md5_reader,
    part_count,
    scan,
)
from vmlab.agent.stores import MULTIPART_THRESHOLD, Store
from vmlab.errors import BadInput, VmlabError

log = logging.getLogger("vmlab.agent")

# A file modified this recently may be written again within the same mtime tick after we read it (git's "racy
# clean" problem); its entry is recorded with mtime 0 so the next pass checks its MD5 instead of trusting stat.
RACY_NS = 2_000_000_000
# Save the manifest at least this often during a long batch, so a crash repeats little work.
SAVE_EVERY_S = 2.0


# Uploads (and restore's downloads) in flight at once: about `aws s3 sync`'s 10.
WORKERS = 10

__all__ = ["DeletePolicy", "PushResult", "push"]


@dataclass
class PushResult:
    uploaded: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    touched: int = 0
    held_deletes: list[str] = field(default_factory=list)
    retry: list[str] = field(default_factory=list)  # changed while being read: try again on the next pass
    failed: dict[str, str] = field(default_factory=dict)
    waiting_deletes: list[str] = field(default_factory=list)  # settling (see vmlab.agent.deletes)

    @property
    def pending(self) -> list[str]:
        return sorted({*self.retry, *self.failed, *self.waiting_deletes})


def push(folder: Path, store: Store, manifest: Manifest, excludes: Excludes | None = None,
         only: Iterable[str] | None = None, policy: DeletePolicy | None = None,
         before_change: Callable[[str], None] | None = None, guard: DeleteGuard | None = None,
         settle: bool = False, workers: int = WORKERS, busy: Callable[[], bool] | None = None) -> PushResult:
    """Upload what changed under `folder` (all of it, or the relative paths in `only`, folders walked) and
    propagate deletes of known keys that `guard` (by default a fresh one with `policy`) lets through. Per-file
    errors are collected in `failed`, never raised: the manifest keeps the old entry and the next pass tries
    again. Raises BadInput when the folder is missing, so an unmounted disk never reads as "everything was
    deleted". `before_change(rel)` is called before each upload or delete (the daemon journals the path: a crash
    before the manifest is saved must not make the store's copy look like someone else's); `busy()` says whether
    more events wait (then a burst of deletes is not over)."""
    before_change = before_change or (lambda _rel: None)
    excludes = excludes or Excludes()
    guard = guard or DeleteGuard(policy)
    if not folder.is_dir():
        raise BadInput(f"sync folder {folder} does not exist", "create it or fix --folder")
    paths = None if only is None else sorted(set(only))
    unreadable: dict[str, str] = {}
    local = scan(folder, excludes, paths, unreadable)
    known_paths = manifest.under("") if paths is None else set().union(*(manifest.under(p) for p in paths))
    known = {rel: manifest.entries[rel] for rel in known_paths if not excludes.matches(rel)}
    changes = diff(local, known, md5_reader(folder), unreadable)
    result = PushResult()
    for rel, why in changes.unreadable.items():
        result.failed[rel.rstrip("/")] = f"cannot read: {why}"  # its own backoff; named in the status
        log.error("cannot read %s: %s", shown(rel), why)
    for rel, (st, digest) in changes.touched.items():
        manifest.record(rel, _entry(st, digest, known[rel].etag))
        result.touched += 1
    _upload_all(folder, store, manifest, changes.uploads, result, before_change, workers)
    _drop_never_stored(store, manifest, changes.deleted)
    now = time.time()
    deletes = guard.judge(changes.deleted, local, len(manifest.entries), now, settle=settle,
                          everything_gone=paths is None and not local and bool(known),
                          busy=busy() if busy is not None else False,
                          gone_now=partial(_gone_count, folder, manifest, excludes) if settle else None)
    result.held_deletes = sorted(guard.held)
    result.waiting_deletes = sorted(set(changes.deleted) & set(guard.waiting))
    if guard.held and set(changes.deleted) & guard.held:
        log.error("held %d deletes of %d synced files: check the folder, then run `vmlab-agent release-deletes`",
                  len(guard.held), len(manifest.entries))
    known_before = len(manifest.entries)
    for rel in deletes:
        before_change(rel)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(deletes))), thread_name_prefix="vmlab-del") as pool:
        for rel, error in zip(deletes, pool.map(_delete, [store] * len(deletes), deletes), strict=True):
            if error is not None:
                result.failed[rel] = str(error)
                log.error("delete of %s failed: %s", shown(rel), error)
                continue
            manifest.forget(rel)
            result.deleted.append(rel)
    guard.sent(len(result.deleted), known_before, now)
    manifest.save()
    return result


def _drop_never_stored(store: Store, manifest: Manifest, deleted: set[str]) -> None:
    """A deleted path whose store copy is unverified (the store lost its objects since) needs a delete only if the
    store has it again: one HEAD each, and only after such a loss. One that is not there is forgotten, never
    held as a delete; one the HEAD cannot settle stays a delete (deleting a missing key is harmless)."""
    for rel in sorted(rel for rel in deleted if manifest.entries.get(rel) == UNVERIFIED):
        try:
            there = store.exists(key_of(rel))
        except VmlabError:
            continue
        if not there:
            manifest.forget(rel)
            deleted.discard(rel)


def _gone_count(folder: Path, manifest: Manifest, excludes: Excludes) -> int:
    """Known files missing from the whole folder now; one that cannot be checked counts as missing (holding a
    delete is the safe side)."""
    gone = 0
    for rel in manifest.entries:
        if excludes.matches(rel):
            continue
        try:
            gone += safefs.lstat_under(folder, rel) is None
        except Exception:  # noqa: BLE001 - outside the folder, unreadable: not provably there
            gone += 1
    return gone


def _upload_all(folder: Path, store: Store, manifest: Manifest, uploads: list[str], result: PushResult,
                before_change: Callable[[str], None], workers: int) -> None:
    """PUT `uploads`, up to `workers` at once; entries are recorded (and the manifest saved now and then) here,
    in the calling thread."""
    last_save = time.monotonic()

    def settle(rel: str, future: Future[Entry | None]) -> None:
        nonlocal last_save
        try:
            entry = future.result()
        except (OSError, VmlabError) as e:
            result.failed[rel] = str(e)
            log.error("upload of %s failed: %s", shown(rel), e)
            return
        if entry is None:
            result.retry.append(rel)
            return
        manifest.record(rel, entry)
        result.uploaded.append(rel)
        if time.monotonic() - last_save > SAVE_EVERY_S:
            manifest.save()
            last_save = time.monotonic()

    if len(uploads) <= 1 or workers <= 1:
        for rel in uploads:
            before_change(rel)
            future: Future[Entry | None] = Future()
            try:
                future.set_result(_upload(folder, rel, store))
            except (OSError, VmlabError) as e:
                future.set_exception(e)
            settle(rel, future)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vmlab-put") as pool:
        window: list[tuple[str, Future[Entry | None]]] = []
        for rel in uploads:
            before_change(rel)
            window.append((rel, pool.submit(_upload, folder, rel, store)))
            if len(window) >= workers * 4:  # bounded: a huge first upload does not hold every file's bytes
                settle(*window.pop(0))
        for item in window:
            settle(*item)


def _delete(store: Store, rel: str) -> VmlabError | None:
    try:
        store.delete(key_of(rel))
    except VmlabError as e:
        return e
    return None


def _upload(folder: Path, rel: str, store: Store) -> Entry | None:
    """PUT one file and return its new entry, or None when it vanished, is no longer a regular file reached
    without a symlink, or changed while being read (its bytes would not match the stat we record)."""
    try:
        with safefs.open_under(folder, rel) as f:
            before = os.fstat(f.fileno())
            if before.st_size <= MULTIPART_THRESHOLD:
                data = f.read()
                if not _same(folder, rel, before):
                    return None
                digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
                etag = store.put(key_of(rel), data, digest)
            else:
                digest = "" if store.parts_etag else _md5(f)
                etag = store.put(key_of(rel), _source(f), digest)
                if not digest:  # the store's ETag is the parts' digest; one that is not (a store's own, or
                    # another writer's object since) costs a pass
                    parts = PARTS_DIGEST.fullmatch(etag)
                    digest = etag if parts and int(parts.group(1)) == part_count(before.st_size) else _md5(f)
                if not _same(folder, rel, before):
                    return None  # the object may hold a mix of versions; the next pass uploads it again
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, safefs.Outside):
        return None  # renamed, deleted or swapped for a symlink since the scan: its event is queued
    return _entry(Stat.of(before), digest, etag)


def _source(f: BinaryIO) -> Path | BinaryIO:
    """What a large upload reads: the open file by its /proc link (the same inode whatever happens to the path
    since), so the store's transfer manager reads parts in parallel; elsewhere the file object itself."""
    proc = Path(f"/proc/self/fd/{f.fileno()}")
    return proc if proc.exists() else f


def _md5(f: BinaryIO) -> str:
    """The hex MD5 of an open file's bytes, read from its start; the file is left at its start again (a store
    given the file object itself reads it from there)."""
    f.seek(0)
    hasher = hashlib.md5(usedforsecurity=False)
    while chunk := f.read(1 << 20):
        hasher.update(chunk)
    f.seek(0)
    return hasher.hexdigest()


def _same(folder: Path, rel: str, before: os.stat_result) -> bool:
    after = safefs.lstat_under(folder, rel)
    return after is not None and Stat.of(after) == Stat.of(before)


def _entry(st: Stat, digest: str, etag: str) -> Entry:
    racy = time.time_ns() - max(st.mtime_ns, st.ctime_ns) < RACY_NS
    return Entry(st.size, 0 if racy else st.mtime_ns, digest, etag, st.ctime_ns, st.ino)
