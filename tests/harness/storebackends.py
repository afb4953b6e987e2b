"""The agent's three store backends set up alike for tests and benchmarks: an empty bucket (or container) on its
emulator, a FaultProxy in front of it so every HTTP request the store makes is seen (and can be failed), and an
admin client that goes to the emulator directly (its requests are not counted).

Example::

    backend = s3_backend(moto_server.endpoint, monkeypatch.setenv)       # or azure_backend / gcs_backend
    store = backend.store()                                               # open_store(backend.url)
    store.put("a.txt", b"a", md5)
    assert backend.requests() == ["write"]
    assert backend.objects() == {backend.prefix + "a.txt": b"a"}
    backend.close()
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from tests.harness.awsfaults import FaultProxy
from tests.harness.azurite import Azurite
from tests.harness.gcs import FakeGCS
from vmlab.agent.stores import Store, open_store

PREFIX = "alice/data/"
SetEnv = Callable[[str, str], Any]


class Backend:
    """One backend under test. `url` is the sync URL through the proxy; `env` what the store (and a daemon
    subprocess) needs in its environment, already applied with `setenv`."""

    name = ""

    def __init__(self, upstream: str, setenv: SetEnv) -> None:
        self.bucket = f"vmlab-{uuid.uuid4().hex[:12]}"
        self.prefix = PREFIX
        self.proxy = FaultProxy(upstream).start()
        self.env: dict[str, str] = {}
        self.url = ""
        self._setenv = setenv
        self._seen = 0

    def _apply(self, env: dict[str, str]) -> None:
        self.env.update(env)
        for name, value in env.items():
            self._setenv(name, value)

    def store(self, **options: Any) -> Store:
        """The store under test; `options` (retry, part_size, multipart_threshold) build it directly."""
        return open_store(self.url) if not options else self._make(**options)

    def _make(self, **options: Any) -> Store:
        raise NotImplementedError

    def requests(self) -> list[str]:
        """Kinds of the requests the store made since the last call, sorted: "list", "get", "write", "delete",
        "head"."""
        records = self.proxy.records[self._seen:]
        self._seen += len(records)
        return sorted(self._kind(call.method, call.path) for call in records)

    def _kind(self, method: str, path: str) -> str:
        if method == "GET":
            return "list" if path.rstrip("/") == self.list_path else "get"
        return {"PUT": "write", "POST": "write", "DELETE": "delete", "HEAD": "head"}.get(method, method)

    list_path = ""

    def objects(self) -> dict[str, bytes]:
        """Every object in the bucket (all prefixes), read directly from the emulator."""
        raise NotImplementedError

    def put_object(self, key: str, data: bytes) -> None:
        """Write an object as someone else would (directly, not counted)."""
        raise NotImplementedError

    def close(self) -> None:
        self.proxy.stop()


class S3Backend(Backend):
    name = "s3"

    def __init__(self, endpoint: str, setenv: SetEnv) -> None:
        super().__init__(endpoint, setenv)
        import boto3

        self.admin = boto3.client("s3", endpoint_url=endpoint)
        self.admin.create_bucket(Bucket=self.bucket)
        self.url = f"s3://{self.bucket}/{self.prefix}"
        self.list_path = f"/{self.bucket}"
        self._apply({"AWS_ENDPOINT_URL": self.proxy.endpoint})

    def _make(self, **options: Any) -> Store:
        from vmlab.agent.stores.s3 import S3Store, make_client

        return S3Store(self.bucket, self.prefix, client=make_client(options.pop("retry", None) or _retry()),
                       **options)

    def objects(self) -> dict[str, bytes]:
        found = {}
        for page in self.admin.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for obj in page.get("Contents", []):
                found[obj["Key"]] = self.admin.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
        return found

    def put_object(self, key: str, data: bytes) -> None:
        self.admin.put_object(Bucket=self.bucket, Key=key, Body=data)


class AzureBackend(Backend):
    name = "azure"

    def __init__(self, azurite: Azurite, setenv: SetEnv) -> None:
        super().__init__(azurite.endpoint.rsplit("/", 1)[0], setenv)
        self.azurite = azurite
        self.admin = azurite.service_client().create_container(self.bucket)
        account = azurite.endpoint.rsplit("/", 1)[1]
        self.account_url = f"{self.proxy.endpoint}/{account}"
        self.url = f"{self.account_url}/{self.bucket}/{self.prefix}"
        self.list_path = f"/{account}/{self.bucket}"
        self._apply({"AZURE_BLOB_SAS_TOKEN": azurite.sas(self.bucket)})

    def _make(self, **options: Any) -> Store:
        from vmlab.agent.stores.azure import AzureStore

        return AzureStore.from_url(self.url, sas=self.env["AZURE_BLOB_SAS_TOKEN"], **options)

    def objects(self) -> dict[str, bytes]:
        return {blob.name: self.admin.download_blob(blob.name).readall() for blob in self.admin.list_blobs()}

    def put_object(self, key: str, data: bytes) -> None:
        self.admin.upload_blob(key, data, overwrite=True)


class GCSBackend(Backend):
    name = "gcs"

    def __init__(self, server: FakeGCS, setenv: SetEnv) -> None:
        super().__init__(server.endpoint, setenv)
        self.admin = server.client()
        self.admin_bucket = self.admin.create_bucket(self.bucket)
        self.url = f"gs://{self.bucket}/{self.prefix}"
        self.list_path = f"/storage/v1/b/{self.bucket}/o"
        self._apply({"STORAGE_EMULATOR_HOST": self.proxy.endpoint, "GOOGLE_PROJECT_ID": "vmlab-test"})

    def _make(self, **options: Any) -> Store:
        from vmlab.agent.stores.gcs import GCSStore

        return GCSStore(self.bucket, self.prefix, project="vmlab-test", **options)

    def objects(self) -> dict[str, bytes]:
        return {blob.name: blob.download_as_bytes() for blob in self.admin.list_blobs(self.bucket)}

    def put_object(self, key: str, data: bytes) -> None:
        self.admin_bucket.blob(key).upload_from_string(data)


def _retry() -> Any:
    from vmlab.agent.stores import RETRY

    return RETRY
