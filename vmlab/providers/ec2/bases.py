"""Base images for EC2: the aliases users type (`ubuntu-24.04`, `debian-12`, `dlami`) and how each becomes an AMI id.

An alias is looked up first in the distribution's SSM public parameter (always the current release, one call),
then, where SSM is unavailable (no permission, a partition without the parameter), by owner and name pattern
among the available AMIs, newest first. An explicit `ami-...` id is used as given.

Example::

    ami = resolve_base("ubuntu-24.04", ec2, ssm)         # "ami-0abc..." in the session's region
    ami = resolve_base("ami-0123456789abcdef0", ec2, ssm) # as given (after a format check)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vmlab.errors import BadInput

AMI_ID_RE = re.compile(r"^ami-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
CANONICAL = "099720109477"
DEBIAN = "136693071363"


@dataclass(frozen=True)
class Base:
    """One alias: its SSM public parameter, the owner/name filter used when SSM gives nothing, and the login
    user of the images it names."""

    alias: str
    ssm_parameter: str
    owners: tuple[str, ...]
    name_pattern: str
    user: str
    architecture: str = "x86_64"


BASES: dict[str, Base] = {b.alias: b for b in (
    Base("ubuntu-24.04", "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id",
         (CANONICAL,), "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*", "ubuntu"),
    Base("ubuntu-22.04", "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id",
         (CANONICAL,), "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-*", "ubuntu"),
    Base("debian-12", "/aws/service/debian/release/bookworm/latest/amd64",
         (DEBIAN,), "debian-12-amd64-*", "admin"),
    Base("dlami", "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id",
         ("amazon",), "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *", "ubuntu"),
)}

# the login user of an AMI we know nothing else about, from words in its name or description
_USER_HINTS = (("ubuntu", "ubuntu"), ("deep learning", "ubuntu"), ("debian", "admin"), ("amzn", "ec2-user"),
               ("al2023", "ec2-user"), ("amazon linux", "ec2-user"), ("rhel", "ec2-user"), ("centos", "centos"),
               ("rocky", "rocky"), ("fedora", "fedora"))
USER_TAG = "vmlab:user"


def is_ami_id(text: str) -> bool:
    return bool(AMI_ID_RE.match(text))


def check_ami_id(text: str) -> str:
    """`text` if it is a well-formed AMI id; BadInput for anything starting with `ami-` that is not."""
    if not is_ami_id(text):
        raise BadInput(f"malformed AMI id {text!r}",
                       "AMI ids are ami- and 8 or 17 hex digits, e.g. ami-0abc12345def67890")
    return text


def unknown_base(name: str, table: Mapping[str, Base]) -> BadInput:
    return BadInput(f"unknown base image {name!r}",
                    f"use one of {', '.join(table)}, an AMI id (ami-...) or the name of one of your images")


def newest(images: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The image with the latest CreationDate (ISO text sorts by time)."""
    return max(images, key=lambda i: str(i.get("CreationDate", "")), default=None)


def resolve_alias(base: Base, ec2: Any, ssm: Any, region: str) -> str:
    """The AMI id an alias names in the session's region: SSM public parameter first, then owner + name."""
    from botocore.exceptions import ClientError

    try:
        value = str(ssm.get_parameter(Name=base.ssm_parameter)["Parameter"]["Value"]).strip()
        if is_ami_id(value):
            return value
    except ClientError as exc:
        # a missing parameter or no ssm:GetParameter permission: the image filter below still works
        if exc.response.get("Error", {}).get("Code") not in ("ParameterNotFound", "AccessDeniedException",
                                                              "AccessDenied", "UnauthorizedOperation"):
            raise
    found = ec2.describe_images(Owners=list(base.owners), Filters=[
        {"Name": "name", "Values": [base.name_pattern]},
        {"Name": "state", "Values": ["available"]},
    ]).get("Images", [])
    # architecture checked here, not in the filter: moto's registered images carry none
    image = newest([i for i in found if i.get("Architecture", base.architecture) == base.architecture])
    if image is None:
        raise BadInput(f"no AMI for {base.alias} in {region} (SSM {base.ssm_parameter} and owner {base.owners[0]} "
                       "gave nothing)", "name an AMI id instead: --base ami-...")
    return str(image["ImageId"])


def login_user(image: Mapping[str, Any], alias: Base | None = None) -> str:
    """The SSH user of an AMI: its `vmlab:user` tag (vmlab tags the images it makes), the alias's user, else a
    guess from the name and description (ubuntu, admin for Debian, ec2-user for Amazon Linux and most others)."""
    tags = {t["Key"]: t["Value"] for t in image.get("Tags", []) or []}
    if tags.get(USER_TAG):
        return tags[USER_TAG]
    if alias is not None:
        return alias.user
    text = f"{image.get('Name', '')} {image.get('Description', '')}".lower()
    return next((user for hint, user in _USER_HINTS if hint in text), "ec2-user")
