"""Lab records: private files, round trip, names validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmlab import keys
from vmlab.errors import BadInput
from vmlab.state import LabRecord, LabStore


def record(name: str = "lab") -> LabRecord:
    return LabRecord(name=name, provider="local", instance_id="lvm-1", image="limg-1", user="admin",
                     key_file="/k", host_key="ssh-ed25519 AAAA", token="secret-token", host="127.0.0.1", port=2222)


def test_round_trip_and_private_files(tmp_path: Path) -> None:
    store = LabStore(tmp_path / "labs")
    store.put(record())
    assert store.get("lab") == record()
    f = tmp_path / "labs" / "lab.json"
    assert f.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "labs").stat().st_mode & 0o777 == 0o700
    assert [r.name for r in store.all()] == ["lab"]
    assert "token" not in record().to_json()
    store.delete("lab")
    assert store.get("lab") is None


@pytest.mark.parametrize("name", ["", "UPPER", "-lead", "a" * 41, "has space", "../escape"])
def test_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(BadInput):
        LabStore(tmp_path).get(name)


def test_saved_keys_are_private(tmp_path: Path) -> None:
    pair = keys.generate("c")
    path = pair.save(tmp_path / "k" / "id")
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert (tmp_path / "k" / "id.pub").read_text().startswith("ssh-ed25519 ")
    keys.remove(path)
    assert not path.exists() and not (tmp_path / "k" / "id.pub").exists()


def test_the_agent_section_is_typed_and_tolerates_old_or_edited_records() -> None:
    from vmlab.state import AgentSection

    base = {"name": "lab", "provider": "local", "instance_id": "i", "image": "m", "user": "admin",
            "key_file": "/k", "host_key": "", "token": "t"}
    assert LabRecord(**base).agent == AgentSection()  # a record from before the agent
    record = LabRecord(**base, extra={"agent": {"idle_minutes": 30, "max_hours": 24.0, "sync_url": "s3://b/p"}})
    assert record.agent == AgentSection(30.0, 24.0, "s3://b/p")
    assert record.agent.to_json() == record.extra["agent"]
    edited = LabRecord(**base, extra={"agent": {"idle_minutes": "30", "max_hours": True, "sync_url": ["x"]}})
    assert edited.agent == AgentSection()
    assert LabRecord(**base, extra={"agent": "nonsense"}).agent == AgentSection()


def test_the_agent_section_is_written_where_older_vmlab_reads_it(tmp_path: Path) -> None:
    from vmlab.state import AgentSection, LabStore

    store = LabStore(tmp_path)
    record = LabRecord(name="lab", provider="local", instance_id="i", image="m", user="admin", key_file="/k",
                       host_key="", token="t", extra={"other": 1})
    record.agent = AgentSection(10.0, 2.0, "gs://b/p")
    store.put(record)
    again = store.get("lab")
    assert again is not None and again.agent == AgentSection(10.0, 2.0, "gs://b/p")
    assert again.extra == {"other": 1, "agent": {"idle_minutes": 10.0, "max_hours": 2.0, "sync_url": "gs://b/p"}}
