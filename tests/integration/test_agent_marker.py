"""The marker check against moto S3 (through the fault proxy), the agent as a process: a policy that answers a
HEAD of a missing object with 403 (EC2's instance profile) still shows a re-created bucket, and a bucket
re-created between two checks is refilled by the push on exit."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from harness.drivers.agent import AgentDaemon
from vmlab.agent.keys import MARKER_KEY
from vmlab.agent.status import AgentStatus

pytestmark = pytest.mark.moto
PREFIX = "alice/data/"
FAST = ("--quiet", "0.2", "--delete-settle", "1")


@pytest.fixture()
def lab(aws_faults, tmp_path: Path) -> tuple[Any, str, Path, Path]:
    s3 = boto3.client("s3", endpoint_url=aws_faults.endpoint)
    bucket = f"vmlab-marker-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(5):
        (folder / f"f{i}.txt").write_bytes(b"file %d" % i)
    return s3, bucket, folder, tmp_path / "state"


def _recreate(s3: Any, bucket: str) -> None:
    for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=obj["Key"])
    s3.delete_bucket(Bucket=bucket)
    s3.create_bucket(Bucket=bucket)


def _keys(s3: Any, bucket: str) -> set[str]:
    return {o["Key"][len(PREFIX):] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])
            if not o["Key"].endswith(MARKER_KEY)}


def _status(daemon: AgentDaemon) -> AgentStatus:
    parsed = AgentStatus.parse(daemon.status_file.read_text())
    assert parsed is not None
    return parsed


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_a_403_on_the_missing_marker_still_reveals_a_recreated_bucket(aws_faults, lab) -> None:
    s3, bucket, folder, state = lab
    daemon = AgentDaemon(folder, f"s3://{bucket}/{PREFIX}", state, *FAST, "--check-interval", "1")
    try:
        _wait(lambda: len(_keys(s3, bucket)) == 5 and _status(daemon).last_sync > 0, 15, "the first push")
        aws_faults.fail(f"HEAD /{bucket}/{PREFIX}{MARKER_KEY}", nth=None, code="AccessDenied", status=403)
        _recreate(s3, bucket)
        _wait(lambda: len(_keys(s3, bucket)) == 5, 15, "the re-upload after the loss was noticed")
    finally:
        daemon.stop()


def test_a_bucket_recreated_before_the_stop_is_refilled_by_the_final_push(lab) -> None:
    s3, bucket, folder, state = lab
    daemon = AgentDaemon(folder, f"s3://{bucket}/{PREFIX}", state, *FAST, "--check-interval", "3600")
    try:
        _wait(lambda: len(_keys(s3, bucket)) == 5 and _status(daemon).last_sync > 0, 15, "the first push")
        _recreate(s3, bucket)
    finally:
        daemon.stop()
    assert _keys(s3, bucket) == {f"f{i}.txt" for i in range(5)}
    final = _status(daemon)
    assert final.stopped and not final.unsynced


def test_a_folder_replaced_under_the_agent_is_watched_again(lab) -> None:
    """`mv data data.old; mkdir data` (or a disk mounted over it): the watch followed the old inode; the agent
    notices, watches the new folder and scans it, long before its next full pass."""
    s3, bucket, folder, state = lab
    daemon = AgentDaemon(folder, f"s3://{bucket}/{PREFIX}", state, *FAST, "--reconcile", "3600")
    try:
        _wait(lambda: len(_keys(s3, bucket)) == 5 and _status(daemon).last_sync > 0, 15, "the first push")
        folder.rename(folder.with_name("data.old"))
        folder.mkdir()
        for i in range(5):
            (folder / f"f{i}.txt").write_bytes(b"file %d" % i)  # the same files, moved to the new disk
        (folder / "new.txt").write_bytes(b"made on the new folder")
        _wait(lambda: "new.txt" in _keys(s3, bucket), 15, "the new folder's file")
        time.sleep(0.5)
        (folder / "later.txt").write_bytes(b"an event on the new folder")
        _wait(lambda: "later.txt" in _keys(s3, bucket), 15, "an event of the new folder")
    finally:
        daemon.stop()


def _once(folder: Path, url: str, state: Path, *extra: str) -> str:
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "vmlab.agent", "sync", "--once", "--folder", str(folder),
                           "--url", url, *extra], cwd=Path(__file__).resolve().parents[2], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "VMLAB_AGENT_STATE_DIR": str(state)})
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_once_on_a_new_prefix_or_one_another_tool_filled_reports_no_loss_and_uploads_nothing_twice(
        aws_faults, lab) -> None:
    """A first `--once` on an empty prefix is no lost bucket; nor is a restore from a prefix filled by another
    tool (no marker there yet): neither says "lost its objects", and a later run puts no file again."""
    s3, bucket, folder, state = lab
    first = _once(folder, f"s3://{bucket}/{PREFIX}", state, "--no-restore")
    assert "lost its objects" not in first and _keys(s3, bucket) == {f"f{i}.txt" for i in range(5)}
    s3.head_object(Bucket=bucket, Key=PREFIX + MARKER_KEY)  # put, so a later loss can be noticed
    aws_faults.reset()
    assert "lost its objects" not in _once(folder, f"s3://{bucket}/{PREFIX}", state)
    assert [c for c in aws_faults.calls if c.startswith("PUT") and not c.endswith(MARKER_KEY)] == []

    other = "bob/data/"
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"{other}g{i}.txt", Body=b"from another tool %d" % i)
    restored = folder.with_name("restored")
    aws_faults.reset()
    out = _once(restored, f"s3://{bucket}/{other}", state.with_name("state-bob"))
    assert "lost its objects" not in out, out
    assert sorted(p.name for p in restored.iterdir()) == ["g0.txt", "g1.txt", "g2.txt"]
    puts = [c for c in aws_faults.calls if c.startswith("PUT")]
    assert puts == [f"PUT /{bucket}/{other}{MARKER_KEY}"], puts
