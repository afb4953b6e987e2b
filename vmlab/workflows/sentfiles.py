"""What `vmlab run` last sent from a local workdir to a lab, kept on this machine (one small JSON file per lab,
workdir and folder on the lab, 0600 under the state dir) so the next upload sees every local edit without reading
every file.

For each file it holds the local stat at the time it was sent (size, mtime and ctime in nanoseconds, inode), the
SHA-256 of its content and the whole-second modification time given to the lab's copy. A file whose stat is the
same as then is unchanged; one whose stat moved is hashed and sent only when its content differs. A stat can hide
a write: a filesystem clock ticks coarsely (a few milliseconds on Linux, 2 s on FAT), so a same-size write in the
same tick as the recorded stat leaves it as it was. An entry whose mtime or ctime lies within RACY_NS of the
moment its stat was taken is therefore "racy" (git's word for the same problem) and is hashed again next time.

The record names the lab's instance: a lab removed and launched again under the same name is a new instance, and
its record of the old one is ignored (and `vmlab down` removes the lab's records).

Example::

    memory = SentFiles.open(store, "gpu", "i-0abc", Path("proj"), "/home/admin/work/proj")
    entry = memory.files.get("train.py")           # Sent(size=..., sha256=..., lab_mtime=...) or None
    memory.save({"train.py": Sent.of(path.lstat(), sha256_of(path), stat_at_ns, lab_mtime)})
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vmlab.fileio import write_atomic
from vmlab.state import LabStore, check_name

#: an mtime or ctime this close to the moment its stat was taken may hide a later same-size write
RACY_NS = 2_000_000_000
VERSION = 1


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Sent:
    """One file as the lab has it: the local stat when it was sent (or last found unchanged), when that stat was
    taken, its content's hash."""

    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    sha256: str
    stat_at_ns: int
    #: the whole-second modification time the lab's copy has (vmlab gave it the local one when it sent it)
    lab_mtime: int

    @classmethod
    def of(cls, st: os.stat_result, sha256: str, stat_at_ns: int, lab_mtime: int) -> Sent:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, sha256, stat_at_ns, lab_mtime)

    def same_stat(self, st: os.stat_result) -> bool:
        return (self.size, self.mtime_ns, self.ctime_ns, self.ino) == (
            st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def racy(self) -> bool:
        return max(self.mtime_ns, self.ctime_ns) >= self.stat_at_ns - RACY_NS


@dataclass
class SentFiles:
    """The record for one (lab, local workdir, folder on the lab); `files` is empty when there is none yet, when
    it is unreadable, or when it was written for another instance of the lab."""

    path: Path
    instance_id: str
    files: dict[str, Sent] = field(default_factory=dict)

    @classmethod
    def open(cls, store: LabStore, lab: str, instance_id: str, local_root: Path, remote_root: str) -> SentFiles:
        key = hashlib.sha256(f"{local_root.resolve()}\0{remote_root}".encode()).hexdigest()[:24]
        memory = cls(lab_folder(store, lab) / f"{key}.json", instance_id)
        memory.files = memory._read()
        return memory

    def _read(self) -> dict[str, Sent]:
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") == VERSION and data.get("instance_id") == self.instance_id:
                return {str(rel): Sent(**entry) for rel, entry in data["files"].items()}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            pass
        return {}  # no record, a damaged one, or one of another instance: the upload asks the lab instead

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Held while one `vmlab run` uploads: two at once into the same folder would each record only what they
        sent, and the last record written could vouch for a file the other one replaced on the lab."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self.files = self._read()  # as the run before left it
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def save(self, files: dict[str, Sent]) -> None:
        self.files = dict(files)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.path, json.dumps({"version": VERSION, "instance_id": self.instance_id,
                                            "files": {rel: asdict(s) for rel, s in sorted(files.items())}}))


def lab_folder(store: LabStore, lab: str) -> Path:
    return store.root / "uploads" / check_name(lab)


def forget(store: LabStore, lab: str) -> None:
    """Remove every upload record of lab `lab` (at `vmlab down`)."""
    shutil.rmtree(lab_folder(store, lab), ignore_errors=True)
