"""Pure logic of the ec2 provider: error mapping, regions, CIDRs, tags, the run_instances request, spot fallback,
login users, account ids. No server: botocore errors are built by hand, `run` is a fake."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ParamValidationError

from vmlab import keys
from vmlab.errors import BadInput, HostError
from vmlab.providers.base import LaunchSpec
from vmlab.providers.ec2 import amis, bases, client, launchplan, network, records

PUB = keys.generate("t").public


def client_error(code: str, message: str = "boom", op: str = "RunInstances") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, op)


def spec(**kw: Any) -> LaunchSpec:
    fields: dict[str, Any] = {"name": "lab", "image": "ubuntu-24.04", "ssh_public_key": PUB}
    fields.update(kw)
    return LaunchSpec(**fields)


# ---- errors ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("code", "cls", "text"), [
    ("AuthFailure", BadInput, "rejected the credentials"),
    ("ExpiredToken", BadInput, "expired"),
    ("UnauthorizedOperation", BadInput, "not allowed"),
    ("InvalidAMIID.Malformed", BadInput, "malformed AMI id"),
    ("InvalidAMIID.NotFound", BadInput, "AMI not found"),
    ("VcpuLimitExceeded", BadInput, "quota"),
    ("InvalidKeyPair.NotFound", BadInput, "InvalidKeyPair.NotFound"),
    ("InsufficientInstanceCapacity", HostError, "no capacity"),
    ("RequestLimitExceeded", HostError, "throttled"),
    ("InternalError", HostError, "AWS failed to launch: InternalError: boom"),
])
def test_client_errors_become_one_line_vmlab_errors(code: str, cls: type, text: str) -> None:
    err = client.from_client_error(client_error(code, "boom\nsecond line"), "launch")
    assert type(err) is cls and text in str(err) and "\n" not in str(err) and err.hint
    assert err.exit_code == (2 if cls is BadInput else 1)


def test_botocore_errors() -> None:
    assert isinstance(client.from_botocore_error(NoCredentialsError(), "x"), BadInput)
    assert isinstance(client.from_botocore_error(ParamValidationError(report="bad"), "x"), BadInput)
    err = client.from_botocore_error(EndpointConnectionError(endpoint_url="http://x"), "list")
    assert isinstance(err, HostError) and "could not reach AWS" in str(err)


def test_translated_context() -> None:
    with pytest.raises(BadInput, match="no usable AWS credentials"):
        with client.translated("launch"):
            raise NoCredentialsError()
    with pytest.raises(ValueError):  # anything not botocore passes through
        with client.translated("launch"):
            raise ValueError("x")


def test_regions() -> None:
    known = {"us-east-1", "eu-west-1", "eu-central-1"}
    assert client.check_region("eu-west-1", known) == "eu-west-1"
    with pytest.raises(BadInput, match="unknown AWS region 'eu-nowhere-9'") as excinfo:
        client.check_region("eu-nowhere-9", known)
    assert "eu-central-1" in str(excinfo.value.hint)
    with pytest.raises(BadInput):
        client.check_region("US_EAST_1", known)


# ---- network -----------------------------------------------------------------------------------------------
def test_ssh_cidr_sources_in_order() -> None:
    def never() -> str:
        raise AssertionError("looked up the public IP although a range was given")

    assert network.ssh_cidr("198.51.100.4/32", {"VMLAB_SSH_CIDR": "10.0.0.0/8"}, never) == "198.51.100.4/32"
    assert network.ssh_cidr(None, {"VMLAB_SSH_CIDR": "198.51.100.9"}, never) == "198.51.100.9/32"
    assert network.ssh_cidr(None, {}, lambda: "203.0.113.7") == "203.0.113.7/32"
    assert network.ssh_cidr("2001:db8::1", {}, never) == "2001:db8::1/128"


def test_world_open_only_when_written_by_the_user() -> None:
    assert network.ssh_cidr("0.0.0.0/0", {}, lambda: "203.0.113.7") == "0.0.0.0/0"
    # whatever the lookup answers becomes a single address, never a range
    assert network.ssh_cidr(None, {}, lambda: "0.0.0.0") == "0.0.0.0/32"
    with pytest.raises(BadInput):
        network.ssh_cidr("not-an-ip", {})


def test_ssh_permission_is_port_22_from_the_range_only() -> None:
    rule = network.ssh_permission("203.0.113.7/32")
    assert rule == {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                    "IpRanges": [{"CidrIp": "203.0.113.7/32", "Description": "vmlab: SSH from the caller"}]}
    assert network.ssh_permission("2001:db8::1/128")["Ipv6Ranges"][0]["CidrIpv6"] == "2001:db8::1/128"


def test_no_default_vpc() -> None:
    class NoVpcs:
        def describe_vpcs(self, **_kw: Any) -> dict[str, Any]:
            return {"Vpcs": []}

    with pytest.raises(BadInput, match="no default VPC"):
        network.default_vpc(NoVpcs(), "eu-west-1")


# ---- records -----------------------------------------------------------------------------------------------
def test_tag_filters() -> None:
    assert records.tag_filters({"vmlab:lab": "lab", "vmlab:run": "*"}) == [
        {"Name": "tag:vmlab:lab", "Values": ["lab"]}, {"Name": "tag-key", "Values": ["vmlab:run"]}]
    assert records.tag_filters(None) == []


def raw_instance(**kw: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"InstanceId": "i-0123456789abcdef0", "State": {"Name": "running"},
                           "PublicIpAddress": "198.51.100.1", "ImageId": "ami-12345678", "InstanceType": "t3.large",
                           "LaunchTime": dt.datetime(2024, 6, 1, tzinfo=dt.timezone.utc),
                           "Tags": [{"Key": "Name", "Value": "lab"}, {"Key": "vmlab:user", "Value": "admin"}]}
    raw.update(kw)
    return raw


def test_to_instance() -> None:
    inst = records.to_instance(raw_instance(InstanceLifecycle="spot"), {})
    assert (inst.name, inst.host, inst.port, inst.user, inst.spot) == ("lab", "198.51.100.1", 22, "admin", True)
    assert inst.launched_at == "2024-06-01T00:00:00+00:00"
    assert records.to_instance(raw_instance(State={"Name": "shutting-down"}), {}).state == "terminated"


def test_ssh_endpoint_override() -> None:
    env = {"VMLAB_EC2_SSH_HOST": "127.0.0.1", "VMLAB_EC2_SSH_PORT": "2222"}
    inst = records.to_instance(raw_instance(), env)
    assert (inst.host, inst.port) == ("127.0.0.1", 2222)
    with pytest.raises(BadInput):
        records.ssh_endpoint(None, {"VMLAB_EC2_SSH_PORT": "ssh"})


def test_to_image_size_and_user() -> None:
    raw = {"ImageId": "ami-12345678", "Name": "lab-v1", "State": "available", "Architecture": "x86_64",
           "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": "snap-1", "VolumeSize": 30}}],
           "Tags": [{"Key": "vmlab:user", "Value": "ubuntu"}, {"Key": "vmlab:base", "Value": "ubuntu-24.04"}]}
    image = records.to_image(raw, ("111122223333",))
    assert image.size_bytes == 30 * 2**30 and image.user == "ubuntu" and image.source == "ubuntu-24.04"
    assert records.snapshot_ids(raw) == ["snap-1"] and records.to_image({**raw, "State": "error"}).state == "failed"


# ---- bases -------------------------------------------------------------------------------------------------
def test_ami_ids() -> None:
    assert bases.is_ami_id("ami-12345678") and bases.is_ami_id("ami-0123456789abcdef0")
    for bad in ("ami-xyz", "ami-1234", "AMI-12345678", "ami-0123456789ABCDEF0"):
        with pytest.raises(BadInput):
            bases.check_ami_id(bad)


def test_every_alias_is_complete() -> None:
    assert set(bases.BASES) == {"ubuntu-24.04", "ubuntu-22.04", "debian-12", "dlami"}
    for base in bases.BASES.values():
        assert base.ssm_parameter.startswith("/aws/service/") and base.owners and base.name_pattern.endswith("*")


def test_login_user() -> None:
    assert bases.login_user({"Tags": [{"Key": "vmlab:user", "Value": "jo"}]}, bases.BASES["debian-12"]) == "jo"
    assert bases.login_user({}, bases.BASES["debian-12"]) == "admin"
    assert bases.login_user({"Name": "ubuntu/images/hvm-ssd/ubuntu-jammy"}) == "ubuntu"
    assert bases.login_user({"Name": "debian-12-amd64-2024"}) == "admin"
    assert bases.login_user({"Name": "al2023-ami-2023.4"}) == "ec2-user"


def test_newest() -> None:
    images = [{"ImageId": "a", "CreationDate": "2024-01-02T00:00:00.000Z"},
              {"ImageId": "b", "CreationDate": "2024-03-01T00:00:00.000Z"}]
    assert bases.newest(images) == images[1] and bases.newest([]) is None


def test_alias_from_ssm_then_owner_and_name() -> None:
    class Ssm:
        def __init__(self, value: str | None) -> None:
            self.value = value

        def get_parameter(self, Name: str) -> dict[str, Any]:
            if self.value is None:
                raise client_error("ParameterNotFound", op="GetParameter")
            return {"Parameter": {"Value": self.value}}

    class Ec2:
        filters: list[Any] = []

        def describe_images(self, Owners: list[str], Filters: list[Any]) -> dict[str, Any]:
            Ec2.filters = Filters
            return {"Images": [{"ImageId": "ami-00000001", "CreationDate": "2024-01-01", "Architecture": "x86_64"},
                               {"ImageId": "ami-00000002", "CreationDate": "2024-05-01", "Architecture": "x86_64"},
                               {"ImageId": "ami-00000003", "CreationDate": "2024-09-01", "Architecture": "arm64"}]}

    base = bases.BASES["debian-12"]
    assert bases.resolve_alias(base, Ec2(), Ssm("ami-0123456789abcdef0"), "r") == "ami-0123456789abcdef0"
    assert bases.resolve_alias(base, Ec2(), Ssm(None), "r") == "ami-00000002"
    assert {"Name": "name", "Values": [base.name_pattern]} in Ec2.filters


# ---- launch plan -------------------------------------------------------------------------------------------
ROOT = {"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": "snap-1", "VolumeSize": 8}}


def test_run_request_secure_defaults() -> None:
    tags = {"vmlab:lab": "lab", "Name": "lab"}
    req = launchplan.run_request(spec(), ami="ami-12345678", root=ROOT, key_name="k", group_id="sg-1",
                                 instance_type="t3.large", tags=tags, user_data="#cloud-config\n{}\n",
                                 client_token="vmlab-1")
    assert req["MetadataOptions"]["HttpTokens"] == "required"
    assert req["BlockDeviceMappings"] == [{"DeviceName": "/dev/sda1", "Ebs": {
        "VolumeSize": 8, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True}}]
    assert req["InstanceInitiatedShutdownBehavior"] == "stop" and req["SecurityGroupIds"] == ["sg-1"]
    assert {t["ResourceType"] for t in req["TagSpecifications"]} == {"instance", "volume"}
    assert all({"Key": "vmlab:lab", "Value": "lab"} in t["Tags"] for t in req["TagSpecifications"])
    assert "InstanceMarketOptions" not in req


def test_volume_size() -> None:
    assert launchplan.volume_size(None, 8) == 8 and launchplan.volume_size(100, 8) == 100
    with pytest.raises(BadInput, match="smaller"):
        launchplan.volume_size(4, 8)


def test_user_data_pins_the_host_key_and_merges_the_callers() -> None:
    host = keys.generate("host")
    text = launchplan.user_data_for(spec(host_key=host.private, user_data="#cloud-config\nruncmd: [[touch, /x]]\n"))
    cfg = yaml.safe_load(text)
    assert cfg["ssh_deletekeys"] is True and cfg["runcmd"] == [["touch", "/x"]]
    assert cfg["ssh_keys"]["ed25519_public"].split()[1] == host.public.split()[1]
    assert "ssh_keys" not in yaml.safe_load(launchplan.user_data_for(spec()))
    with pytest.raises(BadInput, match="bytes"):
        launchplan.user_data_for(spec(user_data="#!/bin/sh\n" + "x" * 20000))


def test_resource_name() -> None:
    assert launchplan.resource_name(spec(tags={"vmlab:run": "bake-1a2b"}), "abcd") == "vmlab-bake-1a2b-abcd"
    assert launchplan.resource_name(spec(name="My Lab!", tags={}), "abcd") == "vmlab-My-Lab-abcd"


def test_spot_options() -> None:
    market = launchplan.spot_market(0.25)
    assert market["SpotOptions"] == {"SpotInstanceType": "persistent", "InstanceInterruptionBehavior": "stop",
                                     "MaxPrice": "0.2500"}
    with pytest.raises(BadInput):
        launchplan.check_spot(spec(max_price=0.3))
    with pytest.raises(BadInput):
        launchplan.check_spot(spec(spot=True, max_price=-1.0))


class FakeRun:
    """run_instances that refuses the first `refusals` calls with `code`."""

    def __init__(self, code: str, refusals: int = 1) -> None:
        self.code, self.refusals = code, refusals
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(kw)
        if len(self.calls) <= self.refusals:
            raise client_error(self.code)
        return {"Instances": [{"InstanceId": "i-0123456789abcdef0"}]}


REQUEST = {"ImageId": "ami-12345678", "ClientToken": "vmlab-1"}


@pytest.mark.parametrize("code", sorted(launchplan.SPOT_FALLBACK_CODES))
def test_spot_falls_back_to_on_demand(code: str) -> None:
    run, notes = FakeRun(code), list[str]()
    raw, spot = launchplan.run_with_fallback(run, dict(REQUEST), True, None, notes.append)
    assert spot is False and raw["InstanceId"] == "i-0123456789abcdef0"
    assert "InstanceMarketOptions" in run.calls[0] and "InstanceMarketOptions" not in run.calls[1]
    assert run.calls[0]["ClientToken"] != run.calls[1]["ClientToken"]  # a fresh request, not a replay
    assert code in notes[0]


def test_other_errors_do_not_fall_back() -> None:
    run = FakeRun("InvalidParameterValue")
    with pytest.raises(ClientError):
        launchplan.run_with_fallback(run, dict(REQUEST), True, None, lambda _m: None)
    assert len(run.calls) == 1
    on_demand = FakeRun("InsufficientInstanceCapacity")
    with pytest.raises(ClientError):  # on-demand refused: nothing further to fall back to
        launchplan.run_with_fallback(on_demand, dict(REQUEST), False, None, lambda _m: None)


# ---- images ------------------------------------------------------------------------------------------------
def test_accounts() -> None:
    assert amis.check_accounts(("111122223333", "111122223333")) == ("111122223333",)
    for bad in [("12345",), ("1234567890123",), ("11112222333a",), ()]:
        with pytest.raises(BadInput):
            amis.check_accounts(bad)


def test_image_names() -> None:
    assert amis.check_image_name("vmlab-lab-ab12cd34-20240601")
    for bad in ("ab", "a" * 129, "lab:v1", "lab\nv1"):
        with pytest.raises(BadInput):
            amis.check_image_name(bad)
