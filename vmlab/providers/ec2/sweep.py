"""What `vmlab gc` finds and removes in one EC2 region: vmlab-tagged resources nothing uses any more.

A leftover is one of: a builder instance (`vmlab:run=bake-*`) still alive, a key pair or security group whose
launch has no live instance, an unattached vmlab volume, a vmlab snapshot no image uses, an image that failed.
Lab instances (`vmlab:lab`) are listed too but only removable when the caller says so (`--labs`), and then only
those this machine has no record of. Images that are available, and their snapshots, are products: never touched.

A launch still in progress (key pair and group made, instance not yet) looks like a leftover for a few seconds:
run gc when no bake or up is running in the region.

Example::

    sweep = Sweep(provider)
    found = sweep.find(recorded_instances={"i-0abc..."})
    removed = sweep.remove([f for f in found if f.removable])
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from vmlab.providers.capabilities import Leftover
from vmlab.providers.ec2.amis import COPY_TAG
from vmlab.providers.ec2.client import error_code, translated
from vmlab.providers.ec2.records import LAUNCH_TAG, SOURCE_TAG, snapshot_ids, tag_dict

if TYPE_CHECKING:
    from vmlab.providers.ec2.provider import Ec2Provider

#: any of these tag keys marks a resource as vmlab's
VMLAB_KEYS = (LAUNCH_TAG, "vmlab:run", "vmlab:lab", SOURCE_TAG, COPY_TAG, "vmlab:recipe-hash")
LIVE = ["pending", "running", "stopping", "stopped"]


def _tagged(call: Any, field: str, **kw: Any) -> list[dict[str, Any]]:
    """Resources carrying any vmlab tag key (one query per key: moto ANDs values of one tag-key filter)."""
    found: dict[str, dict[str, Any]] = {}
    id_key = {"Volumes": "VolumeId", "Snapshots": "SnapshotId", "Images": "ImageId", "KeyPairs": "KeyName",
              "SecurityGroups": "GroupId"}[field]
    for key in VMLAB_KEYS:
        for item in call(Filters=[{"Name": "tag-key", "Values": [key]}], **kw).get(field, []):
            found[item[id_key]] = item
    return list(found.values())


class Sweep:
    """Find and remove leftovers with one provider's EC2 client (its region)."""

    def __init__(self, provider: Ec2Provider) -> None:
        self.provider = provider
        self.ec2 = provider.aws.ec2

    def find(self, recorded_instances: Iterable[str] = (), labs: bool = False) -> list[Leftover]:
        with translated("look for leftovers"):
            return self._find(set(recorded_instances), labs)

    def _find(self, recorded: set[str], labs: bool) -> list[Leftover]:
        ec2 = self.ec2
        pages = ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "tag-key", "Values": [LAUNCH_TAG]}, {"Name": "instance-state-name", "Values": LIVE}])
        instances = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
        found: list[Leftover] = []
        for inst in instances:
            tags = tag_dict(inst.get("Tags"))
            name, state = tags.get("Name", ""), inst.get("State", {}).get("Name", "")
            if "vmlab:lab" in tags:
                if inst["InstanceId"] in recorded:
                    found.append(Leftover("lab", inst["InstanceId"], tags["vmlab:lab"],
                                          f"lab recorded on this machine ({state}); remove with `vmlab down`", False))
                else:
                    found.append(Leftover("lab", inst["InstanceId"], tags["vmlab:lab"],
                                          f"lab with no record on this machine ({state})", labs))
            elif tags.get("vmlab:run", "").startswith("bake-"):
                found.append(Leftover("instance", inst["InstanceId"], name,
                                      f"builder of {tags['vmlab:run']} still {state}"))
        # instances being removed now free their key pairs and groups too
        doomed = {f.id for f in found if f.removable}
        live_launches = {tag_dict(i.get("Tags")).get(LAUNCH_TAG) for i in instances if i["InstanceId"] not in doomed}
        going = {tag_dict(i.get("Tags")).get(LAUNCH_TAG): i["InstanceId"] for i in instances
                 if i["InstanceId"] in doomed}

        def why(launch: str | None) -> str:
            return f"of {going[launch]}, removed with it" if launch in going else f"launch {launch} has no instance"

        for group in _tagged(ec2.describe_security_groups, "SecurityGroups"):
            launch = tag_dict(group.get("Tags")).get(LAUNCH_TAG)
            if launch not in live_launches:
                found.append(Leftover("security-group", group["GroupId"], group.get("GroupName", ""),
                                      why(launch)))
        for pair in _tagged(ec2.describe_key_pairs, "KeyPairs"):
            launch = tag_dict(pair.get("Tags")).get(LAUNCH_TAG)
            if launch not in live_launches:
                found.append(Leftover("key-pair", pair["KeyName"], pair["KeyName"],
                                      why(launch)))
        for vol in _tagged(ec2.describe_volumes, "Volumes"):
            if vol.get("State") == "available" and not vol.get("Attachments"):
                found.append(Leftover("volume", vol["VolumeId"], tag_dict(vol.get("Tags")).get("Name", ""),
                                      f"unattached {vol.get('Size', '?')} GiB volume"))
        images = ec2.describe_images(Owners=["self"]).get("Images", [])
        used = {snap for image in images for snap in snapshot_ids(image)}
        for image in _tagged(ec2.describe_images, "Images", Owners=["self"]):
            made = {SOURCE_TAG, COPY_TAG} & set(tag_dict(image.get("Tags")))  # never an image vmlab did not make
            if made and image.get("State") in ("failed", "invalid", "error"):
                found.append(Leftover("image", image["ImageId"], image.get("Name", ""),
                                      f"image {image.get('State')}"))
                used -= set(snapshot_ids(image))
        for snap in _tagged(ec2.describe_snapshots, "Snapshots", OwnerIds=["self"]):
            if snap["SnapshotId"] not in used:
                found.append(Leftover("snapshot", snap["SnapshotId"], tag_dict(snap.get("Tags")).get("Name", ""),
                                      "no image uses it"))
        return found

    def remove(self, leftovers: Iterable[Leftover]) -> tuple[list[Leftover], list[tuple[Leftover, str]]]:
        """Remove them, instances first (their groups and keys are freed then); keep going past errors.
        Returns (removed, [(not removed, why)])."""
        order = ("instance", "lab", "image", "security-group", "key-pair", "volume", "snapshot")
        removed: list[Leftover] = []
        failed: list[tuple[Leftover, str]] = []
        for item in sorted(leftovers, key=lambda f: order.index(f.kind)):
            if not item.removable:
                continue
            try:
                with translated(f"remove {item.kind} {item.id}"):
                    self._remove(item)
                removed.append(item)
            except Exception as exc:  # one stuck resource must not keep the others
                failed.append((item, str(exc)))
        return removed, failed

    def _remove(self, item: Leftover) -> None:
        p, ec2 = self.provider, self.ec2
        if item.kind in ("instance", "lab"):
            p._terminate_and_wait(item.id)
        elif item.kind == "image":
            p.amis.delete(item.id)  # refuses an image not vmlab's or not this account's
        elif item.kind == "security-group":
            p._delete_group(item.id)
        elif item.kind == "key-pair":
            ec2.delete_key_pair(KeyName=item.id)  # by name: moto ignores KeyPairId
        elif item.kind == "volume":
            ec2.delete_volume(VolumeId=item.id)
        elif item.kind == "snapshot":
            try:
                ec2.delete_snapshot(SnapshotId=item.id)
            except Exception as exc:
                if error_code(exc) != "InvalidSnapshot.NotFound":
                    raise
