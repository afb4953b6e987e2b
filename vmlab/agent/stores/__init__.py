"""Object stores the agent syncs with, chosen by URL (the grammar of vmlab.syncurl, the same `vmlab up --sync`
checks). Keys are given relative to the store's prefix ("notebooks/a.ipynb"); the store adds the prefix.

- `s3://bucket/prefix`: `s3.S3Store` (boto3), credentials from the standard AWS chain (instance profile).
- `az://account/container/prefix` or `https://ACCOUNT.blob.core.windows.net/container/prefix[?SAS]`:
  `azure.AzureStore` (azure-storage-blob), a SAS token in the URL or `AZURE_BLOB_SAS_TOKEN` (or
  `AZURE_STORAGE_KEY`).
- `gs://bucket/prefix`: `gcs.GCSStore` (google-cloud-storage), `GOOGLE_APPLICATION_CREDENTIALS` or the VM's
  service account.

Without a URL, `VMLAB_SYNC_URL` (what `vmlab up` writes into the agent's environment file) is used, else the
prebuilt images' names: `AWS_S3_BUCKET_FOLDER`, `AZURE_CONTAINER_URL` (+ `AZURE_BLOB_SAS_TOKEN`) or
`GOOGLE_BUCKET_FOLDER` (+ `GOOGLE_PROJECT_ID`). The cloud SDKs are imported only by the backend that needs them.

Every backend retries a request that failed on the way (connection reset, timeout, 408, 429, 5xx) with
exponential backoff, `RETRY.attempts` times at most, and raises `StoreError` at once for a permanent answer
(403, a missing bucket). Files above `MULTIPART_THRESHOLD` are sent in parts (S3 multipart, Azure staged blocks,
GCS resumable chunks), each part retried on its own.

Example::

    store = open_store("s3://my-bucket/alice")      # or open_store(None) with VMLAB_SYNC_URL set
    etag = store.put("a.txt", b"hello", md5=hashlib.md5(b"hello").hexdigest())
    with open("/tmp/a.txt", "wb") as f:
        store.get("a.txt", f)
    [o.key for o in store.list()]                    # ["a.txt"]
    store.delete("a.txt")
    store.exists("a.txt")                            # False
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from vmlab import syncurl
from vmlab.errors import BadInput

# Above this, `put` is given a path and sends the file in parts instead of one request.
MULTIPART_THRESHOLD = 8 * 1024 * 1024
# The size of each part (S3 minimum: 5 MiB; GCS: a multiple of 256 KiB).
PART_SIZE = 8 * 1024 * 1024



@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed request is repeated: `attempts` tries at most; after failed try n
    (from 1) Azure and GCS wait about min(`cap_s`, `base_s` * 2**(n-1)), S3 botocore's own jittered exponential
    wait (up to 2**n s); `timeout_s` bounds one request's connect and each read."""

    attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 8.0
    timeout_s: float = 60.0


RETRY = RetryPolicy()


@dataclass(frozen=True)
class ObjectInfo:
    """An object under the store's prefix: its key relative to the prefix, size, the store's version tag (S3 and
    Azure ETag, GCS generation) and the hex MD5 of its bytes when the store knows it ("" otherwise)."""

    key: str
    size: int
    etag: str
    md5: str = ""
    modified: float = 0.0  # unix time of the last write, 0 when unknown


class Sink(Protocol):
    """Where `Store.get` writes: an open binary file, or anything with its `write`."""

    def write(self, data: bytes, /) -> object: ...


class Store(Protocol):
    """The verbs the agent needs. `put` returns the new version tag (bytes up to MULTIPART_THRESHOLD, an open
    file or a path above it; `md5` is the hex MD5 of the content, checked by the store on the way); `get` writes
    the object into `out` and returns its version tag; `delete` of a missing key is not an error; `list` is only
    used by restore, never while watching; `exists` is one HEAD request (the daemon's check that the bucket did
    not lose its objects). Every failure is raised as `StoreError` with a one-line message and hint.
    `parts_etag` is true where a large upload's version tag is the digest of its parts (S3's multipart ETag: the
    MD5 of the parts' MD5s, computed by the store), so the agent puts a large file without hashing it first and
    `md5` is "" then."""

    url: str
    parts_etag: bool

    def put(self, key: str, source: bytes | BinaryIO | Path, md5: str) -> str: ...

    def exists(self, key: str) -> bool: ...

    def get(self, key: str, out: Sink) -> str: ...

    def delete(self, key: str) -> None: ...

    def list(self) -> Iterator[ObjectInfo]: ...


class LocalSink:
    """Wraps the `out` of `get` so that a failure of the local disk (full, read-only) is told apart from one of
    the store: the backend re-raises `error` as it is instead of as a StoreError."""

    def __init__(self, out: Sink) -> None:
        self._out = out
        self.error: OSError | None = None

    def write(self, data: bytes, /) -> object:
        try:
            return self._out.write(data)
        except OSError as e:
            self.error = e
            raise


def open_store(url: str | None, env: Mapping[str, str] | None = None) -> Store:
    """The store a URL names; without one, the store the environment names (see the module docstring).
    Example: `open_store("gs://my-bucket/alice")`."""
    env = os.environ if env is None else env
    url = url or sync_url_from_env(env)
    parsed = syncurl.parse(url)
    if parsed.store == "s3":
        from vmlab.agent.stores.s3 import S3Store

        return S3Store(parsed.bucket, parsed.prefix)
    if parsed.store == "gs":
        from vmlab.agent.stores.gcs import GCSStore

        return GCSStore(parsed.bucket, parsed.prefix,
                        project=env.get("GOOGLE_PROJECT_ID") or env.get("GOOGLE_CLOUD_PROJECT"))
    from vmlab.agent.stores.azure import AzureStore

    return AzureStore.from_url(url, sas=env.get("AZURE_BLOB_SAS_TOKEN"), key=env.get("AZURE_STORAGE_KEY"))


def sync_url_from_env(env: Mapping[str, str]) -> str:
    """The sync URL the environment names (see `find_sync_url`); BadInput when it names none."""
    url = find_sync_url(env)
    if url is None:
        raise BadInput("no sync URL given",
                       "pass --url or set VMLAB_SYNC_URL (or AWS_S3_BUCKET_FOLDER, AZURE_CONTAINER_URL, "
                       "GOOGLE_BUCKET_FOLDER)")
    return url


def find_sync_url(env: Mapping[str, str]) -> str | None:
    """`VMLAB_SYNC_URL`, else the URL of the one prebuilt-image variable that is set (`AWS_S3_BUCKET_FOLDER`,
    `AZURE_CONTAINER_URL`, `GOOGLE_BUCKET_FOLDER`; "bucket/folder" gets its scheme), else None. Two of them set
    is BadInput. Example: `find_sync_url({"GOOGLE_BUCKET_FOLDER": "b/alice"}) == "gs://b/alice"`."""
    if url := env.get("VMLAB_SYNC_URL", "").strip():
        return url
    found = {}
    if folder := env.get("AWS_S3_BUCKET_FOLDER", "").strip():
        found["AWS_S3_BUCKET_FOLDER"] = folder if folder.startswith("s3://") else "s3://" + folder
    if container := env.get("AZURE_CONTAINER_URL", "").strip():
        found["AZURE_CONTAINER_URL"] = container
    if folder := env.get("GOOGLE_BUCKET_FOLDER", "").strip():
        found["GOOGLE_BUCKET_FOLDER"] = folder if folder.startswith("gs://") else "gs://" + folder
    if len(found) > 1:
        raise BadInput(f"{' and '.join(sorted(found))} are both set", "set VMLAB_SYNC_URL to the one to sync with")
    return next(iter(found.values()), None)


def normal_prefix(prefix: str) -> str:
    """"alice/data" -> "alice/data/"; "" and "/" -> ""."""
    prefix = prefix.strip("/")
    return prefix + "/" if prefix else ""


def backoff_s(policy: RetryPolicy, attempt: int) -> float:
    """The wait after failed attempt number `attempt` (from 1)."""
    return min(policy.cap_s, policy.base_s * 2 ** (attempt - 1))
