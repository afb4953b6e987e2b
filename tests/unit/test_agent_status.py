"""The agent's status file, as `vmlab ls`/`status`/`down` read it, and the agent's settings from agent.env."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmlab.agent.config import AgentConfig, read_env_file
from vmlab.agent.status import AgentStatus
from vmlab.errors import BadInput


def test_parse_round_trip_and_tolerance(tmp_path: Path) -> None:
    status = AgentStatus(url="s3://b/p/", pending=3, pending_bytes=1_500_000, last_error="denied", last_sync=100.0)
    path = tmp_path / "status.json"
    status.write(path)
    assert AgentStatus.parse(path.read_text()) == status
    assert path.stat().st_mode & 0o777 == 0o600  # an error text may quote a store URL
    newer = json.dumps({"pending": "2", "a_field_from_a_newer_agent": 1, "stopped": True, "held_deletes": None})
    parsed = AgentStatus.parse(newer)
    assert parsed is not None and (parsed.pending, parsed.stopped, parsed.held_deletes) == (2, True, 0)
    full = AgentStatus(held_paths=["a"], stuck={"b": "denied"}, conflicts=["c.conflict-h-1.txt"], lost=True)
    assert AgentStatus.parse(json.dumps(full.to_json())) == full
    assert AgentStatus.parse('{"stuck": "not a dict"}') == AgentStatus()
    assert AgentStatus.parse("not json") is None
    assert AgentStatus.parse("[1, 2]") is None


@pytest.mark.parametrize(("status", "unsynced", "summary"), [
    (AgentStatus(pending=3, pending_bytes=1_500_000), True, "3 pending (1.5 MB)"),
    (AgentStatus(held_deletes=40), True, "0 pending (0 B), 40 deletes held (vmlab-agent release-deletes)"),
    (AgentStatus(lost=True, last_sync=1000.0), True, "0 pending (0 B), the bucket lost objects: re-uploading"),
    (AgentStatus(last_sync=1000.0 - 120), False, "synced 2m ago"),
    (AgentStatus(), False, "not synced yet"),
    (AgentStatus(pending=1, pending_bytes=10, last_error="bucket b does not exist"), True,
     "1 pending (10 B), error: bucket b does not exist"),
])
def test_unsynced_and_summary(status: AgentStatus, unsynced: bool, summary: str) -> None:
    assert status.unsynced is unsynced
    assert status.summary(now=1000.0) == summary


def test_details_name_what_needs_a_person() -> None:
    status = AgentStatus(held_deletes=1800, held_paths=["d000/f1.txt"], stuck={"x.txt": "denied (403)"},
                         lost=True, conflicts=["a.conflict-h-20261205T000000Z.txt"], restore="restored 1",
                         restore_problems={"link/x": "a symlink or a file stands in its path"})
    text = "\n".join(status.details())
    for part in ("held deletes (1800): d000/f1.txt", "release-deletes", "stuck: x.txt: denied", "lost objects",
                 "a.conflict-h-", "not restored: link/x: a symlink"):
        assert part in text
    assert AgentStatus().details() == []


def test_config_from_env(tmp_path: Path) -> None:
    env = {"VMLAB_SYNC_URL": "s3://b/alice", "VMLAB_DATA_DIR": str(tmp_path / "d"), "VMLAB_IDLE_MINUTES": "30",
           "VMLAB_DEADLINE": "1900000000", "VMLAB_AGENT_STATE_DIR": str(tmp_path / "s"),
           "VMLAB_AGENT_MINUTE_SECONDS": "0.5"}
    config = AgentConfig.from_env(env)
    assert (config.sync_url, config.data_dir, config.idle_s, config.deadline) == (
        "s3://b/alice", tmp_path / "d", 15.0, 1.9e9)
    assert config.status_file == tmp_path / "s" / "status.json"
    # the prebuilt image's variable, and systemd's StateDirectory=
    config = AgentConfig.from_env({"AWS_S3_BUCKET_FOLDER": "b/bob", "STATE_DIRECTORY": "/var/lib/x"})
    assert (config.sync_url, config.state_dir, config.idle_s, config.minute_s) == (
        "s3://b/bob", Path("/var/lib/x"), 0.0, 60.0)
    assert AgentConfig.from_env({"VMLAB_AGENT_STATE_DIR": "/s"}).sync_url is None
    with pytest.raises(BadInput, match="VMLAB_IDLE_MINUTES='soon' is not a number"):
        AgentConfig.from_env({"VMLAB_IDLE_MINUTES": "soon", "VMLAB_AGENT_STATE_DIR": "/s"})


def test_read_env_file(tmp_path: Path) -> None:
    path = tmp_path / "x.env"
    path.write_text("# comment\nJUPYTER_TOKEN=abc\n\nQUOTED=\"a b\"\nbroken line\n")
    assert read_env_file(path) == {"JUPYTER_TOKEN": "abc", "QUOTED": "a b"}
