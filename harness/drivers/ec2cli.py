"""Helpers for tests that drive the `vmlab` command against moto: run it in-process, seed AMIs, and list
everything vmlab-tagged that exists (to prove that bad input created nothing and that gc removed exactly what
it should).

Example::

    result = run_vmlab("up", "--provider", "ec2", "--type", "nope.large")
    assert result.exit_code == 2 and vmlab_resources(ec2) == EMPTY
"""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner, Result

VMLAB_KEYS = ("vmlab:launch", "vmlab:run", "vmlab:lab", "vmlab:source-instance", "vmlab:copied-from",
              "vmlab:recipe-hash")
EMPTY: dict[str, set[str]] = {"instances": set(), "key_pairs": set(), "groups": set(), "volumes": set(),
                              "snapshots": set(), "images": set()}


def run_vmlab(*args: str, env: dict[str, str] | None = None) -> Result:
    from vmlab.cli import cli

    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def register(ec2: Any, name: str, size: int = 8, arch: str = "x86_64", tags: dict[str, str] | None = None) -> str:
    """A base AMI in moto (moto has none of Ubuntu's)."""
    image = str(ec2.register_image(
        Name=name, Architecture=arch, RootDeviceName="/dev/sda1", VirtualizationType="hvm",
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": size}}])["ImageId"])
    if tags:
        ec2.create_tags(Resources=[image], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    return image


def vmlab_resources(ec2: Any) -> dict[str, set[str]]:
    """Ids of live instances, key pairs, security groups, volumes, snapshots and images (own) carrying any
    vmlab tag key; key pairs and groups also when untagged (vmlab never creates those without tags, and no test
    setup does unless it says so)."""

    def tagged(call: Any, field: str, key: str, **kw: Any) -> set[str]:
        found: set[str] = set()
        for tag in VMLAB_KEYS:  # one query per key: moto ANDs the values of one tag-key filter
            for item in call(Filters=[{"Name": "tag-key", "Values": [tag]}], **kw)[field]:
                if item.get("State") not in ("deleted", "deregistered"):
                    found.add(item[key])
        return found

    reservations = ec2.describe_instances(Filters=[
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        {"Name": "tag-key", "Values": ["vmlab:launch"]}])["Reservations"]
    return {
        "instances": {i["InstanceId"] for r in reservations for i in r["Instances"]},
        "key_pairs": {k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]},
        "groups": {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]
                   if g["GroupName"] != "default"},
        "volumes": tagged(ec2.describe_volumes, "Volumes", "VolumeId"),
        "snapshots": tagged(ec2.describe_snapshots, "Snapshots", "SnapshotId", OwnerIds=["self"]),
        "images": tagged(ec2.describe_images, "Images", "ImageId", Owners=["self"]),
    }
