"""Restore against a moto S3 server, as `vmlab-agent restore` processes: a key another tool wrote that maps to
the path of a different key is skipped (never overwrites that file), and a conflict with no free conflict-copy
name fails that key only, both sides kept."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from harness.drivers.agent import ROOT, agent_env
from vmlab.agent.restore import conflict_name

pytestmark = pytest.mark.moto
PREFIX = "alice/data/"


@pytest.fixture()
def bucket(moto_server) -> tuple[Any, str]:
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint)
    name = f"vmlab-names-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return s3, name


def restore(folder: Path, bucket: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmlab.agent", "restore", "--folder", str(folder), "--url",
                           f"s3://{bucket}/{PREFIX}"], cwd=ROOT, env=agent_env(state), capture_output=True,
                          text=True, timeout=120)


def test_a_foreign_key_never_overwrites_the_file_of_another(bucket, tmp_path: Path) -> None:
    s3, name = bucket
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "é").write_bytes(b"mine")
    # the escaped form of the bytes of "é" (c3 a9): decodes to the same path, but is not the key of "é"
    s3.put_object(Bucket=name, Key=PREFIX + "\uf7c3\uf7a9", Body=b"foreign")
    done = restore(folder, name, tmp_path / "state")
    assert (folder / "é").read_bytes() == b"mine", done.stderr
    assert "written by another tool" in done.stderr


def test_a_conflict_with_every_copy_name_taken_fails_that_key_only(bucket, tmp_path: Path) -> None:
    s3, name = bucket
    folder = tmp_path / "data"
    folder.mkdir()
    s3.put_object(Bucket=name, Key=PREFIX + "n.txt", Body=b"bucket")
    s3.put_object(Bucket=name, Key=PREFIX + "other.txt", Body=b"other")
    path = folder / "n.txt"
    path.write_bytes(b"local!")
    old = 1_000_000_000  # older than the object: "remote newer", the local copy is renamed aside
    os.utime(path, (old, old))
    host = os.uname().nodename
    for n in range(100):
        (folder / conflict_name("n.txt", host, old + n)).write_bytes(b"taken %d" % n)
    done = restore(folder, name, tmp_path / "state")
    assert path.read_bytes() == b"local!", done.stderr
    assert (folder / "other.txt").read_bytes() == b"other"
    assert sorted((folder).glob("n.conflict-*"))[0].read_bytes() == b"taken 0"
    assert done.returncode == 1 and "conflict copy not made" in done.stderr


def test_a_multipart_object_equal_to_the_local_file_is_in_sync(bucket, tmp_path: Path) -> None:
    """No manifest (a fresh disk with a copy of the data): an object uploaded in 8 MiB parts has no MD5 to
    compare, so its ETag is computed from the local bytes instead of calling it a conflict."""
    from boto3.s3.transfer import TransferConfig

    s3, name = bucket
    folder = tmp_path / "data"
    folder.mkdir()
    data = os.urandom(17 * 1024 * 1024)
    (folder / "big.bin").write_bytes(data)
    mib8 = 8 * 1024 * 1024
    s3.upload_file(str(folder / "big.bin"), name, PREFIX + "big.bin",
                   Config=TransferConfig(multipart_threshold=mib8, multipart_chunksize=mib8))
    assert s3.head_object(Bucket=name, Key=PREFIX + "big.bin")["ETag"].strip('"').endswith("-3")
    done = restore(folder, name, tmp_path / "state")
    assert "in sync 1" in done.stderr and "conflicts 0" in done.stderr, done.stderr
    assert [p.name for p in folder.iterdir()] == ["big.bin"]


def test_a_large_file_the_agent_sent_is_known_by_its_etag_through_touches_and_edits(bucket, tmp_path: Path) -> None:
    """A file above the multipart threshold is recorded by the ETag S3 computed for its parts (no hashing pass
    before its upload): a touch is still "in sync" at restore, a same-size edit with the old mtime put back is
    still seen ("kept", then sent)."""
    s3, name = bucket
    folder, state = tmp_path / "data", tmp_path / "state"
    folder.mkdir()
    big = folder / "big.bin"
    data = os.urandom(1 << 20) * 9 + b"!"
    big.write_bytes(data)
    sync = [sys.executable, "-m", "vmlab.agent", "sync", "--once", "--no-restore", "--folder", str(folder),
            "--url", f"s3://{name}/{PREFIX}"]
    done = subprocess.run(sync, cwd=ROOT, env=agent_env(state), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert s3.head_object(Bucket=name, Key=PREFIX + "big.bin")["ETag"].strip('"').endswith("-2")
    mtime = big.stat().st_mtime_ns
    os.utime(big, ns=(mtime, mtime + 10**9))
    done = restore(folder, name, state)
    assert "in sync 1" in done.stderr and "conflicts 0" in done.stderr, done.stderr
    edited = data[:-1] + b"?"
    big.write_bytes(edited)
    os.utime(big, ns=(mtime, mtime))
    done = restore(folder, name, state)
    assert "kept local 1" in done.stderr and big.read_bytes() == edited, done.stderr
    done = subprocess.run(sync, cwd=ROOT, env=agent_env(state), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert s3.get_object(Bucket=name, Key=PREFIX + "big.bin")["Body"].read() == edited
