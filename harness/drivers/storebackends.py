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

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.emulators.azurite import Azurite
from harness.emulators.gcs import FakeGCS
from harness.faults.awsfaults import FaultProxy
from vmlab.agent.stores import Store, open_store

PREFIX = "alice/data/"
ROOT = Path(__file__).resolve().parents[2]
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

    def store_via(self, endpoint: str, **options: Any) -> Store:
        """A store that reaches the emulator through `endpoint` (another proxy in front of this one's)."""
        raise NotImplementedError

    missing_url = ""
    missing_env: dict[str, str] = {}

    def missing_store(self) -> Store:
        """A store whose bucket (container) does not exist (`missing_url`, `missing_env`), through the proxy."""
        return open_store(self.missing_url, env={**os.environ, **self.missing_env})

    def requests(self) -> list[str]:
        """Kinds of the requests the store made since the last call, sorted: "list", "get", "write", "delete",
        "head"."""
        records = self.proxy.records[self._seen:]
        self._seen += len(records)
        return sorted(self._kind(call.method, call.path) for call in records)

    def _kind(self, method: str, path: str) -> str:
        if method == "GET":
            return "list" if self._is_listing(path.rstrip("/")) else "get"
        return {"PUT": "write", "POST": "write", "DELETE": "delete", "HEAD": "head"}.get(method, method)

    def _is_listing(self, path: str) -> bool:
        """Whether a GET of `path` lists a bucket (S3: "/bucket"; Azure: "/account/container"; GCS:
        "/storage/v1/b/bucket/o")."""
        raise NotImplementedError

    def objects(self) -> dict[str, bytes]:
        """Every object in the bucket (all prefixes), read directly from the emulator; one deleted between the
        listing and its read is left out."""
        raise NotImplementedError

    def put_object(self, key: str, data: bytes) -> None:
        """Write an object as someone else would (directly, not counted)."""
        raise NotImplementedError

    def read(self, key: str) -> bytes | None:
        """One object's bytes read directly (not counted), None when it does not exist."""
        raise NotImplementedError

    def create_missing(self) -> None:
        """Create the bucket `missing_store` names."""
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
        self._apply({"AWS_ENDPOINT_URL": self.proxy.endpoint})
        self.missing_url = f"s3://{self.bucket}-missing/p"

    def _is_listing(self, path: str) -> bool:
        return path.count("/") == 1

    def store_via(self, endpoint: str, **options: Any) -> Store:
        self._setenv("AWS_ENDPOINT_URL", endpoint)
        return self._make(**options)

    def _make(self, **options: Any) -> Store:
        from vmlab.agent.stores.s3 import S3Store, make_client

        return S3Store(self.bucket, self.prefix, client=make_client(options.pop("retry", None) or _retry()),
                       **options)

    def objects(self) -> dict[str, bytes]:
        found = {}
        for page in self.admin.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for obj in page.get("Contents", []):
                try:
                    found[obj["Key"]] = self.admin.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
                except self.admin.exceptions.NoSuchKey:
                    continue  # deleted since the listing
        return found

    def put_object(self, key: str, data: bytes) -> None:
        self.admin.put_object(Bucket=self.bucket, Key=key, Body=data)

    def read(self, key: str) -> bytes | None:
        try:
            return bytes(self.admin.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except self.admin.exceptions.NoSuchKey:
            return None

    def create_missing(self) -> None:
        self.admin.create_bucket(Bucket=self.bucket + "-missing")


class AzureBackend(Backend):
    name = "azure"

    def __init__(self, azurite: Azurite, setenv: SetEnv) -> None:
        super().__init__(azurite.endpoint.rsplit("/", 1)[0], setenv)
        self.azurite = azurite
        self.admin = azurite.service_client().create_container(self.bucket)
        account = azurite.endpoint.rsplit("/", 1)[1]
        self.account_url = f"{self.proxy.endpoint}/{account}"
        self.url = f"{self.account_url}/{self.bucket}/{self.prefix}"
        self._apply({"AZURE_BLOB_SAS_TOKEN": azurite.sas(self.bucket)})
        self.missing_url = f"{self.account_url}/{self.bucket}-missing/p"
        self.missing_env = {"AZURE_BLOB_SAS_TOKEN": azurite.sas(self.bucket + "-missing")}

    def _is_listing(self, path: str) -> bool:
        return path.count("/") == 2

    def store_via(self, endpoint: str, **options: Any) -> Store:
        from vmlab.agent.stores.azure import AzureStore

        url = self.url.replace(self.proxy.endpoint, endpoint)
        return AzureStore.from_url(url, sas=self.env["AZURE_BLOB_SAS_TOKEN"], **options)

    def _make(self, **options: Any) -> Store:
        from vmlab.agent.stores.azure import AzureStore

        return AzureStore.from_url(self.url, sas=self.env["AZURE_BLOB_SAS_TOKEN"], **options)

    def objects(self) -> dict[str, bytes]:
        from azure.core.exceptions import ResourceNotFoundError

        found = {}
        for blob in self.admin.list_blobs():
            try:
                found[blob.name] = self.admin.download_blob(blob.name).readall()
            except ResourceNotFoundError:
                continue  # deleted since the listing
        return found

    def put_object(self, key: str, data: bytes) -> None:
        self.admin.upload_blob(key, data, overwrite=True)

    def read(self, key: str) -> bytes | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return bytes(self.admin.download_blob(key).readall())
        except ResourceNotFoundError:
            return None

    def create_missing(self) -> None:
        self.azurite.service_client().create_container(self.bucket + "-missing")


class GCSBackend(Backend):
    name = "gcs"

    def __init__(self, server: FakeGCS, setenv: SetEnv) -> None:
        super().__init__(server.endpoint, setenv)
        self.admin = server.client()
        self.admin_bucket = self.admin.create_bucket(self.bucket)
        self.url = f"gs://{self.bucket}/{self.prefix}"
        self._apply({"STORAGE_EMULATOR_HOST": self.proxy.endpoint, "GOOGLE_PROJECT_ID": "vmlab-test"})
        self.missing_url = f"gs://{self.bucket}-missing/p"

    def _is_listing(self, path: str) -> bool:
        return path.startswith("/storage/v1/b/") and path.endswith("/o")

    def store_via(self, endpoint: str, **options: Any) -> Store:
        self._setenv("STORAGE_EMULATOR_HOST", endpoint)
        return self._make(**options)

    def _make(self, **options: Any) -> Store:
        from vmlab.agent.stores.gcs import GCSStore

        return GCSStore(self.bucket, self.prefix, project="vmlab-test", **options)

    def objects(self) -> dict[str, bytes]:
        from google.api_core.exceptions import NotFound

        found = {}
        for blob in self.admin.list_blobs(self.bucket):
            try:
                found[blob.name] = blob.download_as_bytes()
            except NotFound:
                continue  # deleted since the listing
        return found

    def put_object(self, key: str, data: bytes) -> None:
        self.admin_bucket.blob(key).upload_from_string(data)

    def read(self, key: str) -> bytes | None:
        from google.api_core.exceptions import NotFound

        try:
            return bytes(self.admin_bucket.blob(key).download_as_bytes())
        except NotFound:
            return None

    def create_missing(self) -> None:
        self.admin.create_bucket(self.bucket + "-missing")


def _retry() -> Any:
    from vmlab.agent.stores import RETRY

    return RETRY


def make_backend(name: str, request: Any, setenv: SetEnv) -> Backend:
    """The backend `name` ("s3", "azure", "gcs") on its session emulator fixture (moto_server, azurite,
    fake_gcs), which is started only when first needed."""
    if name == "s3":
        return S3Backend(request.getfixturevalue("moto_server").endpoint, setenv)
    if name == "azure":
        return AzureBackend(request.getfixturevalue("azurite"), setenv)
    return GCSBackend(request.getfixturevalue("fake_gcs"), setenv)


class Daemon:
    """`vmlab-agent sync` in a subprocess with the backend's environment and VMLAB_SYNC_URL (the backend's URL
    unless `url` is given), started the way systemd would; `stop()` sends SIGTERM and returns the log.
    Example: `daemon = Daemon(folder, backend, "--quiet", "60"); ...; daemon.stop()`."""

    def __init__(self, folder: Path, backend: Backend, *args: str, url: str = "", env: dict[str, str] | None = None,
                 wait: bool = True) -> None:
        self.log = folder.parent / "agent.log"
        self.status_dir = Path(os.environ["VMLAB_STATE_DIR"]) / "agent"
        env = {**os.environ, **backend.env, **(env or {}), "PYTHONPATH": str(ROOT),
               "VMLAB_SYNC_URL": url or backend.url, "VMLAB_AGENT_STATE_DIR": str(self.status_dir)}
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vmlab.agent", "sync", "--folder", str(folder), "-v", *args],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        deadline = time.monotonic() + 30
        while wait and not list(self.status_dir.glob("status*.json")):  # written once the watch runs
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"agent did not start:\n{self.stop()}")
            time.sleep(0.05)

    def status(self) -> dict[str, Any]:
        """The status file's JSON ({} before the first one)."""
        for path in self.status_dir.glob("status*.json"):
            try:
                return dict(json.loads(path.read_text()))
            except ValueError:
                continue
        return {}

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=90)
        print(self.log.read_text())  # shown by pytest when a test fails
        return self.log.read_text()
