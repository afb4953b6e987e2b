"""Issue 11's data-safety rules, each driven from outside as a user's shell would: `vmlab-agent sync` / `restore` /
`release-deletes` as processes against a moto S3 server on 127.0.0.1 (through the fault proxy where a request
must fail). Every check reads the bucket and the folder directly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness.drivers.agent import ROOT, AgentDaemon, agent_env
from tests.integration.test_agent_robust import PREFIX, objects  # the s3 and lab fixtures: conftest.py
from vmlab.agent.keys import MARKER_KEY
from vmlab.agent.manifest import Excludes
from vmlab.agent.status import AgentStatus

pytestmark = pytest.mark.moto

FAST = ("--quiet", "0.2", "--delete-settle", "1")


def keys(s3: Any, bucket: str) -> set[str]:
    """The keys under the prefix (a listing only: cheap enough to poll a 2,000-object bucket). moto may answer a
    listing made during the agent's parallel deletes with a 500: that listing is made again."""
    for attempt in range(5):
        try:
            found = set()
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                found |= {obj["Key"][len(PREFIX):] for obj in page.get("Contents", [])
                          if not obj["Key"].endswith(MARKER_KEY)}
            return found
        except s3.exceptions.ClientError as e:
            if "500" not in str(e) or attempt == 4:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def files(folder: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(folder):  # not following symlinks, like the agent
        for name in names:
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if path.is_file() and not path.is_symlink() and not Excludes().matches(rel):
                out[rel] = path.read_bytes()
    return out


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def wait_until(check: Any, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        time.sleep(0.3)


def agent(*args: str, state: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmlab.agent", *args], cwd=ROOT, env=env or agent_env(state),
                          capture_output=True, text=True, timeout=120)


def status(daemon: AgentDaemon) -> AgentStatus:
    parsed = AgentStatus.parse(daemon.status_file.read_text())
    assert parsed is not None
    return parsed


# 1 ---------------------------------------------------------------------------------------------------------------
def test_same_size_edit_with_its_old_mtime_put_back_is_uploaded_also_after_a_restart(lab, s3) -> None:
    folder, bucket, url, state = lab
    path = folder / "nb.ipynb"
    write(path, b"aaaa")
    old = time.time_ns() - 3600 * 10**9
    os.utime(path, ns=(old, old))
    daemon = AgentDaemon(folder, url, state, *FAST)
    try:
        wait_until(lambda: objects(s3, bucket).get("nb.ipynb") == b"aaaa")
        write(path, b"bbbb")
        os.utime(path, ns=(old, old))  # touch -r, cp -p, rsync -t
        wait_until(lambda: objects(s3, bucket).get("nb.ipynb") == b"bbbb", 10, "the same-size edit")
    finally:
        daemon.stop()
    write(path, b"cccc")  # while the agent is down
    os.utime(path, ns=(old, old))
    daemon = AgentDaemon(folder, url, state, *FAST, log_name="agent2.log")
    try:
        wait_until(lambda: objects(s3, bucket).get("nb.ipynb") == b"cccc", 10, "the edit made while stopped")
    finally:
        daemon.stop()
    assert path.read_bytes() == b"cccc"


# 2 ---------------------------------------------------------------------------------------------------------------
def test_one_bad_file_never_holds_back_the_others(aws_faults, lab, s3, tmp_path: Path) -> None:
    folder, bucket, url, state = lab
    aws_faults.fail(f"PUT /{bucket}/{PREFIX}denied.txt", nth=None, code="AccessDenied", status=403)
    daemon = AgentDaemon(folder, url, state, *FAST)
    try:
        write(folder / "denied.txt", b"refused by the bucket policy")
        os.makedirs(os.fsencode(folder / "unzipped"))
        with open(os.fsencode(folder) + b"/unzipped/caf\xe9.txt", "wb") as f:  # not UTF-8, as unzip leaves it
            f.write(b"latin-1 name")
        time.sleep(1.5)  # the bad file is failing and backing off now
        started = time.monotonic()
        for i in range(5):
            write(folder / f"good{i}.txt", f"good {i}".encode())
        wait_until(lambda: {f"good{i}.txt" for i in range(5)} <= keys(s3, bucket), 10, "the good files")
        print(f"other files reached the bucket {time.monotonic() - started:.2f}s after the write")
        assert time.monotonic() - started < 3
        assert objects(s3, bucket)["unzipped/caf\uf7e9.txt"] == b"latin-1 name"  # the escaped key
        assert "denied.txt" not in objects(s3, bucket)
        wait_until(lambda: "denied.txt" in status(daemon).stuck, 5, "the stuck file in the status")
        assert "denied" in status(daemon).stuck["denied.txt"]
        assert status(daemon).unsynced
        aws_faults.reset()  # the policy is fixed: its next try gets it there
        wait_until(lambda: "denied.txt" in keys(s3, bucket), 70, "the stuck file after the fix")
    finally:
        daemon.stop()
    # another disk: the escaped key comes back as the same bytes
    other = tmp_path / "other"
    done = agent("restore", "--folder", str(other), "--url", url, state=tmp_path / "state2")
    assert done.returncode == 0, done.stderr
    assert (os.fsencode(other) + b"/unzipped/caf\xe9.txt") in [
        os.path.join(os.fsencode(other / "unzipped"), n) for n in os.listdir(os.fsencode(other / "unzipped"))]
    with open(os.fsencode(other) + b"/unzipped/caf\xe9.txt", "rb") as f:
        assert f.read() == b"latin-1 name"


# 3 and 4 ---------------------------------------------------------------------------------------------------------
def test_restore_stays_inside_the_folder_and_names_what_it_skipped(aws_faults, lab, s3, tmp_path: Path) -> None:
    folder, bucket, url, state = lab
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / "link").symlink_to("../outside")
    write(folder / "file-in-the-way", b"a file where a key wants a folder")
    for key, body in {"ok.txt": b"ok", "link/x": b"evil", "link/sub/y": b"evil", "../escape.txt": b"evil",
                      "file-in-the-way/z": b"z", ".ipynb_checkpoints/a.ipynb": b"{}", "broken.txt": b"b"}.items():
        s3.put_object(Bucket=bucket, Key=PREFIX + key, Body=body)
    aws_faults.fail(f"GET /{bucket}/{PREFIX}broken.txt", nth=None, code="AccessDenied", status=403)
    write(folder / "sub" / ".~vmlab-0a1b2c3d-big.bin", b"left by a restore killed midway")
    done = agent("restore", "--folder", str(folder), "--url", url, state=state)
    assert done.returncode == 1, done.stderr  # a key failed
    assert list(outside.iterdir()) == [], "restore wrote through a symlink"
    assert not (tmp_path / "escape.txt").exists()
    assert (folder / "ok.txt").read_bytes() == b"ok"
    assert not (folder / "sub" / ".~vmlab-0a1b2c3d-big.bin").exists()
    for key in ("link/x", "link/sub/y", "../escape.txt", "file-in-the-way/z", ".ipynb_checkpoints/a.ipynb"):
        assert f"skipped {key}:" in done.stderr, key
    assert "download of broken.txt failed" in done.stderr
    assert "restored 1, in sync 0, kept local 0, skipped 5, failed 1, conflicts 0" in done.stderr
    assert "removed sub/.~vmlab-0a1b2c3d-big.bin" in done.stderr
    aws_faults.reset()
    # the daemon's status names them too, and no later push deletes a key it could not restore
    daemon = AgentDaemon(folder, url, state, *FAST)
    try:
        problems = status(daemon).restore_problems
        assert {"link/x", "link/sub/y", "../escape.txt", "file-in-the-way/z"} <= set(problems)
        assert "symlink" in problems["link/x"]
        time.sleep(2)
    finally:
        daemon.stop()
    remote = objects(s3, bucket)
    assert {"link/x", "link/sub/y", "../escape.txt", "file-in-the-way/z", "broken.txt"} <= set(remote)
    assert list(outside.iterdir()) == []


def test_a_synced_folder_replaced_by_a_symlink_is_never_restored_through_nor_deleted(lab, s3, tmp_path) -> None:
    folder, bucket, url, state = lab
    write(folder / "cfg" / "settings.json", b"{}")
    done = agent("sync", "--once", "--folder", str(folder), "--url", url, state=state)
    assert done.returncode == 0, done.stderr
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (folder / "cfg" / "settings.json").unlink()
    (folder / "cfg").rmdir()
    (folder / "cfg").symlink_to(outside)
    done = agent("sync", "--once", "--folder", str(folder), "--url", url, state=state)
    assert done.returncode == 0, done.stderr
    assert list(outside.iterdir()) == []
    assert objects(s3, bucket)["cfg/settings.json"] == b"{}"  # never deleted: it could not be restored


# 5 ---------------------------------------------------------------------------------------------------------------
def test_a_conflict_keeps_both_versions(lab, s3) -> None:
    folder, bucket, url, state = lab
    write(folder / "report.txt", b"v1")
    write(folder / "notes.md", b"n1")
    assert agent("sync", "--once", "--folder", str(folder), "--url", url, state=state).returncode == 0
    # while this lab was off: both sides changed. report.txt: the bucket's is newer; notes.md: the local one
    write(folder / "report.txt", b"local edit, older")
    os.utime(folder / "report.txt", (time.time() - 600, time.time() - 600))
    s3.put_object(Bucket=bucket, Key=PREFIX + "report.txt", Body=b"edit from another lab, newer")
    s3.put_object(Bucket=bucket, Key=PREFIX + "notes.md", Body=b"remote edit, older")
    write(folder / "notes.md", b"local edit, newer")
    os.utime(folder / "notes.md", (time.time() + 600, time.time() + 600))
    done = agent("sync", "--once", "--folder", str(folder), "--url", url, state=state)
    assert done.returncode == 0, done.stderr
    local = files(folder)
    assert local["report.txt"] == b"edit from another lab, newer"
    assert local["notes.md"] == b"local edit, newer"
    copies = {rel: data for rel, data in local.items() if ".conflict-" in rel}
    assert sorted(copies.values()) == [b"local edit, older", b"remote edit, older"], copies
    for rel in copies:
        stem, _, ext = rel.partition(".conflict-")
        assert stem in ("report", "notes") and ext.endswith((".txt", ".md")), rel
    assert objects(s3, bucket) == local  # both versions uploaded
    assert "conflicts 2" in done.stderr


# 6 ---------------------------------------------------------------------------------------------------------------
def make_tree(folder: Path, count: int, per_dir: int = 50) -> None:
    for i in range(count):
        write(folder / f"d{i // per_dir:03d}" / f"f{i:05d}.txt", f"file {i}".encode())


def test_mass_deletes_are_held_until_released(lab, s3) -> None:
    """`rm -rf` of 90% of a 2,000-file tree: 0 deletes sent, held in the status (an unrelated push does not reset
    the count) until `vmlab-agent release-deletes`."""
    folder, bucket, url, state = lab
    make_tree(folder, 2000)
    daemon = AgentDaemon(folder, url, state, *FAST)
    try:
        wait_until(lambda: len(keys(s3, bucket)) == 2000, 60, "the first upload")
        subprocess.run(["sh", "-c", "rm -rf d00[0-9]* d01[0-9]* d02[0-9]* d03[0-5]*"], cwd=folder, check=True)
        assert len(files(folder)) == 200
        wait_until(lambda: status(daemon).held_deletes == 1800, 40, "1800 held deletes")  # 30 s: the settle cap
        write(folder / "unrelated.txt", b"pushed while deletes are held")
        wait_until(lambda: "unrelated.txt" in keys(s3, bucket), 10, "the unrelated file")
        time.sleep(1.5)
        held = status(daemon)
        assert held.held_deletes == 1800 and held.unsynced and "deletes held" in held.summary()
        assert len(keys(s3, bucket)) == 2001, "a delete was sent"
        done = agent("release-deletes", state=state)
        assert done.returncode == 0 and "released 1800 held deletes" in done.stdout, done.stderr
        wait_until(lambda: len(keys(s3, bucket)) == 201, 90, "the released deletes")
        wait_until(lambda: status(daemon).held_deletes == 0, 5, "the status to clear")
    finally:
        daemon.stop()


def test_paced_deletes_and_a_small_folder_are_held(lab, s3) -> None:
    folder, bucket, url, state = lab
    make_tree(folder, 600)
    daemon = AgentDaemon(folder, url, state, "--quiet", "0.2")  # the default 3 s settle
    try:
        wait_until(lambda: len(keys(s3, bucket)) == 600, 60, "the first upload")
        script = "find . -type f | sort | head -n 540 | xargs -n 40 sh -c 'rm -- \"$@\"; sleep 0.7' sh"
        subprocess.run(["sh", "-c", script], cwd=folder, check=True)
        wait_until(lambda: status(daemon).held_deletes == 540, 40, "540 held deletes")  # 30 s: the settle cap
        assert len(keys(s3, bucket)) == 600, "a paced delete was sent"
    finally:
        daemon.stop()
    assert len(keys(s3, bucket)) == 600
    # 18 of 20 files of a small tree
    small, small_state = folder.parent / "small", folder.parent / "small-state"
    small_url = url.rstrip("/") + "-small/"
    make_tree(small, 20)
    daemon = AgentDaemon(small, small_url, small_state, *FAST)
    try:
        wait_until(lambda: len(keys(s3, bucket)) == 620, 20, "the small tree")
        for path in sorted(small.rglob("*.txt"))[:18]:
            path.unlink()
        wait_until(lambda: status(daemon).held_deletes == 18, 10, "18 held deletes")
    finally:
        daemon.stop()
    assert len(keys(s3, bucket)) == 620


def test_an_empty_or_missing_folder_at_start_is_a_missing_disk(lab, s3) -> None:
    folder, bucket, url, state = lab
    make_tree(folder, 30)
    before = files(folder)
    assert agent("sync", "--once", "--folder", str(folder), "--url", url, state=state).returncode == 0
    for path in folder.iterdir():
        subprocess.run(["rm", "-rf", str(path)], check=True)  # a fresh, empty disk mounted there
    done = agent("sync", "--once", "--folder", str(folder), "--url", url, state=state)
    assert done.returncode == 0, done.stderr
    assert "missing disk" in done.stderr
    assert files(folder) == before and objects(s3, bucket) == before
    folder.rename(folder.parent / "unmounted")  # the folder itself is gone
    daemon = AgentDaemon(folder, url, state, *FAST)
    try:
        time.sleep(2)
        assert files(folder) == before and objects(s3, bucket) == before
    finally:
        daemon.stop()


# 7 ---------------------------------------------------------------------------------------------------------------
def test_a_folder_swapped_for_a_symlink_uploads_nothing_from_outside(lab, s3, tmp_path: Path) -> None:
    folder, bucket, url, state = lab
    secrets_dir = tmp_path / "etc"
    write(secrets_dir / "passwd", b"SECRET root:x:0:0")
    write(secrets_dir / "shadow", b"SECRET hash")
    write(folder / "cfg" / "passwd", b"my own file")
    daemon = AgentDaemon(folder, url, state, "--quiet", "0.4", "--delete-settle", "1")
    try:
        wait_until(lambda: objects(s3, bucket).get("cfg/passwd") == b"my own file")
        for _ in range(5):
            write(folder / "cfg" / "passwd", b"edited: queued for upload")
            subprocess.run(["sh", "-c", f"rm -rf cfg && ln -s {secrets_dir} cfg"], cwd=folder, check=True)
            time.sleep(1.2)
            (folder / "cfg").unlink()
        (folder / "cfg").symlink_to(secrets_dir)
        time.sleep(2.5)
    finally:
        daemon.stop()
    for key, data in objects(s3, bucket).items():
        assert b"SECRET" not in data, key
    assert (secrets_dir / "passwd").read_bytes() == b"SECRET root:x:0:0"


# 8 ---------------------------------------------------------------------------------------------------------------
def test_a_bucket_that_lost_its_objects_is_noticed_and_refilled(aws_faults, lab, s3) -> None:
    folder, bucket, url, state = lab
    make_tree(folder, 20)
    daemon = AgentDaemon(folder, url, state, *FAST, "--check-interval", "1")
    try:
        wait_until(lambda: len(keys(s3, bucket)) == 20)
        wait_until(lambda: not status(daemon).unsynced and status(daemon).last_sync > 0)
        # deleted and re-created behind the agent's back; one file cannot be uploaded again yet
        aws_faults.fail(f"PUT /{bucket}/{PREFIX}d000/f00007.txt", nth=None, code="AccessDenied", status=403)
        for key in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=key["Key"])
        s3.delete_bucket(Bucket=bucket)
        s3.create_bucket(Bucket=bucket)
        wait_until(lambda: status(daemon).lost, 10, "the agent to notice")
        wait_until(lambda: len(keys(s3, bucket)) == 19, 15, "the re-upload")
        time.sleep(1.5)
        now = status(daemon)
        assert now.lost and now.unsynced and "lost objects" in now.summary()  # so `vmlab down` refuses
        from vmlab.errors import HostError
        from vmlab.workflows.labagent import check_can_remove

        with pytest.raises(HostError, match="not yet synced"):
            check_can_remove("lab1", now, force=False)
        aws_faults.reset()
        wait_until(lambda: len(keys(s3, bucket)) == 20, 90, "the last file")
        wait_until(lambda: not status(daemon).lost and not status(daemon).unsynced, 10, "the status to clear")
    finally:
        daemon.stop()
    assert objects(s3, bucket) == files(folder)
    assert json.loads(daemon.status_file.read_text())["lost"] is False


def test_a_delete_waiting_when_the_marker_goes_missing_still_reaches_the_store(lab, s3) -> None:
    """The model test's seed 101965: a file put into a re-created bucket, then deleted here while the delete
    settles, then the marker check finds the marker gone. Forgetting every known path there lost the delete (the
    object stayed, the status said synced); known paths must stay known."""
    folder, bucket, url, state = lab
    make_tree(folder, 4)
    (folder / "renamed-away.txt").write_bytes(b"soon gone")
    daemon = AgentDaemon(folder, url, state, "--quiet", "0.2", "--delete-settle", "4", "--check-interval", "1")
    try:
        wait_until(lambda: len(keys(s3, bucket)) == 5 and not status(daemon).unsynced)
        (folder / "renamed-away.txt").unlink()
        s3.delete_object(Bucket=bucket, Key=PREFIX + MARKER_KEY)  # lost within the delete's settle time
        wait_until(lambda: status(daemon).lost, 10, "the agent to notice")
        wait_until(lambda: "renamed-away.txt" not in keys(s3, bucket), 20, "the delete")
        wait_until(lambda: not status(daemon).lost and not status(daemon).unsynced, 10, "the status to clear")
    finally:
        daemon.stop()
    assert objects(s3, bucket) == files(folder)
