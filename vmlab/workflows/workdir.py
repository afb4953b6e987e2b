"""A local working directory sent to a lab incrementally (`vmlab run --workdir DIR`): only the files whose size or
modification time differ from the lab's copy are uploaded (the quick check rsync makes; the lab's copy gets the
local modification time), the rest is left alone. Excludes come from `.vmlabignore` and `.gitignore` at the top of
DIR, in a gitignore subset: `#` comments, `!` re-includes, a trailing `/` for folders only, a `/` inside anchors
the pattern at DIR, otherwise it matches a name at any depth; `*`, `?`, `[...]` and `**` as in shell globs.
`.git/` is never sent; symlinks are not sent either (their target may lie outside DIR), nor is anything written
through a symlink in the lab's copy (one a run made: the upload stops with an error before it sends a file).
Output paths (`--outputs` of this run and of every earlier run into the same folder, kept in the lab's
`.vmlab-outputs`) are never sent: the lab writes them, and an older local copy must not overwrite a newer result.

File names are data: they travel as JSON on stdin and as SFTP paths, never through a shell.

Example::

    files = scan(Path("."))                       # {"train.py": LocalFile(...), ...}, excludes applied
    sent, considered = upload(conn, files, "/home/admin/work/proj", outputs=["results"])
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vmlab.engine.command import Command
from vmlab.errors import BadInput, HostError

if TYPE_CHECKING:
    from vmlab.transport.ssh import SSHConnection

IGNORE_FILES = (".gitignore", ".vmlabignore")
ALWAYS_EXCLUDED = (".git/",)

#: in the lab's copy: the output paths of every run there so far (JSON list); never uploaded over
OUTPUTS_FILE = ".vmlab-outputs"

# Lists the regular files under $1 (symlinks not followed) with size and whole-second mtime, the symlinks and
# other entries that are neither files nor folders, and the output paths recorded there. Prints one JSON object.
REMOTE_STATE = r"""
import json, os, sys
root = sys.argv[1]
os.makedirs(os.path.dirname(root), mode=0o700, exist_ok=True)  # the lab user's alone, as the run folders
os.makedirs(root, mode=0o700, exist_ok=True)
found, links = {}, []
for top, dirs, files in os.walk(root, followlinks=False):
    for name in dirs + files:
        path = os.path.join(top, name)
        st = os.lstat(path)
        if (st.st_mode & 0o170000) == 0o100000:
            found[os.path.relpath(path, root)] = [st.st_size, int(st.st_mtime)]
        elif (st.st_mode & 0o170000) != 0o040000:
            links.append(os.path.relpath(path, root))
try:
    outputs = json.load(open(os.path.join(root, sys.argv[2])))
except (OSError, ValueError):
    outputs = []
print(json.dumps({"files": found, "links": links, "outputs": outputs}))
"""

# Creates the folders named on stdin under $1.
MAKE_DIRS = r"""
import json, os, sys
for d in json.load(sys.stdin):
    os.makedirs(os.path.join(sys.argv[1], d), exist_ok=True)
"""

# Sets the modification times given on stdin ([[relative path, seconds], ...]) under $1.
SET_TIMES = r"""
import json, os, sys
root = sys.argv[1]
for rel, mtime in json.load(sys.stdin):
    os.utime(os.path.join(root, rel), (mtime, mtime), follow_symlinks=False)
"""

Progress = Callable[[int, int, int, int], None]
"""(files sent, files to send, bytes sent, bytes to send)"""


@dataclass(frozen=True)
class LocalFile:
    path: Path
    size: int
    mtime: int
    mode: int


@dataclass(frozen=True)
class Rule:
    pattern: str
    negate: bool
    dir_only: bool
    anchored: bool

    def matches(self, rel: str, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        if self.anchored:
            return fnmatch.fnmatchcase(rel, self.pattern) or fnmatch.fnmatchcase(
                rel, self.pattern.replace("**/", ""))
        return fnmatch.fnmatchcase(posixpath.basename(rel), self.pattern)


def parse_rules(lines: Iterable[str]) -> list[Rule]:
    """gitignore-style lines -> rules, in order (the last matching rule decides)."""
    rules = []
    for raw in lines:
        line = raw.rstrip("\n").rstrip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line[1:] if negate else line
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = "/" in line
        if line:
            rules.append(Rule(line.lstrip("/"), negate, dir_only, anchored))
    return rules


def excluded(rules: list[Rule], rel: str, is_dir: bool) -> bool:
    verdict = False
    for rule in rules:
        if rule.matches(rel, is_dir):
            verdict = not rule.negate
    return verdict


def load_rules(root: Path) -> list[Rule]:
    lines = list(ALWAYS_EXCLUDED)
    for name in IGNORE_FILES:
        path = root / name
        if path.is_file():
            lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
    return parse_rules(lines)


def scan(root: Path) -> dict[str, LocalFile]:
    """Relative POSIX path -> file, for every regular file under `root` that the excludes keep."""
    if not root.is_dir():
        raise BadInput(f"--workdir {root} is not a folder", "name the folder to send to the lab")
    rules = load_rules(root)
    found: dict[str, LocalFile] = {}
    for top, dirs, files in os.walk(root, followlinks=False):
        base = Path(top).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        dirs[:] = sorted(d for d in dirs if not excluded(rules, prefix + d, True)
                         and not (Path(top) / d).is_symlink())
        for name in sorted(files):
            path, rel = Path(top) / name, prefix + name
            st = path.lstat()
            if excluded(rules, rel, False) or not path.is_file() or path.is_symlink():
                continue
            found[rel] = LocalFile(path, st.st_size, int(st.st_mtime), st.st_mode & 0o777)
    return found


def changed(local: Mapping[str, LocalFile], remote: Mapping[str, list[int]]) -> list[str]:
    """The files whose size or whole-second mtime differ from the lab's (or that the lab lacks)."""
    return [rel for rel, f in local.items() if remote.get(rel) != [f.size, f.mtime]]


def under(rel: str, paths: Iterable[str]) -> bool:
    """Whether `rel` is one of `paths` or inside one of them."""
    return any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in paths)


def _remote(conn: SSHConnection, command: Command, what: str) -> str:
    result = conn.execute(command)
    if result.rc != 0:
        raise HostError(f"cannot {what} on the lab: {result.stderr.strip()[-300:]}")
    return result.stdout


def upload(conn: SSHConnection, files: Mapping[str, LocalFile], remote_root: str, outputs: Iterable[str] = (),
           progress: Progress | None = None) -> tuple[list[str], int]:
    """Send the files of `files` that differ on the lab into `remote_root` (made when missing). Files under an
    output path (`outputs`, and those of earlier runs there) are the lab's to write: never sent. Returns what was
    sent and how many files were considered."""
    state = json.loads(_remote(conn, Command("python3", "-c", REMOTE_STATE, remote_root, OUTPUTS_FILE,
                                             label="list the lab's copy of the workdir"), "read the workdir copy"))
    known = [str(p) for p in state["outputs"]]
    all_outputs = sorted({*known, *outputs})
    files = {rel: f for rel, f in files.items() if not under(rel, all_outputs) and rel != OUTPUTS_FILE}
    todo = changed(files, state["files"])
    new_outputs = all_outputs != sorted(known)
    written = [*todo, OUTPUTS_FILE] if new_outputs else todo
    blocked = sorted(link for link in state["links"] if any(under(rel, [link]) for rel in written))
    if blocked:  # SFTP would write through it: into whatever it points at, maybe outside the folder
        raise HostError(f"{remote_root}/{blocked[0]} is a symlink on the lab (left by a run?): a file sent there "
                        "would be written through it", "remove it on the lab (`vmlab ssh NAME`), or exclude "
                        "the path in .vmlabignore")
    if new_outputs:
        conn.put(json.dumps(all_outputs).encode(), f"{remote_root}/{OUTPUTS_FILE}", mode=0o600)
    dirs = sorted({posixpath.dirname(rel) for rel in todo} - {""})
    if dirs:
        _remote(conn, Command("python3", "-c", MAKE_DIRS, remote_root, stdin=json.dumps(dirs), label="make folders"),
                f"make folders under {remote_root}")
    total = sum(files[rel].size for rel in todo)
    sent_bytes = 0
    for count, rel in enumerate(todo, 1):
        conn.put(files[rel].path, f"{remote_root}/{rel}", mode=files[rel].mode)
        sent_bytes += files[rel].size
        if progress is not None:
            progress(count, len(todo), sent_bytes, total)
    if todo:
        times = json.dumps([[rel, files[rel].mtime] for rel in todo])
        _remote(conn, Command("python3", "-c", SET_TIMES, remote_root, stdin=times, label="set file times"),
                f"set file times under {remote_root}")
    return todo, len(files)
