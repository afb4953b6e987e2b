"""`vmlab gc` against moto: the test arranges leftovers (some through vmlab's provider, stray ones through boto3
as a crashed run would leave them), then gc must list them, remove exactly those after --yes, and leave the
products alone: images and their snapshots, labs recorded on this machine, resources vmlab did not tag.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from harness.drivers.ec2cli import register, run_vmlab, vmlab_resources
from harness.emulators.moto import MotoServer
from vmlab import keys
from vmlab.providers.base import Instance, LaunchSpec
from vmlab.providers.ec2 import Ec2Provider
from vmlab.state import LabRecord, LabStore

pytestmark = pytest.mark.moto


def tags(**kv: str) -> list[dict[str, Any]]:
    return [{"Key": k.replace("_", ":", 1), "Value": v} for k, v in kv.items()]


def record(inst: Instance, name: str) -> None:
    LabStore().put(LabRecord(name=name, provider="ec2", instance_id=inst.id, image=inst.image, user=inst.user,
                             key_file="/nonexistent", host_key="", token="", host=inst.host, region="us-east-1"))


@pytest.fixture()
def arranged(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    moto_server.reset()
    monkeypatch.setenv("VMLAB_SSH_CIDR", "203.0.113.7/32")
    ec2 = boto3.client("ec2", region_name="us-east-1")
    base = register(ec2, "debian-12-amd64-20240601")
    provider = Ec2Provider(poll=0.05, timeout=30.0)
    pub = keys.generate("t").public

    # products: a baked image (its builder terminated) and a recorded lab
    builder = provider.launch(LaunchSpec(name="b", image=base, ssh_public_key=pub, tags={"vmlab:run": "bake-0001"}))
    image = provider.create_image(builder.id, "vmlab-lab-ab12", {"vmlab:run": "bake-0001", "vmlab:recipe-hash": "ab"})
    provider.terminate(builder.id)
    lab = provider.launch(LaunchSpec(name="lab", image=image.id, ssh_public_key=pub,
                                     tags={"vmlab:lab": "lab", "vmlab:run": "up-0001"}))
    record(lab, "lab")
    # an unrecorded lab (another machine's, or a lost record): listed, kept unless --labs
    orphan = provider.launch(LaunchSpec(name="other", image=image.id, ssh_public_key=pub,
                                        tags={"vmlab:lab": "other", "vmlab:run": "up-0002"}))
    products = vmlab_resources(ec2)
    # what moto keeps after terminate although AWS deletes it (DeleteOnTermination): the builder's root volume
    stale_volumes = {v["VolumeId"] for v in ec2.describe_volumes(Filters=[
        {"Name": "status", "Values": ["available"]}, {"Name": "tag-key", "Values": ["vmlab:launch"]}])["Volumes"]}

    # leftovers of a crashed bake: builder alive, its group and key, plus a group and key whose launch is gone
    stray = provider.launch(LaunchSpec(name="b2", image=base, ssh_public_key=pub, tags={"vmlab:run": "bake-0002"}))
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    group = ec2.create_security_group(GroupName="vmlab-bake-dead", Description="x", VpcId=vpc, TagSpecifications=[
        {"ResourceType": "security-group", "Tags": tags(vmlab_launch="dead0001", vmlab_run="bake-dead")}])["GroupId"]
    ec2.import_key_pair(KeyName="vmlab-bake-dead", PublicKeyMaterial=pub.encode(), TagSpecifications=[
        {"ResourceType": "key-pair", "Tags": tags(vmlab_launch="dead0001")}])
    volume = ec2.create_volume(AvailabilityZone="us-east-1a", Size=8, TagSpecifications=[
        {"ResourceType": "volume", "Tags": tags(vmlab_run="bake-dead")}])["VolumeId"]
    snap = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    ec2.create_tags(Resources=[snap], Tags=[{"Key": "vmlab:source-instance", "Value": "i-0123456789abcdef0"}])
    # not vmlab's: must survive
    foreign_volume = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    foreign_group = ec2.create_security_group(GroupName="theirs", Description="x", VpcId=vpc)["GroupId"]
    stray_raw = ec2.describe_instances(InstanceIds=[stray.id])["Reservations"][0]["Instances"][0]
    stray_group = stray_raw["SecurityGroups"][0]["GroupId"]
    return {"ec2": ec2, "products": products, "image": image.id, "lab": lab.id, "orphan": orphan.id,
            "leftovers": {stray.id, stray_group, stray_raw["KeyName"], group, "vmlab-bake-dead", volume, snap,
                          *stale_volumes},
            "foreign": (foreign_volume, foreign_group)}


def existing(ec2: Any) -> set[str]:
    found = vmlab_resources(ec2)
    return set().union(*found.values())


def test_gc_lists_without_yes_then_removes_exactly_the_leftovers(arranged: dict[str, Any]) -> None:
    ec2 = arranged["ec2"]
    before = existing(ec2)
    listed = run_vmlab("gc", "--json")  # no terminal, no --yes: list only
    assert listed.exit_code == 0, listed.output
    doc = json.loads(listed.stdout)
    assert doc["removed"] == [] and existing(ec2) == before
    removable = {f["id"] for f in doc["leftovers"] if f["removable"]}
    assert removable == arranged["leftovers"]
    kept = {f["id"]: f for f in doc["leftovers"] if not f["removable"]}
    assert set(kept) == {arranged["lab"], arranged["orphan"]}
    assert "vmlab down" in kept[arranged["lab"]]["reason"] and "no record" in kept[arranged["orphan"]]["reason"]

    human = run_vmlab("gc")
    assert human.exit_code == 0 and "pass --yes to remove them" in human.stdout
    assert arranged["image"] in before and all(i in human.stdout for i in arranged["leftovers"])

    swept = run_vmlab("gc", "--yes", "--json")
    assert swept.exit_code == 0, swept.output
    assert set(json.loads(swept.stdout)["removed"]) == arranged["leftovers"]
    after = vmlab_resources(ec2)
    products = arranged["products"]
    assert after["images"] == products["images"] and after["snapshots"] == products["snapshots"]
    assert after["instances"] == products["instances"] == {arranged["lab"], arranged["orphan"]}
    assert after["key_pairs"] == products["key_pairs"]
    assert after["groups"] - {arranged["foreign"][1]} == products["groups"]
    foreign_volume, foreign_group = arranged["foreign"]
    assert ec2.describe_volumes(VolumeIds=[foreign_volume])["Volumes"]
    assert ec2.describe_security_groups(GroupIds=[foreign_group])["SecurityGroups"]

    again = run_vmlab("gc", "--yes", "--json")
    assert json.loads(again.stdout)["removed"] == []


def test_gc_labs_removes_only_unrecorded_labs(arranged: dict[str, Any]) -> None:
    ec2 = arranged["ec2"]
    assert run_vmlab("gc", "--yes").exit_code == 0
    orphan_raw = ec2.describe_instances(InstanceIds=[arranged["orphan"]])["Reservations"][0]["Instances"][0]
    result = run_vmlab("gc", "--yes", "--labs", "--json")
    assert result.exit_code == 0, result.output
    removed = set(json.loads(result.stdout)["removed"])
    assert arranged["orphan"] in removed and arranged["lab"] not in removed
    assert orphan_raw["KeyName"] in removed and orphan_raw["SecurityGroups"][0]["GroupId"] in removed
    live = vmlab_resources(ec2)["instances"]
    assert live == {arranged["lab"]}


def test_gc_in_an_unknown_region_is_bad_input(moto_server: MotoServer) -> None:
    result = run_vmlab("gc", "--region", "mars-north-1")
    assert result.exit_code == 2 and "unknown AWS region 'mars-north-1'" in result.stderr
