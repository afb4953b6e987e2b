"""Object stores the agent syncs with, chosen by URL: `s3://bucket/prefix` (boto3). Keys are given relative to
the store's prefix ("notebooks/a.ipynb"); the store adds the prefix.

Example::

    store = open_store("s3://my-bucket/alice")      # or open_store(None) with AWS_S3_BUCKET_FOLDER=my-bucket/alice
    etag = store.put("a.txt", b"hello", md5=hashlib.md5(b"hello").hexdigest())
    with open("/tmp/a.txt", "wb") as f:
        store.get("a.txt", f)
    [o.key for o in store.list()]                    # ["a.txt"]
    store.delete("a.txt")
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vmlab.errors import BadInput, StoreError

# Above this, a file is sent with multipart upload (boto3's transfer manager) instead of one PUT.
MULTIPART_THRESHOLD = 8 * 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    """An object under the store's prefix: its key relative to the prefix, size and ETag (without quotes)."""

    key: str
    size: int
    etag: str


class Sink(Protocol):
    """Where `Store.get` writes: an open binary file, or anything with its `write`."""

    def write(self, data: bytes, /) -> object: ...


class Store(Protocol):
    """The four verbs the agent needs. `put` returns the new ETag; `get` writes the object into `out` and returns
    its ETag; `delete` of a missing key is not an error; `list` is only used by restore, never while watching."""

    url: str

    def put(self, key: str, source: bytes | Path, md5: str) -> str: ...

    def get(self, key: str, out: Sink) -> str: ...

    def delete(self, key: str) -> None: ...

    def list(self) -> Iterator[ObjectInfo]: ...


class S3Store:
    """A bucket prefix on S3 (or anything that speaks S3, through `AWS_ENDPOINT_URL`), credentials from the
    standard chain (instance profile on a lab VM). Example: `S3Store("my-bucket", "alice/")`."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        if client is None:
            import boto3
            from botocore.config import Config

            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
            client = boto3.session.Session().client("s3", region_name=region,
                                                    config=Config(retries={"mode": "standard"}))
        self.client = client

    def _key(self, key: str) -> str:
        return self.prefix + key

    def put(self, key: str, source: bytes | Path, md5: str) -> str:
        try:
            if isinstance(source, bytes):
                # Content-MD5 makes S3 reject a body that was corrupted on the way
                answer = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=source,
                                                ContentMD5=base64.b64encode(bytes.fromhex(md5)).decode())
                return str(answer["ETag"]).strip('"')
            from boto3.s3.transfer import TransferConfig

            self.client.upload_file(str(source), self.bucket, self._key(key),
                                    Config=TransferConfig(multipart_threshold=MULTIPART_THRESHOLD))
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return str(head["ETag"]).strip('"')
        except Exception as e:
            raise self._error("upload", key, e) from e

    def get(self, key: str, out: Sink) -> str:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            for chunk in answer["Body"].iter_chunks(1 << 20):
                out.write(chunk)
            return str(answer["ETag"]).strip('"')
        except Exception as e:
            raise self._error("download", key, e) from e

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as e:
            raise self._error("delete", key, e) from e

    def list(self) -> Iterator[ObjectInfo]:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self.prefix):]
                    if key and not key.endswith("/"):  # "folder/" markers made by consoles hold nothing
                        yield ObjectInfo(key, int(obj["Size"]), str(obj["ETag"]).strip('"'))
        except Exception as e:
            raise self._error("list", "", e) from e

    def _error(self, action: str, key: str, e: Exception) -> StoreError:
        response = getattr(e, "response", None)  # botocore's ClientError carries the service's error code
        code = response.get("Error", {}).get("Code", "") if isinstance(response, dict) else ""
        where = f"s3://{self.bucket}/{self._key(key)}"
        if code == "NoSuchBucket":
            return StoreError(f"bucket {self.bucket} does not exist", "create it or fix the sync URL")
        if code in ("AccessDenied", "403", "Forbidden"):
            return StoreError(f"{action} of {where} was denied",
                              f"allow s3:GetObject, PutObject, DeleteObject and ListBucket on {self.url}")
        return StoreError(f"{action} of {where} failed: {e}")


def open_store(url: str | None) -> Store:
    """The store a URL names. Without a URL, the prebuilt image's `AWS_S3_BUCKET_FOLDER` ("bucket/folder", with
    or without "s3://") is used. Example: `open_store("s3://my-bucket/alice")`."""
    if not url:
        folder = os.environ.get("AWS_S3_BUCKET_FOLDER", "").strip()
        if not folder:
            raise BadInput("no sync URL given", "pass --url s3://bucket/prefix or set AWS_S3_BUCKET_FOLDER")
        url = folder if folder.startswith("s3://") else "s3://" + folder
    scheme, sep, rest = url.partition("://")
    if not sep or scheme != "s3":
        raise BadInput(f"unsupported sync URL {url!r}", "use s3://bucket/prefix")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise BadInput(f"sync URL {url!r} names no bucket", "use s3://bucket/prefix")
    return S3Store(bucket, prefix)
