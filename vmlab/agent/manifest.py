"""What the agent last synced, and what changed in the folder since.

The manifest maps a path relative to the synced folder ("notebooks/a.ipynb", always "/"-separated) to the size,
mtime_ns, MD5 and ETag it had when it was last uploaded or restored. It is the only thing that lets the agent find
a change without listing the bucket, and the only thing that lets it delete a key: a key the manifest does not know
is never deleted.

Example::

    manifest = Manifest.load(Path("~/.local/state/vmlab-agent/m.json").expanduser(), url="s3://b/alice")
    excludes = Excludes()
    changes = diff(scan(Path("~/data").expanduser(), excludes), manifest.entries, md5_reader(folder))
    for rel in changes.new | changes.changed: ...
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import stat as stat_module
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from vmlab.agent import safefs
from vmlab.agent.stores import PART_SIZE
from vmlab.errors import BadInput
from vmlab.fileio import write_atomic

# Jupyter's autosave copies, editors' and LibreOffice's save temps (also the agent's own restore temps, which are
# named ".~vmlab-*"), and Python bytecode caches.
DEFAULT_EXCLUDES = (".ipynb_checkpoints", ".~*", "__pycache__")
FORMAT_VERSION = 2  # 2 added ctime_ns and inode; a version 1 file is read (its files are hashed once)


@dataclass(frozen=True)
class Stat:
    """What `os.stat` says about a file, the part that tells whether it may have changed. The ctime and inode
    catch an edit whose mtime was put back (`touch -r`, `cp -p`, `rsync -t`): nothing can set the ctime."""

    size: int
    mtime_ns: int
    ctime_ns: int = 0
    ino: int = 0

    @classmethod
    def of(cls, st: os.stat_result) -> Stat:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


@dataclass(frozen=True)
class Entry:
    """A file as it was when last synced: its stat then, the digest of its bytes and the store's ETag. The digest is
    their MD5, or for a large file on S3 the multipart ETag S3 computed (`PARTS_DIGEST`), so that uploading it
    costs no hashing pass of its own (`digest_like` reads a file's digest in either form)."""

    size: int
    mtime_ns: int
    md5: str
    etag: str
    ctime_ns: int = 0
    ino: int = 0

    @property
    def stat(self) -> Stat:
        return Stat(self.size, self.mtime_ns, self.ctime_ns, self.ino)


#: the entry of a file whose copy in the store is not known to exist: no scan, MD5 or ETag ever equals it
UNVERIFIED = Entry(-1, -1, "", "")


class Excludes:
    """Shell patterns matched against every component of a relative path, or against the whole path when the
    pattern holds a "/". Example: `Excludes(extra=["*.tmp", "scratch/big/*"]).matches("a/.ipynb_checkpoints/x")`."""

    def __init__(self, patterns: Iterable[str] = DEFAULT_EXCLUDES, extra: Iterable[str] = ()) -> None:
        self.patterns = tuple(patterns) + tuple(extra)
        self._parts = [p for p in self.patterns if "/" not in p]
        self._paths = [p.strip("/") for p in self.patterns if "/" in p]

    def matches(self, rel: str) -> bool:
        parts = rel.split("/")
        if any(fnmatch.fnmatchcase(part, p) for part in parts for p in self._parts):
            return True
        # a path pattern excludes the match and everything under it
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(fnmatch.fnmatchcase(prefix, p) for prefix in prefixes for p in self._paths)


@dataclass
class Diff:
    """The folder against the manifest. `touched` files differ in stat only (same bytes): record their new stat,
    upload nothing. `deleted` only ever holds paths the manifest knows."""

    new: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    touched: dict[str, tuple[Stat, str]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # path (a folder's ends in "/") -> why

    @property
    def uploads(self) -> list[str]:
        return sorted(self.new | self.changed)

    def __bool__(self) -> bool:
        return bool(self.new or self.changed or self.deleted or self.touched)


def diff(local: Mapping[str, Stat], known: Mapping[str, Entry], md5_of: Callable[[str, str], str | None],
         unreadable: Mapping[str, str] | None = None) -> Diff:
    """Compare scanned files with the manifest. A file whose size, mtime, ctime and inode all equal the manifest's
    is taken as unchanged; any other difference (an older mtime included: a restored copy, `touch -r`, an editor
    keeping the mtime, which still moves the ctime) is settled by the bytes' digest (`md5_of(rel, entry.md5)`, in
    the entry's form), so a same-size edit is never missed and a touch costs no upload. `md5_of` returns None for
    a file that vanished since the scan; it is then left for the next pass. A file `md5_of` cannot read, and every
    known path under an `unreadable` one (a scan's), goes to `unreadable`: never judged deleted.

    Example: `diff({"a": Stat(1, 5)}, {}, md5_of).new == {"a"}`.
    """
    result = Diff(unreadable=dict(unreadable or {}))
    for rel, st in local.items():
        entry = known.get(rel)
        if entry is None:
            result.new.add(rel)
            continue
        if entry.stat == st:
            continue
        try:
            digest = md5_of(rel, entry.md5)
        except OSError as e:
            result.unreadable[rel] = str(e)
            continue
        if digest is None:
            continue
        if digest == entry.md5:
            result.touched[rel] = (st, digest)
        else:
            result.changed.add(rel)
    result.deleted = {rel for rel in known if rel not in local and not _under_any(rel, result.unreadable)}
    return result


def _under_any(rel: str, prefixes: Mapping[str, str]) -> bool:
    """`rel` is one of `prefixes` or inside one ("" is the whole folder; a trailing "/" is ignored)."""
    return any(not p or rel == p.rstrip("/") or rel.startswith(p.rstrip("/") + "/") for p in prefixes)


def scan(folder: Path, excludes: Excludes, only: Iterable[str] | None = None,
         unreadable: dict[str, str] | None = None) -> dict[str, Stat]:
    """Regular files under `folder` by relative path, reached without following any symlink (see
    vmlab.agent.safefs), excluded paths skipped. With `only`, look at just those relative paths: a file is
    stat'ed, a folder is walked. Paths that cannot be read (EACCES, EIO) go to `unreadable` (path -> why).

    Example: `scan(Path("/home/u/data"), Excludes(), only=["new-folder"])`.
    """
    if only is None:
        only = [""]
    found: dict[str, Stat] = {}
    unreadable = {} if unreadable is None else unreadable
    for rel in only:
        if not rel:
            found.update((r, Stat.of(st)) for r, st in safefs.walk(folder, excludes.matches, "", unreadable))
            continue
        if excludes.matches(rel):
            continue
        try:
            st = safefs.lstat_under(folder, rel)
        except OSError as e:
            unreadable[rel] = str(e)  # it, or a folder on the way: neither it nor anything under it is known gone
            continue
        if st is None:
            continue
        if stat_module.S_ISREG(st.st_mode):
            found[rel] = Stat.of(st)
        elif stat_module.S_ISDIR(st.st_mode):
            found.update((r, Stat.of(s))
                         for r, s in safefs.walk(folder, excludes.matches, rel + "/", unreadable))
    return found


def md5_file(path: Path) -> str | None:
    """Hex MD5 of a file's bytes, or None when it is gone."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except (FileNotFoundError, IsADirectoryError):
        return None
    return digest.hexdigest()


def md5_under(folder: Path, rel: str) -> str | None:
    """Hex MD5 of `rel` under `folder`, reached without following symlinks; None when it is gone or not a
    regular file."""
    return _digest_under(folder, rel, 0)


#: S3's ETag of a multipart upload: the MD5 of its parts' MD5s and their count
PARTS_DIGEST = re.compile(r"[0-9a-f]{32}-([1-9][0-9]{0,4})")


def part_count(size: int, most: int = 10_000) -> int:
    """How many parts S3's transfer manager sends a file of `size` bytes in: PART_SIZE parts, doubled until at most
    `most` hold it. Example: `part_count(20 << 20) == 3`."""
    part_size = PART_SIZE
    while -(-size // part_size) > most:
        part_size *= 2
    return max(1, -(-size // part_size))


def digest_like(folder: Path, rel: str, like: str = "") -> str | None:
    """`rel`'s content digest in the form of `like` (a manifest entry's, an object's): with a parts digest of N
    parts, the ETag S3 gives its bytes uploaded in N parts of PART_SIZE (doubled until N hold the file, as the
    transfer manager does for huge files): "<md5 of the parts' MD5s>-N" (a large file on S3 is known by its
    ETag); else its MD5. None when it is gone.

    Example: a 20 MiB file, like "<32 hex>-3" -> "<md5 of three 8 MiB-part digests>-3"."""
    parts = PARTS_DIGEST.fullmatch(like)
    return _digest_under(folder, rel, int(parts.group(1)) if parts else 0)


def _digest_under(folder: Path, rel: str, parts: int) -> str | None:
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with safefs.open_under(folder, rel) as f:
            if not parts:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
                return digest.hexdigest()
            size, part_size = os.fstat(f.fileno()).st_size, PART_SIZE
            while -(-size // part_size) > parts:
                part_size *= 2  # as the transfer manager does for a huge file (at most 10,000 parts)
            digests = []
            while chunk := f.read(part_size):
                digests.append(hashlib.md5(chunk, usedforsecurity=False).digest())
    except (FileNotFoundError, NotADirectoryError, safefs.Outside):
        return None
    return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"


def md5_reader(folder: Path) -> Callable[[str, str], str | None]:
    """The `md5_of` argument of `diff` for files under `folder` (see `digest_like`)."""
    return partial(digest_like, folder)


class Manifest:
    """The persisted map of relative path -> Entry for one folder and one store URL. Saved atomically (temporary
    file, fsync, rename), mode 0600. A manifest written for another URL is ignored, since its entries say nothing
    about this store.

    Example::

        m = Manifest.load(path, url="s3://bucket/alice")
        m.record("a.txt", Entry(3, 1700000000000000000, md5, etag))
        m.save()
    """

    def __init__(self, path: Path, url: str, entries: dict[str, Entry] | None = None) -> None:
        self.path = path
        self.url = url
        self.entries: dict[str, Entry] = entries or {}
        self.dirty = False

    @classmethod
    def load(cls, path: Path, url: str) -> Manifest:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path, url)
        except (OSError, ValueError) as e:
            raise BadInput(f"cannot read the sync manifest {path}: {e}",
                           "move it away; the next sync uploads everything once and deletes nothing") from e
        if data.get("version") not in (1, FORMAT_VERSION) or data.get("url") != url:
            return cls(path, url)
        entries = {rel: Entry(*values) for rel, values in data.get("entries", {}).items()}
        return cls(path, url, entries)

    def record(self, rel: str, entry: Entry) -> None:
        self.entries[rel] = entry
        self.dirty = True

    def distrust(self) -> None:
        """The store lost what it held (a re-created bucket): every known path stays known, so that a delete
        made meanwhile still reaches the store, but with an entry nothing matches, so the next pass uploads it
        again."""
        for rel in self.entries:
            self.entries[rel] = UNVERIFIED
        self.dirty = True

    def forget(self, rel: str) -> None:
        if self.entries.pop(rel, None) is not None:
            self.dirty = True

    def under(self, rel: str) -> set[str]:
        """Known paths equal to `rel` or inside the folder `rel` ("" means all)."""
        if not rel:
            return set(self.entries)
        return {k for k in self.entries if k == rel or k.startswith(rel + "/")}

    def save(self) -> None:
        if not self.dirty and self.path.exists():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {
            "version": FORMAT_VERSION,
            "url": self.url,
            "entries": {rel: [e.size, e.mtime_ns, e.md5, e.etag, e.ctime_ns, e.ino]
                        for rel, e in sorted(self.entries.items())},
        }
        write_atomic(self.path, json.dumps(data, separators=(",", ":")))
        self.dirty = False
