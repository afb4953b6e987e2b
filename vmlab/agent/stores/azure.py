"""A container prefix on Azure Blob Storage, through azure-storage-blob, with a SAS token (or an account key).

Small files are one Put Blob; larger ones are staged as blocks and committed with one Put Block List. The blob's
Content-MD5 is set from the MD5 the agent computed, and every request body carries its own MD5 that the service
checks. The SDK's exponential retry repeats 408, 5xx and broken requests, `RETRY.attempts` times at most.

Example::

    store = AzureStore.from_url("https://acct.blob.core.windows.net/lab/alice", sas="sv=...&sig=...")
    store.put("a.txt", b"hi", md5)
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs

from vmlab import syncurl
from vmlab.agent.stores import (
    MULTIPART_THRESHOLD,
    PART_SIZE,
    RETRY,
    LocalSink,
    ObjectInfo,
    RetryPolicy,
    Sink,
    backoff_s,
    normal_prefix,
)
from vmlab.errors import BadInput, StoreError


class AzureStore:
    """A prefix in one container. `account_url` is "https://ACCOUNT.blob.core.windows.net" (or an emulator's
    "http://127.0.0.1:PORT/ACCOUNT"); `credential` a SAS token (without "?"), or an account key dict.
    Example: `AzureStore("https://acct.blob.core.windows.net", "acct", "lab", "alice/", credential=sas)`."""

    parts_etag = False  # see Store

    def __init__(self, account_url: str, account: str, container: str, prefix: str = "", credential: Any = None,
                 retry: RetryPolicy = RETRY, part_size: int = PART_SIZE,
                 multipart_threshold: int = MULTIPART_THRESHOLD) -> None:
        from azure.storage.blob import ContainerClient

        # The SDK logs every request and response at INFO: the agent's log is for what went wrong.
        logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
        self.account = account
        self.container_name = container
        self.prefix = normal_prefix(prefix)
        self.url = f"{account_url}/{container}/{self.prefix}"  # no SAS: it is a secret
        self.credential = credential
        policy = _retry_policy(retry)
        self.container = ContainerClient(
            account_url, container, credential=credential, retry_policy=policy,
            max_single_put_size=multipart_threshold, max_block_size=part_size,
            connection_timeout=retry.timeout_s, read_timeout=retry.timeout_s,
        )

    @classmethod
    def from_url(cls, url: str, sas: str | None = None, key: str | None = None, **kwargs: Any) -> AzureStore:
        """`az://account/container/prefix`, `https://ACCOUNT.blob.core.windows.net/container/prefix[?SAS]`, or an
        emulator's `http://127.0.0.1:PORT/ACCOUNT/container/prefix`. The SAS in the URL wins over `sas`
        (AZURE_BLOB_SAS_TOKEN); without either, `key` (AZURE_STORAGE_KEY) signs requests."""
        parsed = syncurl.parse(url)
        if parsed.store != "azure":
            raise BadInput(f"sync URL {syncurl.redact(url)!r} is not an Azure URL", f"use {syncurl.URL_FORMS}")
        account, account_url, container = parsed.account, parsed.endpoint, parsed.bucket
        token = parsed.query or (sas or "").strip().lstrip("?")
        credential: Any = token or ({"account_name": account, "account_key": key} if key else None)
        if credential is None:
            raise BadInput(f"no credentials for {account_url}/{container}",
                           "set AZURE_BLOB_SAS_TOKEN to a SAS token with read, add, create, write, delete and list "
                           "permissions on the container")
        return cls(account_url, account, container, parsed.prefix, credential=credential, **kwargs)

    def _blob(self, key: str) -> Any:
        return self.container.get_blob_client(self.prefix + key)

    def put(self, key: str, source: bytes | BinaryIO | Path, md5: str) -> str:
        from azure.storage.blob import ContentSettings

        settings = ContentSettings(content_md5=bytearray.fromhex(md5))
        try:
            if isinstance(source, bytes):
                answer = self._blob(key).upload_blob(source, overwrite=True, content_settings=settings,
                                                     validate_content=True)
            elif isinstance(source, Path):
                with source.open("rb") as f:
                    answer = self._blob(key).upload_blob(f, length=source.stat().st_size, overwrite=True,
                                                         content_settings=settings, validate_content=True,
                                                         max_concurrency=4)
            else:
                answer = self._blob(key).upload_blob(source, length=os.fstat(source.fileno()).st_size,
                                                     overwrite=True, content_settings=settings,
                                                     validate_content=True, max_concurrency=4)
            return str(answer["etag"]).strip('"')
        except OSError:
            raise  # the local file
        except Exception as e:
            raise self._error("upload", key, e) from e

    def get(self, key: str, out: Sink) -> str:
        sink = LocalSink(out)
        try:
            downloader = self._blob(key).download_blob()
            downloader.readinto(sink)
            return str(downloader.properties.etag).strip('"')
        except Exception as e:
            if sink.error is not None:
                raise sink.error from None  # the local disk (full, read-only), not the store
            raise self._error("download", key, e) from e

    def delete(self, key: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._blob(key).delete_blob()
        except ResourceNotFoundError as e:
            if getattr(e, "error_code", "") != "BlobNotFound":
                raise self._error("delete", key, e) from e
        except Exception as e:
            raise self._error("delete", key, e) from e

    def exists(self, key: str) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._blob(key).get_blob_properties()
            return True
        except ResourceNotFoundError:
            return False  # the blob, or the whole container
        except Exception as e:
            raise self._error("check", key, e) from e

    def list(self) -> Iterator[ObjectInfo]:
        try:
            for blob in self.container.list_blobs(name_starts_with=self.prefix or None):
                key = blob.name[len(self.prefix):]
                if not key or key.endswith("/"):
                    continue
                md5 = blob.content_settings.content_md5
                modified = blob.last_modified.timestamp() if blob.last_modified else 0.0
                yield ObjectInfo(key, int(blob.size), str(blob.etag).strip('"'), bytes(md5).hex() if md5 else "",
                                 modified)
        except Exception as e:
            raise self._error("list", "", e) from e

    def _error(self, action: str, key: str, e: Exception) -> StoreError:
        """A one-line StoreError for `e`, with any SAS signature the SDK's text quotes (a request URL in a
        connection error) masked: these messages go to logs and to the status file."""
        error = self._classify(action, key, e)
        return StoreError(_SIG.sub(r"\1***", error.message), error.hint)

    def _classify(self, action: str, key: str, e: Exception) -> StoreError:
        raw = getattr(e, "error_code", "") or ""
        code = str(getattr(raw, "value", raw))  # the SDK gives a StorageErrorCode enum or a string
        status = getattr(e, "status_code", None)
        where = f"{self.url}{key}"
        if code == "ContainerNotFound":
            return StoreError(f"container {self.container_name} does not exist in account {self.account}",
                              "create it or fix the sync URL")
        if status in (401, 403):
            expiry = self._sas_expiry()
            if expiry is not None and expiry <= time.time():
                when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(expiry))
                return StoreError(f"{action} of {where} was refused: the SAS token expired at {when}",
                                  "make a new SAS token and set AZURE_BLOB_SAS_TOKEN")
            if code.startswith("AuthorizationPermission") or code.startswith("AuthorizationResourceType"):
                return StoreError(f"{action} of {where} was denied: the SAS token lacks the permission ({code})",
                                  "give the SAS token read, add, create, write, delete and list permissions on "
                                  "the container")
            return StoreError(f"{action} of {where} was refused ({code or status}): the SAS token (or key) is not "
                              f"valid for {self.account}/{self.container_name}",
                              "make a new SAS token for this container and set AZURE_BLOB_SAS_TOKEN")
        if type(e).__name__ in ("ServiceRequestError", "ServiceResponseError"):
            return StoreError(f"{action} of {where} failed: cannot reach the storage account: {e}",
                              "check the network and the URL")
        message = str(getattr(e, "reason", None) or e).splitlines()[0]
        return StoreError(f"{action} of {where} failed: {code or status or type(e).__name__}: {message}")

    def _sas_expiry(self) -> float | None:
        """The SAS token's expiry (its `se` field) as a unix time, None without a parsable one."""
        if not isinstance(self.credential, str):
            return None
        values = parse_qs(self.credential).get("se")
        if not values:
            return None
        try:
            return dt.datetime.fromisoformat(values[0].replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None


_SIG = re.compile(r"((?:^|[?&\s])sig=)[^&\s'\")]+")


def _retry_policy(retry: RetryPolicy) -> Any:
    """The SDK's storage retry (which requests are retried: 408, 5xx, broken connections) with the waits of
    `retry` (its own formula adds 2**n seconds to the first wait)."""
    from azure.storage.blob import ExponentialRetry

    class Retry(ExponentialRetry):  # type: ignore[misc]
        def get_backoff_time(self, settings: dict[str, Any]) -> float:
            return backoff_s(retry, max(1, int(settings.get("count", 1)))) * random.uniform(0.75, 1.25)

    return Retry(retry_total=retry.attempts - 1)
