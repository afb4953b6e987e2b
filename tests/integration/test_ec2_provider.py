"""The ec2 provider against moto in server mode over HTTP: what vmlab creates, how it is locked down, and that
terminate / delete / a failed launch leave nothing vmlab-tagged behind.

Everything is driven through `Ec2Provider`; boto3 is used directly only to seed base AMIs (moto has no Ubuntu or
Debian images and refuses SSM names under /aws/, as AWS does) and to look at what moto holds afterwards.
`VMLAB_SSH_CIDR` is set in every test, so the caller's IP is never looked up on the internet.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import yaml

from harness.emulators.moto import MotoServer
from harness.faults.awsfaults import FaultProxy
from vmlab import keys
from vmlab.errors import BadInput, HostError
from vmlab.providers import get_provider
from vmlab.providers.base import LaunchSpec
from vmlab.providers.ec2 import Ec2Provider
from vmlab.providers.ec2.bases import Base

pytestmark = pytest.mark.moto

CIDR = "203.0.113.7/32"
UBUNTU_NAME = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20240601"
DEBIAN_NAME = "debian-12-amd64-20240601-1765"
# moto refuses parameter names under /aws/ (reserved, as on AWS): the test table points at our own
TEST_BASES = {
    "ubuntu-24.04": Base("ubuntu-24.04", "/vmlab-test/ubuntu-24.04", ("self",),
                         "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*", "ubuntu"),
    # no such parameter: resolved by owner + name
    "debian-12": Base("debian-12", "/vmlab-test/debian-12", ("self",), "debian-12-amd64-*", "admin"),
}


def register(ec2: Any, name: str, size: int = 8, arch: str = "x86_64") -> str:
    return str(ec2.register_image(
        Name=name, Architecture=arch, RootDeviceName="/dev/sda1", VirtualizationType="hvm",
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": size}}])["ImageId"])


@pytest.fixture()
def ec2(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A clean moto account with Ubuntu and Debian base AMIs; returns a boto3 EC2 client to inspect it."""
    moto_server.reset()
    monkeypatch.setenv("VMLAB_SSH_CIDR", CIDR)
    monkeypatch.delenv("VMLAB_EC2_SSH_HOST", raising=False)
    monkeypatch.delenv("VMLAB_EC2_SSH_PORT", raising=False)
    client = boto3.client("ec2", region_name="us-east-1")
    ubuntu = register(client, UBUNTU_NAME)
    register(client, DEBIAN_NAME)
    boto3.client("ssm", region_name="us-east-1").put_parameter(Name="/vmlab-test/ubuntu-24.04", Value=ubuntu,
                                                                Type="String")
    return client


@pytest.fixture()
def provider() -> Ec2Provider:
    return Ec2Provider(bases=TEST_BASES, poll=0.05, timeout=30.0)


@pytest.fixture()
def client_key() -> keys.KeyPair:
    return keys.generate("test")


def spec(client_key: keys.KeyPair, **kw: Any) -> LaunchSpec:
    fields: dict[str, Any] = {"name": "builder", "image": "ubuntu-24.04", "ssh_public_key": client_key.public,
                              "tags": {"vmlab:run": "bake-1a2b", "vmlab:recipe": "lab"}}
    fields.update(kw)
    return LaunchSpec(**fields)


def tags_of(raw: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in raw.get("Tags", [])}


def leftovers(ec2: Any) -> dict[str, list[str]]:
    """Everything vmlab may have created that still exists (terminated instances do not count)."""
    reservations = ec2.describe_instances(Filters=[
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])["Reservations"]

    def tagged(call: Any, field: str, key: str, **kw: Any) -> list[str]:
        # one query per tag key: moto ANDs the values of a multi-valued tag-key filter
        found: dict[str, None] = {}
        for tag in ("vmlab:launch", "vmlab:source-instance"):
            for item in call(Filters=[{"Name": "tag-key", "Values": [tag]}], **kw)[field]:
                if item.get("State") != "deleted":
                    found[item[key]] = None
        return list(found)

    return {
        "instances": [i["InstanceId"] for r in reservations for i in r["Instances"]],
        "key_pairs": [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]],
        "groups": [g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]
                   if g["GroupName"] != "default"],
        "volumes": tagged(ec2.describe_volumes, "Volumes", "VolumeId"),
        "images": tagged(ec2.describe_images, "Images", "ImageId", Owners=["self"]),
        "snapshots": tagged(ec2.describe_snapshots, "Snapshots", "SnapshotId"),
    }


NOTHING: dict[str, list[str]] = {"instances": [], "key_pairs": [], "groups": [], "volumes": [], "images": [],
                                 "snapshots": []}


# ---- launch ------------------------------------------------------------------------------------------------
def test_launch_is_locked_down_and_tagged(ec2: Any, provider: Ec2Provider, client_key: keys.KeyPair) -> None:
    host_key = keys.generate("host")
    inst = provider.launch(spec(client_key, host_key=host_key.private))

    raw = ec2.describe_instances(InstanceIds=[inst.id])["Reservations"][0]["Instances"][0]
    assert inst.state == "running" and inst.host == raw["PublicIpAddress"] and inst.port == 22
    assert inst.user == "ubuntu" and inst.provider == "ec2" and inst.instance_type == "t3.large"
    assert raw["MetadataOptions"]["HttpTokens"] == "required"
    shutdown = ec2.describe_instance_attribute(InstanceId=inst.id, Attribute="instanceInitiatedShutdownBehavior")
    assert shutdown["InstanceInitiatedShutdownBehavior"]["Value"] == "stop"

    (volume,) = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [inst.id]}])["Volumes"]
    assert volume["Encrypted"] is True and volume["VolumeType"] == "gp3"

    (group,) = raw["SecurityGroups"]
    (sg,) = ec2.describe_security_groups(GroupIds=[group["GroupId"]])["SecurityGroups"]
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"]) for p in sg["IpPermissions"]] == [("tcp", 22, 22)]
    assert [r["CidrIp"] for r in sg["IpPermissions"][0]["IpRanges"]] == [CIDR]
    assert sg["IpPermissions"][0]["Ipv6Ranges"] == [] and sg["IpPermissions"][0]["UserIdGroupPairs"] == []

    (key,) = ec2.describe_key_pairs(KeyNames=[raw["KeyName"]])["KeyPairs"]
    assert key["KeyType"] == "ed25519" and key["KeyName"].startswith("vmlab-bake-1a2b-")
    wanted = {"vmlab:run": "bake-1a2b", "vmlab:recipe": "lab", "Name": "builder"}
    for resource in (raw, volume, sg, key):
        assert wanted.items() <= tags_of(resource).items()
    launch = tags_of(raw)["vmlab:launch"]
    assert {tags_of(r)["vmlab:launch"] for r in (volume, sg, key)} == {launch}
    assert tags_of(sg)["vmlab:instance"] == tags_of(key)["vmlab:instance"] == inst.id

    user_data = ec2.describe_instance_attribute(InstanceId=inst.id, Attribute="userData")["UserData"]["Value"]
    cloud = yaml.safe_load(base64.b64decode(user_data))
    assert cloud["ssh_deletekeys"] is True and cloud["ssh_pwauth"] is False
    assert cloud["ssh_keys"]["ed25519_public"].split()[:2] == host_key.public.split()[:2]


def test_volume_size_type_and_explicit_ami(ec2: Any, provider: Ec2Provider, client_key: keys.KeyPair) -> None:
    ami = register(ec2, "my-own-base")
    inst = provider.launch(spec(client_key, image=ami, volume_size_gb=40, instance_type="m5.large"))
    (volume,) = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [inst.id]}])["Volumes"]
    assert volume["Size"] == 40 and inst.image == ami and inst.instance_type == "m5.large"


def test_debian_alias_falls_back_to_owner_and_name(ec2: Any, provider: Ec2Provider,
                                                   client_key: keys.KeyPair) -> None:
    inst = provider.launch(spec(client_key, image="debian-12"))
    (image,) = ec2.describe_images(ImageIds=[inst.image])["Images"]
    assert image["Name"] == DEBIAN_NAME and inst.user == "admin"


def test_ssh_endpoint_override(ec2: Any, provider: Ec2Provider, client_key: keys.KeyPair,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMLAB_EC2_SSH_HOST", "127.0.0.1")
    monkeypatch.setenv("VMLAB_EC2_SSH_PORT", "2222")
    inst = provider.launch(spec(client_key))
    assert (inst.host, inst.port) == ("127.0.0.1", 2222)
    described = provider.describe(inst.id)
    assert described is not None and (described.host, described.port) == ("127.0.0.1", 2222)


def test_registered_as_ec2(moto_server: MotoServer) -> None:
    provider = get_provider("ec2")
    assert isinstance(provider, Ec2Provider) and provider.default_base == "ubuntu-24.04"


# ---- life cycle --------------------------------------------------------------------------------------------
def test_list_stop_start_describe(ec2: Any, provider: Ec2Provider, client_key: keys.KeyPair) -> None:
    lab = provider.launch(spec(client_key, name="lab", tags={"vmlab:lab": "lab"}))
    builder = provider.launch(spec(client_key))
    assert [i.id for i in provider.list_instances({"vmlab:lab": "lab"})] == [lab.id]
    assert {i.id for i in provider.list_instances({"vmlab:lab": "*"})} == {lab.id}
    assert {i.id for i in provider.list_instances()} == {lab.id, builder.id}
    assert provider.stop(lab.id).state == "stopped"
    described = provider.describe(lab.id)
    assert described is not None and described.state == "stopped"
    started = provider.start(lab.id)
    assert started.state == "running" and started.host
    assert provider.describe("i-0123456789abcdef0") is None


def test_terminate_removes_instance_group_and_key(ec2: Any, provider: Ec2Provider,
                                                  client_key: keys.KeyPair) -> None:
    inst = provider.launch(spec(client_key))
    before = leftovers(ec2)
    assert all(len(before[kind]) == 1 for kind in ("instances", "key_pairs", "groups", "volumes"))
    provider.terminate(inst.id)
    assert leftovers(ec2) == NOTHING
    described = provider.describe(inst.id)
    assert described is not None and described.state == "terminated"
    assert provider.list_instances() == []
    provider.terminate(inst.id)  # idempotent


def test_terminate_refuses_instances_vmlab_did_not_launch(ec2: Any, provider: Ec2Provider) -> None:
    ami = register(ec2, "someone-else")
    other = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    with pytest.raises(BadInput, match="not launched by vmlab"):
        provider.terminate(other)
    with pytest.raises(BadInput, match="not an EC2 instance id"):
        provider.terminate("lvm-123456")


# ---- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("changes", "message"), [
    ({"image": "ubuntu-99.04"}, "unknown base image"),
    ({"image": "ami-xyz"}, "malformed AMI id"),
    ({"image": "ami-0123456789abcdef0"}, "not found"),
    ({"instance_type": "t9.enormous"}, "does not exist"),
    ({"volume_size_gb": 2}, "smaller than the image"),
    ({"user_data": "not cloud-init"}, "user_data must start"),
    ({"ssh_public_key": "ecdsa-sha2-nistp256 AAAA"}, "ed25519 or RSA"),
    ({"ssh_cidr": "300.1.2.3/32"}, "not an IP address"),
    ({"max_price": 0.5}, "spot instances only"),
])
def test_bad_input_creates_nothing(ec2: Any, provider: Ec2Provider, client_key: keys.KeyPair,
                                   changes: dict[str, Any], message: str) -> None:
    with pytest.raises(BadInput, match=message) as excinfo:
        provider.launch(spec(client_key, **changes))
    assert excinfo.value.exit_code == 2 and "\n" not in str(excinfo.value)
    assert leftovers(ec2) == NOTHING


def test_missing_credentials_is_bad_input(ec2: Any, client_key: keys.KeyPair, tmp_path: Any,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask 169.254.169.254
    with pytest.raises(BadInput, match="no usable AWS credentials") as excinfo:
        Ec2Provider(bases=TEST_BASES).launch(spec(client_key))
    assert "aws configure" in str(excinfo.value.hint)
    monkeypatch.undo()
    assert leftovers(ec2) == NOTHING


def test_unknown_region_is_bad_input(ec2: Any, client_key: keys.KeyPair) -> None:
    with pytest.raises(BadInput, match="unknown AWS region 'mars-north-1'"):
        Ec2Provider(region="mars-north-1", bases=TEST_BASES).launch(spec(client_key))
    assert leftovers(ec2) == NOTHING


def test_no_default_vpc_is_bad_input(ec2: Any, provider: Ec2Provider, client_key: keys.KeyPair) -> None:
    (vpc,) = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    for subnet in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]:
        ec2.delete_subnet(SubnetId=subnet["SubnetId"])
    ec2.delete_vpc(VpcId=vpc["VpcId"])
    with pytest.raises(BadInput, match="no default VPC") as excinfo:
        provider.launch(spec(client_key))
    assert "create-default-vpc" in str(excinfo.value.hint)
    assert leftovers(ec2) == NOTHING


# ---- spot and failures (through the fault-injecting proxy) -------------------------------------------------
@pytest.fixture()
def seeded_behind_proxy(aws_faults: FaultProxy, moto_server: MotoServer,
                        monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FaultProxy, Any]]:
    """A clean account seeded with base AMIs, vmlab going through the fault proxy; yields (proxy, moto client)."""
    monkeypatch.setenv("VMLAB_SSH_CIDR", CIDR)
    direct = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_server.endpoint)
    ubuntu = register(direct, UBUNTU_NAME)
    boto3.client("ssm", region_name="us-east-1", endpoint_url=moto_server.endpoint).put_parameter(
        Name="/vmlab-test/ubuntu-24.04", Value=ubuntu, Type="String")
    aws_faults.reset()
    yield aws_faults, direct


def test_spot_is_used_when_granted(seeded_behind_proxy: tuple[FaultProxy, Any], provider: Ec2Provider,
                                   client_key: keys.KeyPair) -> None:
    proxy, _direct = seeded_behind_proxy
    inst = provider.launch(spec(client_key, spot=True, max_price=0.2))
    assert inst.spot is True and proxy.calls.count("RunInstances") == 1


@pytest.mark.parametrize("code", ["InsufficientInstanceCapacity", "SpotMaxPriceTooLow"])
def test_spot_refused_falls_back_to_on_demand(seeded_behind_proxy: tuple[FaultProxy, Any], provider: Ec2Provider,
                                              client_key: keys.KeyPair, code: str) -> None:
    proxy, direct = seeded_behind_proxy
    notes: list[str] = []
    provider.progress = lambda msg, _frac: notes.append(msg)
    proxy.fail("RunInstances", code=code, status=400, message="no spot for you")
    inst = provider.launch(spec(client_key, spot=True))
    assert inst.spot is False and inst.state == "running"
    assert proxy.calls.count("RunInstances") == 2 and any(code in n for n in notes)
    assert len(leftovers(direct)["instances"]) == 1


def test_on_demand_capacity_error_is_a_cloud_failure_and_cleans_up(seeded_behind_proxy: tuple[FaultProxy, Any],
                                                                   provider: Ec2Provider,
                                                                   client_key: keys.KeyPair) -> None:
    proxy, direct = seeded_behind_proxy
    proxy.fail("RunInstances", code="InsufficientInstanceCapacity", status=500, message="none left")
    with pytest.raises(HostError, match="no capacity") as excinfo:
        provider.launch(spec(client_key))
    assert excinfo.value.exit_code == 1
    assert leftovers(direct) == NOTHING


@pytest.mark.parametrize(("action", "nth"), [("ImportKeyPair", 1), ("CreateSecurityGroup", 1),
                                             ("AuthorizeSecurityGroupIngress", 1), ("RunInstances", 1),
                                             ("CreateTags", 1), ("DescribeInstances", 1)])
def test_failure_inside_launch_removes_what_it_made(seeded_behind_proxy: tuple[FaultProxy, Any],
                                                    provider: Ec2Provider, client_key: keys.KeyPair,
                                                    action: str, nth: int) -> None:
    proxy, direct = seeded_behind_proxy
    proxy.fail(action, nth=nth, code="InternalError", status=500, message="injected")
    with pytest.raises(HostError, match="injected"):
        provider.launch(spec(client_key))
    assert leftovers(direct) == NOTHING


# ---- images ------------------------------------------------------------------------------------------------
def test_create_image_tags_image_and_snapshots(ec2: Any, provider: Ec2Provider, client_key: keys.KeyPair) -> None:
    inst = provider.launch(spec(client_key))
    seen: list[tuple[str, float | None]] = []
    image = provider.create_image(inst.id, "lab-v1", {"vmlab:recipe-hash": "ab12", "vmlab:base": "ubuntu-24.04"},
                                  progress=lambda msg, frac: seen.append((msg, frac)))
    assert image.state == "available" and image.name == "lab-v1" and image.user == "ubuntu"
    assert image.source == "ubuntu-24.04" and seen[-1][1] == 1.0
    (raw,) = ec2.describe_images(ImageIds=[image.id])["Images"]
    wanted = {"vmlab:recipe-hash": "ab12", "vmlab:source-instance": inst.id, "vmlab:user": "ubuntu"}
    assert wanted.items() <= tags_of(raw).items()
    snapshots = [m["Ebs"]["SnapshotId"] for m in raw["BlockDeviceMappings"] if "Ebs" in m]
    assert snapshots
    for snap in ec2.describe_snapshots(SnapshotIds=snapshots)["Snapshots"]:
        assert wanted.items() <= tags_of(snap).items()

    assert [i.id for i in provider.list_images({"vmlab:recipe-hash": "*"})] == [image.id]
    assert provider.list_images({"vmlab:recipe-hash": "other"}) == []
    by_name = provider.describe_image("lab-v1")
    assert by_name is not None and by_name.id == image.id
    assert provider.describe_image("no-such-image") is None
    assert provider.describe_image("ami-0123456789abcdef0") is None


def test_ambiguous_image_name_is_refused(ec2: Any, provider: Ec2Provider) -> None:
    register(ec2, "twin")
    register(ec2, "twin")
    with pytest.raises(BadInput, match="2 images are named 'twin'"):
        provider.describe_image("twin")


def test_bad_image_name_creates_nothing(ec2: Any, provider: Ec2Provider, client_key: keys.KeyPair) -> None:
    inst = provider.launch(spec(client_key))
    with pytest.raises(BadInput, match="not valid"):
        provider.create_image(inst.id, "x", {})
    assert leftovers(ec2)["images"] == []


def test_delete_image_deletes_its_snapshots(ec2: Any, provider: Ec2Provider, client_key: keys.KeyPair) -> None:
    inst = provider.launch(spec(client_key))
    image = provider.create_image(inst.id, "lab-v1", {"vmlab:recipe-hash": "ab12"})
    provider.terminate(inst.id)
    provider.delete_image(image.id)
    assert leftovers(ec2) == NOTHING
    provider.delete_image(image.id)  # idempotent


def test_share_image_sets_launch_and_snapshot_permissions(ec2: Any, provider: Ec2Provider,
                                                          client_key: keys.KeyPair) -> None:
    inst = provider.launch(spec(client_key))
    image = provider.create_image(inst.id, "lab-v1", {"vmlab:recipe-hash": "ab12"})
    snapshots = [m["Ebs"]["SnapshotId"] for m in
                 ec2.describe_images(ImageIds=[image.id])["Images"][0]["BlockDeviceMappings"] if "Ebs" in m]

    def snapshot_users() -> set[str]:
        return {p["UserId"] for s in snapshots for p in ec2.describe_snapshot_attribute(
            SnapshotId=s, Attribute="createVolumePermission")["CreateVolumePermissions"]}

    shared = provider.share_image(image.id, ("111122223333", "444455556666"))
    assert set(shared.shared_with) == {"111122223333", "444455556666"}
    assert snapshot_users() == {"111122223333", "444455556666"}
    described = provider.describe_image(image.id)
    assert described is not None and set(described.shared_with) == {"111122223333", "444455556666"}

    after = provider.share_image(image.id, ("444455556666",), remove=True)
    assert after.shared_with == ("111122223333",) and snapshot_users() == {"111122223333"}


@pytest.mark.parametrize("accounts", [("12345",), ("1234567890123",), ("12345678901a",), ()])
def test_share_image_refuses_bad_account_ids(ec2: Any, provider: Ec2Provider, client_key: keys.KeyPair,
                                             accounts: tuple[str, ...]) -> None:
    inst = provider.launch(spec(client_key))
    image = provider.create_image(inst.id, "lab-v1", {"vmlab:recipe-hash": "ab12"})
    with pytest.raises(BadInput):
        provider.share_image(image.id, accounts)
    assert provider.describe_image(image.id).shared_with == ()  # type: ignore[union-attr]


def interrupt_after(provider: Ec2Provider, action: str) -> None:
    """A Ctrl-C that lands the moment `action` has succeeded at EC2, before its answer reaches vmlab."""
    def hit(**_kw: Any) -> None:
        raise KeyboardInterrupt
    provider.aws.ec2.meta.events.register(f"after-call.ec2.{action}", hit)


def test_ctrl_c_during_create_image_leaks_no_image(ec2: Any, provider: Ec2Provider,
                                                   client_key: keys.KeyPair) -> None:
    inst = provider.launch(spec(client_key))
    interrupt_after(provider, "CreateImage")
    with pytest.raises(KeyboardInterrupt):
        provider.create_image(inst.id, "lab-v1", {"vmlab:recipe-hash": "ab12"}, progress=lambda m, f: None)
    assert ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": ["lab-v1"]}])["Images"] == []


def test_ctrl_c_during_run_instances_leaks_nothing(ec2: Any, provider: Ec2Provider,
                                                   client_key: keys.KeyPair) -> None:
    interrupt_after(provider, "RunInstances")
    with pytest.raises(KeyboardInterrupt):
        provider.launch(spec(client_key))
    assert leftovers(ec2) == NOTHING


def test_resuming_a_lab_with_a_bad_record_starts_nothing(ec2: Any, provider: Ec2Provider,
                                                         client_key: keys.KeyPair, tmp_path: Any) -> None:
    from vmlab.state import LabRecord, LabStore
    from vmlab.workflows import labs

    inst = provider.launch(spec(client_key, name="lab1", tags={"vmlab:lab": "lab1", "vmlab:run": "t"}))
    provider.stop(inst.id)
    store = LabStore(tmp_path)
    store.put(LabRecord(name="lab1", provider="ec2", instance_id=inst.id, image="ami-1", user="bad user",
                        key_file=str(tmp_path / "k"), host_key=keys.generate("h").public, token=""))
    with pytest.raises(BadInput, match="user"):
        labs.up(provider, "lab1", store=store)
    assert provider.describe(inst.id).state == "stopped"
