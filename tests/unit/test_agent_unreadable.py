"""A folder or file the agent cannot read (EACCES, EIO) is unknown, never deleted; the down check distrusts a
status that is not the final one of the stop it asked for. Tests run as root (which ignores chmod 000), so the
errors are raised by wrapping the one os call that meets them."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from vmlab.agent import safefs
from vmlab.agent.manifest import Entry, Excludes, diff, md5_reader, scan
from vmlab.agent.status import AgentStatus
from vmlab.errors import HostError
from vmlab.workflows.labagent import check_can_remove, judge_stale


def _tree(root: Path) -> None:
    for rel in ("a/x.txt", "locked/y.txt", "locked/deep/z.txt", "top.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"data")


def _deny(monkeypatch: pytest.MonkeyPatch, name: str, err: int) -> None:
    real = safefs._open_dir

    def open_dir(part: str, parent: int) -> int:
        if part == name:
            raise OSError(err, os.strerror(err))
        return real(part, parent)

    monkeypatch.setattr(safefs, "_open_dir", open_dir)


@pytest.mark.parametrize("err", [errno.EACCES, errno.EIO])
def test_unreadable_folder_is_reported_and_its_files_are_never_deleted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    _tree(tmp_path)
    _deny(monkeypatch, "locked", err)
    known = {rel: Entry(4, 1, "m", "e") for rel in ("a/x.txt", "locked/y.txt", "locked/deep/z.txt", "gone.txt")}
    unreadable: dict[str, str] = {}
    local = scan(tmp_path, Excludes(), unreadable=unreadable)
    assert set(local) == {"a/x.txt", "top.txt"}
    assert list(unreadable) == ["locked"]
    changes = diff(local, known, md5_reader(tmp_path), unreadable)
    assert changes.deleted == {"gone.txt"}  # what is really gone still goes; nothing under locked/
    # the same with a scan of just that folder (an event for it)
    unreadable = {}
    assert scan(tmp_path, Excludes(), only=["locked"], unreadable=unreadable) == {}
    assert diff({}, {k: v for k, v in known.items() if k.startswith("locked/")}, md5_reader(tmp_path),
                unreadable).deleted == set()


def test_unreadable_root_deletes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path)
    real = os.scandir

    def scandir(fd):  # type: ignore[no-untyped-def]
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "scandir", scandir)
    unreadable: dict[str, str] = {}
    assert scan(tmp_path, Excludes(), unreadable=unreadable) == {}
    monkeypatch.setattr(os, "scandir", real)
    assert "" in unreadable
    assert diff({}, {"a/x.txt": Entry(4, 1, "m", "e")}, md5_reader(tmp_path), unreadable).deleted == set()


def test_unreadable_file_is_neither_changed_nor_deleted(tmp_path: Path) -> None:
    def md5_of(rel: str, like: str = "") -> str | None:
        raise PermissionError(errno.EACCES, "Permission denied")

    changes = diff({"f": Entry(4, 9, "m", "e").stat}, {"f": Entry(4, 1, "m", "e")}, md5_of)
    assert changes.unreadable and "Permission denied" in changes.unreadable["f"]
    assert not changes.changed and not changes.deleted


@pytest.mark.parametrize(("status", "out", "stale"), [
    (AgentStatus(stopped=False, updated=2000.0), "1000\nactive\n", True),    # died, or the stop timed out
    (AgentStatus(stopped=True, updated=900.0), "1000\nactive\n", True),      # an old run's final status
    (AgentStatus(stopped=True, updated=1001.0), "1000\nactive\n", False),    # this stop's
    (AgentStatus(stopped=True, updated=900.0), "1000\n", False),             # already stopped: nothing ran since
    (AgentStatus(stopped=False, updated=900.0), "1000\n", True),             # crashed earlier
])
def test_down_distrusts_a_status_that_is_not_this_stops(status: AgentStatus, out: str, stale: bool) -> None:
    status.stale = judge_stale(status, out)
    assert status.stale is stale
    if stale:
        with pytest.raises(HostError, match="not yet synced"):
            check_can_remove("lab", status, force=False)
    else:
        check_can_remove("lab", status, force=False)


def test_a_failed_marker_check_is_never_in_sync() -> None:
    status = AgentStatus(last_sync=1.0, stopped=True, unverified="check of s3://b/.~vmlab-agent-marker failed")
    assert status.unsynced and "cannot check" in status.summary()


def test_an_event_path_behind_an_unreadable_folder_is_not_deleted(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path)
    _deny(monkeypatch, "locked", errno.EACCES)
    unreadable: dict[str, str] = {}
    assert scan(tmp_path, Excludes(), only=["locked/y.txt"], unreadable=unreadable) == {}
    known = {"locked/y.txt": Entry(4, 1, "m", "e"), "locked-not/z": Entry(4, 1, "m", "e")}
    assert diff({}, known, md5_reader(tmp_path), unreadable).deleted == {"locked-not/z"}
