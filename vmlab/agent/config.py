"""The agent's settings from its environment, so systemd units need nothing but `EnvironmentFile=` and a command.

`vmlab up` writes /etc/vmlab/agent.env (vmlab.lab.AGENT_ENV_FILE) at every launch; the units read it with
`EnvironmentFile=-/etc/vmlab/agent.env` (the "-": a lab launched without the file still boots). Keys:

| variable | meaning | default |
|---|---|---|
| VMLAB_SYNC_URL | s3://, az:// or gs:// URL (or AWS_S3_BUCKET_FOLDER, AZURE_CONTAINER_URL, ...) | no sync |
| VMLAB_DATA_DIR | the folder to sync | ~/data |
| VMLAB_IDLE_MINUTES | power off after this long without activity; 0 = never | 0 |
| VMLAB_DEADLINE | unix time of the hard stop; 0 = none | 0 |
| VMLAB_MAX_HOURS | the period a boot gets when VMLAB_DEADLINE is older than the boot | 0 |
| VMLAB_AGENT_STATE_DIR | manifest, queue, status.json | $STATE_DIRECTORY, /var/lib/vmlab-agent if writable, ... |
| VMLAB_AGENT_STATUS_FILE | the status file `vmlab ls` reads | state dir/status.json |
| VMLAB_JUPYTER_ENV | the file holding JUPYTER_TOKEN | /etc/vmlab/jupyter.env |
| VMLAB_AGENT_MINUTE_SECONDS | seconds in an agent "minute" (tests use 0.1; never set it on a real lab) | 60 |

The state dir falls back to vmlab's own state dir + /agent when /var/lib/vmlab-agent is not writable.

Example: `config = AgentConfig.from_env(); config.sync_url, config.idle_s`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vmlab import lab
from vmlab.errors import BadInput


def _number(env: Mapping[str, str], name: str, default: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadInput(f"{name}={raw!r} is not a number", f"fix it in {lab.AGENT_ENV_FILE}") from None
    if value < 0:
        raise BadInput(f"{name}={raw!r} is negative", f"use 0 to turn it off, in {lab.AGENT_ENV_FILE}")
    return value


def default_state_dir(env: Mapping[str, str]) -> Path:
    if env.get("VMLAB_AGENT_STATE_DIR"):
        return Path(env["VMLAB_AGENT_STATE_DIR"])
    if env.get("STATE_DIRECTORY"):  # systemd's StateDirectory=vmlab-agent
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    system = Path(lab.AGENT_STATE_DIR)
    if system.is_dir() and os.access(system, os.W_OK):
        return system
    from vmlab import paths

    return paths.state_dir() / "agent"


@dataclass(frozen=True)
class AgentConfig:
    """What the agent's commands read from the environment (see the module docstring)."""

    sync_url: str | None
    data_dir: Path
    state_dir: Path
    status_file: Path
    idle_minutes: float
    deadline: float
    max_hours: float
    jupyter_env: Path
    minute_s: float

    @property
    def idle_s(self) -> float:
        """Idle limit in seconds (0: off)."""
        return self.idle_minutes * self.minute_s

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AgentConfig:
        env = os.environ if env is None else env
        from vmlab.agent.stores import find_sync_url

        url = find_sync_url(env)
        state = default_state_dir(env)
        return cls(
            sync_url=url or None,
            data_dir=Path(env.get("VMLAB_DATA_DIR") or "~/data").expanduser(),
            state_dir=state,
            status_file=Path(env.get("VMLAB_AGENT_STATUS_FILE") or state / "status.json"),
            idle_minutes=_number(env, "VMLAB_IDLE_MINUTES"),
            deadline=_number(env, "VMLAB_DEADLINE"),
            max_hours=_number(env, "VMLAB_MAX_HOURS"),
            jupyter_env=Path(env.get("VMLAB_JUPYTER_ENV") or lab.ENV_FILE),
            minute_s=_number(env, "VMLAB_AGENT_MINUTE_SECONDS", 60.0) or 60.0,
        )


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a systemd-style environment file (comments and blank lines skipped, one level of
    quotes removed). Example: `read_env_file(Path("/etc/vmlab/jupyter.env"))["JUPYTER_TOKEN"]`."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values
