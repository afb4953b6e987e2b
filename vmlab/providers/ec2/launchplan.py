"""What `launch` asks EC2 for, built from a LaunchSpec: user data, the run_instances request, spot with fallback.

Pure except `run_with_fallback`, which calls the `run` it is given, so the secure defaults are unit-tested:
IMDSv2 only, an encrypted gp3 root deleted with the instance, shutdown from inside = stop (idle stop keeps the
disk), and tags on the instance and its volume.

Example::

    request = run_request(spec, ami="ami-0abc...", root=root_mapping(image), key_name=key, group_id=sg,
                          instance_type="t3.large", tags=tags, user_data=user_data_for(spec))
    raw, spot = run_with_fallback(ec2.run_instances, request, spec.spot, spec.max_price, note=print)
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from vmlab.errors import BadInput
from vmlab.providers.base import LaunchSpec
from vmlab.providers.cloudinit import host_key_entries, render_user_data
from vmlab.providers.ec2.client import error_code
from vmlab.providers.ec2.records import tag_specs

DEFAULT_INSTANCE_TYPE = "t3.large"
USER_DATA_LIMIT = 16 * 1024  # bytes, before base64 (EC2's limit)
#: spot refusals that on-demand may not share: launch on-demand instead of failing
SPOT_FALLBACK_CODES = frozenset({"InsufficientInstanceCapacity", "SpotMaxPriceTooLow",
                                 "MaxSpotInstanceCountExceeded"})


def new_launch_id() -> str:
    return secrets.token_hex(4)


def resource_name(spec: LaunchSpec, launch_id: str) -> str:
    """`vmlab-<run or lab or name>-<hex>`: the key pair's and security group's name (readable in the console)."""
    label = spec.tags.get("vmlab:run") or spec.tags.get("vmlab:lab") or spec.name
    slug = re.sub(r"[^A-Za-z0-9-]+", "-", label).strip("-")[:60] or "vm"
    slug = slug.removeprefix("vmlab-")
    return f"vmlab-{slug}-{launch_id}"


def user_data_for(spec: LaunchSpec) -> str:
    """cloud-config that replaces the image's SSH host keys with the launch key (when given), merged with the
    caller's user data. The login key itself comes from the EC2 key pair. User data is readable on the VM and
    through the API, so the launch key only verifies the first connection, which replaces it."""
    cfg: dict[str, Any] = {"ssh_pwauth": False, "disable_root": True}
    if spec.host_key:
        # delete the image's host keys and install only ours, so the first connection can be verified
        cfg["ssh_deletekeys"] = True
        cfg["ssh_keys"] = host_key_entries(spec.host_key)
    text = render_user_data(cfg, spec.user_data)
    if len(text.encode()) > USER_DATA_LIMIT:
        raise BadInput(f"user data is {len(text.encode())} bytes; EC2 accepts {USER_DATA_LIMIT}",
                       "move large files into the recipe instead of the user data")
    return text


def volume_size(requested: int | None, image_gb: int) -> int:
    """The root volume size: the request, never smaller than the image's snapshot."""
    if requested is None:
        return image_gb
    if requested < image_gb:
        raise BadInput(f"volume size {requested} GB is smaller than the image's root ({image_gb} GB)",
                       f"ask for at least {image_gb} GB or omit it")
    if requested > 16384:
        raise BadInput(f"volume size {requested} GB is above EBS's 16384 GB limit", "ask for less")
    return requested


def run_request(spec: LaunchSpec, *, ami: str, root: Mapping[str, Any], key_name: str, group_id: str,
                instance_type: str, tags: Mapping[str, str], user_data: str, client_token: str,
                kms_key: str | None = None, subnet: str | None = None) -> dict[str, Any]:
    """Keyword arguments for run_instances (without market options). `kms_key` encrypts the root volume with
    that customer-managed key instead of the account's default EBS key (needed to share images across accounts);
    `subnet` pins the zone (one that offers the type), else EC2 picks a default subnet."""
    size = volume_size(spec.volume_size_gb, int(root["Ebs"].get("VolumeSize") or 8))
    profile = {"IamInstanceProfile": {"Name": spec.instance_profile}} if spec.instance_profile else {}
    ebs: dict[str, Any] = {"VolumeSize": size, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True}
    if kms_key:
        ebs["KmsKeyId"] = kms_key
    return {
        **profile,
        **({"SubnetId": subnet} if subnet else {}),
        "ImageId": ami, "InstanceType": instance_type, "MinCount": 1, "MaxCount": 1,
        "KeyName": key_name, "SecurityGroupIds": [group_id],
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1},
        "BlockDeviceMappings": [{"DeviceName": root["DeviceName"], "Ebs": ebs}],
        "InstanceInitiatedShutdownBehavior": "stop",
        "UserData": user_data,
        "TagSpecifications": tag_specs(("instance", "volume"), tags),
        # the same token makes a retried request return the first instance instead of a second one
        "ClientToken": client_token,
    }


def spot_market(max_price: float | None) -> dict[str, Any]:
    """Spot that survives an interruption or a shutdown from inside as a stopped instance (disk kept), which
    EC2 allows only for persistent requests; terminate cancels the request first."""
    options: dict[str, Any] = {"SpotInstanceType": "persistent", "InstanceInterruptionBehavior": "stop"}
    if max_price is not None:
        options["MaxPrice"] = f"{max_price:.4f}"
    return {"MarketType": "spot", "SpotOptions": options}


KMS_KEY_RE = re.compile(r"^(?:arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(?:key|alias)/[A-Za-z0-9/_-]+"
                        r"|alias/[A-Za-z0-9/_-]+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                        r"|mrk-[0-9a-f]{32})$")


def check_kms_key(key: str) -> str:
    """A KMS key as EC2 accepts it: key ARN, alias ARN, `alias/NAME` or key id (BadInput otherwise)."""
    if not KMS_KEY_RE.match(key):
        raise BadInput(f"{key!r} is not a KMS key id, alias or ARN",
                       "use e.g. alias/vmlab or arn:aws:kms:us-east-1:123456789012:key/<uuid>")
    if key in ("alias/aws/ebs",) or key.endswith(":alias/aws/ebs"):
        raise BadInput("alias/aws/ebs is the AWS-managed default key, which other accounts can never use",
                       "create a customer-managed key (`aws kms create-key`) and pass its alias or ARN")
    return key


def check_spot(spec: LaunchSpec) -> None:
    if spec.max_price is not None and not spec.spot:
        raise BadInput("a maximum price applies to spot instances only", "add --spot or drop --max-price")
    if spec.max_price is not None and spec.max_price <= 0:
        raise BadInput(f"maximum spot price {spec.max_price} is not positive", "give dollars per hour, e.g. 0.25")


def run_with_fallback(run: Callable[..., Any], request: dict[str, Any], spot: bool, max_price: float | None,
                      note: Callable[[str], None]) -> tuple[dict[str, Any], bool]:
    """Run the instance (spot first when asked); when spot is refused for capacity or price, launch on-demand.
    Returns the instance description and whether it is spot."""
    from botocore.exceptions import ClientError

    if spot:
        try:
            answer = run(**request, InstanceMarketOptions=spot_market(max_price))
            return dict(answer["Instances"][0]), True
        except ClientError as exc:
            code = error_code(exc)
            if code not in SPOT_FALLBACK_CODES:
                raise
            note(f"spot refused ({code}); launching on-demand instead")
        request = {**request, "ClientToken": request["ClientToken"] + "-ondemand"}
    answer = run(**request)
    return dict(answer["Instances"][0]), False
