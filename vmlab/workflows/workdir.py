"""A local working directory sent to a lab incrementally (`vmlab run --workdir DIR`): only the files whose content
differs from the lab's copy are uploaded, the rest is left alone. What was sent is remembered on this machine
(vmlab.workflows.sentfiles: stat and SHA-256 per file, for this lab instance), so a file whose stat has not moved
is not read again, one whose stat moved is hashed and sent only when its content changed, and an edit that keeps
the size within the same second is never missed (rsync's size + mtime quick check misses it). The lab's copy is
listed too (size and whole-second mtime, which vmlab sets to the local one): a file changed or removed there is
sent again. Without a record (another machine, a lost state dir), a file whose size and second match the lab's is
compared by hash on the lab. Excludes come from `.vmlabignore` and `.gitignore` at the top of
DIR, in a gitignore subset: `#` comments, `!` re-includes, a trailing `/` for folders only, a `/` inside anchors
the pattern at DIR, otherwise it matches a name at any depth; `*`, `?`, `[...]` and `**` as in shell globs.
`.git/` is never sent; symlinks are not sent either (their target may lie outside DIR), nor is anything written
through a symlink in the lab's copy (one a run made: the upload stops with an error before it sends a file).
Output paths (`--outputs` of this run and of every earlier run into the same folder, kept in the lab's
`.vmlab-outputs`) are never sent: the lab writes them, and an older local copy must not overwrite a newer result.

File names are data: they travel as JSON on stdin and as SFTP paths, never through a shell.

Example::

    files = scan(Path("."))                       # {"train.py": LocalFile(...), ...}, excludes applied
    memory = SentFiles.open(LabStore(), "gpu", record.instance_id, Path("."), "/home/admin/work/proj")
    report = upload(conn, files, "/home/admin/work/proj", memory, outputs=["results"])   # report.sent: [...]
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vmlab.engine.command import Command
from vmlab.errors import BadInput, HostError
from vmlab.workflows.sentfiles import Sent, SentFiles, sha256_of

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

# Prints {relative path: SHA-256} of the regular files under $1 named on stdin (null for one that is not there or
# not a regular file; a symlink is not followed).
REMOTE_HASH = r"""
import hashlib, json, os, stat, sys
out = {}
for rel in json.load(sys.stdin):
    try:
        fd = os.open(os.path.join(sys.argv[1], rel), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        out[rel] = None
        continue
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            out[rel] = None
            continue
        digest = hashlib.sha256()
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
        out[rel] = digest.hexdigest()
print(json.dumps(out))
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
    """A file of the workdir and its `lstat` when scanned."""

    path: Path
    stat: os.stat_result

    @property
    def size(self) -> int:
        return self.stat.st_size

    @property
    def mode(self) -> int:
        return self.stat.st_mode & 0o777

    @property
    def second(self) -> int:
        """The whole-second modification time (what the lab's copy gets)."""
        return self.stat.st_mtime_ns // 1_000_000_000


@dataclass
class Plan:
    """What an upload does with each file: `send` it, `verify` it (no record; same size and second on the lab:
    its local hash is compared with the lab's), or `keep` it (the lab has it; its record, refreshed when only its
    stat moved). `hashed` counts the local files read to decide."""

    send: list[str] = field(default_factory=list)
    verify: dict[str, str] = field(default_factory=dict)
    keep: dict[str, Sent] = field(default_factory=dict)
    hashed: int = 0


@dataclass
class Uploaded:
    """The files sent, the number considered, and how many were read to decide (a file sent is read again)."""

    sent: list[str]
    considered: int
    hashed: int


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
            found[rel] = LocalFile(path, st)
    return found


def plan(local: Mapping[str, LocalFile], remote: Mapping[str, list[int]], known: Mapping[str, Sent],
         scanned_at_ns: int, digest: Callable[[Path], str] = sha256_of) -> Plan:
    """Decide per file from the lab's listing (`remote`: [size, whole-second mtime]), the record of what was sent
    (`known`) and the local stat taken after `scanned_at_ns`; a file is read (`digest`) only when its stat moved,
    its record is racy, or there is no record but the lab's size and second match."""
    decided = Plan()
    for rel, f in local.items():
        lab, entry = remote.get(rel), known.get(rel)
        if lab is None:
            decided.send.append(rel)
        elif entry is None:
            if lab == [f.size, f.second]:
                decided.verify[rel] = digest(f.path)
                decided.hashed += 1
            else:
                decided.send.append(rel)
        elif lab != [entry.size, entry.lab_mtime]:
            decided.send.append(rel)  # the lab's copy is no longer what was sent
        elif entry.same_stat(f.stat) and not entry.racy():
            decided.keep[rel] = entry
        else:
            content = digest(f.path)
            decided.hashed += 1
            if content == entry.sha256:
                decided.keep[rel] = Sent.of(f.stat, content, scanned_at_ns, entry.lab_mtime)
            else:
                decided.send.append(rel)
    return decided


def under(rel: str, paths: Iterable[str]) -> bool:
    """Whether `rel` is one of `paths` or inside one of them."""
    return any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in paths)


def _remote(conn: SSHConnection, command: Command, what: str) -> str:
    result = conn.execute(command)
    if result.rc != 0:
        raise HostError(f"cannot {what} on the lab: {result.stderr.strip()[-300:]}")
    return result.stdout


def upload(conn: SSHConnection, files: Mapping[str, LocalFile], remote_root: str, memory: SentFiles,
           outputs: Iterable[str] = (), progress: Progress | None = None, scanned_at_ns: int = 0) -> Uploaded:
    """Send the files of `files` whose content the lab's copy in `remote_root` (made when missing) lacks, and
    record what the lab has in `memory`. Files under an output path (`outputs`, and those of earlier runs there)
    are the lab's to write: never sent. `scanned_at_ns`: a wall-clock time taken before `files` was scanned."""
    state = json.loads(_remote(conn, Command("python3", "-c", REMOTE_STATE, remote_root, OUTPUTS_FILE,
                                             label="list the lab's copy of the workdir"), "read the workdir copy"))
    known = [str(p) for p in state["outputs"]]
    all_outputs = sorted({*known, *outputs})
    files = {rel: f for rel, f in files.items() if not under(rel, all_outputs) and rel != OUTPUTS_FILE}
    decided = plan(files, state["files"], memory.files, scanned_at_ns)
    in_sync = dict(decided.keep)
    todo = list(decided.send)
    if decided.verify:
        theirs = json.loads(_remote(conn, Command("python3", "-c", REMOTE_HASH, remote_root,
                                                  stdin=json.dumps(sorted(decided.verify)), label="hash files"),
                                    f"hash files under {remote_root}"))
        for rel, mine in decided.verify.items():
            if theirs.get(rel) == mine:
                in_sync[rel] = Sent.of(files[rel].stat, mine, scanned_at_ns, files[rel].second)
            else:
                todo.append(rel)
    todo.sort()
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
    sent_bytes, times = 0, []
    for count, rel in enumerate(todo, 1):
        entry = _send(conn, files[rel], f"{remote_root}/{rel}")
        if entry is not None:
            in_sync[rel] = entry
        times.append([rel, entry.lab_mtime if entry is not None else files[rel].second])
        sent_bytes += files[rel].size
        if progress is not None:
            progress(count, len(todo), sent_bytes, total)
    if times:
        _remote(conn, Command("python3", "-c", SET_TIMES, remote_root, stdin=json.dumps(times),
                              label="set file times"), f"set file times under {remote_root}")
    memory.save(in_sync)
    return Uploaded(todo, len(files), decided.hashed)


def _send(conn: SSHConnection, local: LocalFile, remote_path: str) -> Sent | None:
    """Put one file; its record, or None when it changed while it was sent (then it is sent again next time)."""
    stat_at = time.time_ns()
    before = local.path.lstat()
    content = sha256_of(local.path)
    conn.put(local.path, remote_path, mode=local.mode)
    entry = Sent.of(before, content, stat_at, before.st_mtime_ns // 1_000_000_000)
    return entry if entry.same_stat(local.path.lstat()) else None
