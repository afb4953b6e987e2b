"""Every check before the first create, on --provider ec2 against moto: flags, environment variables and derived
names are refused before anything is made or announced; the instance type must be offered in the region and in a
zone of the default VPC (a zone that offers it is picked); `--dry-run` checks everything, prints the plan with
type, vCPU/GPU, price and limits, and creates nothing.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from harness.drivers.ec2cli import run_vmlab, vmlab_resources
from harness.emulators.moto import MotoServer
from harness.faults.awsfaults import FaultProxy
from tests.integration.test_ec2_cli import Seeded, assert_one_line_bad_input, aws, no_ssh_beyond_loopback, seed
from vmlab import keys
from vmlab.providers.base import LaunchSpec
from vmlab.providers.ec2 import Ec2Provider

pytestmark = pytest.mark.moto

__all__ = ["aws"]  # the fixture, imported for pytest

#: calls that make something: none of them may happen on bad input or in a dry run
CREATING = ("Run", "Create", "Import", "Authorize", "Request", "Copy", "Put", "Add", "Register", "Associate")


def not_announced(result: Any) -> None:
    assert "launching" not in result.output and "creating" not in result.output, result.output


def drop_default_subnets(ec2: Any, zones: list[str]) -> None:
    for subnet in ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]:
        if subnet["AvailabilityZone"] in zones:
            ec2.delete_subnet(SubnetId=subnet["SubnetId"])


@pytest.mark.parametrize(("args", "env", "fragments"), [
    (["--volume-size", "2"], {}, ["volume size 2 GB is smaller than the image's root"]),
    ([], {"VMLAB_EC2_SSH_PORT": "abc"}, ["VMLAB_EC2_SSH_PORT='abc' is not a port number"]),
    ([], {"VMLAB_EC2_SSH_PORT": "70000"}, ["VMLAB_EC2_SSH_PORT=70000 is out of range"]),
    ([], {"VMLAB_SSH_CIDR": "nowhere"}, ["'nowhere' is not an IP address"]),
    ([], {"VMLAB_EC2_SSH_HOST": "-oProxyCommand=x"}, ["VMLAB_EC2_SSH_HOST='-oProxyCommand=x' is not a host"]),
    ([], {"VMLAB_IAM_SETTLE_SECONDS": "soon"}, ["VMLAB_IAM_SETTLE_SECONDS='soon' is not a number of seconds"]),
    (["--type", "hpc7a.12xlarge"], {},
     ["instance type hpc7a.12xlarge is not offered in us-east-1 (it is offered in eu-north-1, eu-west-1"]),
])
def test_up_refuses_before_it_announces_or_makes_anything(aws: Seeded, monkeypatch: pytest.MonkeyPatch,
                                                         args: list[str], env: dict[str, str],
                                                         fragments: list[str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = vmlab_resources(aws.ec2)
    result = run_vmlab("up", "lab", "--provider", "ec2", "--image", aws.image, *args)
    assert_one_line_bad_input(result, *fragments)
    not_announced(result)
    assert vmlab_resources(aws.ec2) == before


@pytest.mark.parametrize(("args", "fragments"), [
    (["--name", "bad;name|x"], ["image name 'bad;name|x' is not valid for EC2"]),
    (["--name", "ab"], ["image name 'ab' is not valid for EC2"]),
    (["--name", "vmlab-lab-ab12-x86"], ["an image named 'vmlab-lab-ab12-x86' exists already"]),
    (["--builder-type", "p3dn.24xlarge"], []),  # offered only in zones whose default subnets the test removes
])
def test_bake_refuses_a_bad_name_or_placement_before_the_builder(aws_faults: FaultProxy, moto_server: MotoServer,
                                                                 monkeypatch: pytest.MonkeyPatch, args: list[str],
                                                                 fragments: list[str]) -> None:
    monkeypatch.setenv("VMLAB_SSH_CIDR", "203.0.113.7/32")
    no_ssh_beyond_loopback(monkeypatch)
    direct = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_server.endpoint)
    seeded = seed(direct)
    if not fragments:
        drop_default_subnets(direct, ["us-east-1c", "us-east-1d"])
        fragments = ["p3dn.24xlarge is offered in us-east-1 only in us-east-1c, us-east-1d, where the default VPC "
                     "has no subnet", "create-default-subnet --availability-zone us-east-1c"]
    before = vmlab_resources(direct)
    result = run_vmlab("bake", "--provider", "ec2", "--base", seeded.image, "--force", *args)
    assert_one_line_bad_input(result, *fragments)
    not_announced(result)
    assert vmlab_resources(direct) == before
    assert not [c for c in aws_faults.calls if c.startswith(CREATING)], aws_faults.calls


def test_a_launch_goes_to_a_zone_that_offers_the_type(aws: Seeded) -> None:
    """moto's us-east-1e (like AWS's) offers no t3.large; with the default subnets of a-d gone, EC2 could pick e
    or f: vmlab launches into f's subnet."""
    drop_default_subnets(aws.ec2, ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d"])
    provider = Ec2Provider(poll=0.1)
    inst = provider.launch(LaunchSpec(name="zoned", image=aws.image, ssh_public_key=keys.generate().public,
                                      instance_type="t3.large", tags={"vmlab:run": "zone-test"}))
    try:
        (raw,) = [i for r in aws.ec2.describe_instances(InstanceIds=[inst.id])["Reservations"] for i in r["Instances"]]
        assert raw["Placement"]["AvailabilityZone"] == "us-east-1f"
    finally:
        provider.terminate(inst.id)


def test_up_dry_run_prints_the_plan_and_creates_nothing(aws_faults: FaultProxy, moto_server: MotoServer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMLAB_SSH_CIDR", "203.0.113.7/32")
    no_ssh_beyond_loopback(monkeypatch)
    direct = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_server.endpoint)
    seeded = seed(direct)
    before = vmlab_resources(direct)
    args = ["up", "gpu", "--provider", "ec2", "--image", seeded.image, "--type", "g4dn.xlarge", "--spot",
            "--max-hours", "8", "--dry-run"]
    text = run_vmlab(*args)
    assert text.exit_code == 0, text.output
    assert "dry run: `vmlab up` would launch lab gpu; nothing was created" in text.stdout
    assert "instance: g4dn.xlarge in us-east-1" in text.stdout and "4 vCPU, 16 GiB, 1x NVIDIA T4" in text.stdout
    assert "on-demand ~$0.526/h" in text.stdout and "hard stop after 8 h" in text.stdout
    assert "security group" in text.stdout and "TCP 22 from 203.0.113.7/32 only" in text.stdout
    assert "vCPU quota 'All G and VT Spot Instance Requests' (L-3819A6DF)" in text.stdout
    doc = json.loads(run_vmlab(*args, "--json").stdout)
    assert doc["dry_run"] is True and doc["action"] == "launch"
    plan = doc["launch"]
    assert (plan["instance_type"], plan["vcpus"], plan["gpus"], plan["spot"]) == ("g4dn.xlarge", 4,
                                                                                  "1x NVIDIA T4", True)
    (image,) = direct.describe_images(ImageIds=[seeded.image])["Images"]
    root_gb = image["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"]
    assert plan["on_demand_hourly"] == 0.526 and plan["volume_gb"] == root_gb and plan["image"] == seeded.image
    assert vmlab_resources(direct) == before
    assert not [c for c in aws_faults.calls if c.startswith(CREATING)], aws_faults.calls


def test_bake_dry_run_and_its_checks(aws: Seeded) -> None:
    before = vmlab_resources(aws.ec2)
    ok = run_vmlab("bake", "--provider", "ec2", "--base", aws.image, "--force", "--builder-type", "t3.xlarge",
                   "--json", "--dry-run")
    assert ok.exit_code == 0, ok.output
    doc = json.loads(ok.stdout)
    assert doc["action"] == "bake" and doc["launch"]["instance_type"] == "t3.xlarge"
    assert doc["launch"]["on_demand_hourly"] == 0.1664 and doc["launch"]["vcpus"] == 4
    bad = run_vmlab("bake", "--provider", "ec2", "--base", aws.image, "--force", "--volume-size", "2", "--dry-run")
    assert_one_line_bad_input(bad, "volume size 2 GB is smaller")
    assert vmlab_resources(aws.ec2) == before


AZURE_SAS = "https://acct.blob.core.windows.net/labs/alice?sv=1&sig=SECRET"


def test_up_dry_run_shows_no_sas_token_and_no_iam_role_for_azure(aws: Seeded) -> None:
    args = ["up", "az", "--provider", "ec2", "--image", aws.image, "--sync", AZURE_SAS, "--dry-run"]
    text, doc = run_vmlab(*args), run_vmlab(*args, "--json")
    assert text.exit_code == 0 and doc.exit_code == 0, text.output
    assert "SECRET" not in text.output + doc.output and "labs/alice?…" in text.stdout
    assert "IAM role" not in text.stdout and "bucket access" not in json.loads(doc.stdout)
