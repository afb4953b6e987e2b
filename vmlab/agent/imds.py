"""EC2's interruption notices, read from the instance metadata service (IMDSv2: a session token first).

A spot instance learns two minutes ahead that it will be stopped (`spot/instance-action`), and earlier that it
is at raised risk (`events/recommendations/rebalance`); either makes the sync daemon push everything at once.
The agent polls only on EC2: the board vendor says "Amazon EC2" (or the Xen UUID starts with "ec2"), or
AWS_EC2_METADATA_SERVICE_ENDPOINT names an endpoint (tests point it at harness/emulators/imds.py). If the token
request then fails, the watcher stops for good: that machine has no IMDS. AWS_EC2_METADATA_DISABLED=true turns
it off.

Example::

    watcher = InterruptionWatcher(on_notice=lambda what: flush_now.set())
    watcher.start()          # a daemon thread; watcher.stop() ends it
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger("vmlab.agent")

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_TTL_S = 21600
NOTICE_PATHS = {
    "spot interruption": "/latest/meta-data/spot/instance-action",
    "rebalance recommendation": "/latest/meta-data/events/recommendations/rebalance",
}
DMI_FILES = ("/sys/devices/virtual/dmi/id/sys_vendor", "/sys/devices/virtual/dmi/id/board_vendor")


def on_ec2(env: Mapping[str, str] | None = None) -> bool:
    """Whether to look for IMDS at all (a cheap local check, no network)."""
    env = os.environ if env is None else env
    if env.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        return False
    if env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT"):
        return True
    for name in DMI_FILES:
        try:
            if "amazon ec2" in Path(name).read_text().lower():
                return True
        except OSError:
            continue
    try:
        return Path("/sys/hypervisor/uuid").read_text().lower().startswith("ec2")
    except OSError:
        return False


class Imds:
    """IMDSv2 client: `token()` (PUT), `get(path)` (None on 404). Timeouts are short: the service is local."""

    def __init__(self, endpoint: str | None = None, timeout: float = 1.0) -> None:
        self.endpoint = (endpoint or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or DEFAULT_ENDPOINT)
        self.endpoint = self.endpoint.rstrip("/")
        self.timeout = timeout
        self._token = ""

    def token(self) -> str:
        request = urllib.request.Request(f"{self.endpoint}/latest/api/token", method="PUT",
                                         headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)})
        with urllib.request.urlopen(request, timeout=self.timeout) as answer:
            self._token = answer.read().decode().strip()
        return self._token

    def get(self, path: str) -> str | None:
        """The text at `path`, or None when it does not exist (no notice). Renews the token once on 401."""
        for attempt in range(2):
            if not self._token:
                self.token()
            request = urllib.request.Request(f"{self.endpoint}{path}",
                                             headers={"X-aws-ec2-metadata-token": self._token})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                    return str(answer.read().decode())
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    return None
                if e.code == 401 and attempt == 0:
                    self._token = ""
                    continue
                raise
        return None

    def notice(self) -> str | None:
        """"spot interruption: {...}" or "rebalance recommendation: {...}" when EC2 posted one, else None."""
        for what, path in NOTICE_PATHS.items():
            body = self.get(path)
            if body:
                return f"{what}: {body.strip()[:200]}"
        return None


class InterruptionWatcher:
    """A thread that polls every `interval_s` and calls `on_notice(text)` once per new notice."""

    def __init__(self, on_notice: Callable[[str], None], interval_s: float = 5.0, imds: Imds | None = None) -> None:
        self.on_notice = on_notice
        self.interval_s = interval_s
        self.imds = imds or Imds()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.active = False

    def start(self) -> bool:
        """Start polling when on EC2 and the token request works; returns whether it did."""
        if not on_ec2():
            return False
        try:
            self.imds.token()
        except (OSError, urllib.error.URLError) as e:
            log.info("no instance metadata service at %s (%s): not watching for spot notices", self.imds.endpoint, e)
            return False
        self.active = True
        self._thread = threading.Thread(target=self._loop, name="imds", daemon=True)
        self._thread.start()
        log.info("watching %s for spot interruption and rebalance notices", self.imds.endpoint)
        return True

    def _loop(self) -> None:
        seen: set[str] = set()
        while not self._stop.wait(self.interval_s):
            try:
                text = self.imds.notice()
            except (OSError, urllib.error.URLError) as e:
                log.warning("instance metadata poll failed: %s", e)
                continue
            if text and text not in seen:
                seen.add(text)
                log.warning("%s: pushing everything now", text)
                self.on_notice(text)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
