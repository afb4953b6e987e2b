"""A bucket prefix on S3 (or anything that speaks S3, through `AWS_ENDPOINT_URL`), through boto3.

Small files are one PutObject with Content-MD5; larger ones go through one transfer manager per store (multipart,
each part retried), shared by every upload, so that all of them together send at most `TRANSFER_REQUESTS` parts at
once, as `aws s3 sync` does: where the link or the server is the bottleneck, more parts in flight only wait longer.
botocore's "standard" retry mode repeats throttled, 5xx and broken requests with exponential backoff and jitter,
`RETRY.attempts` times at most.

Example: `S3Store("my-bucket", "alice/").put("a.txt", b"hi", md5)`.
"""

from __future__ import annotations

import base64
import os
import re
import threading
from collections.abc import Iterator
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
from vmlab.errors import StoreError

#: multipart parts in flight at once, over all the store's large uploads (aws s3's default max_concurrent_requests)
TRANSFER_REQUESTS = 10

_MD5_HEX = re.compile(r"[0-9a-f]{32}")


class S3Store:
    """A bucket prefix on S3, credentials from the standard chain (instance profile on a lab VM).
    Example: `S3Store("my-bucket", "alice/")`."""

    parts_etag = True  # see Store

    def __init__(self, bucket: str, prefix: str = "", client: Any = None, retry: RetryPolicy = RETRY,
                 part_size: int = PART_SIZE, multipart_threshold: int = MULTIPART_THRESHOLD) -> None:
        self.bucket = bucket
        self.prefix = normal_prefix(prefix)
        self.url = f"s3://{bucket}/{self.prefix}"
        self.part_size = part_size
        self.multipart_threshold = multipart_threshold
        if client is None:
            client = make_client(retry)
        self.client = client
        self._transfers: Any = None
        self._transfers_lock = threading.Lock()

    def _transfer_manager(self) -> Any:
        with self._transfers_lock:
            if self._transfers is None:
                from boto3.s3.transfer import TransferConfig, create_transfer_manager

                # the classic manager always (never the CRT one, which picks its own part sizes): the ETag of a
                # large upload is then the digest the agent records for it (vmlab.agent.manifest.digest_like)
                config = TransferConfig(multipart_threshold=self.multipart_threshold,
                                        multipart_chunksize=self.part_size, max_concurrency=TRANSFER_REQUESTS,
                                        preferred_transfer_client="classic")
                self._transfers = create_transfer_manager(self.client, config)
            return self._transfers

    def _key(self, key: str) -> str:
        return self.prefix + key

    def put(self, key: str, source: bytes | BinaryIO | Path, md5: str) -> str:
        try:
            if isinstance(source, bytes):
                # Content-MD5 makes S3 reject a body that was corrupted on the way
                answer = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=source,
                                                ContentMD5=base64.b64encode(bytes.fromhex(md5)).decode())
                return str(answer["ETag"]).strip('"')
            what = str(source) if isinstance(source, Path) else source
            self._transfer_manager().upload(what, self.bucket, self._key(key)).result()
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return str(head["ETag"]).strip('"')
        except Exception as e:
            raise self._error("upload", key, e) from e

    def get(self, key: str, out: Sink) -> str:
        sink = LocalSink(out)
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            for chunk in answer["Body"].iter_chunks(1 << 20):
                sink.write(chunk)
            return str(answer["ETag"]).strip('"')
        except Exception as e:
            if sink.error is not None:
                raise sink.error from None  # the local disk (full, read-only), not the store
            raise self._error("download", key, e) from e

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as e:
            raise self._error("delete", key, e) from e

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as e:
            response = getattr(e, "response", None)
            code = str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
            if code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
                return False
            if code not in ("403", "AccessDenied", "Forbidden"):
                raise self._error("check", key, e) from e
        # 403: without s3:ListBucket on the key itself (EC2's instance profile grants it only with an s3:prefix
        # condition) S3 answers a HEAD of a missing object with 403. A listing under exactly that key tells.
        try:
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(key), MaxKeys=1)
        except Exception as e:
            raise self._error("check", key, e) from e
        return any(obj.get("Key") == self._key(key) for obj in page.get("Contents", []))

    def list(self) -> Iterator[ObjectInfo]:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self.prefix):]
                    if key and not key.endswith("/"):  # "folder/" markers made by consoles hold nothing
                        etag = str(obj["ETag"]).strip('"')
                        # a single-part upload's ETag is the MD5 of its bytes (a multipart one has a "-N" suffix)
                        yield ObjectInfo(key, int(obj["Size"]), etag, etag if _MD5_HEX.fullmatch(etag) else "",
                                         obj["LastModified"].timestamp())
        except Exception as e:
            raise self._error("list", "", e) from e

    def _error(self, action: str, key: str, e: Exception) -> StoreError:
        response = getattr(e, "response", None)  # botocore's ClientError carries the service's error code
        error = response.get("Error", {}) if isinstance(response, dict) else {}
        code = str(error.get("Code", ""))
        where = f"s3://{self.bucket}/{self._key(key)}"
        if type(e).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
            return StoreError(f"{action} of {where} failed: no AWS credentials found",
                              "give the VM an instance profile, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        if type(e).__name__ in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                                "ConnectionClosedError"):
            return StoreError(f"{action} of {where} failed: cannot reach S3: {e}", "check the network and the URL")
        if code == "NoSuchBucket":
            return StoreError(f"bucket {self.bucket} does not exist", "create it or fix the sync URL")
        if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException") \
                or code == "301":
            expected = re.search(r"expecting '([a-z0-9-]+)'", str(error.get("Message", "")))
            region = error.get("Region") or (expected.group(1) if expected else "the bucket's region")
            return StoreError(f"bucket {self.bucket} is in another region than {self.client.meta.region_name}",
                              f"set AWS_REGION to {region}")
        if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StoreError(f"{action} of {where} was denied ({code})",
                              f"allow s3:GetObject, PutObject, DeleteObject and ListBucket on {self.url}")
        return StoreError(f"{action} of {where} failed: {e}")


def make_client(retry: RetryPolicy = RETRY) -> Any:
    """An S3 client with bounded retries and timeouts, region from AWS_REGION / AWS_DEFAULT_REGION.
    Example: `make_client().meta.endpoint_url == "https://s3.eu-west-1.amazonaws.com"` (with AWS_REGION=eu-west-1).
    """
    client = _client(retry, sign_payload=True)
    if str(client.meta.endpoint_url).startswith("https://"):
        # over TLS the parts of a large upload are sent unsigned, as aws s3 does: TLS already protects the bytes on
        # the way, and SHA-256 over every part costs a second pass of CPU over the file (a tenth of a large
        # upload's time on two cores). Plain-HTTP endpoints (a local MinIO) keep the signed payload.
        client = _client(retry, sign_payload=False)
    return client


def _client(retry: RetryPolicy, sign_payload: bool) -> Any:
    import boto3
    from botocore.config import Config

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    # room for the 10 parallel transfers (and a multipart upload's own threads) without dropping connections.
    # Checksums only where S3 requires them: a single PUT carries the Content-MD5 the agent computed anyway, and
    # botocore's default CRC32 trailer on every multipart part costs ~15% of a large upload's time (aws-chunked
    # encoding read in small pieces), and S3-compatible stores reject its aws-chunked trailers.
    config = Config(retries={"mode": "standard", "total_max_attempts": retry.attempts}, max_pool_connections=48,
                    connect_timeout=retry.timeout_s, read_timeout=retry.timeout_s,
                    request_checksum_calculation="when_required", s3={"payload_signing_enabled": sign_payload})
    return boto3.session.Session().client("s3", region_name=region, config=config)
