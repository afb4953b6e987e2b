"""`vmlab.hub.LabSpawner` driving the EC2 provider: a real JupyterHub and configurable-http-proxy on 127.0.0.1, EC2
is moto behind a FaultProxy (harness/faults/awsfaults.py), and each instance the spawner launches boots as a
sandbox host with a real sshd (harness/clouds/ec2cloud.py) running the test venv's jupyterhub-singleuser.

A student's lab is launched with their own bucket prefix (an instance profile allowed `CLASS/USER/` only), answers
through the proxy, is stopped (EC2 stop, disk kept) and removed with the user; a launch whose AWS call fails
after the instance exists leaves no instance, key pair, security group, profile, record or key.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from harness.clouds.ec2cloud import SandboxCloud, census
from harness.emulators.jupyterhub import Hub, dummy_login
from harness.emulators.moto import MotoServer
from harness.faults.awsfaults import FaultProxy
from tests.integration.test_ec2_flow import CIDR, SHARED

pytestmark = [pytest.mark.moto, pytest.mark.sshd]

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
SINGLEUSER = str(Path(sys.executable).parent / "jupyterhub-singleuser")
BUCKET = "class-bucket"
#: the instance the class image was "baked" from: the cloud boots the image from that disk (the test venv shared)
SOURCE = "i-0c1a55c1a55c1a55c"

CONFIG = """
import socket


def free_port(_spawner):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


c.JupyterHub.spawner_class = "vmlab.hub.LabSpawner"
{login}
c.LabSpawner.provider_name = "ec2"
c.LabSpawner.region = "us-east-1"
c.LabSpawner.class_name = "cls"
c.LabSpawner.image = {image!r}
c.LabSpawner.instance_type = "t3.micro"
c.LabSpawner.sync_root = "s3://{bucket}/cls"
c.LabSpawner.budget_usd_per_day = 5
c.LabSpawner.singleuser_command = {singleuser!r}
c.LabSpawner.connect_timeout = 20
c.LabSpawner.lab_port = free_port
c.LabSpawner.lab_hub_port = free_port
"""


@dataclass
class Rig:
    ec2: Any
    iam: Any
    proxy: FaultProxy
    cloud: SandboxCloud
    hub: Hub
    state: Path


def class_image(ec2: Any) -> str:
    """An AMI as `vmlab bake` tags it (login user root), made from the instance SOURCE."""
    ami = str(ec2.register_image(Name="cls-image", RootDeviceName="/dev/sda1", VirtualizationType="hvm",
                                 BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8}}])[
        "ImageId"])
    tags = {"vmlab:user": "root", "vmlab:recipe-hash": "test", "vmlab:source-instance": SOURCE}
    ec2.create_tags(Resources=[ami], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    return ami


@pytest.fixture()
def rig(moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    moto_server.reset()
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_server.endpoint)
    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=moto_server.endpoint)
    boto3.client("s3", region_name="us-east-1", endpoint_url=moto_server.endpoint).create_bucket(Bucket=BUCKET)
    ami = class_image(ec2)
    state = tmp_path / "state"
    with FaultProxy(moto_server.endpoint) as proxy, SandboxCloud(moto_server.endpoint, share=SHARED) as cloud:
        disk = tmp_path / "image-disk"
        disk.mkdir()
        cloud.disks[SOURCE] = disk
        for key, value in {"AWS_ENDPOINT_URL": proxy.endpoint, "VMLAB_EC2_SSH_HOST": "127.0.0.1",
                           "VMLAB_EC2_SSH_PORT": str(cloud.port), "VMLAB_SSH_CIDR": CIDR,
                           "VMLAB_IAM_SETTLE_SECONDS": "0", "VMLAB_STATE_DIR": str(state),
                           "PYTHONPATH": str(ROOT)}.items():
            monkeypatch.setenv(key, value)
        (tmp_path / "hub").mkdir()
        login = dummy_login(PASSWORD, ("ana", "ben", "prof"))
        hub = Hub(tmp_path / "hub", CONFIG.format(login=login, image=ami, bucket=BUCKET, singleuser=SINGLEUSER))
        try:
            yield Rig(ec2, iam, proxy, cloud, hub, state)
        finally:
            hub.stop()
        assert not cloud.errors






def instances(rig: Rig, lab: str) -> list[dict[str, Any]]:
    found = rig.ec2.describe_instances(Filters=[{"Name": "tag:vmlab:lab", "Values": [lab]}])["Reservations"]
    return [i for r in found for i in r["Instances"] if i["State"]["Name"] != "terminated"]


def test_a_students_lab_on_ec2_syncs_their_prefix_answers_stops_and_goes_with_them(rig: Rig) -> None:
    s = rig.hub.session("ana", PASSWORD)
    server = rig.hub.spawn(s, "ana")
    assert server.get("ready"), rig.hub.log_path.read_text()[-3000:]
    (inst,) = instances(rig, "cls-ana")
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert (tags["vmlab:class"], tags["vmlab:hub-user"]) == ("cls", "ana")
    profile = inst["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1]
    (policy_name,) = rig.iam.list_role_policies(RoleName=profile)["PolicyNames"]
    policy = json.dumps(rig.iam.get_role_policy(RoleName=profile, PolicyName=policy_name)["PolicyDocument"])
    assert f"arn:aws:s3:::{BUCKET}/cls/ana/*" in policy and "cls/ben" not in policy

    page = s.get(f"{rig.hub.url}/user/ana/lab", timeout=60)
    assert page.status_code == 200 and page.url.startswith(f"{rig.hub.url}/user/ana/lab"), page.url
    assert s.get(f"{rig.hub.url}/user/ana/api/status", timeout=30).status_code == 200
    with rig.hub.session("ben", PASSWORD) as other:
        assert other.get(f"{rig.hub.url}/user/ana/lab", timeout=60).status_code == 403

    assert rig.hub.api(s, "DELETE", "users/ana/server").status_code in (202, 204)
    rig.hub.wait_stopped(s, "ana")
    (inst,) = instances(rig, "cls-ana")
    assert inst["State"]["Name"] == "stopped", "stop keeps the instance and its disk"

    with rig.hub.session("prof", PASSWORD) as admin:
        assert rig.hub.api(admin, "DELETE", "users/ana").status_code == 204
    assert instances(rig, "cls-ana") == []
    left = census(rig.ec2, rig.iam, rig.state)
    assert left["instances"] == left["key_pairs"] == left["groups"] == [], left
    assert not [f for f in left["local_files"] if "cls-ana" in f], left
    s.close()


def test_a_launch_whose_aws_call_fails_leaves_nothing(rig: Rig) -> None:
    rig.proxy.fail("CreateTags")  # right after RunInstances: the instance exists
    with rig.hub.session("ben", PASSWORD) as s:
        server = rig.hub.spawn(s, "ben")
    assert not server.get("ready")
    assert any(c.action == "RunInstances" and c.status == 200 for c in rig.proxy.records), "no instance was made"
    deadline = time.monotonic() + 10
    while instances(rig, "cls-ben") and time.monotonic() < deadline:
        time.sleep(0.2)
    left = census(rig.ec2, rig.iam, rig.state)
    assert left["instances"] == left["key_pairs"] == left["groups"] == left["volumes"] == [], left
    assert left["roles"] == left["instance_profiles"] == [], "the profile made for this launch must go"
    assert left["local_files"] == [], left
    assert "Unhandled error starting ben's server" in rig.hub.log_path.read_text()
