"""The agent's status file (vmlab.lab.AGENT_STATUS_FILE): what `vmlab ls`, `vmlab status` and `vmlab down` read
over SSH to tell whether a lab holds data that is not in its bucket yet.

The sync daemon rewrites it (atomically) after every pass and on exit. Fields: `url`, `folder`, `pending` (files
not synced yet), `pending_bytes`, `held_deletes` and `held_paths` (deletes held until `vmlab-agent
release-deletes`: a sample of paths), `last_sync` (unix time of the last pass that left nothing pending, 0 =
never), `last_error`, `stuck` (files in their own retry backoff: path -> why), `lost` (objects the agent had
uploaded are gone from the store: it is re-uploading them), `restore` (the last restore's counts),
`restore_problems` (keys it skipped or failed: key -> why), `conflicts` (conflict copies made), `updated`,
`stopped` (the daemon exited), `interruption` (an EC2 spot or rebalance notice it saw), `unverified` (why the
last marker check failed: not in sync until one answers). `stale` is set by `vmlab down`'s reader for a status
that is not the final one of the stop it asked for.

Example::

    status = AgentStatus.parse(text)        # None when the text is not a status file
    if status.unsynced: ...
"""

from __future__ import annotations

import json
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from vmlab.fileio import write_atomic


@dataclass
class AgentStatus:
    url: str = ""
    folder: str = ""
    pending: int = 0
    pending_bytes: int = 0
    held_deletes: int = 0
    last_sync: float = 0.0
    last_error: str = ""
    updated: float = 0.0
    stopped: bool = False
    interruption: str = ""
    held_paths: list[str] = field(default_factory=list)
    stuck: dict[str, str] = field(default_factory=dict)
    lost: bool = False
    restore: str = ""
    restore_problems: dict[str, str] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    unverified: str = ""  # why the agent cannot tell the store still holds what it uploaded (a failed check)
    stale: bool = False  # set by the reader (`vmlab down`): not the final status of the stop it just asked for

    @classmethod
    def parse(cls, text: str) -> AgentStatus | None:
        """The status in `text`, or None when it is not a JSON object (unknown keys are ignored, so an older
        vmlab reads a newer agent's file)."""
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        defaults = {f.name: f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc,operator]
                    for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in defaults:
                continue
            default = defaults[key]
            if isinstance(default, (list, dict)) and not isinstance(value, type(default)):
                continue
            try:
                kwargs[key] = type(default)(value) if value is not None else default
            except (TypeError, ValueError):
                continue
        return cls(**kwargs)

    @property
    def unsynced(self) -> bool:
        """Files the bucket lacks (or deletes held for review, or objects the store lost): terminating the lab now
        would lose them."""
        return self.pending > 0 or self.held_deletes > 0 or self.lost or self.stale or bool(self.unverified)

    def summary(self, now: float | None = None) -> str:
        """One short line for `vmlab ls`: "synced 2m ago", "3 files (1.2 MB) pending", "error: ..."."""
        now = time.time() if now is None else now
        if self.unsynced:
            parts = [f"{self.pending} pending ({_size(self.pending_bytes)})"]
            if self.held_deletes:
                parts.append(f"{self.held_deletes} deletes held (vmlab-agent release-deletes)")
            if self.lost:
                parts.append("the bucket lost objects: re-uploading")
            if self.unverified:
                parts.append(f"cannot check the bucket still holds its objects: {self.unverified[:80]}")
            if self.stale:
                parts.append("the agent did not write a final status (it died, or could not stop)")
        elif self.last_sync:
            parts = [f"synced {_ago(now - self.last_sync)} ago"]
        else:
            parts = ["not synced yet"]
        if self.stuck:
            parts.append(f"{len(self.stuck)} stuck")
        if self.conflicts:
            parts.append(f"{len(self.conflicts)} conflict copies")
        if self.last_error:
            parts.append(f"error: {self.last_error[:80]}")
        return ", ".join(parts)

    def details(self) -> list[str]:
        """Lines for `vmlab status`: held deletes (and how to release them), stuck files, a lost bucket,
        conflict copies and what the last restore skipped."""
        lines = []
        if self.held_deletes:
            lines.append(f"held deletes ({self.held_deletes}): {', '.join(self.held_paths[:5])}"
                         f"{' ...' if self.held_deletes > 5 else ''}; to send them: "
                         "`sudo /opt/vmlab-agent/bin/vmlab-agent release-deletes` on the lab")
        if self.lost:
            lines.append("the bucket lost objects the agent had uploaded: uploading them again")
        for rel, why in list(self.stuck.items())[:5]:
            lines.append(f"stuck: {rel}: {why}")
        if self.conflicts:
            lines.append(f"conflict copies: {', '.join(self.conflicts[:5])}")
        if self.restore:
            lines.append(f"last restore: {self.restore}")
        for key, why in list(self.restore_problems.items())[:5]:
            lines.append(f"not restored: {key}: {why}")
        return lines

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the owner's only (`vmlab ls` reads it over SSH with sudo): an error text may quote a store's URL
        write_atomic(path, json.dumps(self.to_json()), mode=0o600)


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB"):
        value /= 1000
        if value < 1000 or unit == "GB":
            break
    return f"{value:.1f} {unit}"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
