"""EC2's answers as vmlab's dataclasses, and vmlab's tags as EC2 wants them. Pure: no AWS calls here.

`VMLAB_EC2_SSH_HOST` / `VMLAB_EC2_SSH_PORT` replace the public address and port 22 in every Instance this
provider returns. They exist so tests (and users behind a bastion or port forward) can point the SSH steps at
another endpoint, e.g. a local sshd or QEMU VM while EC2 itself is moto.

Example::

    inst = to_instance(ec2.describe_instances(...)["Reservations"][0]["Instances"][0], os.environ)
    filters = tag_filters({"vmlab:lab": "lab", "vmlab:run": "*"})
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from vmlab.errors import BadInput
from vmlab.providers.base import Image, Instance
from vmlab.providers.ec2.bases import USER_TAG, login_user

PROVIDER = "ec2"
HOST_ENV = "VMLAB_EC2_SSH_HOST"
PORT_ENV = "VMLAB_EC2_SSH_PORT"
#: a host name or an IPv4/IPv6 address; never starting with "-" (it ends up in ssh's argv)
HOST_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:-]{0,252}$")
#: on every resource one launch creates (instance, volume, key pair, security group): ties them together
LAUNCH_TAG = "vmlab:launch"
#: added to the key pair and security group once the instance exists, so terminate finds them by instance id
INSTANCE_TAG = "vmlab:instance"
#: on images create_image makes: the instance they came from (also marks them as vmlab's)
SOURCE_TAG = "vmlab:source-instance"

_STATES = {"pending": "pending", "running": "running", "stopping": "stopping", "stopped": "stopped",
           "shutting-down": "terminated", "terminated": "terminated"}
_IMAGE_STATES = {"available": "available", "pending": "pending"}


def tag_dict(raw: Iterable[Mapping[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in raw or []}


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tag_specs(resource_types: Iterable[str], tags: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"ResourceType": r, "Tags": tag_list(tags)} for r in resource_types]


def tag_filters(wanted: Mapping[str, str] | None) -> list[dict[str, Any]]:
    """EC2 filters for a `match_tags` filter: "*" means the key with any value."""
    return [{"Name": "tag-key", "Values": [k]} if v == "*" else {"Name": f"tag:{k}", "Values": [v]}
            for k, v in (wanted or {}).items()]


def ssh_endpoint(public_ip: str | None, environ: Mapping[str, str]) -> tuple[str | None, int]:
    """Where the instance's sshd answers: the public address on port 22 unless the override variables say else."""
    host = environ.get(HOST_ENV) or public_ip
    if environ.get(HOST_ENV) and not HOST_RE.match(environ[HOST_ENV]):
        raise BadInput(f"{HOST_ENV}={environ[HOST_ENV]!r} is not a host name or IP address",
                       f"set {HOST_ENV} to e.g. 127.0.0.1 or bastion.example.org")
    port_text = environ.get(PORT_ENV) or "22"
    try:
        port = int(port_text)
    except ValueError:
        raise BadInput(f"{PORT_ENV}={port_text!r} is not a port number", f"set {PORT_ENV} to e.g. 2222") from None
    if not 0 < port < 65536:
        raise BadInput(f"{PORT_ENV}={port} is out of range", "use 1-65535")
    return host, port


def to_instance(raw: Mapping[str, Any], environ: Mapping[str, str]) -> Instance:
    tags = tag_dict(raw.get("Tags"))
    state = _STATES.get(raw.get("State", {}).get("Name", ""), "pending")
    host, port = ssh_endpoint(raw.get("PublicIpAddress"), environ) if state != "terminated" else (None, 22)
    launched: Any = raw.get("LaunchTime")
    launched_at = launched.isoformat() if hasattr(launched, "isoformat") else (str(launched) if launched else None)
    return Instance(id=raw["InstanceId"], name=tags.get("Name", raw["InstanceId"]), state=state, host=host,
                    port=port, user=tags.get(USER_TAG, "ubuntu"), image=raw.get("ImageId", ""), provider=PROVIDER,
                    instance_type=raw.get("InstanceType"), tags=tags,
                    launched_at=launched_at,
                    spot=raw.get("InstanceLifecycle") == "spot")


def snapshot_ids(raw_image: Mapping[str, Any]) -> list[str]:
    return [m["Ebs"]["SnapshotId"] for m in raw_image.get("BlockDeviceMappings", [])
            if m.get("Ebs", {}).get("SnapshotId")]


def root_mapping(raw_image: Mapping[str, Any]) -> Mapping[str, Any]:
    """The block device mapping of the image's root volume (BadInput for instance-store images)."""
    root = raw_image.get("RootDeviceName")
    for mapping in raw_image.get("BlockDeviceMappings", []):
        if mapping.get("DeviceName") == root and "Ebs" in mapping:
            return dict(mapping)
    raise BadInput(f"AMI {raw_image.get('ImageId')} has no EBS root volume", "use an EBS-backed AMI")


def to_image(raw: Mapping[str, Any], shared_with: tuple[str, ...] = ()) -> Image:
    tags = tag_dict(raw.get("Tags"))
    sizes = [m["Ebs"].get("VolumeSize", 0) for m in raw.get("BlockDeviceMappings", []) if "Ebs" in m]
    return Image(id=raw["ImageId"], name=raw.get("Name", raw["ImageId"]),
                 state=_IMAGE_STATES.get(raw.get("State", ""), "failed"), provider=PROVIDER,
                 created=raw.get("CreationDate"), tags=tags, size_bytes=sum(sizes) * 2**30 if sizes else None,
                 shared_with=shared_with, source=tags.get("vmlab:base") or tags.get(SOURCE_TAG),
                 user=login_user(raw), architecture=raw.get("Architecture", "x86_64"))
