"""Files and directories: Directory, File, Template, Line, Copy, Download.

Contents are compared by sha256 (from `FileStat`), so an unchanged file costs one `stat` and no transfer; new
contents are written atomically with the bytes on stdin, never on a command line. Example::

    recipe.step("data", files.Directory("/srv/data", mode="0750", owner="lab"))
    recipe.step("motd", files.File("/etc/motd", content="Welcome\\n"))
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from vmlab.engine.command import Command
from vmlab.engine.facts import Facts, FileStat, FileText, PathInfo
from vmlab.engine.operation import Operation, unified_diff
from vmlab.engine.templates import is_template, render
from vmlab.errors import BadInput
from vmlab.operations._write import (
    check_account,
    check_local_path,
    check_mode,
    check_path,
    check_sha256,
    check_url,
    chown_spec,
    downloader,
    fix_attrs,
    write_file,
)


def _check_attrs(op: Any) -> None:
    check_mode(op)
    check_account(op, "owner")
    check_account(op, "group")


def _not_a(st: PathInfo, path: str, kind: str) -> BadInput:
    return BadInput(f"{path} on the host is a {st.kind}, not a {kind}",
                    "remove it first or choose another path")


def plan_content(facts: Facts, path: str, data: bytes | None, mode: str | None, owner: str | None,
                 group: str | None) -> Iterator[Command]:
    """Commands that make `path` a regular file holding `data` (None: any content) with these attributes."""
    st = facts.get(FileStat(path))
    if st is not None and st.kind in ("directory", "other"):
        raise _not_a(st, path, "file")
    # a symlink has no sha256 of its own: it is replaced by the file
    if st is None or (data is not None and st.sha256 != hashlib.sha256(data).hexdigest()):
        yield write_file(path, content=b"" if data is None else data, mode=mode, owner=owner, group=group)
    elif st.kind == "file":
        yield from fix_attrs(path, st, mode, owner, group)


def diff_content(facts: Facts, path: str, data: bytes | None) -> str | None:
    """Unified diff from the file's current text to `data`; a one-line note for binary contents."""
    if data is None:
        return None
    try:
        new = data.decode()
    except UnicodeDecodeError:
        st = facts.get(FileStat(path))
        changed = st is None or st.sha256 != hashlib.sha256(data).hexdigest()
        return f"binary file {path} would change\n" if changed else None
    return unified_diff(facts.get(FileText(path)), new, path)


def _read_local(op: object, path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise BadInput(f"{type(op).__name__}: cannot read local file {path}: {exc.strerror}",
                       "give a path on this machine (relative to the current directory)") from None


def _with_local_hash(op: Operation, src: str) -> str:
    """An operation's identity including the bytes of the local file it reads (a recipe's digest must change
    when that file does); a missing file hashes as such and fails later, when planned."""

    try:
        digest = hashlib.sha256(_read_local(op, src)).hexdigest()
    except BadInput:
        digest = "missing"
    return f"{op!r} sha256={digest}"


@dataclass(frozen=True)
class Directory(Operation):
    """A directory (made with its parents when missing) with an optional mode and owner; or no directory.

    Example: ``files.Directory("/srv/data", mode="0750", owner="lab", group="lab")``.
    `present=False` removes the directory with everything in it. A symlink at `path` is left as it is.
    """

    path: str
    mode: str | None = None
    owner: str | None = None
    group: str | None = None
    present: bool = True

    def __post_init__(self) -> None:
        check_path(self, "path")
        _check_attrs(self)
        if not self.present and self.path.rstrip("/") == "":
            raise BadInput("Directory: refusing to remove /", "name the directory to remove")

    def plan(self, facts: Facts) -> Iterator[Command]:
        st = facts.get(FileStat(self.path))
        if not self.present:
            if st is not None:
                if st.kind != "directory":
                    raise _not_a(st, self.path, "directory")
                yield Command("rm", "-rf", self.path)
            return
        if st is None:
            yield Command("mkdir", "-p", *(("-m", self.mode) if self.mode else ()), self.path)
            spec = chown_spec(self.owner, self.group)
            if spec:
                yield Command("chown", spec, self.path)
            return
        if st.kind == "link":
            return
        if st.kind != "directory":
            raise _not_a(st, self.path, "directory")
        yield from fix_attrs(self.path, st, self.mode, self.owner, self.group)


@dataclass(frozen=True)
class File(Operation):
    """A regular file with exactly `content` (raw text: not templated), or no file with `present=False`.

    Example: ``files.File("/etc/sysctl.d/90-lab.conf", content="vm.swappiness = 10\\n", mode="0644")``.
    `content=None` only makes sure the file exists (empty when created) and fixes its mode and owner.
    A mode or owner left as None keeps the existing file's (a new file gets 0644, owned by the step's user).
    """

    raw_fields: ClassVar[frozenset[str]] = frozenset({"content"})

    path: str
    content: str | None = None
    mode: str | None = None
    owner: str | None = None
    group: str | None = None
    present: bool = True

    def __post_init__(self) -> None:
        check_path(self, "path")
        _check_attrs(self)
        if self.content is not None and not isinstance(self.content, str):
            raise BadInput(f"File: content must be text, got {type(self.content).__name__}",
                           "decode it, or use files.Copy for a local binary file")

    def _data(self) -> bytes | None:
        return None if self.content is None else self.content.encode()

    def plan(self, facts: Facts) -> Iterator[Command]:
        if self.present:
            yield from plan_content(facts, self.path, self._data(), self.mode, self.owner, self.group)
            return
        st = facts.get(FileStat(self.path))
        if st is not None:
            if st.kind == "directory":
                raise _not_a(st, self.path, "file")
            yield Command("rm", "-f", self.path)

    def diff(self, facts: Facts) -> str | None:
        if not self.present:
            old = facts.get(FileText(self.path))
            return None if old is None else unified_diff(old, "", self.path)
        return diff_content(facts, self.path, self._data())


@dataclass(frozen=True)
class Template(Operation):
    """A file rendered from a Jinja template with the run's variables, then written like `File`.

    Give the template inline as `source`, or as `src`, the path of a template file on this machine::

        files.Template("/etc/motd", source="Hello from {{ inventory_hostname }}\\n")
        files.Template("/etc/nginx/conf.d/lab.conf", src=str(HERE / "lab.conf.j2"), mode="0644")

    Undefined variables are errors, never empty strings.
    """

    path: str
    source: str | None = None
    src: str | None = None
    mode: str | None = None
    owner: str | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        check_path(self, "path")
        _check_attrs(self)
        if (self.source is None) == (self.src is None):
            raise BadInput("Template: give exactly one of source (the template text) and src (a local file)",
                           'e.g. files.Template("/etc/motd", source="hi {{ name }}\\n")')
        if self.src is not None:
            check_local_path(self, "src")

    def render(self, variables: Mapping[str, Any], where: str) -> Template:
        op = super().render(variables, where)
        assert isinstance(op, Template)
        if op.src is None:
            return op
        text = _read_local(op, op.src).decode(errors="replace")
        return replace(op, source=render(text, variables, f"{where}: {op.src}"), src=None)

    def fingerprint(self) -> str:
        return _with_local_hash(self, self.src) if self.src is not None else repr(self)

    def _data(self) -> bytes:
        if self.src is not None:  # planned without the runner's render(): render with no variables
            return self.render({}, f"Template {self.path}")._data()
        assert self.source is not None
        return self.source.encode()

    def plan(self, facts: Facts) -> Iterator[Command]:
        yield from plan_content(facts, self.path, self._data(), self.mode, self.owner, self.group)

    def diff(self, facts: Facts) -> str | None:
        return diff_content(facts, self.path, self._data())


def ensure_line(text: str | None, line: str, matches: Callable[[str], bool] | None,
                present: bool) -> str | None:
    """The new text of a file after making sure `line` is in it (or absent); None when nothing changes.

    Present: replace the last line `matches` accepts, else keep the text if `line` is in it, else append.
    Absent: drop every line `matches` accepts (every line equal to `line` without `matches`).
    """
    if text is None and not present:
        return None
    lines = (text or "").splitlines()
    if present:
        hits = [i for i, current in enumerate(lines) if matches is not None and matches(current)]
        if hits:
            if lines[hits[-1]] == line:
                return None
            lines[hits[-1]] = line
        elif line in lines:
            return None
        else:
            lines.append(line)
    else:
        kept = [current for current in lines if not (matches(current) if matches else current == line)]
        if len(kept) == len(lines):
            return None
        lines = kept
    return "".join(current + "\n" for current in lines)


@dataclass(frozen=True)
class Line(Operation):
    """A line in a text file: present (appended, or replacing the last line matching `regexp`) or absent.

    The file is created when missing. Example::

        files.Line("/etc/ssh/sshd_config", "PasswordAuthentication no",
                   regexp=r"^#?\\s*PasswordAuthentication\\b")

    With `present=False`, every line matching `regexp` (or equal to `line`) is removed.
    """

    path: str
    line: str
    regexp: str | None = None
    present: bool = True

    def __post_init__(self) -> None:
        check_path(self, "path")
        if not isinstance(self.line, str) or "\n" in self.line:
            raise BadInput(f"Line: line {self.line!r} must be a single line of text",
                           "use one Line per line, or files.File for a whole file")
        if self.regexp is not None and not is_template(self.regexp):
            try:
                re.compile(self.regexp)
            except re.error as exc:
                raise BadInput(f"Line: regexp {self.regexp!r} is not a valid regular expression: {exc}",
                               "use Python `re` syntax") from None

    def _new_text(self, facts: Facts) -> tuple[str | None, str | None]:
        old = facts.get(FileText(self.path))
        matches = None
        if self.regexp is not None:
            pattern = re.compile(self.regexp)

            def matches(text: str) -> bool:
                return pattern.search(text) is not None
        return old, ensure_line(old, self.line, matches, self.present)

    def plan(self, facts: Facts) -> Iterator[Command]:
        _, new = self._new_text(facts)
        if new is not None:
            yield write_file(self.path, content=new.encode(), label=f"edit {self.path}: "
                             f"{'ensure' if self.present else 'remove'} line {self.line!r}")

    def diff(self, facts: Facts) -> str | None:
        old, new = self._new_text(facts)
        return None if new is None else unified_diff(old, new, self.path)


@dataclass(frozen=True)
class Copy(Operation):
    """A file on the host with the bytes of a local file (`src`, read when planning), then like `File`.

    Example: ``files.Copy(str(HERE / "files" / "lab.png"), "/srv/www/lab.png", mode="0644")``.
    """

    src: str
    dest: str
    mode: str | None = None
    owner: str | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        check_local_path(self, "src")
        check_path(self, "dest")
        _check_attrs(self)

    def plan(self, facts: Facts) -> Iterator[Command]:
        data = _read_local(self, self.src)
        yield from plan_content(facts, self.dest, data, self.mode, self.owner, self.group)

    def fingerprint(self) -> str:
        return _with_local_hash(self, self.src)

    def diff(self, facts: Facts) -> str | None:
        return diff_content(facts, self.dest, _read_local(self, self.src))


@dataclass(frozen=True)
class Download(Operation):
    """A file fetched from `url` by the host (curl, else wget) and checked against `sha256` before it is used.

    Nothing is downloaded when the file already has that sha256. Example::

        files.Download("https://example.org/tool-1.2.tar.gz", "/opt/tool-1.2.tar.gz",
                       sha256="3f2e5498e550a6437f15d9cc8020d52742d0ba70976ee8fce4f0daefa3992d2e")
    """

    url: str
    dest: str
    sha256: str
    mode: str | None = None
    owner: str | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        check_url(self, "url")
        check_path(self, "dest")
        check_sha256(self, "sha256")
        _check_attrs(self)

    def plan(self, facts: Facts) -> Iterator[Command]:
        st = facts.get(FileStat(self.dest))
        if st is not None and st.kind in ("directory", "other"):
            raise _not_a(st, self.dest, "file")
        if st is not None and st.kind == "file" and st.sha256 == self.sha256:
            yield from fix_attrs(self.dest, st, self.mode, self.owner, self.group)
            return
        yield write_file(self.dest, fetch=downloader(facts, self.url), sha256=self.sha256, mode=self.mode,
                         owner=self.owner, group=self.group, label=f"download {self.url} to {self.dest}")


__all__ = ["Copy", "Directory", "Download", "File", "Line", "Template", "ensure_line"]
