"""Restore a folder from a store and push its changes back, with the manifest as the record of what is in sync.

`restore` lists the prefix once (at boot) and downloads what the folder lacks; it never deletes or overwrites a
local file that changed since it was last synced. `push` costs O(1) requests per changed file and never lists:
new and changed files are PUT, files deleted locally are deleted from the store only when the manifest knows
their key, and a batch that would delete a large share of the tree is held unless forced.

Example::

    store = open_store("s3://my-bucket/alice")
    manifest = Manifest.load(state / "manifest.json", store.url)
    restore(Path("~/data").expanduser(), store, manifest)
    result = push(Path("~/data").expanduser(), store, manifest)      # or only=["notebooks/a.ipynb"]
    print(result.uploaded, result.deleted, result.held_deletes)
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat as stat_module
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from vmlab.agent.manifest import Entry, Excludes, Manifest, Stat, diff, md5_file, md5_reader, scan
from vmlab.agent.stores import MULTIPART_THRESHOLD, Store
from vmlab.errors import BadInput, DeleteGuard, VmlabError

log = logging.getLogger("vmlab.agent")

# A file modified this recently may be written again within the same mtime tick after we read it (git's "racy
# clean" problem); its entry is recorded with mtime 0 so the next pass checks its MD5 instead of trusting stat.
RACY_NS = 2_000_000_000
# Save the manifest at least this often during a long batch, so a crash repeats little work.
SAVE_EVERY_S = 2.0


@dataclass(frozen=True)
class DeletePolicy:
    """Deletes in one batch beyond `max_share` of the known tree (and more than `min_count` files) are held for
    review unless `force`. Example: `DeletePolicy(max_share=0.25)`."""

    max_share: float = 0.5
    min_count: int = 20
    force: bool = False

    def allows(self, deletes: int, known: int) -> bool:
        return self.force or deletes <= self.min_count or deletes <= self.max_share * known


@dataclass
class PushResult:
    uploaded: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    touched: int = 0
    held_deletes: list[str] = field(default_factory=list)
    retry: list[str] = field(default_factory=list)  # changed while being read: try again on the next pass
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def pending(self) -> list[str]:
        return sorted({*self.retry, *self.failed})


@dataclass
class RestoreResult:
    downloaded: list[str] = field(default_factory=list)
    in_sync: int = 0
    kept_local: list[str] = field(default_factory=list)  # the local side wins: it differs, or was deleted here
    skipped: list[str] = field(default_factory=list)  # keys that are excluded or not a safe relative path
    failed: dict[str, str] = field(default_factory=dict)


def push(folder: Path, store: Store, manifest: Manifest, excludes: Excludes | None = None,
         only: Iterable[str] | None = None, policy: DeletePolicy | None = None,
         before_change: Callable[[str], None] | None = None) -> PushResult:
    """Upload what changed under `folder` (all of it, or the relative paths in `only`, folders walked) and
    propagate deletes of known keys. Per-file errors are collected in `failed`, never raised: the manifest keeps
    the old entry and the next pass tries again. Raises BadInput when the folder is missing, so an unmounted
    disk never reads as "everything was deleted". `before_change(rel)` is called before each upload or delete
    (the daemon journals the path: a crash before the manifest is saved must not make the store's copy look
    like someone else's)."""
    before_change = before_change or (lambda _rel: None)
    excludes = excludes or Excludes()
    policy = policy or DeletePolicy()
    if not folder.is_dir():
        raise BadInput(f"sync folder {folder} does not exist", "create it or fix --folder")
    paths = None if only is None else sorted(set(only))
    local = scan(folder, excludes, paths)
    known_paths = manifest.under("") if paths is None else set().union(*(manifest.under(p) for p in paths))
    known = {rel: manifest.entries[rel] for rel in known_paths if not excludes.matches(rel)}
    changes = diff(local, known, md5_reader(folder))
    result = PushResult()
    for rel, (st, digest) in changes.touched.items():
        manifest.record(rel, _entry(st, digest, known[rel].etag))
        result.touched += 1
    last_save = time.monotonic()
    for rel in changes.uploads:
        before_change(rel)
        try:
            entry = _upload(folder, rel, store)
        except (OSError, VmlabError) as e:
            result.failed[rel] = str(e)
            log.error("upload of %s failed: %s", rel, e)
            continue
        if entry is None:
            result.retry.append(rel)
            continue
        manifest.record(rel, entry)
        result.uploaded.append(rel)
        if time.monotonic() - last_save > SAVE_EVERY_S:
            manifest.save()
            last_save = time.monotonic()
    deletes = sorted(changes.deleted)
    if deletes and not policy.allows(len(deletes), len(manifest.entries)):
        result.held_deletes = deletes
        log.error("%s", DeleteGuard(f"held {len(deletes)} deletes of {len(manifest.entries)} synced files",
                                    "check the folder; run `vmlab-agent sync --once --force-deletes` to apply"))
        deletes = []
    for rel in deletes:
        before_change(rel)
        try:
            store.delete(rel)
        except VmlabError as e:
            result.failed[rel] = str(e)
            log.error("delete of %s failed: %s", rel, e)
            continue
        manifest.forget(rel)
        result.deleted.append(rel)
    manifest.save()
    return result


def _upload(folder: Path, rel: str, store: Store) -> Entry | None:
    """PUT one file and return its new entry, or None when it vanished or changed while being read (its bytes
    would not match the stat we record)."""
    path = folder / rel
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat_module.S_ISREG(before.st_mode):
        return None
    if before.st_size <= MULTIPART_THRESHOLD:
        try:
            with path.open("rb") as f:
                data = f.read()
        except (FileNotFoundError, IsADirectoryError):
            return None  # renamed or deleted since the scan: its event is queued
        if not _same(path, before):
            return None
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        etag = store.put(rel, data, digest)
        return _entry(Stat(before.st_size, before.st_mtime_ns), digest, etag)
    large_digest = md5_file(path)
    if large_digest is None:
        return None
    etag = store.put(rel, path, large_digest)
    if not _same(path, before):
        return None  # the object may hold a mix of versions; the next pass uploads it again
    return _entry(Stat(before.st_size, before.st_mtime_ns), large_digest, etag)


def _same(path: Path, before: os.stat_result) -> bool:
    try:
        after = os.lstat(path)
    except FileNotFoundError:
        return False
    return (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)


def _entry(st: Stat, digest: str, etag: str) -> Entry:
    racy = time.time_ns() - st.mtime_ns < RACY_NS
    return Entry(st.size, 0 if racy else st.mtime_ns, digest, etag)


def restore(folder: Path, store: Store, manifest: Manifest, excludes: Excludes | None = None,
            local_changes: Iterable[str] = ()) -> RestoreResult:
    """Download every object under the store's prefix that the folder lacks, or whose local copy is unchanged
    since the last sync while the object changed. Each file is written to a temporary name beside it and renamed
    into place. Local files are never deleted, and a local file that differs from the object is kept (the next
    push uploads it). A listing failure raises StoreError before anything local is touched.

    The local side wins for a path that was synced and then deleted here (the manifest knows it with the listed
    ETag: the next push deletes the key), and for `local_changes`, the paths the daemon's journal holds (changed
    here after the last sync, maybe deleted): a missing one is recorded from the listing so that push deletes
    its key instead of restore bringing it back."""
    excludes = excludes or Excludes()
    changed_here = set(local_changes)
    folder.mkdir(parents=True, exist_ok=True)
    result = RestoreResult()
    objects = list(store.list())
    listed = set()
    for obj in objects:
        rel = obj.key
        if not _safe(rel) or excludes.matches(rel):
            result.skipped.append(rel)
            continue
        listed.add(rel)
        path = folder / rel
        entry = manifest.entries.get(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        except OSError as e:
            result.failed[rel] = str(e)
            continue
        if st is None and (rel in changed_here or (entry is not None and entry.etag == obj.etag)):
            if entry is None:
                # uploaded by the run that crashed before saving its manifest, then deleted here
                manifest.record(rel, Entry(obj.size, 0, "", obj.etag))
            result.kept_local.append(rel)
            continue
        if st is not None:
            if not stat_module.S_ISREG(st.st_mode):
                result.kept_local.append(rel)
                continue
            local = Stat(st.st_size, st.st_mtime_ns)
            if entry is not None and entry.stat == local:
                if entry.etag == obj.etag:
                    result.in_sync += 1
                    continue
            else:
                digest = md5_file(path) or ""
                same = digest == (obj.md5 or obj.etag)  # the store's MD5 (S3: a single-part ETag is one)
                if same or (entry is not None and digest == entry.md5 and entry.etag == obj.etag):
                    manifest.record(rel, _entry(local, digest, obj.etag))
                    result.in_sync += 1
                    continue
                if entry is None or digest != entry.md5:
                    result.kept_local.append(rel)
                    log.warning("keeping local %s: it differs from the stored object", rel)
                    continue
        try:
            _download(folder, rel, store, manifest)
        except (OSError, VmlabError) as e:
            result.failed[rel] = str(e)
            log.error("download of %s failed: %s", rel, e)
            continue
        result.downloaded.append(rel)
    # An object deleted elsewhere: forget it, so the local copy (never deleted here) is uploaded again.
    for rel in set(manifest.entries) - listed:
        if not excludes.matches(rel):
            manifest.forget(rel)
    manifest.save()
    return result


def _download(folder: Path, rel: str, store: Store, manifest: Manifest) -> None:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    # ".~" keeps the temporary out of every sync (a default exclude) and out of JupyterLab's file browser.
    tmp = path.parent / f".~vmlab-{secrets.token_hex(4)}-{path.name}"
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with tmp.open("wb") as f:
            etag = store.get(rel, _HashingWriter(f, digest))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    st = os.lstat(path)
    manifest.record(rel, _entry(Stat(st.st_size, st.st_mtime_ns), digest.hexdigest(), etag))


class _HashingWriter:
    """Hash the bytes on their way to the file, so a restored file is read once."""

    def __init__(self, f: BinaryIO, digest: Any) -> None:
        self._f = f
        self._digest = digest

    def write(self, data: bytes, /) -> int:
        self._digest.update(data)
        return self._f.write(data)


def _safe(rel: str) -> bool:
    """A key maps to a path inside the folder only if no component is empty, "." or ".."."""
    parts = rel.split("/")
    return all(part not in ("", ".", "..") for part in parts) and "\0" not in rel
