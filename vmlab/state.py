"""The local record of labs: one JSON file per lab under the state dir, 0600, written under a file lock.

A record holds what vmlab needs to reach a lab again (provider, instance id, address, key path, pinned host key,
Jupyter token). Secrets live only here, never in an image.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmlab import paths
from vmlab.errors import BadInput
from vmlab.fileio import write_atomic

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


def check_name(name: str) -> str:
    """Lab names become tags, file names and SSH host aliases: keep them simple."""
    if not NAME_RE.match(name):
        raise BadInput(f"lab name {name!r} is not valid",
                       "use 1-40 lowercase letters, digits and dashes, starting with a letter or digit")
    return name


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class AgentSection:
    """The lab agent's settings as `vmlab up` recorded them (stored under `extra.agent` in the record file, so
    older records still read); a field is None when not recorded. Read it as `record.agent`."""

    idle_minutes: float | None = None
    max_hours: float | None = None
    sync_url: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> AgentSection:
        """From the record file: values of the wrong type (a hand-edited file) count as not recorded."""
        data = data if isinstance(data, dict) else {}
        url = data.get("sync_url")
        return cls(_number(data.get("idle_minutes")), _number(data.get("max_hours")),
                   url if isinstance(url, str) and url else None)

    def to_json(self) -> dict[str, Any]:
        return {"idle_minutes": self.idle_minutes, "max_hours": self.max_hours, "sync_url": self.sync_url}


@dataclass
class LabRecord:
    name: str
    provider: str
    instance_id: str
    image: str
    user: str
    key_file: str
    host_key: str
    token: str = field(repr=False)
    host: str | None = None
    port: int = 22
    jupyter_port: int = 8888
    created: str = ""
    instance_type: str | None = None
    spot: bool = False
    region: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: USD per hour when launched (an estimate: table or spot history); None for records of older vmlab versions
    hourly_price: float | None = None

    @property
    def agent(self) -> AgentSection:
        """The agent's recorded settings (typed view of `extra["agent"]`)."""
        return AgentSection.from_json(self.extra.get("agent"))

    @agent.setter
    def agent(self, section: AgentSection) -> None:
        self.extra = {**self.extra, "agent": section.to_json()}

    def to_json(self, secrets: bool = False) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not secrets:
            data.pop("token")
            agent = data.get("extra", {}).get("agent") or {}
            if agent.get("sync_url"):  # an Azure URL may carry its SAS token in the query
                agent["sync_url"] = agent["sync_url"].partition("?")[0] + ("?…" if "?" in agent["sync_url"] else "")
        return data


class LabStore:
    """Lab records on disk. Example: `LabStore().get("lab")`."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or paths.state_dir() / "labs"
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _file(self, name: str) -> Path:
        return self.root / f"{check_name(name)}.json"

    def get(self, name: str) -> LabRecord | None:
        f = self._file(name)
        if not f.exists():
            return None
        return LabRecord(**json.loads(f.read_text()))

    def put(self, record: LabRecord) -> None:
        with self.locked():
            write_atomic(self._file(record.name), json.dumps(record.to_json(secrets=True), indent=2))

    def delete(self, name: str) -> None:
        with self.locked():
            self._file(name).unlink(missing_ok=True)

    def all(self) -> list[LabRecord]:
        return [LabRecord(**json.loads(f.read_text())) for f in sorted(self.root.glob("*.json"))]

    def key_path(self, name: str) -> Path:
        """Where a lab's private SSH key lives."""
        return self.root / "keys" / f"{check_name(name)}_ed25519"

    def known_hosts_path(self, name: str) -> Path:
        """Where the one-line known_hosts pinning a lab's host key (for the OpenSSH client) lives."""
        return self.root / f"{check_name(name)}.known_hosts"
