"""A bucket prefix on Google Cloud Storage, through google-cloud-storage. Credentials come from
`GOOGLE_APPLICATION_CREDENTIALS` or the VM's service account; `STORAGE_EMULATOR_HOST` points the client at an
emulator (anonymous then).

Small files are one multipart upload, larger ones a resumable upload in `part_size` chunks; both send the MD5 for
the service to check. The object's generation is its version tag. Requests that fail on the way (408, 429, 5xx,
connection errors) are repeated with exponential backoff for at most about `RETRY.attempts` waits.

Example: `GCSStore("my-bucket", "alice/", project="my-project").put("a.txt", b"hi", md5)`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, BinaryIO

from vmlab.agent.stores import (
    MULTIPART_THRESHOLD,
    PART_SIZE,
    RETRY,
    LocalSink,
    ObjectInfo,
    RetryPolicy,
    Sink,
    normal_prefix,
)
from vmlab.errors import BadInput, StoreError

_CHUNK_UNIT = 256 * 1024  # resumable chunks are a multiple of this


class GCSStore:
    """A bucket prefix on GCS. Example: `GCSStore("my-bucket", "alice/")`."""

    parts_etag = False  # see Store

    def __init__(self, bucket: str, prefix: str = "", project: str | None = None, client: Any = None,
                 retry: RetryPolicy = RETRY, part_size: int = PART_SIZE,
                 multipart_threshold: int = MULTIPART_THRESHOLD) -> None:
        self.bucket_name = bucket
        self.prefix = normal_prefix(prefix)
        self.url = f"gs://{bucket}/{self.prefix}"
        self.part_size = max(_CHUNK_UNIT, part_size // _CHUNK_UNIT * _CHUNK_UNIT)
        self.multipart_threshold = multipart_threshold
        self.timeout = (retry.timeout_s, retry.timeout_s)
        self.policy = retry
        if client is None:
            client = _client(project)
        self.client = client
        self.bucket = client.bucket(bucket)

    def _retry(self) -> Any:
        """A fresh retry for one operation: the client's choice of what is transient (408, 429, 5xx, broken
        connections), at most `attempts` tries (google's Retry counts only time), the policy's waits."""
        from google.cloud.storage.retry import DEFAULT_RETRY, _should_retry

        failures = 0

        def transient(exc: Exception) -> bool:
            nonlocal failures
            failures += 1
            return failures < self.policy.attempts and bool(_should_retry(exc))

        worst = self.policy.attempts * (self.policy.cap_s + self.policy.timeout_s)
        return DEFAULT_RETRY.with_predicate(transient) \
            .with_delay(initial=self.policy.base_s, maximum=self.policy.cap_s, multiplier=2.0).with_timeout(worst)

    def put(self, key: str, source: bytes | BinaryIO | Path, md5: str) -> str:
        try:
            if isinstance(source, bytes):
                blob = self.bucket.blob(self.prefix + key)
                blob.upload_from_string(source, content_type="application/octet-stream", checksum="md5",
                                        retry=self._retry(), timeout=self.timeout)
            elif isinstance(source, Path) and source.stat().st_size <= self.multipart_threshold:
                blob = self.bucket.blob(self.prefix + key)  # one multipart request
                blob.upload_from_filename(str(source), content_type="application/octet-stream", checksum="md5",
                                          retry=self._retry(), timeout=self.timeout)
            else:
                # without a size the client always makes a resumable upload, sent and retried chunk by chunk
                blob = self.bucket.blob(self.prefix + key, chunk_size=self.part_size)
                with source.open("rb") if isinstance(source, Path) else nullcontext(source) as f:
                    blob.upload_from_file(f, content_type="application/octet-stream", checksum="md5",
                                          retry=self._retry(), timeout=self.timeout)
            if blob.md5_hash and base64.b64decode(blob.md5_hash).hex() != md5:
                raise StoreError(f"upload of {self.url}{key} stored other bytes than were read (MD5 differs)",
                                 "the next pass uploads it again")
            return str(blob.generation or blob.etag)
        except StoreError:
            raise
        except Exception as e:
            if isinstance(e, OSError) and not _is_network(e):
                raise  # reading the local file
            raise self._error("upload", key, e) from e

    def get(self, key: str, out: Sink) -> str:
        sink = LocalSink(out)
        blob = self.bucket.blob(self.prefix + key)
        try:
            # the generation and hashes come from the download's own headers: one request per file
            blob.download_to_file(sink, checksum="md5", retry=self._retry(), timeout=self.timeout)
            return str(blob.generation or blob.etag)
        except Exception as e:
            if sink.error is not None:
                raise sink.error from None  # the local disk (full, read-only), not the store
            raise self._error("download", key, e) from e

    def delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound

        try:
            self.bucket.blob(self.prefix + key).delete(retry=self._retry(), timeout=self.timeout)
        except NotFound as e:
            if "specified bucket" in str(e).lower():
                raise self._error("delete", key, e) from e
        except Exception as e:
            raise self._error("delete", key, e) from e

    def exists(self, key: str) -> bool:
        from google.api_core.exceptions import NotFound

        try:
            return bool(self.bucket.blob(self.prefix + key).exists(retry=self._retry(), timeout=self.timeout))
        except NotFound:
            return False  # the bucket is gone
        except Exception as e:
            raise self._error("check", key, e) from e

    def list(self) -> Iterator[ObjectInfo]:
        try:
            for blob in self.client.list_blobs(self.bucket, prefix=self.prefix or None, retry=self._retry(),
                                               timeout=self.timeout):
                key = blob.name[len(self.prefix):]
                if not key or key.endswith("/"):
                    continue
                md5 = base64.b64decode(blob.md5_hash).hex() if blob.md5_hash else ""
                modified = blob.updated.timestamp() if blob.updated else 0.0
                yield ObjectInfo(key, int(blob.size or 0), str(blob.generation or blob.etag), md5, modified)
        except Exception as e:
            raise self._error("list", "", e) from e

    def _error(self, action: str, key: str, e: Exception) -> StoreError:
        status = getattr(e, "code", None)
        response = getattr(e, "response", None)  # google-resumable-media's InvalidResponse
        if status is None and response is not None:
            status = getattr(response, "status_code", None)
        text = str(getattr(e, "message", "") or e).splitlines()[0] if str(e) else type(e).__name__
        where = f"{self.url}{key}"
        # an upload or a listing needs only the bucket; GCS says "The specified bucket does not exist." elsewhere
        if status == 404 and (action in ("upload", "list") or "specified bucket" in text.lower()):
            return StoreError(f"bucket {self.bucket_name} does not exist", "create it or fix the sync URL")
        if status in (401, 403):
            return StoreError(f"{action} of {where} was denied ({status})",
                              "give the VM's service account roles/storage.objectAdmin on the bucket "
                              "(or fix GOOGLE_APPLICATION_CREDENTIALS)")
        if _is_network(e):
            return StoreError(f"{action} of {where} failed: cannot reach the storage service: {text}",
                              "check the network and the URL")
        if type(e).__name__ in ("DefaultCredentialsError", "RefreshError", "TransportError"):
            return StoreError(f"{action} of {where} failed: no usable Google credentials: {text}",
                              "set GOOGLE_APPLICATION_CREDENTIALS to a service account key file")
        return StoreError(f"{action} of {where} failed: {status or type(e).__name__}: {text}")


def _is_network(e: Exception) -> bool:
    """requests' errors are OSErrors too; they are the store's, not the local disk's."""
    import requests

    return isinstance(e, requests.RequestException)


def _client(project: str | None) -> Any:
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    try:
        client = storage.Client(project=project)
    except DefaultCredentialsError as e:
        raise BadInput("no Google credentials found",
                       "set GOOGLE_APPLICATION_CREDENTIALS to a service account key file, or run on a VM with a "
                       "service account") from e
    # The client fetches each bucket's metadata in the background for its telemetry: a request (and a permission)
    # the agent does not need.
    client._bucket_metadata_cache = None
    return client
