"""`vmlab share-ami` against moto: launch and volume permissions for accounts, organizations, OUs and everyone,
region copies (encrypted, tagged, shared, reused on a second run, removed when the copy fails or is
interrupted), refusals that change nothing, and the warning about snapshots other accounts cannot use.

The image under test is made with vmlab's own provider (launch + create_image); boto3 only seeds a base AMI and
reads permissions back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from harness.drivers.ec2cli import register, run_vmlab
from harness.emulators.moto import MotoServer
from harness.faults.awsfaults import FaultProxy
from vmlab import keys
from vmlab.providers.base import LaunchSpec
from vmlab.providers.ec2 import Ec2Provider

pytestmark = pytest.mark.moto

ORG = "arn:aws:organizations::111122223333:organization/o-abcdef1234"
OU = "arn:aws:organizations::111122223333:ou/o-abcdef1234/ou-ab12-cdef5678"
A1, A2 = "111122223333", "444455556666"
ROOT = Path(__file__).resolve().parents[2]


def bake_image(ec2: Any) -> tuple[str, list[str]]:
    """An image as `vmlab bake` leaves it (tagged image and snapshots); returns (image id, snapshot ids)."""
    base = register(ec2, "debian-12-amd64-20240601")
    provider = Ec2Provider(poll=0.05, timeout=30.0)
    inst = provider.launch(LaunchSpec(name="builder", image=base, ssh_public_key=keys.generate("t").public,
                                      tags={"vmlab:run": "bake-5a5a", "vmlab:recipe-hash": "ab12"}))
    image = provider.create_image(inst.id, "vmlab-lab-ab12", {"vmlab:run": "bake-5a5a", "vmlab:recipe-hash": "ab12"})
    provider.terminate(inst.id)
    raw = ec2.describe_images(ImageIds=[image.id])["Images"][0]
    return image.id, [m["Ebs"]["SnapshotId"] for m in raw["BlockDeviceMappings"] if "Ebs" in m]


def permissions(ec2: Any, image: str, snapshots: list[str]) -> tuple[list[dict[str, str]], list[list[dict[str, str]]]]:
    launch = ec2.describe_image_attribute(ImageId=image, Attribute="launchPermission")["LaunchPermissions"]
    volume = [ec2.describe_snapshot_attribute(SnapshotId=s, Attribute="createVolumePermission")[
        "CreateVolumePermissions"] for s in snapshots]
    return launch, volume


@pytest.fixture()
def baked(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str, list[str]]:
    moto_server.reset()
    monkeypatch.setenv("VMLAB_SSH_CIDR", "203.0.113.7/32")
    ec2 = boto3.client("ec2", region_name="us-east-1")
    image, snapshots = bake_image(ec2)
    return ec2, image, snapshots


def test_share_with_accounts_org_and_ou_then_revoke(baked: tuple[Any, str, list[str]]) -> None:
    ec2, image, snapshots = baked
    result = run_vmlab("share-ami", "vmlab-lab-ab12", "--account", A1, "--account", A2, "--org", ORG, "--ou", OU,
                       "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    launch, volume = permissions(ec2, image, snapshots)
    expected = [{"UserId": A1}, {"UserId": A2}, {"OrganizationArn": ORG}, {"OrganizationalUnitArn": OU}]
    assert sorted(map(str, launch)) == sorted(map(str, expected))
    assert sorted(map(str, doc["images"][0]["launch_permissions"])) == sorted(map(str, expected))
    # organizations cannot be named in a snapshot permission: the accounts can
    assert snapshots and all(sorted(p["UserId"] for p in v) == [A1, A2] for v in volume)

    result = run_vmlab("share-ami", image, "--account", A2, "--org", ORG, "--remove")
    assert result.exit_code == 0, result.output
    launch, volume = permissions(ec2, image, snapshots)
    assert sorted(map(str, launch)) == sorted(map(str, [{"UserId": A1}, {"OrganizationalUnitArn": OU}]))
    assert all([p["UserId"] for p in v] == [A1] for v in volume)


def test_public_needs_yes(baked: tuple[Any, str, list[str]]) -> None:
    ec2, image, snapshots = baked
    refused = run_vmlab("share-ami", image, "--public")
    assert refused.exit_code == 2 and "add --yes" in refused.stderr
    assert permissions(ec2, image, snapshots) == ([], [[] for _ in snapshots])
    result = run_vmlab("share-ami", image, "--public", "--yes")
    assert result.exit_code == 0, result.output
    assert permissions(ec2, image, snapshots) == ([{"Group": "all"}], [[{"Group": "all"}] for _ in snapshots])


@pytest.mark.parametrize(("args", "fragment"), [
    (["--account", "12345"], "not an AWS account id: 12345"),
    (["--account", "1111222233334"], "not an AWS account id"),
    (["--account", A1, "--account", "abcdefghijkl"], "not an AWS account id: abcdefghijkl"),
    ([], "nobody to share with"),
    (["--org", "o-abcdef1234"], "not an organization ARN"),
    (["--ou", ORG], "not an organizational unit ARN"),
    (["--account", A1, "--regions", "eu-west-1,mars-north-1"], "unknown AWS region(s): mars-north-1"),
    (["--account", A1, "--regions", "us-east-1"], "already in us-east-1"),
    (["--account", A1, "--kms-key", "alias/lab"], "--kms-key applies to the copies"),
    (["--account", A1, "--regions", "eu-west-1", "--kms-key", "arn:aws:kms:us-west-2:123456789012:key/x"],
     "is for us-west-2, which is not in --regions"),
    (["--account", A1, "--region", "mars-north-1"], "unknown AWS region 'mars-north-1'"),
    (["--account", A1, "--regions", "eu-west-1", "--kms-key", "alias/missing"],
     "KMS key alias/missing not found in eu-west-1"),
])
def test_bad_input_changes_nothing(baked: tuple[Any, str, list[str]], args: list[str], fragment: str) -> None:
    ec2, image, snapshots = baked
    result = run_vmlab("share-ami", image, *args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], result.output
    assert permissions(ec2, image, snapshots) == ([], [[] for _ in snapshots])
    assert boto3.client("ec2", region_name="eu-west-1").describe_images(Owners=["self"])["Images"] == []


@pytest.mark.parametrize(("image", "fragment"), [
    ("ami-xyz", "malformed AMI id 'ami-xyz'"),
    ("ami-0123456789abcdef0", "not found in us-east-1"),
    ("no-such-image", "not found in us-east-1"),
])
def test_missing_or_malformed_image(baked: tuple[Any, str, list[str]], image: str, fragment: str) -> None:
    result = run_vmlab("share-ami", image, "--account", A1)
    assert result.exit_code == 2 and fragment in result.stderr, result.output


def test_foreign_image_is_refused(baked: tuple[Any, str, list[str]]) -> None:
    ec2 = baked[0]
    foreign = next(i for i in ec2.describe_images(Owners=["amazon"])["Images"] if i.get("State") == "available")
    result = run_vmlab("share-ami", foreign["ImageId"], "--account", A1)
    assert result.exit_code == 2 and "belongs to account" in result.stderr and "only the owner" in result.stderr


def test_copies_to_regions_encrypted_tagged_shared_and_reused(baked: tuple[Any, str, list[str]]) -> None:
    ec2, image, _ = baked
    kms = boto3.client("kms", region_name="eu-west-1")
    key = kms.create_key()["KeyMetadata"]
    kms.create_alias(AliasName="alias/lab", TargetKeyId=key["KeyId"])
    result = run_vmlab("share-ami", image, "--account", A1, "--regions", "eu-west-1,us-west-2",
                       "--kms-key", "eu-west-1=alias/lab", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [i["region"] for i in doc["images"]] == ["us-east-1", "eu-west-1", "us-west-2"]
    for entry in doc["images"][1:]:
        assert entry["copied"] is True
        there = boto3.client("ec2", region_name=entry["region"])
        (raw,) = there.describe_images(ImageIds=[entry["image"]])["Images"]
        tags = {t["Key"]: t["Value"] for t in raw["Tags"]}
        assert tags["vmlab:recipe-hash"] == "ab12" and tags["vmlab:copied-from"] == f"us-east-1/{image}"
        assert there.describe_image_attribute(ImageId=raw["ImageId"], Attribute="launchPermission")[
            "LaunchPermissions"] == [{"UserId": A1}]
        for m in raw["BlockDeviceMappings"]:
            snap = there.describe_snapshots(SnapshotIds=[m["Ebs"]["SnapshotId"]])["Snapshots"][0]
            assert {t["Key"]: t["Value"] for t in snap["Tags"]}["vmlab:copied-from"] == f"us-east-1/{image}"

    again = run_vmlab("share-ami", image, "--account", A2, "--regions", "eu-west-1", "--json")
    assert again.exit_code == 0, again.output
    entry = json.loads(again.stdout)["images"][1]
    assert entry["copied"] is False and entry["image"] == doc["images"][1]["image"]
    west = boto3.client("ec2", region_name="eu-west-1")
    assert len(west.describe_images(Owners=["self"])["Images"]) == 1

    revoked = run_vmlab("share-ami", image, "--account", A1, "--regions", "eu-west-1", "--remove")
    assert revoked.exit_code == 0, revoked.output
    assert west.describe_image_attribute(ImageId=entry["image"], Attribute="launchPermission")[
        "LaunchPermissions"] == [{"UserId": A2}]


def test_a_failed_copy_is_removed(aws_faults: FaultProxy, moto_server: MotoServer,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMLAB_SSH_CIDR", "203.0.113.7/32")
    direct = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_server.endpoint)
    image, _ = bake_image(boto3.client("ec2", region_name="us-east-1"))
    aws_faults.reset()
    aws_faults.fail("CreateTags", code="InternalError", status=500)  # the copy's tags: right after CopyImage
    result = run_vmlab("share-ami", image, "--account", A1, "--regions", "eu-west-1")
    assert result.exit_code == 1, result.output
    assert "CopyImage" in aws_faults.calls and "DeregisterImage" in aws_faults.calls
    west = boto3.client("ec2", region_name="eu-west-1", endpoint_url=moto_server.endpoint)
    assert west.describe_images(Owners=["self"])["Images"] == []
    assert direct.describe_image_attribute(ImageId=image, Attribute="launchPermission")["LaunchPermissions"] == [
        {"UserId": A1}]  # the source was shared before the copy began


def test_an_interrupted_copy_is_removed(baked: tuple[Any, str, list[str]]) -> None:
    """Ctrl-C while waiting for the copy (raised from the progress callback, which runs inside the wait)."""
    _, image, _ = baked

    def interrupt(_message: str, _fraction: float | None) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Ec2Provider(poll=0.05, timeout=30.0).copy_image_to(image, "eu-west-1", progress=interrupt)
    west = boto3.client("ec2", region_name="eu-west-1")
    assert west.describe_images(Owners=["self"])["Images"] == []


def test_no_key_warning_for_snapshots_others_can_use(baked: tuple[Any, str, list[str]]) -> None:
    """moto makes every image snapshot unencrypted (it ignores Encrypted/KmsKeyId there), so only the quiet case
    can be shown against it; the warning itself is unit-tested (tests/unit/test_ec2_cli_logic.py)."""
    result = run_vmlab("share-ami", baked[1], "--account", A1)
    assert result.exit_code == 0 and "warning" not in result.stderr, result.output


def test_images_ls_and_rm(baked: tuple[Any, str, list[str]]) -> None:
    ec2, image, snapshots = baked
    listed = run_vmlab("images", "ls", "--provider", "ec2", "--region", "us-east-1", "--json")
    assert listed.exit_code == 0, listed.output
    assert [i["id"] for i in json.loads(listed.stdout)["images"]] == [image]
    assert run_vmlab("images", "ls", "--provider", "ec2", "--region", "eu-west-1", "--json").stdout.count(image) == 0
    bare = run_vmlab("images", "--provider", "ec2", "--json")  # `images` alone lists
    assert [i["id"] for i in json.loads(bare.stdout)["images"]] == [image]
    missing = run_vmlab("images", "rm", "ami-0123456789abcdef0", image, "--provider", "ec2")
    assert missing.exit_code == 2 and ec2.describe_images(ImageIds=[image])["Images"]  # nothing removed
    removed = run_vmlab("images", "rm", "vmlab-lab-ab12", "--provider", "ec2", "--json")
    assert removed.exit_code == 0 and json.loads(removed.stdout)["removed"] == [image]
    assert ec2.describe_images(Owners=["self"], Filters=[{"Name": "image-id", "Values": [image]}])["Images"] == []
    assert ec2.describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": snapshots}])["Snapshots"] == []


def test_images_rm_refuses_what_vmlab_did_not_make(baked: tuple[Any, str, list[str]]) -> None:
    """An untagged AMI of the account, one carrying only a look-alike tag, and a public AMI of another owner are
    refused with one line each; with a vmlab image in the same call, nothing at all is deleted."""
    ec2, image, snapshots = baked
    untagged = register(ec2, "my-own-golden-image")
    lookalike = register(ec2, "looks-like-vmlab", tags={"vmlab:recipe-hash": "ab12"})
    foreign = next(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"]
                   if i.get("State") == "available")
    for other, fragment in ((untagged, "was not made by vmlab"), (lookalike, "was not made by vmlab"),
                            (foreign, "belongs to account")):
        result = run_vmlab("images", "rm", image, other, "--provider", "ec2")
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert f"refusing to delete: image {other}" in lines[0] and fragment in lines[0], lines[0]
        assert "only the images it made in this account" in lines[0]
    kept = {i["ImageId"] for i in ec2.describe_images(ImageIds=[image, untagged, lookalike, foreign])["Images"]}
    assert kept == {image, untagged, lookalike, foreign}
    assert len(ec2.describe_snapshots(SnapshotIds=snapshots)["Snapshots"]) == len(snapshots)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_a_region_copy_removes_the_copy(aws_faults: FaultProxy, moto_server: MotoServer,
                                                        monkeypatch: pytest.MonkeyPatch, sig: signal.Signals) -> None:
    """SIGTERM or SIGHUP to `share-ami --regions` while the new copy is being tagged: the copy is deregistered
    (with its snapshots) before vmlab exits 128 + signal."""
    monkeypatch.setenv("VMLAB_SSH_CIDR", "203.0.113.7/32")
    image, _ = bake_image(boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_server.endpoint))
    aws_faults.reset()
    aws_faults.delay("CreateTags", 60, nth=1)  # the copy's tags, right after CopyImage
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "vmlab", "share-ami", image, "--account", A1, "--regions",
                             "eu-west-1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    west = boto3.client("ec2", region_name="eu-west-1", endpoint_url=moto_server.endpoint)
    try:
        assert aws_faults.wait_for("CreateTags", 1, timeout=60)
        (copy,) = west.describe_images(Owners=["self"])["Images"]
        snapshots = [m["Ebs"]["SnapshotId"] for m in copy["BlockDeviceMappings"] if "Ebs" in m]
        time.sleep(0.3)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, err
    assert "DeregisterImage" in aws_faults.calls
    assert west.describe_images(Owners=["self"])["Images"] == []
    assert snapshots and west.describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": snapshots}])[
        "Snapshots"] == []
