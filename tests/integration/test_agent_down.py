"""`vmlab down` and the lab agent's status, end to end without a VM: EC2 is moto, the lab's sshd is a real local
OpenSSH (reached through VMLAB_EC2_SSH_HOST/PORT with the pinned host key), and the status file is one the test
writes where that sshd's user can read it. A lab reporting unsynced data is not terminated; once it reports
nothing pending, it is."""

from __future__ import annotations

import base64
import getpass
import os
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from harness.emulators.sshd import SSHD
from vmlab import keys
from vmlab.agent.status import AgentStatus
from vmlab.errors import HostError
from vmlab.providers.base import LaunchSpec
from vmlab.providers.ec2 import Ec2Provider
from vmlab.state import LabRecord, LabStore
from vmlab.workflows.labpower import agent_status, down

pytestmark = [pytest.mark.moto, pytest.mark.sshd,
              pytest.mark.skipif(os.geteuid() != 0, reason="down's flush step runs systemctl as root over SSH")]


@pytest.fixture()
def lab(moto_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    moto_server.reset()
    server = SSHD(tmp_path / "sshd")
    monkeypatch.setenv("VMLAB_SSH_CIDR", "203.0.113.7/32")
    monkeypatch.setenv("VMLAB_EC2_SSH_HOST", server.host)
    monkeypatch.setenv("VMLAB_EC2_SSH_PORT", str(server.port))
    ec2 = boto3.client("ec2", region_name="us-east-1")
    ami = ec2.register_image(Name="lab", RootDeviceName="/dev/sda1", VirtualizationType="hvm",
                             BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8}}])["ImageId"]
    ec2.create_tags(Resources=[ami], Tags=[{"Key": "vmlab:user", "Value": getpass.getuser()}])
    client, host = keys.generate("client"), keys.generate("host")
    store = LabStore()
    key_file = client.save(store.key_path("lab"))
    provider = Ec2Provider(poll=0.05, timeout=30.0)
    inst = provider.launch(LaunchSpec(name="lab", image=ami, ssh_public_key=client.public, host_key=host.private,
                                      tags={"vmlab:lab": "lab", "vmlab:run": "t"}))
    # play cloud-init: the host key from the user data, the key pair as authorized key
    user_data = ec2.describe_instance_attribute(InstanceId=inst.id, Attribute="userData")["UserData"]["Value"]
    server.host_key.write_text(yaml.safe_load(base64.b64decode(user_data))["ssh_keys"]["ed25519_private"])
    server.host_key.chmod(0o600)
    (server.workdir / "authorized_keys").write_text(client.public.strip() + "\n")
    server.start()
    store.put(LabRecord(name="lab", provider="ec2", instance_id=inst.id, image=ami, user=inst.user,
                        key_file=str(key_file), host_key=host.public, token="t", host=inst.host, port=inst.port,
                        extra={"agent": {"sync_url": "s3://b/alice", "idle_minutes": 30, "max_hours": 24}}))
    try:
        yield provider, inst, store
    finally:
        server.cleanup()
        if provider.describe(inst.id) is not None:
            provider.terminate(inst.id)


def test_down_refuses_while_data_is_unsynced(lab, tmp_path: Path) -> None:
    provider, inst, store = lab
    status_file = tmp_path / "status.json"
    AgentStatus(url="s3://b/alice/", pending=2, pending_bytes=4096, last_error="upload of a.txt failed").write(
        status_file)
    record = store.get("lab")
    assert record is not None
    seen = agent_status(provider, record, timeout=15, status_path=str(status_file))  # what `vmlab ls` reads
    assert seen is not None and seen.summary().startswith("2 pending (4.1 KB)")

    said: list[str] = []
    with pytest.raises(HostError, match=r"lab lab has data not yet synced to s3://b/alice/ .*--force"):
        down(provider, "lab", store=store, status_path=str(status_file), say=said.append)
    assert provider.describe(inst.id).state == "running" and store.get("lab") is not None

    AgentStatus(url="s3://b/alice/", last_sync=1.0, stopped=True).write(status_file)
    removed = down(provider, "lab", store=store, status_path=str(status_file), say=said.append)
    assert f"instance {inst.id}" in removed and store.get("lab") is None
    assert "pushing lab lab's pending changes to its bucket" in said


def test_down_refuses_when_the_status_cannot_be_read(lab, tmp_path: Path) -> None:
    """No status file (the agent never ran) or a stopped lab (idle stop): nothing says the data is in the bucket,
    so the disk is not thrown away without --force."""
    provider, inst, store = lab
    with pytest.raises(HostError, match=r"lab lab syncs ~/data but reports no sync status .*--force"):
        down(provider, "lab", store=store, status_path=str(tmp_path / "missing.json"))
    provider.stop(inst.id)
    with pytest.raises(HostError, match="reports no sync status"):
        down(provider, "lab", store=store, status_path=str(tmp_path / "missing.json"))
    assert store.get("lab") is not None and provider.describe(inst.id) is not None


def test_force_skips_the_check(lab, tmp_path: Path) -> None:
    provider, inst, store = lab
    status_file = tmp_path / "status.json"
    AgentStatus(pending=5).write(status_file)
    removed = down(provider, "lab", store=store, force=True, status_path=str(status_file))
    assert f"instance {inst.id}" in removed
