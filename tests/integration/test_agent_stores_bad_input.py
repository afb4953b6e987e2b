"""What the agent does with a store it cannot use or a disk that fails it, on the real emulators: a missing
bucket or container, a bucket in another region, an expired SAS, a SAS or IAM policy without the permission, an
unreadable local file, a full disk during restore. Each gives one clear line, no retry of a permanent refusal,
local files untouched, and the daemon keeps trying with backoff and reports the error in its status file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from harness.drivers.storebackends import ROOT, Backend, Daemon, make_backend
from harness.emulators.moto import MotoServer
from harness.emulators.sshd import free_port
from harness.faults.awsfaults import FaultProxy
from vmlab.agent.keys import MARKER_KEY
from vmlab.agent.manifest import Manifest
from vmlab.agent.restore import restore
from vmlab.agent.stores import RetryPolicy, Store, open_store
from vmlab.agent.stores.azure import AzureStore
from vmlab.agent.stores.gcs import GCSStore
from vmlab.agent.stores.s3 import S3Store, make_client
from vmlab.agent.sync import push
from vmlab.errors import StoreError


@pytest.fixture(params=["s3", "azure", "gcs"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    made = make_backend(request.param, request, monkeypatch.setenv)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture()
def s3(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    made = make_backend("s3", request, monkeypatch.setenv)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    (path / "notes.txt").write_bytes(b"my notes")
    (path / "nb").mkdir()
    (path / "nb" / "a.ipynb").write_bytes(b"{}")
    return path


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_missing_bucket_is_one_clear_error_without_retries(backend: Backend, folder: Path, tmp_path: Path) -> None:
    store = backend.missing_store()
    before = tree(folder)
    manifest = Manifest.load(tmp_path / "m.json", store.url)
    with pytest.raises(StoreError, match="does not exist") as caught:
        restore(folder, store, manifest)
    assert "\n" not in str(caught.value) and "create it" in str(caught.value)
    assert backend.requests() == ["list"], "a permanent error was retried"
    result = push(folder, store, manifest)
    assert set(result.failed) == {"notes.txt", "nb/a.ipynb"}
    assert all("does not exist" in message for message in result.failed.values())
    assert backend.requests() == ["write", "write"]
    assert tree(folder) == before and manifest.entries == {}


def test_daemon_waits_out_a_missing_bucket_then_syncs(backend: Backend, folder: Path) -> None:
    before = tree(folder)
    daemon = Daemon(folder, backend, url=backend.missing_url, env=backend.missing_env, wait=False)
    try:
        deadline = time.monotonic() + 20
        while "does not exist" not in daemon.status().get("last_error", ""):
            assert daemon.proc.poll() is None, daemon.stop()
            assert time.monotonic() < deadline, f"no last_error in the status file:\n{daemon.stop()}"
            time.sleep(0.1)
        assert tree(folder) == before
        backend.create_missing()  # the user fixes it; the daemon's next try restores and then pushes
        deadline = time.monotonic() + 30
        store = backend.missing_store()
        while sorted(o.key for o in store.list() if o.key != MARKER_KEY) != ["nb/a.ipynb", "notes.txt"]:
            assert time.monotonic() < deadline, f"the daemon did not recover:\n{daemon.stop()}"
            time.sleep(0.2)
    finally:
        log = daemon.stop()
    assert daemon.proc.returncode == 0, log
    errors = [line for line in log.splitlines() if "ERROR" in line]
    assert errors and all("does not exist" in line and "retrying in" in line for line in errors), log
    assert tree(folder) == before


def test_wrong_s3_region_names_the_right_one(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # moto serves every region from one endpoint; S3's answer to a request signed for the wrong region is
    # replayed by the proxy, as S3 sends it
    boto3.client("s3", endpoint_url=moto_server.endpoint).create_bucket(Bucket="vmlab-region")
    with FaultProxy(moto_server.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        proxy.fail("GET /vmlab-region", nth=None, code="AuthorizationHeaderMalformed", status=400,
                   message="The authorization header is malformed; the region 'us-east-1' is wrong; "
                           "expecting 'eu-west-1'")
        with pytest.raises(StoreError, match="in another region than us-east-1: set AWS_REGION to eu-west-1"):
            list(open_store("s3://vmlab-region/p").list())
        assert proxy.calls == ["GET /vmlab-region"]


def test_expired_sas_says_so(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                             folder: Path, tmp_path: Path) -> None:
    backend = make_backend("azure", request, monkeypatch.setenv)
    try:
        azurite = request.getfixturevalue("azurite")
        store = AzureStore.from_url(backend.url, sas=azurite.sas(backend.bucket, expires_in=-60, starts_in=-3600))
        with pytest.raises(StoreError, match=r"the SAS token expired at \d{4}-.*set AZURE_BLOB_SAS_TOKEN"):
            restore(folder, store, Manifest.load(tmp_path / "m.json", store.url))
        assert backend.requests() == ["list"]
        # a SAS that reads but may not write: restore works, uploads are denied with the permission named
        backend.put_object(backend.prefix + "remote.txt", b"remote")
        store = AzureStore.from_url(backend.url, sas=azurite.sas(backend.bucket, permission="rl"))
        manifest = Manifest.load(tmp_path / "m.json", store.url)
        assert restore(folder, store, manifest).downloaded == ["remote.txt"]
        backend.requests()
        result = push(folder, store, manifest)
        assert set(result.failed) == {"notes.txt", "nb/a.ipynb"}
        assert all("lacks the permission" in message for message in result.failed.values()), result.failed
        assert backend.requests() == ["write", "write"]
    finally:
        backend.close()


def test_iam_policy_without_the_prefix_is_denied(monkeypatch: pytest.MonkeyPatch, folder: Path,
                                                 tmp_path: Path) -> None:
    # a moto server of its own that checks IAM policies after the setup's four calls
    server = MotoServer.start_new(env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket="vmlab-iam")
        iam = boto3.client("iam", endpoint_url=server.endpoint)
        iam.create_user(UserName="alice")
        iam.put_user_policy(UserName="alice", PolicyName="own-prefix", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                 "Resource": "arn:aws:s3:::vmlab-iam/alice/*"},
                {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::vmlab-iam"}]}))
        key = iam.create_access_key(UserName="alice")["AccessKey"]
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        own = open_store("s3://vmlab-iam/alice")
        assert not push(folder, own, Manifest.load(tmp_path / "own.json", own.url)).failed
        other = open_store("s3://vmlab-iam/bob")
        result = push(folder, other, Manifest.load(tmp_path / "other.json", other.url))
        assert set(result.failed) == {"notes.txt", "nb/a.ipynb"}
        assert all("was denied (AccessDenied): allow s3:GetObject, PutObject" in m for m in result.failed.values())
    finally:
        server.cleanup()


def test_unreadable_local_file_is_reported_and_the_rest_synced(s3: Backend, folder: Path) -> None:
    backend = s3  # local behaviour: one backend is enough
    secret = folder / "locked.txt"
    secret.write_bytes(b"not for you")
    secret.chmod(0)
    # root reads anything; without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH it obeys the file's mode
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    env = {**os.environ, **backend.env, "PYTHONPATH": str(ROOT), "VMLAB_SYNC_URL": backend.url}
    done = subprocess.run([*drop, sys.executable, "-m", "vmlab.agent", "sync", "--folder", str(folder), "--once"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if "locked.txt" in line]
    assert errors and "Permission denied" in errors[0], done.stderr
    synced = {key for key in backend.objects() if not key.endswith(MARKER_KEY)}
    assert synced == {backend.prefix + "notes.txt", backend.prefix + "nb/a.ipynb"}
    secret.chmod(0o600)
    assert secret.read_bytes() == b"not for you"


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (as root), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_during_restore_keeps_local_files(s3: Backend, small_disk: Path, tmp_path: Path) -> None:
    backend = s3  # local behaviour: one backend is enough
    (small_disk / "mine.txt").write_bytes(b"made here")
    backend.put_object(backend.prefix + "big.bin", os.urandom(2 * 1024 * 1024))
    backend.put_object(backend.prefix + "small.txt", b"fits")
    store = backend.store()
    manifest = Manifest.load(tmp_path / "m.json", store.url)
    result = restore(small_disk, store, manifest)
    # the two download at once: the small one fits unless it is written while the big one's temporary fills the disk
    assert "big.bin" in result.failed and sorted([*result.downloaded, *result.failed]) == ["big.bin", "small.txt"]
    assert all("No space left on device" in why for why in result.failed.values()), result.failed
    assert sorted(p.name for p in small_disk.iterdir()) == sorted(["mine.txt", *result.downloaded]), \
        "a temporary was left"
    assert (small_disk / "mine.txt").read_bytes() == b"made here"
    assert set(manifest.entries) == set(result.downloaded)
    # once there is room, the next restore fetches what failed
    (small_disk / "mine.txt").unlink()
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    assert sorted(restore(small_disk, store, manifest).downloaded) == sorted(result.failed)
    assert (small_disk / "small.txt").read_bytes() == b"fits"


@pytest.mark.parametrize("name", ["s3", "azure", "gcs"])
def test_unreachable_store_is_one_line_without_secrets(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    quick = RetryPolicy(attempts=2, base_s=0.05, cap_s=0.1, timeout_s=5)
    store: Store
    if name == "s3":
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        store = S3Store("vmlab-gone", "p", client=make_client(quick))
    elif name == "azure":
        store = AzureStore.from_url(f"{endpoint}/devstoreaccount1/lab/p?sv=2024-11-04&sr=c&sp=rl&sig=SECRETSIG",
                                    retry=quick)
    else:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        store = GCSStore("vmlab-gone", "p", project="vmlab-test", retry=quick)
    for action in (lambda: list(store.list()), lambda: store.put("a.txt", b"a", md5(b"a"))):
        with pytest.raises(StoreError) as caught:
            action()
        text = str(caught.value)
        assert "\n" not in text and "SECRETSIG" not in text, text
        assert "failed" in text and ("onnect" in text or "reach" in text), text


def test_s3_without_credentials_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance profile to ask (and no 169.254.x.x)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StoreError, match="no AWS credentials found: give the VM an instance profile"):
        list(open_store("s3://vmlab-bucket/p", env={}).list())
