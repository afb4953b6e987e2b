"""The SSH half of an EC2 launch, for real: EC2 is moto, the "instance" is a local OpenSSH sshd reached through
VMLAB_EC2_SSH_HOST/PORT, and the host key stays pinned.

moto boots nothing, so nothing would install the host key vmlab put in the user data. The test plays cloud-init:
it reads the instance's user data and key pair back through the EC2 API and configures the sshd with exactly
those (`ssh_keys` as the host key, the key pair as authorized key). `connect_instance` then has to verify the
key vmlab generated; a different pinned key must be refused. Verification is never switched off.
"""

from __future__ import annotations

import base64
import getpass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from harness.emulators.moto import MotoServer
from harness.emulators.sshd import SSHD
from vmlab import keys
from vmlab.errors import ConnectError
from vmlab.providers.base import Instance, LaunchSpec
from vmlab.providers.ec2 import Ec2Provider
from vmlab.workflows.connect import connect_instance

pytestmark = [pytest.mark.moto, pytest.mark.sshd]


def play_cloud_init(ec2: Any, inst: Instance, server: SSHD) -> None:
    """Install on `server` what cloud-init would install on the instance, as read back from EC2."""
    user_data = ec2.describe_instance_attribute(InstanceId=inst.id, Attribute="userData")["UserData"]["Value"]
    cloud = yaml.safe_load(base64.b64decode(user_data))
    server.host_key.write_text(cloud["ssh_keys"]["ed25519_private"])
    server.host_key.chmod(0o600)
    key_name = ec2.describe_instances(InstanceIds=[inst.id])["Reservations"][0]["Instances"][0]["KeyName"]
    (pair,) = ec2.describe_key_pairs(KeyNames=[key_name], IncludePublicKey=True)["KeyPairs"]
    (server.workdir / "authorized_keys").write_text(pair["PublicKey"].strip() + "\n")


@pytest.fixture()
def launched(moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    moto_server.reset()
    server = SSHD(tmp_path / "sshd")
    monkeypatch.setenv("VMLAB_SSH_CIDR", "203.0.113.7/32")
    monkeypatch.setenv("VMLAB_EC2_SSH_HOST", server.host)
    monkeypatch.setenv("VMLAB_EC2_SSH_PORT", str(server.port))
    ec2 = boto3.client("ec2", region_name="us-east-1")
    ami = ec2.register_image(Name="sshd-base", RootDeviceName="/dev/sda1", VirtualizationType="hvm",
                             BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8}}])["ImageId"]
    # the sshd logs in local users only: the image says which (as the images vmlab bakes do)
    ec2.create_tags(Resources=[ami], Tags=[{"Key": "vmlab:user", "Value": getpass.getuser()}])
    client, host = keys.generate("client"), keys.generate("host")
    key_file = client.save(tmp_path / "client_ed25519")
    provider = Ec2Provider(poll=0.05, timeout=30.0)
    inst = provider.launch(LaunchSpec(name="builder", image=ami, ssh_public_key=client.public,
                                      host_key=host.private, tags={"vmlab:run": "bake-ssh"}))
    play_cloud_init(ec2, inst, server)
    server.start()
    try:
        yield provider, inst, key_file, host
    finally:
        server.cleanup()
        provider.terminate(inst.id)


def test_connects_to_the_override_endpoint_with_the_pinned_host_key(launched: Any) -> None:
    provider, inst, key_file, host = launched
    assert (inst.host, inst.user) == ("127.0.0.1", getpass.getuser())
    conn = connect_instance(provider, inst, key_file, host.public, timeout=30)
    with conn:
        assert conn.run("echo", "pinned").stdout.strip() == "pinned"


def test_another_host_key_is_refused(launched: Any) -> None:
    provider, inst, key_file, _host = launched
    with pytest.raises(ConnectError) as excinfo:
        connect_instance(provider, inst, key_file, keys.generate("other").public, timeout=3)
    assert excinfo.value.reason == "hostkey"


def test_waits_for_an_address_instead_of_failing_at_once(moto_server: MotoServer, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An instance without a public address yet (a resumed one, or a slow EC2) is waited for, not given up on:
    the address (an Elastic IP of 127.0.0.1 where the sshd listens) arrives while connect_instance waits."""
    import threading

    moto_server.reset()
    server = SSHD(tmp_path / "sshd")
    server.start()
    monkeypatch.delenv("VMLAB_EC2_SSH_HOST", raising=False)
    monkeypatch.setenv("VMLAB_EC2_SSH_PORT", str(server.port))
    ec2 = boto3.client("ec2", region_name="us-east-1")
    ami = ec2.register_image(Name="no-ip", RootDeviceName="/dev/sda1", VirtualizationType="hvm",
                             BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8}}])["ImageId"]
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    raw = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, NetworkInterfaces=[
        {"DeviceIndex": 0, "SubnetId": subnet, "AssociatePublicIpAddress": False}], TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "vmlab:launch", "Value": "l-1"},
                                              {"Key": "vmlab:user", "Value": getpass.getuser()}]}])
    instance_id = raw["Instances"][0]["InstanceId"]
    provider = Ec2Provider(poll=0.05, timeout=30.0)
    inst = provider.describe(instance_id)
    assert inst is not None and inst.host is None

    def give_address() -> None:
        allocation = ec2.allocate_address(Domain="vpc", Address="127.0.0.1")["AllocationId"]
        ec2.associate_address(InstanceId=instance_id, AllocationId=allocation)

    timer = threading.Timer(1.5, give_address)
    timer.start()
    try:
        conn = connect_instance(provider, inst, server.client_key, server.host_key_pub, timeout=20)
        with conn:
            assert conn.run("echo", "reached").stdout.strip() == "reached"
    finally:
        timer.cancel()
        server.cleanup()
