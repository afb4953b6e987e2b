"""A run's outputs fetched from the lab (`vmlab run --outputs PATH`): PATH is relative to the run's folder on the
lab and lands at the same place under the local workdir. Nothing ever lands outside that folder: a PATH with `..`
or a leading `/` is refused before the run, symlinks on the lab are neither listed nor followed (a link to
/etc/shadow stays a link, reported as skipped), file names from the lab are checked again here, and no local folder
on the way may be a symlink. Nothing under a `.git` folder is fetched (its config and hooks are code that git, or
a shell prompt showing git status, would run here). A file is written to a temporary name beside its place and
renamed over it, with the lab's modification time. (The next `vmlab run` never sends it back: output paths are
not uploaded, see workdir.py.)

Example::

    check_paths(["results/", "model.pt"])              # BadInput on "../x" or "/etc"
    fetched = download(conn, "/home/admin/work/proj", ["results/"], Path("."))
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from vmlab.engine.command import Command
from vmlab.errors import BadInput, HostError

if TYPE_CHECKING:
    from vmlab.transport.ssh import SSHConnection

# The regular files under each path ($2...) of $1, never through a symlink; prints one JSON object.
REMOTE_LIST = r"""
import json, os, sys
root = os.path.realpath(sys.argv[1])
out = {"files": [], "skipped": [], "missing": []}
def inside(path):
    return os.path.realpath(path).startswith(root + os.sep)
def take(path):
    st = os.lstat(path)
    rel = os.path.relpath(path, root)
    if (st.st_mode & 0o170000) == 0o100000 and inside(path):
        out["files"].append([rel, st.st_size, int(st.st_mtime)])
    elif (st.st_mode & 0o170000) != 0o040000:
        out["skipped"].append(rel)
for wanted in sys.argv[2:]:
    path = os.path.join(root, wanted)
    if not os.path.lexists(path):
        out["missing"].append(wanted)
    elif os.path.islink(path) or not inside(path):
        out["skipped"].append(wanted)
    elif os.path.isdir(path):
        for top, dirs, files in os.walk(path, followlinks=False):
            for name in dirs:
                if os.path.islink(os.path.join(top, name)):
                    out["skipped"].append(os.path.relpath(os.path.join(top, name), root))
            for name in files:
                take(os.path.join(top, name))
    else:
        take(path)
print(json.dumps(out))
"""


@dataclass
class Fetched:
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    bytes: int = 0


def safe_relative(text: str, what: str) -> PurePosixPath:
    """`text` as a relative path without `..`, not the folder itself (".", which the lab's listing never
    fetched): BadInput otherwise."""
    path = PurePosixPath(text)
    if not text.strip() or not path.parts or path.is_absolute() or ".." in path.parts or "\x00" in text:
        raise BadInput(f"{what} {text!r} is not a path inside the run's folder",
                       "give a relative path without '..' (not the whole folder), e.g. results/ or model.pt")
    return path


def check_paths(paths: Sequence[str]) -> list[str]:
    return [str(safe_relative(p, "--outputs")) for p in paths]


def _local_target(root: Path, rel: str) -> Path:
    """Where `rel` (a name from the lab: data) lands under `root`; HostError when it would leave `root` or pass
    through a local symlink."""
    parts = safe_relative(rel, "output file").parts
    current = root
    for part in parts[:-1]:
        current = current / part
        if current.is_symlink() or (current.exists() and not current.is_dir()):
            raise HostError(f"output {rel} would be written through {current}, which is a symlink or a file",
                            "remove it locally, or fetch the outputs into another --workdir")
    return root / Path(*parts)


def download(conn: SSHConnection, remote_root: str, paths: Sequence[str], local_root: Path) -> Fetched:
    """Fetch the regular files under `paths` (relative to `remote_root`) to the same places under `local_root`."""
    listing = conn.execute(Command("python3", "-c", REMOTE_LIST, remote_root, *paths, label="list outputs"))
    if listing.rc != 0:
        raise HostError(f"cannot list the outputs on the lab: {listing.stderr.strip()[-300:]}")
    found = json.loads(listing.stdout)
    fetched = Fetched(skipped=list(found["skipped"]), missing=list(found["missing"]))
    root = local_root.resolve()
    for rel, size, mtime in found["files"]:
        if ".git" in PurePosixPath(rel).parts:  # a repository's config and hooks are code git runs here
            fetched.skipped.append(rel)
            continue
        target = _local_target(root, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.vmlab-part"
        tmp.unlink(missing_ok=True)  # never write through whatever is there
        conn.get(f"{remote_root}/{rel}", tmp)
        os.utime(tmp, (mtime, mtime))  # when the lab wrote it, not when it was fetched
        os.replace(tmp, target)
        fetched.files.append(rel)
        fetched.bytes += int(size)
    return fetched
