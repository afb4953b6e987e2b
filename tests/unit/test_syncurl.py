"""One sync-URL grammar: the same table of URLs is accepted or refused, with the same reason, by `vmlab up --sync`
(vmlab.workflows.labagent.check_sync_url) and by the lab agent opening its store (vmlab.agent.stores.open_store).
No store is contacted."""

from __future__ import annotations

import pytest

from vmlab.agent.stores import open_store
from vmlab.agent.stores.azure import AzureStore
from vmlab.agent.stores.gcs import GCSStore
from vmlab.agent.stores.s3 import S3Store
from vmlab.errors import BadInput
from vmlab.syncurl import SyncUrl, parse
from vmlab.workflows.labagent import check_sync_url

SAS = "sv=2024-11-04&se=2030-01-01T00%3A00%3A00Z&sr=c&sp=racwdl&sig=c2VjcmV0"

ACCEPTED = [
    ("s3://my-bucket/alice", SyncUrl("s3", "my-bucket", "alice")),
    ("s3://my.bucket", SyncUrl("s3", "my.bucket", "")),
    ("s3://bkt/a/b/", SyncUrl("s3", "bkt", "a/b")),
    (" gs://b/p ", SyncUrl("gs", "b", "p")),
    ("az://acct/c/p", SyncUrl("azure", "c", "p", "acct", "https://acct.blob.core.windows.net")),
    (f"https://acct.blob.core.windows.net/c/a/b?{SAS}",
     SyncUrl("azure", "c", "a/b", "acct", "https://acct.blob.core.windows.net", SAS)),
    # an emulator on this machine: path-style (account first), plain http only because it is loopback
    ("http://127.0.0.1:10000/devstoreaccount1/lab/p",
     SyncUrl("azure", "lab", "p", "devstoreaccount1", "http://127.0.0.1:10000/devstoreaccount1")),
]

REFUSED = [
    ("ftp://host/x", "is not a storage URL"),
    ("bucket/p", "is not a storage URL"),
    ("S3://bkt/p", "is not a storage URL"),
    ("https://example.com/lab/p", "is not a storage URL"),
    ("https://", "is not a storage URL"),
    ("s3://", "names no bucket"),
    ("s3:///p", "names no bucket"),
    ("gs://", "names no bucket"),
    ("s3://ab/x", "does not name a valid S3 bucket"),
    ("s3://UPPER/x", "does not name a valid S3 bucket"),
    ("s3://a..b/x", "does not name a valid S3 bucket"),
    ("az://acct", "names no account or container"),
    ("https://acct.blob.core.windows.net/", "names no account or container"),
    ("http://acct.blob.core.windows.net/lab?" + SAS, "plain http"),
    ("s3://b/*", "wildcard"),
    ("s3://b/alice?", "wildcard"),
    ("s3://b/${aws:username}", "wildcard"),
    ("gs://b/a\nVMLAB_X=1", "wildcard"),
    ("https://a.blob.core.windows.net/c/*?sv=1&sig=abc", "wildcard"),
]


@pytest.mark.parametrize(("url", "parsed"), ACCEPTED)
def test_both_sides_accept(url: str, parsed: SyncUrl, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")  # anonymous GCS: no credentials looked up
    assert parse(url) == parsed
    assert check_sync_url(url) == url.strip()
    store = open_store(url, env={"AZURE_BLOB_SAS_TOKEN": SAS})
    kind = {"s3": S3Store, "gs": GCSStore, "azure": AzureStore}[parsed.store]
    assert isinstance(store, kind)
    assert "sig=" not in store.url  # the SAS never becomes part of what is shown


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_both_sides_refuse_for_the_same_reason(url: str, reason: str) -> None:
    with pytest.raises(BadInput, match=reason) as workflow:
        check_sync_url(url)
    assert str(workflow.value).startswith("--sync ")
    with pytest.raises(BadInput, match=reason) as agent:
        open_store(url, env={"AZURE_BLOB_SAS_TOKEN": SAS})
    assert str(agent.value).replace("sync URL", "--sync", 1) == str(workflow.value)
    assert "sig=" not in str(workflow.value) + str(agent.value)


def test_s3_scope_is_what_the_ec2_profile_allows() -> None:
    assert parse("s3://bkt/alice/").scope == "s3://bkt/alice"
    assert parse("az://acct/c/p").scope == "https://acct.blob.core.windows.net/c/p"
