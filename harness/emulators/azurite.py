"""Azurite (Microsoft's Azure Storage emulator, from npm) serving Blob on 127.0.0.1 for the agent's Azure tests.

scripts/deps.sh installs it into .tools/ in the checkout; `VMLAB_AZURITE` may name another `azurite-blob`.
Data is kept in memory, telemetry is off.

Example::

    server = Azurite.start_new()
    client = server.service_client()                       # account-key client for setting up containers
    url = server.container_url("lab")                       # http://127.0.0.1:PORT/devstoreaccount1/lab
    sas = server.sas("lab", "racwdl")                       # a container SAS for the store under test
    server.stop()
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from harness.emulators.sshd import free_port
from harness.plumbing.serverproc import tcp_accepts, wait_until_up

# The emulator's fixed development account (public, documented by Microsoft; not a secret).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
ROOT = Path(__file__).resolve().parents[2]


def find_azurite() -> str | None:
    """The `azurite-blob` to run: VMLAB_AZURITE, the checkout's .tools/, or PATH."""
    for candidate in (os.environ.get("VMLAB_AZURITE"), str(ROOT / ".tools/node_modules/.bin/azurite-blob")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("azurite-blob")


class Azurite:
    """`azurite-blob` on 127.0.0.1:PORT with in-memory storage. `endpoint` is the account URL
    ("http://127.0.0.1:PORT/devstoreaccount1")."""

    host = "127.0.0.1"

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.endpoint = f"http://{self.host}:{self.port}/{ACCOUNT}"
        self.workdir = Path(tempfile.mkdtemp(prefix="vmlab-azurite-"))
        self.log_path = self.workdir / "azurite.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start_new(cls, binary: str | None = None) -> Azurite:
        binary = binary or find_azurite()
        if binary is None:
            raise FileNotFoundError("azurite-blob not found: run `. scripts/deps.sh; vmlab_test_tools`")
        server = cls(binary)
        server.start()
        return server

    def start(self, timeout: float = 60.0) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "--blobHost", self.host, "--blobPort", str(self.port), "--inMemoryPersistence",
                 "--skipApiVersionCheck", "--loose", "--disableTelemetry"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.workdir, start_new_session=True,
            )
        if wait_until_up(self._proc, tcp_accepts(self.host, self.port), timeout, interval=0.1):
            return
        log_text = self.log_path.read_text(errors="replace")
        self.cleanup()
        raise TimeoutError(f"azurite on port {self.port} did not start within {timeout}s\n{log_text}")

    def service_client(self) -> Any:
        """A BlobServiceClient signed with the account key (no retries: a test sees every failure)."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(self.endpoint, credential={"account_name": ACCOUNT, "account_key": KEY},
                                 retry_total=0)

    def container_url(self, container: str, prefix: str = "") -> str:
        return f"{self.endpoint}/{container}" + (f"/{prefix}" if prefix else "")

    def sas(self, container: str, permission: str = "racwdl", expires_in: float = 3600.0,
            starts_in: float = -300.0) -> str:
        """A container SAS token with `permission` (letters of "racwdl"), valid from now + `starts_in` seconds
        until now + `expires_in` seconds (negative: already expired)."""
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        now = dt.datetime.now(dt.timezone.utc)
        return generate_container_sas(
            ACCOUNT, container, account_key=KEY, permission=ContainerSasPermissions.from_string(permission),
            start=now + dt.timedelta(seconds=starts_in), expiry=now + dt.timedelta(seconds=expires_in),
        )

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, 15)  # node may have children; the session holds them all
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
