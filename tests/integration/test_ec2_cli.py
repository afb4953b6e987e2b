"""The `vmlab` command on --provider ec2 against a moto server: options reach EC2, the instance type is checked
and priced before anything is launched, and every kind of bad input exits 2 with one line naming the fix and
creates nothing (checked through boto3 against moto afterwards).

vmlab is driven only through its CLI here; boto3 seeds AMIs and looks at what moto holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from harness.drivers.ec2cli import register, run_vmlab, vmlab_resources
from harness.emulators.moto import MotoServer
from harness.faults.awsfaults import FaultProxy

pytestmark = pytest.mark.moto

ROOT = Path(__file__).resolve().parents[2]
LAB_TAGS = {"vmlab:recipe-hash": "ab12", "vmlab:recipe": "lab", "vmlab:user": "ubuntu"}


@dataclass
class Seeded:
    ec2: Any
    image: str  # an x86_64 "vmlab image" (moto keeps no architecture for registered images: all are x86_64)


def seed(ec2: Any) -> Seeded:
    return Seeded(ec2, register(ec2, "vmlab-lab-ab12-x86", tags=LAB_TAGS))


def no_ssh_beyond_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Should a test get as far as SSH, it must knock on a closed loopback port, never on moto's fake public IPs."""
    monkeypatch.setenv("VMLAB_EC2_SSH_HOST", "127.0.0.1")
    monkeypatch.setenv("VMLAB_EC2_SSH_PORT", "9")


@pytest.fixture()
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Seeded:
    moto_server.reset()
    monkeypatch.setenv("VMLAB_SSH_CIDR", "203.0.113.7/32")
    no_ssh_beyond_loopback(monkeypatch)
    monkeypatch.delenv("VMLAB_PROVIDER", raising=False)
    return seed(boto3.client("ec2", region_name="us-east-1"))


def assert_one_line_bad_input(result: Any, *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert len(lines) == 1 and lines[0].startswith("vmlab: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert ": " in lines[0].removeprefix("vmlab: error: "), "the line must name the fix after the problem"


UP_BAD_INPUT = [
    (["--type", "zz.huge"], ["instance type 'zz.huge' does not exist in us-east-1"]),
    (["--type", "m6g.large"], ["m6g.large (arm64) cannot run the x86_64 image"]),
    (["--type", "t4g.large"], ["t4g.large (arm64) cannot run the x86_64 image"]),
    (["--region", "mars-north-1"], ["unknown AWS region 'mars-north-1'"]),
    (["--image", "ami-xyz"], ["malformed AMI id 'ami-xyz'"]),
    (["--image", "ami-0123456789abcdef0"], ["not found"]),
    (["--max-price", "0.3"], ["--max-price applies to spot instances only"]),
    (["--spot", "--max-price", "-1"], ["not positive"]),
    (["--ssh-cidr", "somewhere"], ["'somewhere' is not an IP address or CIDR range"]),
    (["--volume-size", "2"], ["volume size 2 GB is smaller than the image's root"]),
]


@pytest.mark.parametrize(("args", "fragments"), UP_BAD_INPUT, ids=[" ".join(a) for a, _ in UP_BAD_INPUT])
def test_up_bad_input_exits_2_and_creates_nothing(aws: Seeded, args: list[str], fragments: list[str]) -> None:
    before = vmlab_resources(aws.ec2)
    if "--image" not in args:
        args += ["--image", aws.image]
    result = run_vmlab("up", "lab", "--provider", "ec2", *args)
    assert_one_line_bad_input(result, *fragments)
    assert vmlab_resources(aws.ec2) == before


BAKE_BAD_INPUT = [
    (["--region", "mars-north-1"], ["unknown AWS region 'mars-north-1'"]),
    (["--base", "ami-12"], ["malformed AMI id 'ami-12'"]),
    (["--builder-type", "zz.huge"], ["instance type 'zz.huge' does not exist"]),
    (["--builder-type", "m6g.large"], ["cannot run the x86_64 image"]),
    (["--kms-key", "alias/nope"], ["KMS key alias/nope not found in us-east-1"]),
    (["--kms-key", "alias/aws/ebs"], ["AWS-managed default key"]),
    (["--kms-key", "my key"], ["is not a KMS key id, alias or ARN"]),
    (["--ssh-cidr", "10.0.0.0/33"], ["is not an IP address or CIDR range"]),
]


@pytest.mark.parametrize(("args", "fragments"), BAKE_BAD_INPUT, ids=[" ".join(a) for a, _ in BAKE_BAD_INPUT])
def test_bake_bad_input_exits_2_and_creates_nothing(aws: Seeded, args: list[str], fragments: list[str]) -> None:
    before = vmlab_resources(aws.ec2)
    if "--base" not in args:
        args = [*args, "--base", aws.image]
    result = run_vmlab("bake", "--provider", "ec2", *args)
    assert_one_line_bad_input(result, *fragments)
    assert vmlab_resources(aws.ec2) == before


@pytest.mark.parametrize("args", [["up", "--spot"], ["up", "--region", "us-east-1"], ["bake", "--ssh-cidr", "1.2.3.4"],
                                  ["bake", "--kms-key", "alias/x"], ["images", "ls", "--region", "eu-west-1"],
                                  ["ls", "--provider", "local", "--region", "eu-west-1"]])
def test_ec2_only_options_are_refused_for_the_local_provider(args: list[str]) -> None:
    result = run_vmlab(*args, "--provider", "local") if args[0] != "ls" else run_vmlab(*args)
    assert_one_line_bad_input(result, "only applies to --provider ec2 (not local)")


def test_missing_credentials(aws: Seeded, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") or k in ("AWS_ENDPOINT_URL",
                                                                                       "AWS_REGION")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(empty), AWS_CONFIG_FILE=str(empty), AWS_EC2_METADATA_DISABLED="true",
               PYTHONPATH=str(ROOT), VMLAB_PROVIDER="ec2")
    before = vmlab_resources(aws.ec2)
    proc = subprocess.run([sys.executable, "-m", "vmlab", "up", "lab", "--type", "t3.large", "--image", aws.image],
                          env=env, capture_output=True, text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "no usable AWS credentials" in lines[0] and "aws configure" in lines[0]
    assert vmlab_resources(aws.ec2) == before


def test_no_default_vpc(aws: Seeded) -> None:
    ec2 = aws.ec2
    (vpc,) = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    for subnet in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]:
        ec2.delete_subnet(SubnetId=subnet["SubnetId"])
    ec2.delete_vpc(VpcId=vpc["VpcId"])
    before = vmlab_resources(ec2)
    result = run_vmlab("up", "lab", "--provider", "ec2", "--type", "t3.large", "--image", aws.image)
    assert_one_line_bad_input(result, "region us-east-1 has no default VPC", "create-default-vpc")
    assert vmlab_resources(ec2) == before


def test_up_shows_the_offer_then_removes_what_a_failed_launch_made(aws_faults: FaultProxy, moto_server: MotoServer,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The offer (vCPU, memory, GPU, on-demand and spot price) is printed before the launch; EC2 then refuses
    capacity for spot and on-demand alike, and the key pair and security group made for it are gone again."""
    monkeypatch.setenv("VMLAB_SSH_CIDR", "203.0.113.7/32")
    no_ssh_beyond_loopback(monkeypatch)
    direct = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_server.endpoint)
    seeded = seed(direct)
    aws_faults.fail("RunInstances", nth=None, code="InsufficientInstanceCapacity", status=400)
    result = run_vmlab("up", "gpu", "--provider", "ec2", "--type", "g4dn.xlarge", "--spot", "--image", seeded.image)
    assert result.exit_code == 1, result.output
    assert "g4dn.xlarge in us-east-1: 4 vCPU, 16 GiB, 1x NVIDIA T4 (16 GiB); on-demand ~$0.526/h" in result.stdout
    assert "spot now $" in result.stdout and "zone(s)" in result.stdout
    assert aws_faults.calls.count("RunInstances") == 2  # spot, then the on-demand fallback
    assert aws_faults.calls.index("DescribeSpotPriceHistory") < aws_faults.calls.index("ImportKeyPair")
    left = vmlab_resources(direct)
    assert not (left["instances"] or left["key_pairs"] or left["groups"])


def test_up_json_offer_for_an_unknown_price(aws_faults: FaultProxy, moto_server: MotoServer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMLAB_SSH_CIDR", "203.0.113.7/32")
    no_ssh_beyond_loopback(monkeypatch)
    seeded = seed(boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_server.endpoint))
    aws_faults.fail("RunInstances", nth=None, code="InsufficientInstanceCapacity", status=400)
    result = run_vmlab("up", "gpu", "--provider", "ec2", "--type", "c5d.large", "--image", seeded.image, "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["exit_code"] == 1 and "capacity" in doc["error"]
    assert "DescribeInstanceTypes" in aws_faults.calls and "DescribeSpotPriceHistory" not in aws_faults.calls


@pytest.mark.parametrize(("command", "first_wait"), [
    (["bake", "--spot", "--volume-size", "40", "--ssh-cidr", "198.51.100.9", "--base", "@image"], 1),
    # up looks for the lab's instance first
    (["up", "lab", "--spot", "--max-price", "0.5", "--volume-size", "40", "--ssh-cidr", "198.51.100.9",
      "--image", "@image"], 2),
])
def test_launch_options_reach_ec2(aws_faults: FaultProxy, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch,
                                  command: list[str], first_wait: int) -> None:
    """The options arrive in the launch: a spot instance with a 40 GB root, SSH open to the given address only.
    moto boots nothing to SSH to, so the launch is failed on its first wait, and its terminate is failed too, so
    that the instance stays to be looked at (the test removes it)."""
    no_ssh_beyond_loopback(monkeypatch)
    monkeypatch.delenv("VMLAB_SSH_CIDR", raising=False)  # --ssh-cidr must be enough: no IP lookup on the internet
    direct = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_server.endpoint)
    seeded = seed(direct)
    aws_faults.fail("DescribeInstances", nth=first_wait, code="InternalError", status=500)
    aws_faults.fail("TerminateInstances", nth=None, code="InternalError", status=500)
    aws_faults.fail("DeleteSecurityGroup", nth=None, code="InternalError", status=500)
    args = [seeded.image if a == "@image" else a for a in command]
    result = run_vmlab(*args, "--provider", "ec2")
    assert result.exit_code == 1, result.output
    (inst,) = [i for r in direct.describe_instances()["Reservations"] for i in r["Instances"]]
    try:
        assert inst["InstanceLifecycle"] == "spot"
        (mapping,) = inst["BlockDeviceMappings"]
        (volume,) = direct.describe_volumes(VolumeIds=[mapping["Ebs"]["VolumeId"]])["Volumes"]
        assert volume["Size"] == 40 and volume["Encrypted"] is True
        (group,) = direct.describe_security_groups(GroupIds=[inst["SecurityGroups"][0]["GroupId"]])["SecurityGroups"]
        assert [r["CidrIp"] for p in group["IpPermissions"] for r in p["IpRanges"]] == ["198.51.100.9/32"]
    finally:
        direct.terminate_instances(InstanceIds=[inst["InstanceId"]])
