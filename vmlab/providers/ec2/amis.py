"""AMIs vmlab makes: create (wait until available, tag image and snapshots), find, list, delete, share.

An image is only as private as its snapshots: deleting deregisters the AMI and deletes its snapshots, sharing
grants both the launch permission and each snapshot's createVolumePermission.

Example::

    amis = Amis(Aws(), poll=15.0, timeout=3600.0)
    raw = amis.create("i-0abc...", "lab-v1", {"vmlab:recipe-hash": "ab12"}, progress)
    amis.share(raw["ImageId"], ("123456789012",))
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from vmlab.errors import BadInput, HostError
from vmlab.interrupts import ctrl_c_ignored, hold_signals
from vmlab.providers.base import Progress
from vmlab.providers.ec2.bases import USER_TAG, check_ami_id
from vmlab.providers.ec2.client import Aws, error_code
from vmlab.providers.ec2.records import SOURCE_TAG, snapshot_ids, tag_dict, tag_filters, tag_list, tag_specs
from vmlab.providers.ec2.sharing import Grantees, check_accounts, unshareable_snapshots

__all__ = ["Amis", "check_accounts", "check_image_name", "COPY_TAG"]

#: on region copies vmlab makes: "REGION/ami-..." of the source, so a second copy to that region is found, not made
COPY_TAG = "vmlab:copied-from"

log = logging.getLogger("vmlab.providers.ec2")

IMAGE_NAME_RE = re.compile(r"^[A-Za-z0-9()\[\] ./\-'@_]{3,128}$")


def check_image_name(name: str) -> str:
    if not IMAGE_NAME_RE.match(name):
        raise BadInput(f"image name {name!r} is not valid for EC2",
                       "use 3-128 letters, digits, spaces and ()[]./-'@_")
    return name


def _snapshot_progress(ec2: Any, snapshots: list[str]) -> float | None:
    """Mean progress of the image's snapshots (EC2 reports none for the AMI itself)."""
    if not snapshots:
        return None
    found = ec2.describe_snapshots(SnapshotIds=snapshots).get("Snapshots", [])
    values = [float(str(s.get("Progress", "0%")).rstrip("%") or 0) for s in found]
    return sum(values) / len(values) / 100 if values else None


class Amis:
    """The image verbs of the ec2 provider over one region's EC2 client."""

    def __init__(self, aws: Aws, poll: float, timeout: float) -> None:
        self.aws = aws
        self.poll = poll
        self.timeout = timeout

    def raw(self, image: str) -> dict[str, Any] | None:
        """An image by id (any owner) or by name (yours; ambiguous names are refused); None when missing."""
        ec2 = self.aws.ec2
        if image.startswith("ami-"):
            check_ami_id(image)
            try:
                found = ec2.describe_images(ImageIds=[image]).get("Images", [])
            except Exception as exc:
                if error_code(exc) in ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"):
                    return None
                raise
        else:
            found = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [image]}]).get(
                "Images", [])
            if len(found) > 1:
                raise BadInput(f"{len(found)} images are named {image!r}: {', '.join(i['ImageId'] for i in found)}",
                               "name the image by its id")
        return dict(found[0]) if found else None

    def shared_with(self, image_id: str) -> tuple[str, ...]:
        perms = self.aws.ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")
        return tuple(p["UserId"] for p in perms.get("LaunchPermissions", []) if "UserId" in p)

    def matching(self, tags: Mapping[str, str] | None) -> list[dict[str, Any]]:
        """Your images carrying all of `tags` (default: every image vmlab made)."""
        filters = tag_filters(tags) if tags else [{"Name": "tag-key", "Values": [SOURCE_TAG]}]
        paginator = self.aws.ec2.get_paginator("describe_images")
        return [dict(i) for page in paginator.paginate(Owners=["self"], Filters=filters) for i in page["Images"]]

    def create(self, instance_id: str, name: str, tags: Mapping[str, str], progress: Progress) -> dict[str, Any]:
        """Snapshot an instance into an AMI (rebooting it for a consistent file system), wait until available,
        tag the image and its snapshots. If the wait fails or is interrupted, the half-made image is removed."""
        ec2 = self.aws.ec2
        check_image_name(name)
        found = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        if not found:
            raise BadInput(f"no instance {instance_id}", "list instances with `vmlab ls`")
        instance_tags = tag_dict(found[0]["Instances"][0].get("Tags"))
        all_tags = {**tags, SOURCE_TAG: instance_id, "Name": name}
        if USER_TAG in instance_tags:
            all_tags[USER_TAG] = instance_tags[USER_TAG]
        image_id: str | None = None
        try:
            # tagged by the create call itself, so `gc` can find it even if a signal or a crash comes right after
            image_id = str(ec2.create_image(InstanceId=instance_id, Name=name, NoReboot=False,
                                            Description=f"vmlab image {name} from {instance_id}",
                                            TagSpecifications=tag_specs(["image"], all_tags))["ImageId"])
            raw = self._wait_available(image_id, progress)
            snapshots = snapshot_ids(raw)
            if snapshots:
                # moto refuses snapshot tags in create_image's TagSpecifications; tagging after works everywhere
                ec2.create_tags(Resources=snapshots, Tags=tag_list(all_tags))
            done = self.raw(image_id) or raw  # with the snapshots' tags; failing here must not leak it either
            hold_signals()  # from here the caller's clean-up owns the image
            return done
        except BaseException:
            with ctrl_c_ignored():
                self._undo_create(image_id, name, instance_id)
            raise

    def _undo_create(self, image_id: str | None, name: str, instance_id: str) -> None:
        """Remove the image a failed `create` made. Its id is unknown when a signal came while create_image
        was in flight: then it is found by its name (unique per account) and removed only if it is ours."""
        if image_id is None:
            raw = self.raw(name)
            if raw is None or self.refusal(raw) or tag_dict(raw.get("Tags")).get(SOURCE_TAG) != instance_id:
                return
            image_id = str(raw["ImageId"])
        self.delete(image_id, made_now=True)

    def _wait_available(self, image_id: str, progress: Progress) -> dict[str, Any]:
        ec2 = self.aws.ec2
        deadline = time.monotonic() + self.timeout
        while True:
            raw = self.raw(image_id)
            state = raw.get("State", "pending") if raw else "pending"
            if raw is not None and state == "available":
                progress(f"image {image_id} available", 1.0)
                return raw
            if state in ("failed", "invalid", "deregistered", "error"):
                reason = (raw or {}).get("StateReason", {}).get("Message", "no reason given")
                raise HostError(f"image {image_id} is {state}: {reason}", "bake again; check the builder's disk")
            if time.monotonic() > deadline:
                raise HostError(f"image {image_id} still {state} after {self.timeout:.0f} s",
                                "EC2 is slow today; bake again later")
            progress(f"image {image_id} {state}", _snapshot_progress(ec2, snapshot_ids(raw or {})))
            time.sleep(self.poll)

    def refusal(self, raw: Mapping[str, Any]) -> str | None:
        """Why vmlab must not delete this image (None when it may): only images of this account that vmlab made
        (tagged by create_image or copy_from) are ever deregistered, never a base AMI, a public or shared one."""
        image_id = raw["ImageId"]
        account = str(self.aws.client("sts").get_caller_identity()["Account"])  # needs no permission
        if str(raw.get("OwnerId")) != account:
            return f"image {image_id} belongs to account {raw.get('OwnerId', '?')}, not to this one ({account})"
        tags = tag_dict(raw.get("Tags"))
        if not (SOURCE_TAG in tags or COPY_TAG in tags):
            return f"image {image_id} ({raw.get('Name', '')}) was not made by vmlab (no {SOURCE_TAG} tag)"
        return None

    def delete(self, image_id: str, made_now: bool = False) -> list[str]:
        """Deregister the image and delete its snapshots; a missing image is a no-op. Returns what was removed.
        BadInput for an image vmlab did not make in this account, unless `made_now` (the undo of this very
        process's create or copy, possibly before its tags were written)."""
        ec2 = self.aws.ec2
        raw = self.raw(check_ami_id(image_id))
        if raw is None:
            return []
        why = None if made_now else self.refusal(raw)
        if why is not None:
            raise BadInput(f"refusing to delete: {why}", "vmlab deletes only the images it made in this account")
        snapshots = snapshot_ids(raw)
        ec2.deregister_image(ImageId=image_id)
        removed = [image_id]
        for snap in snapshots:
            try:
                ec2.delete_snapshot(SnapshotId=snap)
                removed.append(snap)
            except Exception as exc:
                if error_code(exc) != "InvalidSnapshot.NotFound":
                    raise
        return removed

    def resolve(self, image: str) -> dict[str, Any]:
        """An image by id or name; BadInput when it does not exist here."""
        raw = self.raw(image)
        if raw is None:
            raise BadInput(f"image {image!r} not found in {self.aws.region}",
                           "list images with `vmlab images` (AMIs are regional: check --region)")
        return raw

    def share(self, image_id: str, who: Grantees | tuple[str, ...], remove: bool = False) -> dict[str, Any]:
        """Grant (or with `remove` revoke) launch permission on the image for `who`, and createVolumePermission on
        each of its snapshots for the accounts (and everyone when public; organizations cannot be named there)."""
        who = who if isinstance(who, Grantees) else Grantees(accounts=check_accounts(who))
        if who.empty:
            raise BadInput("nobody to share with", "pass --account 123456789012, --org ARN, --ou ARN or --public")
        ec2 = self.aws.ec2
        raw = self.resolve(image_id)
        key = "Remove" if remove else "Add"
        ec2.modify_image_attribute(ImageId=raw["ImageId"], LaunchPermission={key: who.launch_permissions()})
        volume_args = who.volume_permission_args()
        if volume_args:
            for snap in snapshot_ids(raw):
                ec2.modify_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission",
                                              OperationType=key.lower(), **volume_args)
        return raw

    def launch_permissions(self, image_id: str) -> list[dict[str, str]]:
        perms = self.aws.ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")
        return [dict(p) for p in perms.get("LaunchPermissions", [])]

    def default_key_snapshots(self, raw_image: Mapping[str, Any]) -> list[str]:
        """The image's encrypted snapshots whose KMS key is AWS-managed (aws/ebs) or not reported: other
        accounts cannot create volumes from those, so a cross-account share of the image would not launch."""
        snapshots = snapshot_ids(raw_image)
        if not snapshots:
            return []
        found = self.aws.ec2.describe_snapshots(SnapshotIds=snapshots).get("Snapshots", [])
        return unshareable_snapshots(found, self._key_manager)

    def _key_manager(self, key: str) -> str | None:
        try:
            return str(self.aws.client("kms").describe_key(KeyId=key)["KeyMetadata"].get("KeyManager"))
        except Exception as exc:
            if not error_code(exc):
                raise
            return None  # no kms:DescribeKey permission: a customer key we cannot read is not our concern

    def find_copy(self, source_region: str, source_id: str) -> dict[str, Any] | None:
        """A copy vmlab already made of the source image in this region (pending or available)."""
        found = self.matching({COPY_TAG: f"{source_region}/{source_id}"})
        live = [i for i in found if i.get("State") in ("pending", "available")]
        return live[0] if live else None

    def copy_from(self, source: Mapping[str, Any], source_region: str, kms_key: str | None,
                  progress: Progress) -> tuple[dict[str, Any], bool]:
        """Copy the image `source` (from `source_region`) into this client's region, encrypted (with `kms_key`
        when given), tagged like the source; wait until available. Returns (copy, made_now). A copy that fails or
        is interrupted before it is available is deregistered with its snapshots, so nothing half-made stays."""
        ec2 = self.aws.ec2
        existing = self.find_copy(source_region, source["ImageId"])
        if existing is not None:
            raw = self._wait_available(existing["ImageId"], progress)
            return raw, False
        tags = {k: v for k, v in tag_dict(source.get("Tags")).items() if not k.startswith("aws:")}
        tags[COPY_TAG] = f"{source_region}/{source['ImageId']}"
        args: dict[str, Any] = {"SourceImageId": source["ImageId"], "SourceRegion": source_region,
                                "Name": source.get("Name") or source["ImageId"], "Encrypted": True,
                                "Description": f"vmlab copy of {source['ImageId']} from {source_region}"}
        if kms_key:
            args["KmsKeyId"] = kms_key
        copy_id = ec2.copy_image(**args)["ImageId"]
        try:
            # tagged at once (moto ignores tags in CopyImage's TagSpecifications) so `gc` can find a stray copy
            ec2.create_tags(Resources=[copy_id], Tags=tag_list(tags))
            raw = self._wait_available(copy_id, progress)
            snapshots = snapshot_ids(raw)
            if snapshots:
                ec2.create_tags(Resources=snapshots, Tags=tag_list(tags))
        except BaseException:
            with ctrl_c_ignored():
                self.delete(copy_id, made_now=True)
            raise
        return self.raw(copy_id) or raw, True
