"""Helpers shared by the operation modules: the atomic file-write command, attribute fixes, argument checks.

Every file vmlab writes goes through `write_file`: the new bytes land in a temporary file in the same
directory (so the final `mv` is a rename, atomic on one filesystem), get their mode and owner, and only then
replace the old file. A reader never sees a half-written file; a failed write leaves the old one untouched.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

from vmlab.engine.command import Command, sh
from vmlab.engine.facts import Facts, PathInfo, Which
from vmlab.engine.templates import is_template
from vmlab.errors import BadInput

# $1 destination, $2 mode or "", $3 chown spec or "", $4 expected sha256 or "", then either nothing (the
# bytes come on stdin) or the argv of a command that prints them (a downloader). The replaced file's mode and
# owner are kept unless new ones are given; a new file gets 0644 (mktemp makes 0600).
WRITE_SCRIPT = """\
set -e
dest=$1 mode=$2 owner=$3 sum=$4
shift 4
tmp=$(mktemp "$(dirname -- "$dest")/.vmlab.XXXXXXXX")
trap 'rm -f -- "$tmp"' EXIT
if [ "$#" -gt 0 ]; then "$@" > "$tmp"; else cat > "$tmp"; fi
if [ -n "$sum" ]; then
  got=$(sha256sum < "$tmp" | cut -c1-64)
  if [ "$got" != "$sum" ]; then
    echo "vmlab: sha256 of the new $dest is $got, expected $sum; left the old file in place" >&2
    exit 1
  fi
fi
if [ -e "$dest" ]; then
  chown --reference="$dest" -- "$tmp" 2>/dev/null || true
  chmod --reference="$dest" -- "$tmp"
else
  chmod 0644 -- "$tmp"
fi
if [ -n "$owner" ]; then chown -- "$owner" "$tmp"; fi
if [ -n "$mode" ]; then chmod -- "$mode" "$tmp"; fi
mv -fT -- "$tmp" "$dest"
trap - EXIT
"""


def chown_spec(owner: str | None, group: str | None) -> str:
    """`owner:group`, `owner` or `:group` for chown; "" when neither is set."""
    if owner and group:
        return f"{owner}:{group}"
    if owner:
        return owner
    return f":{group}" if group else ""


def write_file(path: str, *, content: bytes | None = None, fetch: tuple[str, ...] = (), sha256: str = "",
               mode: str | None = None, owner: str | None = None, group: str | None = None,
               label: str | None = None) -> Command:
    """The command that atomically replaces `path` with `content` (sent on stdin) or with what `fetch` prints.

    `sha256`, when given, is checked on the host before the file is moved into place.
    """
    assert (content is None) != (not fetch), "write_file needs exactly one of content and fetch"
    spec = chown_spec(owner, group)
    if label is None:
        what = f"{len(content)} bytes" if content is not None else fetch[-1]
        extra = "".join(f", {k} {v}" for k, v in (("mode", mode), ("owner", spec)) if v)
        label = f"write {path} ({what}{extra})"
    return sh(WRITE_SCRIPT, path, mode or "", spec, sha256, *fetch, stdin=content, label=label)


def fix_attrs(path: str, st: PathInfo, mode: str | None, owner: str | None,
              group: str | None) -> Iterator[Command]:
    """chown/chmod commands for the attributes of an existing path that differ from the wanted ones."""
    spec = chown_spec(owner if owner and owner != st.owner else None,
                      group if group and group != st.group else None)
    if spec:
        yield Command("chown", spec, path)
    # after a chown (which clears set-id bits) the mode must be set again
    if mode and (mode != st.mode or (spec and mode[0] != "0")):
        yield Command("chmod", mode, path)


def downloader(facts: Facts, url: str) -> tuple[str, ...]:
    """argv of a command that prints the body of `url` to stdout: curl, else wget, on the host."""
    if facts.get(Which("curl")):
        return ("curl", "-fsSL", "--retry", "3", url)
    if facts.get(Which("wget")):
        return ("wget", "-q", "-O", "-", url)
    raise BadInput(f"cannot download {url}: neither curl nor wget is on the host's PATH",
                   "install one in an earlier step, e.g. apt.Packages(('curl',))")


# ---- argument checks, for __post_init__ -------------------------------------------------------------------
# A field still holding a Jinja template is checked after rendering (rendering rebuilds the operation).

_MODE = re.compile(r"[0-7]{3,4}")
_ACCOUNT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_URL = re.compile(r"(https?|ftp)://[^\s]+")


def is_pending(value: object) -> bool:
    return isinstance(value, str) and is_template(value)


def set_field(op: object, name: str, value: Any) -> None:
    """Normalise a field of a frozen dataclass from its __post_init__."""
    object.__setattr__(op, name, value)


def check_path(op: object, field: str, *, optional: bool = False) -> None:
    """An absolute path (str or os.PathLike; stored as str)."""
    value = getattr(op, field)
    if value is None and optional:
        return
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
        set_field(op, field, value)
    if is_pending(value):
        return
    name = type(op).__name__
    if not isinstance(value, str) or not value.startswith("/"):
        raise BadInput(f"{name}: {field} {value!r} is not an absolute path",
                       'write it from the root, e.g. "/srv/data"')
    if "\n" in value or "\0" in value:
        raise BadInput(f"{name}: {field} {value!r} contains a newline or NUL", "use a plain path")


def check_local_path(op: object, field: str) -> None:
    """A path on this machine (relative paths are relative to the current directory)."""
    value = getattr(op, field)
    if isinstance(value, os.PathLike):
        set_field(op, field, os.fspath(value))
    elif not isinstance(value, str) or not value:
        raise BadInput(f"{type(op).__name__}: {field} must be a local file path, got {value!r}",
                       'e.g. str(Path(__file__).parent / "files" / "app.conf")')


def check_mode(op: object, field: str = "mode") -> None:
    """An octal mode string; stored as four digits ("644" -> "0644") to match what FileStat reports."""
    value = getattr(op, field)
    if value is None or is_pending(value):
        return
    name = type(op).__name__
    if isinstance(value, int):
        example = f"{value:04o}" if 0 <= value <= 0o7777 else "0644"
        raise BadInput(f"{name}: {field} {value!r} is a number",
                       f'write it as an octal string, e.g. "{example}"')
    if not isinstance(value, str) or not _MODE.fullmatch(value):
        raise BadInput(f"{name}: {field} {value!r} is not an octal mode",
                       'write it as a string such as "0644"')
    set_field(op, field, value.zfill(4))


def check_account(op: object, field: str, *, optional: bool = True) -> None:
    """A user or group name (or number)."""
    value = getattr(op, field)
    if (value is None and optional) or is_pending(value):
        return
    if not isinstance(value, str) or not _ACCOUNT.fullmatch(value) or len(value) > 32:
        raise BadInput(f"{type(op).__name__}: {field} {value!r} is not a valid user or group name",
                       "use letters, digits, '_', '.' and '-', not starting with '-'")


def check_sha256(op: object, field: str, *, optional: bool = False) -> None:
    """64 hex digits; stored lower-case, as sha256sum prints it."""
    value = getattr(op, field)
    if (value is None and optional) or is_pending(value):
        return
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise BadInput(f"{type(op).__name__}: {field} {value!r} is not a sha256 (64 hex digits)",
                       "compute it with `sha256sum FILE`")
    set_field(op, field, value.lower())


def check_url(op: object, field: str) -> None:
    value = getattr(op, field)
    if is_pending(value):
        return
    if not isinstance(value, str) or not _URL.fullmatch(value):
        raise BadInput(f"{type(op).__name__}: {field} {value!r} is not an http(s) or ftp URL",
                       'e.g. "https://example.org/file.tar.gz"')


def check_strings(op: object, field: str, what: str, *, allow_empty: bool = False) -> tuple[str, ...]:
    """A tuple of strings (a list is accepted and stored as a tuple; a lone string is an error)."""
    value = getattr(op, field)
    name = type(op).__name__
    if isinstance(value, str):
        raise BadInput(f"{name}: {field} must be a tuple of {what}, got the string {value!r}",
                       f"write {field}=({value!r},)")
    if isinstance(value, list):
        value = tuple(value)
        set_field(op, field, value)
    if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
        raise BadInput(f"{name}: {field} must be a tuple of non-empty {what}, got {value!r}",
                       f"write {field}=('a', 'b')")
    if not value and not allow_empty:
        raise BadInput(f"{name}: {field} is empty", f"name at least one of the {what}")
    return value
