"""Which store a sync URL or the environment names, without contacting any store; and that the cloud SDKs are
imported only by the backend that needs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vmlab.agent.stores import find_sync_url, open_store, sync_url_from_env
from vmlab.agent.stores.azure import AzureStore
from vmlab.agent.stores.gcs import GCSStore
from vmlab.agent.stores.s3 import S3Store
from vmlab.errors import BadInput

ROOT = Path(__file__).resolve().parents[2]
SAS = "sv=2024-11-04&se=2030-01-01T00%3A00%3A00Z&sr=c&sp=racwdl&sig=c2VjcmV0"


def test_s3_urls_and_the_prebuilt_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    store = open_store("s3://bkt/alice/data", env={})
    assert isinstance(store, S3Store) and (store.bucket, store.prefix) == ("bkt", "alice/data/")
    for folder in ("bkt2/bob", "s3://bkt2/bob"):
        store = open_store(None, env={"AWS_S3_BUCKET_FOLDER": folder})
        assert isinstance(store, S3Store) and (store.bucket, store.prefix, store.url) == ("bkt2", "bob/",
                                                                                          "s3://bkt2/bob/")
    assert open_store("s3://bkt", env={}).url == "s3://bkt/"


def test_azure_url_forms_keep_the_sas_out_of_the_url() -> None:
    store = open_store("az://acct/lab/alice", env={"AZURE_BLOB_SAS_TOKEN": "?" + SAS})
    assert isinstance(store, AzureStore)
    assert (store.account, store.container_name, store.prefix) == ("acct", "lab", "alice/")
    assert store.url == "https://acct.blob.core.windows.net/lab/alice/"
    store = open_store(f"https://acct.blob.core.windows.net/lab/a/b?{SAS}", env={})
    assert isinstance(store, AzureStore) and store.prefix == "a/b/" and "sig" not in store.url
    assert store.credential == SAS
    # the prebuilt image's names; an emulator on loopback is path-style (account first)
    store = open_store(None, env={"AZURE_CONTAINER_URL": "http://127.0.0.1:10000/devstoreaccount1/lab/p",
                                  "AZURE_BLOB_SAS_TOKEN": SAS})
    assert isinstance(store, AzureStore)
    assert (store.account, store.container_name, store.prefix) == ("devstoreaccount1", "lab", "p/")
    assert store._sas_expiry() == 1893456000.0


@pytest.mark.parametrize(("url", "env", "message"), [
    ("az://acct/lab", {}, "no credentials"),
    ("http://acct.blob.core.windows.net/lab?" + SAS, {}, "plain http"),
    ("az://acct", {"AZURE_BLOB_SAS_TOKEN": SAS}, "names no account or container"),
    ("https://example.com/lab/p", {"AZURE_BLOB_SAS_TOKEN": SAS}, "is not a storage URL"),
    ("ftp://b/p", {}, "is not a storage URL"),
    ("s3:///p", {}, "names no bucket"),
    ("gs://", {}, "names no bucket"),
])
def test_bad_urls_are_bad_input(url: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(BadInput, match=message) as caught:
        open_store(url, env=env)
    assert "sig=" not in str(caught.value), "a SAS signature was printed"


def test_gcs_url_and_the_prebuilt_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")  # anonymous: no credentials looked up
    store = open_store(None, env={"GOOGLE_BUCKET_FOLDER": "bkt/carol", "GOOGLE_PROJECT_ID": "proj"})
    assert isinstance(store, GCSStore) and (store.bucket_name, store.prefix) == ("bkt", "carol/")
    assert store.client.project == "proj"
    assert open_store("gs://bkt/x/", env={}).url == "gs://bkt/x/"


def test_sync_url_from_env_precedence() -> None:
    assert sync_url_from_env({"VMLAB_SYNC_URL": "gs://a/b", "AWS_S3_BUCKET_FOLDER": "c/d"}) == "gs://a/b"
    assert sync_url_from_env({"GOOGLE_BUCKET_FOLDER": "gs://a/b"}) == "gs://a/b"
    with pytest.raises(BadInput, match="AWS_S3_BUCKET_FOLDER and GOOGLE_BUCKET_FOLDER are both set"):
        sync_url_from_env({"AWS_S3_BUCKET_FOLDER": "c/d", "GOOGLE_BUCKET_FOLDER": "a/b"})
    with pytest.raises(BadInput, match="VMLAB_SYNC_URL"):
        sync_url_from_env({})
    assert find_sync_url({"AZURE_CONTAINER_URL": " https://a.blob.core.windows.net/c "}) == \
        "https://a.blob.core.windows.net/c"
    assert find_sync_url({"VMLAB_SYNC_URL": " "}) is None


def test_cloud_sdks_are_imported_only_when_a_backend_needs_them() -> None:
    code = ("import sys, vmlab.cli, vmlab.agent.cli, vmlab.agent.stores, vmlab.agent.sync, vmlab.agent.daemon; "
            "print(sorted({m.split('.')[0] + '.' + m.split('.')[1] for m in sys.modules "
            "if m.startswith(('azure.', 'google.cloud', 'boto3.'))}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=True)
    assert done.stdout.strip() == "[]", done.stdout
