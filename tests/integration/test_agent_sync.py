"""The agent's restore and push against a moto S3 server over HTTP, counting the requests they make; then the
`vmlab-agent sync` daemon in a subprocess: files appear in the bucket within seconds, SIGTERM loses nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from harness.drivers.agent import AgentDaemon
from vmlab.agent.keys import MARKER_KEY
from vmlab.agent.manifest import Excludes, Manifest
from vmlab.agent.restore import restore
from vmlab.agent.stores import open_store
from vmlab.agent.stores.s3 import S3Store
from vmlab.agent.sync import DeletePolicy, push
from vmlab.errors import BadInput, StoreError

pytestmark = pytest.mark.moto

PREFIX = "alice/data/"


class Counted:
    """Names of the S3 operations a client made (botocore's before-call event fires once per API call)."""

    def __init__(self, client: Any) -> None:
        self.calls: list[str] = []
        client.meta.events.register("before-call.s3", self._seen)

    def _seen(self, event_name: str, **_: Any) -> None:
        self.calls.append(event_name.rsplit(".", 1)[-1])

    def take(self) -> list[str]:
        calls, self.calls = self.calls, []
        return sorted(calls)


@pytest.fixture()
def s3(moto_server) -> Any:
    return boto3.client("s3", endpoint_url=moto_server.endpoint)


@pytest.fixture()
def bucket(s3) -> str:
    name = f"vmlab-agent-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture()
def env(s3, bucket, tmp_path: Path) -> tuple[Path, S3Store, Manifest, Counted]:
    folder = tmp_path / "data"
    folder.mkdir()
    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    store = S3Store(bucket, PREFIX, client=client)
    manifest = Manifest.load(tmp_path / "state" / "manifest.json", store.url)
    return folder, store, manifest, Counted(client)


def objects(s3: Any, bucket: str) -> dict[str, bytes]:
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(MARKER_KEY):
                continue  # the daemon's marker (see vmlab.agent.daemon)
            found[obj["Key"]] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return found


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
            and not Excludes().matches(p.relative_to(folder).as_posix())}


def synced(s3: Any, bucket: str, folder: Path) -> bool:
    return objects(s3, bucket) == {PREFIX + rel: data for rel, data in files(folder).items()}


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_restore_then_push_round_trip(env, s3, bucket) -> None:
    folder, store, manifest, counted = env
    for key, data in {"a.txt": b"alpha", "nb/deep/b.ipynb": b"{}", "conflict.txt": b"remote",
                      ".ipynb_checkpoints/a-checkpoint.ipynb": b"skip", "../escape.txt": b"evil"}.items():
        s3.put_object(Bucket=bucket, Key=PREFIX + key, Body=data)
    s3.put_object(Bucket=bucket, Key=PREFIX + "empty-folder/", Body=b"")
    s3.put_object(Bucket=bucket, Key="bob/not-mine.txt", Body=b"other prefix")
    write(folder / "conflict.txt", b"local wins")
    os.utime(folder / "conflict.txt", (time.time() + 60, time.time() + 60))  # newer than the object
    write(folder / "local-only.txt", b"made before restore")

    result = restore(folder, store, manifest)

    # differing with no record of a sync: a conflict; the newer (local) stays, the object is kept beside it
    assert len(result.conflicts) == 1 and result.conflicts[0].startswith("conflict.conflict-")
    copy = result.conflicts[0]
    assert sorted(result.downloaded) == ["a.txt", copy, "nb/deep/b.ipynb"]
    assert sorted(result.skipped) == ["../escape.txt", ".ipynb_checkpoints/a-checkpoint.ipynb"]
    assert (folder / "a.txt").read_bytes() == b"alpha"
    assert (folder / "conflict.txt").read_bytes() == b"local wins"
    assert (folder / copy).read_bytes() == b"remote"
    assert not (folder.parent / "escape.txt").exists()
    assert not list(folder.rglob(".~vmlab-*")), "temporary files left behind"
    assert counted.take() == ["GetObject", "GetObject", "GetObject", "ListObjectsV2"]

    result = push(folder, store, manifest)
    assert sorted(result.uploaded) == sorted(["conflict.txt", copy, "local-only.txt"])
    assert result.deleted == []
    assert counted.take() == ["PutObject", "PutObject", "PutObject"]
    bucket_now = objects(s3, bucket)
    assert bucket_now[PREFIX + "conflict.txt"] == b"local wins"
    assert bucket_now["bob/not-mine.txt"] == b"other prefix"

    # nothing changed: no request at all; a fresh restore on another disk gets the same tree
    assert push(folder, store, manifest).uploaded == []
    assert counted.take() == []
    other = folder.parent / "other-disk"
    restore(other, store, Manifest.load(folder.parent / "m2.json", store.url))
    assert files(other) == files(folder)


def test_restore_takes_remote_update_when_local_is_unchanged(env, s3, bucket) -> None:
    folder, store, manifest, counted = env
    write(folder / "a.txt", b"v1")
    push(folder, store, manifest)
    s3.put_object(Bucket=bucket, Key=PREFIX + "a.txt", Body=b"v2 from elsewhere")
    result = restore(folder, store, manifest)
    assert result.downloaded == ["a.txt"]
    assert (folder / "a.txt").read_bytes() == b"v2 from elsewhere"


def test_one_changed_file_costs_one_put_and_no_list(env, s3, bucket) -> None:
    folder, store, manifest, counted = env
    for i in range(200):
        write(folder / f"d{i % 10}" / f"f{i}.txt", f"file {i}".encode())
    push(folder, store, manifest)
    counted.take()

    write(folder / "d3" / "f13.txt", b"edited")
    result = push(folder, store, manifest)  # a full reconcile: stats every file, hashes none but the edit
    assert result.uploaded == ["d3/f13.txt"]
    assert counted.take() == ["PutObject"]

    write(folder / "d4" / "f14.txt", b"edited too")
    assert push(folder, store, manifest, only=["d4/f14.txt"]).uploaded == ["d4/f14.txt"]
    assert counted.take() == ["PutObject"]
    assert synced(s3, bucket, folder)


def test_delete_propagates_only_for_known_keys(env, s3, bucket) -> None:
    folder, store, manifest, counted = env
    write(folder / "keep.txt", b"k")
    write(folder / "gone.txt", b"g")
    push(folder, store, manifest)
    s3.put_object(Bucket=bucket, Key=PREFIX + "foreign.txt", Body=b"put by someone else")
    counted.take()

    (folder / "gone.txt").unlink()
    result = push(folder, store, manifest)
    assert result.deleted == ["gone.txt"]
    assert counted.take() == ["DeleteObject"]
    assert set(objects(s3, bucket)) == {PREFIX + "keep.txt", PREFIX + "foreign.txt"}
    assert "gone.txt" not in manifest.entries

    # a path the manifest never knew is never deleted, even when named in `only`
    assert push(folder, store, manifest, only=["foreign.txt"]).deleted == []
    assert PREFIX + "foreign.txt" in objects(s3, bucket)


def test_same_size_edit_with_older_mtime_is_uploaded(env, s3, bucket) -> None:
    folder, store, manifest, counted = env
    path = folder / "nb.ipynb"
    write(path, b"aaaa")
    old = time.time_ns() - 3_600 * 10**9
    os.utime(path, ns=(old, old))
    push(folder, store, manifest)
    counted.take()

    write(path, b"bbbb")
    older = old - 60 * 10**9  # e.g. copied in with `cp -p` or extracted from an archive
    os.utime(path, ns=(older, older))
    assert push(folder, store, manifest).uploaded == ["nb.ipynb"]
    assert objects(s3, bucket)[PREFIX + "nb.ipynb"] == b"bbbb"

    # a touch without a change in bytes costs a hash and no request
    os.utime(path, ns=(old, old))
    result = push(folder, store, manifest)
    assert (result.uploaded, result.touched) == ([], 1)
    assert counted.take() == ["PutObject"]


def test_rename_is_new_key_plus_delete_of_old(env, s3, bucket) -> None:
    folder, store, manifest, counted = env
    write(folder / "draft.ipynb", b"{cells}")
    write(folder / "old-dir" / "x.txt", b"x")
    push(folder, store, manifest)
    counted.take()

    (folder / "draft.ipynb").rename(folder / "final.ipynb")
    (folder / "old-dir").rename(folder / "new-dir")
    result = push(folder, store, manifest, only=["draft.ipynb", "final.ipynb", "old-dir", "new-dir"])
    assert sorted(result.uploaded) == ["final.ipynb", "new-dir/x.txt"]
    assert sorted(result.deleted) == ["draft.ipynb", "old-dir/x.txt"]
    assert counted.take() == ["DeleteObject", "DeleteObject", "PutObject", "PutObject"]
    assert synced(s3, bucket, folder)


def test_mass_delete_is_held_unless_forced(env, s3, bucket) -> None:
    folder, store, manifest, counted = env
    for i in range(40):
        write(folder / f"f{i}.txt", b"x")
    push(folder, store, manifest)
    for i in range(30):
        (folder / f"f{i}.txt").unlink()
    write(folder / "new.txt", b"still uploaded")

    result = push(folder, store, manifest)
    assert len(result.held_deletes) == 30 and result.deleted == []
    assert result.uploaded == ["new.txt"]
    assert len(objects(s3, bucket)) == 41

    result = push(folder, store, manifest, policy=DeletePolicy(force=True))
    assert len(result.deleted) == 30
    assert synced(s3, bucket, folder)


def test_missing_folder_deletes_nothing(env, s3, bucket) -> None:
    folder, store, manifest, counted = env
    write(folder / "a.txt", b"a")
    push(folder, store, manifest)
    folder.rename(folder.parent / "unmounted")
    with pytest.raises(BadInput, match="does not exist"):
        push(folder, store, manifest)
    assert PREFIX + "a.txt" in objects(s3, bucket)


def test_missing_bucket_is_a_clear_error_and_touches_nothing(env, s3, tmp_path: Path) -> None:
    folder, _, manifest, _ = env
    write(folder / "a.txt", b"a")
    store = S3Store(f"no-such-{uuid.uuid4().hex[:8]}", "p")
    with pytest.raises(StoreError, match="does not exist"):
        restore(folder, store, manifest)
    result = push(folder, store, manifest)
    assert "a.txt" in result.failed and "does not exist" in result.failed["a.txt"]
    assert manifest.entries == {}
    assert (folder / "a.txt").read_bytes() == b"a"


def test_open_store_by_url_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store("s3://bkt/alice/data")
    assert isinstance(store, S3Store) and (store.bucket, store.prefix) == ("bkt", "alice/data/")
    monkeypatch.setenv("AWS_S3_BUCKET_FOLDER", "bkt2/bob")
    store = open_store(None)
    assert isinstance(store, S3Store) and (store.bucket, store.prefix) == ("bkt2", "bob/")
    monkeypatch.delenv("AWS_S3_BUCKET_FOLDER")
    with pytest.raises(BadInput, match="AWS_S3_BUCKET_FOLDER"):
        open_store(None)
    with pytest.raises(BadInput, match="is not a storage URL"):
        open_store("ftp://x/y")


def Daemon(folder: Path, url: str, *args: str) -> AgentDaemon:  # noqa: N802 (reads as the class it makes)
    return AgentDaemon(folder, url, folder.parent / "agent-state", *args)


def wait_for_object(s3: Any, bucket: str, key: str, body: bytes, timeout: float = 10.0) -> float:
    """Seconds until `key` holds `body`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body:
                return time.monotonic() - start
        except s3.exceptions.NoSuchKey:
            pass
        time.sleep(0.02)
    raise AssertionError(f"{key} did not reach the bucket within {timeout}s")


def test_daemon_pushes_changes_within_seconds(env, s3, bucket) -> None:
    folder, store, _, _ = env
    write(folder / "before.txt", b"made while the agent was down")
    daemon = Daemon(folder, store.url)
    try:
        latencies = {}
        assert objects(s3, bucket)[PREFIX + "before.txt"] == b"made while the agent was down"
        write(folder / "a.txt", b"hello")
        latencies["new file"] = wait_for_object(s3, bucket, PREFIX + "a.txt", b"hello")
        # files created inside a folder created just now (before any watch on it can exist)
        write(folder / "fresh" / "deeper" / "b.txt", b"in a new folder")
        latencies["file in a new folder"] = wait_for_object(s3, bucket, PREFIX + "fresh/deeper/b.txt",
                                                            b"in a new folder")
        # Jupyter-style atomic save: write a temporary, rename over the notebook
        tmp = folder / ".~nb.ipynb"
        tmp.write_bytes(b'{"cells": [1]}')
        tmp.rename(folder / "nb.ipynb")
        latencies["rename into place"] = wait_for_object(s3, bucket, PREFIX + "nb.ipynb", b'{"cells": [1]}')
        # a file moved in from outside the folder
        outside = folder.parent / "outside.txt"
        outside.write_bytes(b"moved in")
        outside.rename(folder / "moved.txt")
        latencies["move into folder"] = wait_for_object(s3, bucket, PREFIX + "moved.txt", b"moved in")
        # same-size edit with an older mtime
        write(folder / "a.txt", b"jello")
        os.utime(folder / "a.txt", ns=(10**18, 10**18))
        latencies["same-size edit, older mtime"] = wait_for_object(s3, bucket, PREFIX + "a.txt", b"jello")
        (folder / "before.txt").unlink()
        deadline = time.monotonic() + 10
        while PREFIX + "before.txt" in {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}:
            assert time.monotonic() < deadline, "delete did not propagate"
            time.sleep(0.05)
        print("save-to-object latency:", {k: f"{v:.2f}s" for k, v in latencies.items()})
        assert max(latencies.values()) < 5
    finally:
        out = daemon.stop()
    assert daemon.proc.returncode == 0, out
    assert synced(s3, bucket, folder)


def test_sigterm_with_pending_changes_loses_nothing(env, s3, bucket) -> None:
    folder, store, _, _ = env
    write(folder / "known.txt", b"k")
    write(folder / "doomed.txt", b"d")
    # a long quiet period: nothing is pushed by the loop, only by the flush on SIGTERM
    daemon = Daemon(folder, store.url, "--quiet", "60")
    for i in range(50):
        write(folder / "burst" / f"f{i}.txt", f"file {i}".encode())
    write(folder / "known.txt", b"K")
    (folder / "doomed.txt").unlink()
    started = time.monotonic()
    out = daemon.stop()
    elapsed = time.monotonic() - started
    assert daemon.proc.returncode == 0, out
    assert synced(s3, bucket, folder)
    print(f"SIGTERM flush of 51 changes + 1 delete: {elapsed:.2f}s")


def test_once_and_bad_input(env, s3, bucket, tmp_path: Path) -> None:
    folder, store, _, _ = env
    write(folder / "a.txt", b"a")
    run = [sys.executable, "-m", "vmlab.agent", "sync", "--folder", str(folder)]
    cwd = Path(__file__).resolve().parents[2]
    done = subprocess.run([*run, "--url", store.url, "--once"], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert synced(s3, bucket, folder)
    bad = subprocess.run([*run, "--url", "ftp://b/p", "--once"], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "is not a storage URL" in bad.stderr
    # no URL configured (a lab launched without --sync): the units' commands exit 0 and touch nothing
    env_without = {k: v for k, v in os.environ.items() if k not in ("AWS_S3_BUCKET_FOLDER", "VMLAB_SYNC_URL")}
    (folder / "b.txt").write_bytes(b"b")
    for command in (["sync", "--once"], ["restore"]):
        done = subprocess.run([sys.executable, "-m", "vmlab.agent", *command, "--folder", str(folder)], cwd=cwd,
                              capture_output=True, text=True, timeout=60, env=env_without)
        assert done.returncode == 0 and "no sync URL configured" in done.stderr, done.stderr
    assert PREFIX + "b.txt" not in objects(s3, bucket)
