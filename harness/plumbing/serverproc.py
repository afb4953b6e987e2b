"""Waiting for a server subprocess the tests started (moto, fake-gcs-server, Azurite, Jupyter) to answer on
loopback, and stopping it.

Example::

    proc = subprocess.Popen([...])
    if not wait_until_up(proc, http_answers("http://127.0.0.1:4566/moto-api/data.json"), timeout=30):
        raise TimeoutError("...")
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any


def http_answers(url: str) -> Callable[[], bool]:
    """A probe: any HTTP answer from `url` (an error status included) means the server is up."""
    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
    return probe


def tcp_accepts(host: str, port: int) -> Callable[[], bool]:
    """A probe: the port accepts a TCP connection."""
    def probe() -> bool:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            return False
    return probe


def wait_until_up(proc: subprocess.Popen[bytes], probe: Callable[[], bool], timeout: float,
                  interval: float = 0.05) -> bool:
    """True once `probe` succeeds; False when `proc` exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if probe():
            return True
        time.sleep(interval)
    return False


def stop_process(proc: subprocess.Popen[Any], grace: float = 15) -> None:
    """Terminate `proc` and wait for it; killed when it has not exited after `grace` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
