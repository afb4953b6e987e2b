"""Restore a folder from a store: list the prefix once (at boot) and download what the folder lacks, several files
at once, each written through vmlab.agent.safefs (never through a symlink, to a temporary renamed into place).

Rules, per listed key:
- in sync (same bytes): recorded, nothing downloaded;
- missing here: downloaded, unless the manifest says it was synced and then deleted here (or the daemon's
  journal holds it): the local delete wins and the next push deletes the key;
- unchanged here since the last sync, changed in the store: downloaded over the local copy;
- changed here, unchanged in the store: kept (the next push uploads it);
- changed on both sides, or different with no record of a sync (a stale disk, an old snapshot): a conflict. The
  newer version (local mtime against the object's last write) stays at the path, the other is kept beside it as
  `name.conflict-<host>-<UTC time>.ext`, and the next push uploads both;
- a key that is excluded, not a safe relative path, or blocked by a symlink or a file on the way is skipped,
  named in the log and the result, and forgotten by the manifest, so no push ever deletes it.
A folder that is missing or holds no file while the manifest knows files is a missing disk, not a delete: every
key is restored. Temporaries left by an interrupted restore are removed first. Nothing local is ever deleted.

Example::

    result = restore(Path("~/data").expanduser(), open_store("s3://my-bucket/alice"), manifest)
    print(result.summary())     # "restored 3, in sync 10, kept local 1, skipped 0, failed 0, conflicts 0"
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket
import stat as stat_module
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from vmlab.agent import safefs
from vmlab.agent.keys import MARKER_KEY, key_of, rel_of, shown
from vmlab.agent.manifest import PARTS_DIGEST, Entry, Excludes, Manifest, Stat, digest_like, scan
from vmlab.agent.stores import ObjectInfo, Store
from vmlab.agent.sync import WORKERS, _entry
from vmlab.errors import VmlabError

log = logging.getLogger("vmlab.agent")


@dataclass
class RestoreResult:
    downloaded: list[str] = field(default_factory=list)
    in_sync: int = 0
    kept_local: list[str] = field(default_factory=list)  # the local side wins: changed, or deleted here
    skipped: dict[str, str] = field(default_factory=dict)  # key -> why it was not restored
    failed: dict[str, str] = field(default_factory=dict)  # key -> the error
    conflicts: list[str] = field(default_factory=list)  # the conflict copies made
    removed_temporaries: list[str] = field(default_factory=list)
    missing_disk: bool = False

    def summary(self) -> str:
        return (f"restored {len(self.downloaded)}, in sync {self.in_sync}, kept local {len(self.kept_local)}, "
                f"skipped {len(self.skipped)}, failed {len(self.failed)}, conflicts {len(self.conflicts)}")


def restore(folder: Path, store: Store, manifest: Manifest, excludes: Excludes | None = None,
            local_changes: Iterable[str] = (), workers: int = WORKERS) -> RestoreResult:
    """Apply the module's rules to every object under the store's prefix. A listing failure raises StoreError
    before anything local is touched. `local_changes`: the paths the daemon's journal holds (changed here after
    the last sync, maybe deleted)."""
    excludes = excludes or Excludes()
    result = RestoreResult()
    objects = list(store.list())
    folder.mkdir(parents=True, exist_ok=True)
    result.removed_temporaries = safefs.remove_temporaries(folder)
    for rel in result.removed_temporaries:
        log.warning("removed %s, left by an interrupted restore", shown(rel))
    local = scan(folder, excludes)
    changed_here = set(local_changes)
    if not local and manifest.entries:
        result.missing_disk = True
        log.warning("%s holds no file but %d were synced: taking it for a new or missing disk and restoring "
                    "everything (no delete is sent)", folder, len(manifest.entries))
        manifest.entries.clear()
        manifest.dirty = True
        changed_here = set()
    listed: set[str] = set()
    downloads: list[tuple[str, ObjectInfo, bool]] = []  # (path, object, is a conflict copy)
    for obj in objects:
        if obj.key == MARKER_KEY:
            continue
        rel = rel_of(obj.key)
        if not _canonical(rel, obj.key):  # not a key the agent writes: it would land on another key's file
            result.skipped[obj.key] = f"names the file {shown(rel)}, whose key is another: written by another tool"
            log.warning("skipped %s: %s", shown(obj.key), result.skipped[obj.key])
            continue
        why = _unrestorable(folder, rel, excludes)
        if why:
            _skip(result, manifest, obj.key, rel, why)
            continue
        listed.add(rel)
        action = _decide(folder, rel, obj, local.get(rel), manifest, rel in changed_here)
        if action == "download":
            downloads.append((rel, obj, False))
        elif action == "in sync":
            result.in_sync += 1
        elif action == "kept":
            result.kept_local.append(rel)
        else:
            try:
                copy = _conflict(folder, rel, obj, local[rel], action == "local newer", downloads)
            except OSError as e:  # no free conflict name, a name too long, EACCES: both sides stay as they are
                result.failed[obj.key] = f"conflict copy not made: {e}"
                log.error("conflict on %s: %s", shown(rel), result.failed[obj.key])
                continue
            result.conflicts.append(copy)
            log.warning("conflict on %s: both sides changed; the newer stays, the other is kept as %s",
                        shown(rel), shown(copy))
    _download_all(folder, store, manifest, downloads, result, workers)
    # An object deleted elsewhere: forget it, so the local copy (never deleted here) is uploaded again.
    for rel in set(manifest.entries) - listed:
        if not excludes.matches(rel):
            manifest.forget(rel)
    manifest.save()
    return result


def _unrestorable(folder: Path, rel: str, excludes: Excludes) -> str:
    """Why `rel` cannot be restored ("" when it can)."""
    if not _safe(rel):
        return "not a relative path inside the folder"
    if excludes.matches(rel):
        return "excluded"
    try:
        with safefs.parent_of(folder, rel) as (parent, name):
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return ""
    except safefs.Outside:
        return "a symlink or a file stands in its path"
    except OSError as e:
        return f"its path cannot be read here: {e}"
    if not stat_module.S_ISREG(st.st_mode):
        return "a folder or symlink is at its path"
    return ""


def _skip(result: RestoreResult, manifest: Manifest, key: str, rel: str, why: str) -> None:
    result.skipped[key] = why
    log.warning("skipped %s: %s", shown(key), why)
    if _safe(rel):
        manifest.forget(rel)  # never deleted by a push because the folder does not show it


def _decide(folder: Path, rel: str, obj: ObjectInfo, st: Stat | None, manifest: Manifest, changed_here: bool
            ) -> str:
    """"download", "in sync", "kept" (the local side wins), "local newer" or "remote newer" (a conflict)."""
    entry = manifest.entries.get(rel)
    if st is None:
        if changed_here or (entry is not None and entry.etag == obj.etag):
            if entry is None:  # uploaded by a run that crashed before saving its manifest, then deleted here
                manifest.record(rel, Entry(obj.size, 0, "", obj.etag))
            return "kept"
        return "download"
    if entry is not None and entry.stat == st:
        return "in sync" if entry.etag == obj.etag else "download"
    # the object's digest: the store's MD5 (S3: a single-part ETag is one) or S3's multipart ETag (a parts digest)
    remote = obj.md5 or (obj.etag if PARTS_DIGEST.fullmatch(obj.etag) else "")
    here = (digest_like(folder, rel, remote) or "") if remote and st.size == obj.size else ""
    if here and here == remote:
        manifest.record(rel, _entry(st, here, obj.etag))
        return "in sync"
    if entry is None:
        digest = ""
    else:  # the local bytes in the form the entry knows them
        digest = here if here and _form(here) == _form(entry.md5) else digest_like(folder, rel, entry.md5) or ""
    if entry is not None and digest == entry.md5:
        if entry.etag == obj.etag:
            manifest.record(rel, _entry(st, digest, obj.etag))
            return "in sync"
        return "download"  # unchanged here, changed in the store
    if entry is not None and entry.etag == obj.etag:
        log.info("keeping local %s: changed here since the last sync", shown(rel))
        return "kept"
    return "local newer" if st.mtime_ns / 1e9 >= obj.modified else "remote newer"


def _form(digest: str) -> str:
    """A digest's form: the part count of a parts digest, "" for an MD5."""
    parts = PARTS_DIGEST.fullmatch(digest)
    return parts.group(1) if parts else ""


def conflict_name(name: str, host: str, when: float) -> str:
    """`notes.ipynb` -> `notes.conflict-HOST-20261205T183000Z.ipynb` (a name without an extension, or a dot
    file, gets the suffix at its end)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, dot, ext = name, "", ""
    safe_host = "".join(c if c.isalnum() or c in "-_" else "_" for c in host)[:40] or "host"
    return safefs.fit_name("", stem, f".conflict-{safe_host}-{stamp}{dot}{ext}")


def _conflict(folder: Path, rel: str, obj: ObjectInfo, st: Stat, local_newer: bool,
              downloads: list[tuple[str, ObjectInfo, bool]]) -> str:
    """Keep both versions of a conflict; returns the relative path of the conflict copy."""
    parent, _, name = rel.rpartition("/")
    host = socket.gethostname()
    for n in range(100):
        when = (obj.modified if local_newer else st.mtime_ns / 1e9) + n
        copy = (parent + "/" if parent else "") + conflict_name(name, host, when)
        if safefs.lstat_under(folder, copy) is None:
            break
    else:
        raise FileExistsError(errno.EEXIST, f"100 conflict copies of {shown(rel)} exist already: clear some")
    if local_newer:
        downloads.append((copy, obj, True))
    else:
        safefs.rename_beside(folder, rel, copy.rpartition("/")[2])
        downloads.append((rel, obj, False))
    return copy


def _download_all(folder: Path, store: Store, manifest: Manifest, downloads: list[tuple[str, ObjectInfo, bool]],
                  result: RestoreResult, workers: int) -> None:
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="vmlab-get") as pool:
        futures = [(rel, obj, copy, pool.submit(_download, folder, rel, obj.key, store))
                   for rel, obj, copy in downloads]
        for rel, obj, copy, future in futures:
            try:
                st, digest, etag = future.result()
            except (OSError, VmlabError) as e:
                result.failed[obj.key] = str(e)
                log.error("download of %s failed: %s", shown(obj.key), e)
                if safefs.lstat_under(folder, rel) is None:
                    manifest.forget(rel)  # not here: a push must never delete its key
                continue
            result.downloaded.append(rel)
            if copy:
                continue  # a new file for the next push, which uploads it under its own key
            manifest.record(rel, _entry(Stat.of(st), digest, etag))


def _download(folder: Path, rel: str, key: str, store: Store) -> tuple[Any, str, str]:
    digest = hashlib.md5(usedforsecurity=False)
    etag = ""

    def fill(f: BinaryIO) -> None:
        nonlocal etag
        etag = store.get(key, _HashingWriter(f, digest))

    st = safefs.write_under(folder, rel, fill)
    return st, digest.hexdigest(), etag


class _HashingWriter:
    """Hash the bytes on their way to the file, so a restored file is read once."""

    def __init__(self, f: BinaryIO, digest: Any) -> None:
        self._f = f
        self._digest = digest

    def write(self, data: bytes, /) -> int:
        self._digest.update(data)
        return self._f.write(data)


def _canonical(rel: str, key: str) -> bool:
    """Whether `key` is the key of the file `rel` names, as a scan reads that name back from disk: escaped bytes
    that form valid UTF-8 (`\uf7c3\uf7a9`) name the file `é`, whose key is `é`."""
    try:
        return key_of(os.fsdecode(os.fsencode(rel))) == key
    except UnicodeError:
        return False


def _safe(rel: str) -> bool:
    """A key maps to a path inside the folder only if no component is empty, "." or ".."."""
    parts = rel.split("/")
    return all(part not in ("", ".", "..") for part in parts) and "\0" not in rel
