"""A moto server (AWS emulator) on 127.0.0.1 for tests that drive vmlab's ec2 provider over real HTTP.

Example::

    server = MotoServer.start_new()
    os.environ["AWS_ENDPOINT_URL"] = server.endpoint
    ...
    server.reset()      # between tests: forget every resource
    server.stop()
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from harness.emulators.sshd import free_port
from harness.plumbing.serverproc import http_answers, tcp_accepts, wait_until_up


class MotoServer:
    """`python -m moto.server -H 127.0.0.1 -p PORT`, with `endpoint` ("http://127.0.0.1:PORT"), `reset()`
    and `stop()`. Extra environment (for example `MOTO_AMIS_PATH`) can be given to the server process. With
    `tls=(cert, key)` it serves HTTPS (`endpoint` "https://..."; clients trust `cert` through AWS_CA_BUNDLE), as
    real S3 does: over plain HTTP botocore hashes every request body for the signature, which S3 never asks of a
    client over HTTPS."""

    host = "127.0.0.1"

    def __init__(self, port: int | None = None, env: dict[str, str] | None = None,
                 tls: tuple[Path, Path] | None = None) -> None:
        self.port = port or free_port()
        self.tls = tls
        self.endpoint = f"{'https' if tls else 'http'}://{self.host}:{self.port}"
        self._env = env or {}
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="vmlab-moto-", suffix=".log")[1])

    @classmethod
    def start_new(cls, env: dict[str, str] | None = None, tls: tuple[Path, Path] | None = None) -> MotoServer:
        server = cls(env=env, tls=tls)
        server.start()
        return server

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it answers HTTP."""
        if self._proc is not None and self._proc.poll() is None:
            return
        env = {**os.environ, **self._env}
        # An endpoint override is meant for clients (the tests), not for the emulator process itself.
        env.pop("AWS_ENDPOINT_URL", None)
        tls = ["-c", str(self.tls[0]), "-k", str(self.tls[1])] if self.tls else []
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port), *tls],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True,
            )
        up = tcp_accepts(self.host, self.port) if self.tls else http_answers(f"{self.endpoint}/moto-api/data.json")
        if wait_until_up(self._proc, up, timeout):
            return
        log_text = self.log_path.read_text(errors="replace")
        self.stop()
        raise TimeoutError(f"moto server on {self.endpoint} did not answer within {timeout}s\n{log_text}")

    def reset(self) -> None:
        """Forget every emulated resource (POST /moto-api/reset)."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass

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

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None


def object_text(s3: Any, bucket: str, key: str, timeout: float = 30.0) -> str | None:
    """The text of object `key` once it exists (an agent uploads it a moment later), None if it does not appear
    within `timeout` seconds (0: look once). `s3` is a boto3 S3 client.

    Example: `assert object_text(s3, "class", "ana/result.txt") == "42"`."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            return str(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode())
        except s3.exceptions.NoSuchKey:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.3)
