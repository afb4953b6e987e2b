"""Files under the synced folder, reached one path component at a time without following symbolic links.

Every path the agent reads or writes is relative to the folder ("nb/a.ipynb"). Each folder on the way is opened
with O_NOFOLLOW | O_DIRECTORY relative to the one before it (openat), and the file itself with O_NOFOLLOW, so a
component that is (or was just swapped for) a symlink raises `Outside` instead of leading out of the folder:
`data/cfg -> /etc` never makes `cfg/passwd` readable, and a bucket key `link/x` is never written through
`data/link -> ../elsewhere`. The folder itself may be a symlink (a data disk mounted elsewhere).

Example::

    st = lstat_under(folder, "nb/a.ipynb")          # None when missing (or behind a symlink)
    with open_under(folder, "nb/a.ipynb") as f:     # raises Outside for a symlink on the way
        data = f.read()
    write_under(folder, "nb/b.ipynb", lambda f: f.write(b"{}"))
"""

from __future__ import annotations

import errno
import os
import secrets
import stat as stat_module
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NOFOLLOW_DIR = _DIR | os.O_NOFOLLOW
# O_NONBLOCK: opening a FIFO someone left in the folder must not hang the agent
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
# The agent's restore temporaries: ".~" keeps them out of every sync (a default exclude) and out of JupyterLab.
TEMP_PREFIX = ".~vmlab-"


class Outside(OSError):
    """A path component is a symlink, or not a folder where one is needed: following it could leave the folder."""


def _open_dir(name: str, parent: int) -> int:
    try:
        return os.open(name, _NOFOLLOW_DIR, dir_fd=parent)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Outside(e.errno, f"{name} is a symlink or not a folder") from None
        raise


@contextmanager
def parent_of(root: Path, rel: str, create: bool = False) -> Iterator[tuple[int, str]]:
    """(fd of the folder holding `rel`, its last component), every folder on the way checked; `create` makes
    missing folders. Raises FileNotFoundError, or Outside for a symlink or a file on the way."""
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts) or "\0" in rel:
        raise Outside(errno.EINVAL, f"{rel!r} is not a relative path inside the folder")
    fd = os.open(root, _DIR)
    try:
        for part in parts[:-1]:
            try:
                child = _open_dir(part, fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
                child = _open_dir(part, fd)
            os.close(fd)
            fd = child
        yield fd, parts[-1]
    finally:
        os.close(fd)


def lstat_under(root: Path, rel: str) -> os.stat_result | None:
    """The stat of `rel` itself (a symlink is not followed), or None when it is missing or behind a symlink."""
    try:
        with parent_of(root, rel) as (fd, name):
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except (FileNotFoundError, Outside):
        return None


@contextmanager
def open_under(root: Path, rel: str) -> Iterator[BinaryIO]:
    """`rel` opened for reading; Outside unless it is a regular file reached without a symlink."""
    with parent_of(root, rel) as (parent, name):
        try:
            fd = os.open(name, _FILE, dir_fd=parent)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise Outside(e.errno, f"{rel} is a symlink") from None
            raise
    if not stat_module.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Outside(errno.EINVAL, f"{rel} is not a regular file")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as f:
        yield f


def write_under(root: Path, rel: str, fill: Callable[[BinaryIO], object]) -> os.stat_result:
    """Write `rel` whole or not at all: `fill` writes a temporary beside it (created without following links),
    which is synced and renamed over `rel` (a symlink there is replaced, never followed). Returns the new stat."""
    with parent_of(root, rel, create=True) as (parent, name):
        tmp = fit_name(f"{TEMP_PREFIX}{secrets.token_hex(4)}-", name, "")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                     dir_fd=parent)
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=parent)
            except FileNotFoundError:
                pass
            raise
        return os.stat(name, dir_fd=parent, follow_symlinks=False)


def fit_name(head: str, middle: str, tail: str, limit: int = 255) -> str:
    """`head + middle + tail`, `middle` shortened (by whole characters) until the name's bytes on disk (UTF-8,
    undecodable bytes as they were) fit in `limit`, the most a Linux file name holds.

    Example: `fit_name(".~vmlab-1-", "é" * 200, "")` is 255 bytes or less and keeps its head."""
    fixed = len(os.fsencode(head)) + len(os.fsencode(tail))
    while middle and fixed + len(os.fsencode(middle)) > limit:
        middle = middle[: -max(1, (fixed + len(os.fsencode(middle)) - limit) // 4)]
    return head + middle + tail


def rename_beside(root: Path, rel: str, new_name: str) -> None:
    """Rename `rel` to `new_name` in the same folder; FileExistsError when that name is taken."""
    with parent_of(root, rel) as (parent, name):
        try:
            os.stat(new_name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(name, new_name, src_dir_fd=parent, dst_dir_fd=parent)
            return
        raise FileExistsError(errno.EEXIST, f"{new_name} exists")


def walk(root: Path, skip: Callable[[str], bool], prefix: str = "",
         unreadable: dict[str, str] | None = None) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, stat) of every regular file under `root` (or under its subfolder `prefix`, given with a
    trailing "/"), folders entered by fd without following symlinks; `skip(rel)` prunes a path. A folder removed
    while it is walked is skipped. A file or folder that cannot be read (EACCES, EIO, ...) is skipped and put in
    `unreadable` (path -> why; it covers what is under it), so a caller never takes it for deleted."""
    unreadable = {} if unreadable is None else unreadable
    try:
        if prefix:
            with parent_of(root, prefix.rstrip("/")) as (parent, name):
                fd = _open_dir(name, parent)
        else:
            fd = os.open(root, _DIR)
    except (FileNotFoundError, Outside):
        return
    except OSError as e:
        unreadable[prefix] = str(e)
        return
    try:
        yield from _walk_fd(fd, prefix, skip, unreadable)
    finally:
        os.close(fd)


def _walk_fd(fd: int, prefix: str, skip: Callable[[str], bool],
             unreadable: dict[str, str]) -> Iterator[tuple[str, os.stat_result]]:
    try:
        with os.scandir(fd) as it:
            items = list(it)
    except FileNotFoundError:
        return
    except OSError as e:
        unreadable[prefix] = str(e)
        return
    for item in items:
        rel = prefix + item.name
        if skip(rel):
            continue
        try:
            if item.is_dir(follow_symlinks=False):
                child = _open_dir(item.name, fd)
                try:
                    yield from _walk_fd(child, rel + "/", skip, unreadable)
                finally:
                    os.close(child)
            elif item.is_file(follow_symlinks=False):
                yield rel, item.stat(follow_symlinks=False)
        except (FileNotFoundError, Outside):
            continue  # removed, or swapped for a symlink, while we looked
        except OSError as e:  # EACCES, EIO: unknown, never "deleted"
            unreadable[rel] = str(e)  # the path and anything under it


def remove_temporaries(root: Path) -> list[str]:
    """Delete the restore temporaries an interrupted restore left (".~vmlab-*" files); returns their paths."""
    removed = []
    for rel, _ in walk(root, lambda rel: False):
        name = rel.rsplit("/", 1)[-1]
        if name.startswith(TEMP_PREFIX):
            try:
                with parent_of(root, rel) as (parent, leaf):
                    os.unlink(leaf, dir_fd=parent)
                removed.append(rel)
            except (FileNotFoundError, Outside):
                continue
    return removed
