"""The lab side of the agent through vmlab's own code: the per-prefix IAM instance profile against a moto server
(policy document, reuse, nothing left behind when creation fails, attached at launch), `vmlab up`'s validation
of --idle/--max-hours/--sync (bad input creates nothing in the cloud), and the agent's status read over a real
SSH connection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from harness.drivers.agent import ROOT, agent_env
from vmlab import keys
from vmlab.agent.status import AgentStatus
from vmlab.providers.base import LaunchSpec
from vmlab.providers.ec2 import Ec2Provider
from vmlab.providers.ec2.client import Aws
from vmlab.providers.ec2.profile import POLICY_NAME, delete_sync_profile, ensure_sync_profile, profile_name
from vmlab.workflows.labagent import read_status


@pytest.mark.moto
def test_profile_allows_one_prefix_and_is_reused(moto_server) -> None:
    moto_server.reset()
    aws = Aws(region="us-east-1")
    name, created = ensure_sync_profile(aws, "class-bucket", "students/alice")
    assert created and name == profile_name("class-bucket", "students/alice")
    iam = boto3.client("iam", region_name="us-east-1")
    policy = iam.get_role_policy(RoleName=name, PolicyName=POLICY_NAME)["PolicyDocument"]
    policy = json.loads(policy) if isinstance(policy, str) else policy
    assert policy["Statement"] == [
        {"Sid": "ListThePrefix", "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": "arn:aws:s3:::class-bucket",
         "Condition": {"StringLike": {"s3:prefix": ["students/alice/", "students/alice/*"]}}},
        {"Sid": "ReadWriteThePrefix", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
         "Resource": "arn:aws:s3:::class-bucket/students/alice/*"},
    ]
    role = iam.get_role(RoleName=name)["Role"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    assert {"Key": "vmlab:sync", "Value": "s3://class-bucket/students/alice"} in iam.list_role_tags(
        RoleName=name)["Tags"]
    profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [name]

    # another lab of the same user reuses it; another user gets another one
    assert ensure_sync_profile(aws, "class-bucket", "students/alice/") == (name, False)
    other, created = ensure_sync_profile(aws, "class-bucket", "students/bob")
    assert created and other != name
    assert len(iam.list_instance_profiles()["InstanceProfiles"]) == 2


@pytest.mark.moto
def test_failed_profile_creation_leaves_nothing(aws_faults) -> None:
    aws = Aws(region="us-east-1")
    aws_faults.fail("CreateInstanceProfile", code="ServiceFailure", status=500)
    with pytest.raises(Exception, match="ServiceFailure"):
        ensure_sync_profile(aws, "b", "alice")
    iam = boto3.client("iam", region_name="us-east-1")
    assert iam.list_roles()["Roles"] == [] and iam.list_instance_profiles()["InstanceProfiles"] == []
    assert "DeleteRole" in aws_faults.calls


@pytest.mark.moto
def test_launch_attaches_the_profile(moto_server, monkeypatch: pytest.MonkeyPatch) -> None:
    moto_server.reset()
    monkeypatch.setenv("VMLAB_SSH_CIDR", "203.0.113.7/32")
    ec2 = boto3.client("ec2", region_name="us-east-1")
    ami = ec2.register_image(Name="lab", RootDeviceName="/dev/sda1", VirtualizationType="hvm",
                             BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8}}])["ImageId"]
    provider = Ec2Provider(poll=0.05, timeout=30.0)
    name, _ = ensure_sync_profile(provider.aws, "b", "alice")
    inst = provider.launch(LaunchSpec(name="lab", image=ami, ssh_public_key=keys.generate("c").public,
                                      tags={"vmlab:lab": "lab", "vmlab:run": "t"}, instance_profile=name))
    raw = ec2.describe_instances(InstanceIds=[inst.id])["Reservations"][0]["Instances"][0]
    assert raw["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/{name}")
    provider.terminate(inst.id)
    delete_sync_profile(provider.aws, name)
    assert boto3.client("iam", region_name="us-east-1").list_roles()["Roles"] == []


@pytest.mark.moto
@pytest.mark.parametrize(("flags", "message"), [
    (["--idle", "soon"], "--idle 'soon' is not a duration: use e.g. 30m"),
    (["--max-hours", "-1"], "--max-hours -1 is out of range"),
    (["--sync", "ftp://host/x"], "--sync 'ftp://host/x' is not a storage URL: use s3://bucket/prefix"),
    (["--sync", "s3://Bad_Bucket/alice"], "does not name a valid S3 bucket"),
])
def test_up_rejects_bad_agent_flags_before_touching_aws(aws_faults, tmp_path: Path, flags: list[str],
                                                        message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "vmlab", "up", "lab", "--provider", "ec2", *flags], cwd=ROOT,
                          env=agent_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert aws_faults.calls == [], "bad input reached AWS"


@pytest.mark.sshd
def test_status_is_read_over_ssh(sshd, tmp_path: Path) -> None:
    from vmlab.transport.ssh import SSHConnection

    path = tmp_path / "status.json"
    AgentStatus(url="s3://b/alice/", pending=2, pending_bytes=2048, last_error="upload of a.txt failed").write(path)
    with SSHConnection(sshd.target()) as conn:
        status = read_status(conn, str(path))
        assert status is not None and status.unsynced and status.pending == 2
        assert status.summary().startswith("2 pending (2.0 KB), error: upload of a.txt failed")
        assert read_status(conn, str(tmp_path / "missing.json")) is None
        path.write_text("garbage")
        assert read_status(conn, str(path)) is None


def _image(ec2) -> str:
    ami = ec2.register_image(Name="vmlab-lab", RootDeviceName="/dev/sda1", VirtualizationType="hvm",
                             BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8}}])["ImageId"]
    ec2.create_tags(Resources=[ami], Tags=[{"Key": "vmlab:recipe-hash", "Value": "abc"}])
    return str(ami)


@pytest.mark.moto
def test_failed_up_removes_the_profile_it_created_and_keeps_a_reused_one(aws_faults, monkeypatch) -> None:
    from vmlab.errors import VmlabError
    from vmlab.state import LabStore
    from vmlab.workflows.labs import up

    monkeypatch.setenv("VMLAB_SSH_CIDR", "203.0.113.7/32")
    monkeypatch.setenv("VMLAB_IAM_SETTLE_SECONDS", "0")
    ec2 = boto3.client("ec2", region_name="us-east-1")
    iam = boto3.client("iam", region_name="us-east-1")
    _image(ec2)
    provider = Ec2Provider(poll=0.05, timeout=30.0)
    store = LabStore()

    aws_faults.fail("RunInstances", code="InsufficientInstanceCapacity", status=400)
    said: list[str] = []
    with pytest.raises(VmlabError, match="no capacity"):
        up(provider, "lab", store=store, sync="s3://class-bucket/alice", say=said.append)
    assert any("created IAM instance profile" in line for line in said)
    assert iam.list_roles()["Roles"] == [] and iam.list_instance_profiles()["InstanceProfiles"] == []
    assert store.get("lab") is None and not store.key_path("lab").exists()

    # a profile an earlier lab made is shared: a failed launch leaves it
    name, _ = ensure_sync_profile(Aws(region="us-east-1"), "class-bucket", "alice")
    aws_faults.fail("RunInstances", code="InsufficientInstanceCapacity", status=400)
    with pytest.raises(VmlabError, match="no capacity"):
        up(provider, "lab", store=store, sync="s3://class-bucket/alice")
    assert [p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]] == [name]
    running = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
               if i["State"]["Name"] != "terminated"]
    assert running == []


@pytest.mark.moto
def test_profile_lists_alice_and_never_alice2(moto_server) -> None:
    """The policy stored in IAM (moto), evaluated for the listings a VM could ask for; what each allowed listing
    returns comes from S3 (moto). A bare `alice` grant would let the VM list `alice2/` and `alice-archive/`."""
    from harness.plumbing.iampolicy import allowed

    moto_server.reset()
    name, _created = ensure_sync_profile(Aws(region="us-east-1"), "class-bucket", "alice")
    iam = boto3.client("iam", region_name="us-east-1")
    policy = iam.get_role_policy(RoleName=name, PolicyName=POLICY_NAME)["PolicyDocument"]
    policy = json.loads(policy) if isinstance(policy, str) else policy
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="class-bucket")
    for key in ("alice/notes.txt", "alice/sub/x.txt", "alice2/secret.txt", "alice-archive/old.txt", "alicex"):
        s3.put_object(Bucket="class-bucket", Key=key, Body=b"x")

    asked = ["", "a", "alice", "alice/", "alice/sub/", "alice2", "alice2/", "alice-archive/", "alice*"]
    listable = [p for p in asked if allowed(policy, "s3:ListBucket", "arn:aws:s3:::class-bucket", {"s3:prefix": p})]
    assert listable == ["alice/", "alice/sub/"]
    assert not allowed(policy, "s3:ListBucket", "arn:aws:s3:::class-bucket")  # no prefix: the whole bucket
    for prefix in listable:
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="class-bucket", Prefix=prefix).get("Contents", [])]
        assert keys and all(k.startswith("alice/") for k in keys), keys
    # why `alice` alone must not be granted: S3 answers that listing with the neighbours' keys
    leaked = [o["Key"] for o in s3.list_objects_v2(Bucket="class-bucket", Prefix="alice")["Contents"]]
    assert "alice2/secret.txt" in leaked and "alice-archive/old.txt" in leaked

    objects = "arn:aws:s3:::class-bucket/"
    assert allowed(policy, "s3:GetObject", objects + "alice/notes.txt")
    assert allowed(policy, "s3:PutObject", objects + "alice/sub/new.txt")
    for key in ("alice2/secret.txt", "alice-archive/old.txt", "alicex", "alice"):
        for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
            assert not allowed(policy, action, objects + key), (action, key)
    assert not allowed(policy, "s3:DeleteBucket", "arn:aws:s3:::class-bucket")


@pytest.mark.moto
def test_ctrl_c_in_the_iam_settle_wait_removes_the_new_profile(moto_server, monkeypatch: pytest.MonkeyPatch) -> None:
    from vmlab.providers.ec2 import profile
    from vmlab.workflows.cleanup import Cleanup
    from vmlab.workflows.labagent import AgentSettings
    from vmlab.workflows.labs import _sync_profile

    moto_server.reset()

    def ctrl_c() -> None:
        raise KeyboardInterrupt
    monkeypatch.setattr(profile, "wait_usable", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        with Cleanup() as cleanup:
            _sync_profile(Ec2Provider(), AgentSettings(sync_url="s3://class-bucket/alice"), cleanup, lambda _m: None)
    assert boto3.client("iam", region_name="us-east-1").list_instance_profiles()["InstanceProfiles"] == []
