"""Who an AMI is shared with, checked before any call: account ids, organization and OU ARNs, or everyone; and
which KMS key encrypts each region's copy. Pure: no AWS calls here.

Launch permission can name accounts, organizations, OUs or the group `all`; a snapshot's createVolumePermission
only accounts or `all` (members of an organization launch the AMI without it, but cannot copy it).

Example::

    who = Grantees(accounts=check_accounts(("123456789012",)), orgs=check_org_arns((org_arn,)))
    ec2.modify_image_attribute(ImageId=ami, LaunchPermission={"Add": who.launch_permissions()})
    keys = kms_keys_by_region(("arn:aws:kms:eu-west-1:123456789012:key/...", "us-east-2=alias/lab"), regions)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vmlab.errors import BadInput
from vmlab.providers.ec2.client import REGION_RE
from vmlab.providers.ec2.launchplan import check_kms_key

ACCOUNT_RE = re.compile(r"^\d{12}$")
ORG_ARN_RE = re.compile(r"^arn:aws[a-z-]*:organizations::\d{12}:organization/o-[a-z0-9]{10,32}$")
OU_ARN_RE = re.compile(r"^arn:aws[a-z-]*:organizations::\d{12}:ou/o-[a-z0-9]{10,32}/ou-[a-z0-9]{4,32}-[a-z0-9]{8,32}$")


def check_accounts(accounts: Iterable[str], required: bool = True) -> tuple[str, ...]:
    """Account ids, each exactly 12 digits (BadInput otherwise); duplicates dropped, order kept."""
    accounts = tuple(a.strip() for a in accounts)
    if not accounts and required:
        raise BadInput("no account to share with", "pass --account 123456789012")
    bad = [a for a in accounts if not ACCOUNT_RE.match(a)]
    if bad:
        raise BadInput(f"not an AWS account id: {', '.join(bad)}", "account ids are exactly 12 digits")
    return tuple(dict.fromkeys(accounts))


def check_org_arns(arns: Iterable[str]) -> tuple[str, ...]:
    bad = [a for a in arns if not ORG_ARN_RE.match(a)]
    if bad:
        raise BadInput(f"not an organization ARN: {', '.join(bad)}",
                       "use arn:aws:organizations::MANAGEMENT-ACCOUNT:organization/o-xxxxxxxxxx")
    return tuple(dict.fromkeys(arns))


def check_ou_arns(arns: Iterable[str]) -> tuple[str, ...]:
    bad = [a for a in arns if not OU_ARN_RE.match(a)]
    if bad:
        raise BadInput(f"not an organizational unit ARN: {', '.join(bad)}",
                       "use arn:aws:organizations::MANAGEMENT-ACCOUNT:ou/o-xxxxxxxxxx/ou-xxxx-xxxxxxxx")
    return tuple(dict.fromkeys(arns))


@dataclass(frozen=True)
class Grantees:
    """The accounts, organizations, OUs (and with `public` everyone) an image is shared with."""

    accounts: tuple[str, ...] = ()
    orgs: tuple[str, ...] = ()
    ous: tuple[str, ...] = ()
    public: bool = False

    @classmethod
    def checked(cls, accounts: Iterable[str] = (), orgs: Iterable[str] = (), ous: Iterable[str] = (),
                public: bool = False) -> Grantees:
        who = cls(check_accounts(accounts, required=False), check_org_arns(orgs), check_ou_arns(ous), public)
        if who.empty:
            raise BadInput("nobody to share with", "pass --account 123456789012, --org ARN, --ou ARN or --public")
        return who

    @property
    def empty(self) -> bool:
        return not (self.accounts or self.orgs or self.ous or self.public)

    @property
    def cross_account(self) -> bool:
        return not self.empty

    def launch_permissions(self) -> list[dict[str, str]]:
        return ([{"UserId": a} for a in self.accounts] + [{"OrganizationArn": o} for o in self.orgs]
                + [{"OrganizationalUnitArn": u} for u in self.ous] + ([{"Group": "all"}] if self.public else []))

    def volume_permission_args(self) -> dict[str, Any]:
        """Keyword arguments for modify_snapshot_attribute (the Attribute=/UserIds= form AWS and moto accept)."""
        args: dict[str, Any] = {}
        if self.accounts:
            args["UserIds"] = list(self.accounts)
        if self.public:
            args["GroupNames"] = ["all"]
        return args

    def to_json(self) -> dict[str, Any]:
        return {"accounts": list(self.accounts), "orgs": list(self.orgs), "ous": list(self.ous),
                "public": self.public}


def check_regions(text: str | None, known: set[str] | None = None) -> tuple[str, ...]:
    """`r1,r2` -> ("r1", "r2"); each must look like a region (and be known to botocore when `known` is given)."""
    regions = tuple(dict.fromkeys(r.strip() for r in (text or "").split(",") if r.strip()))
    bad = [r for r in regions if not REGION_RE.match(r) or (known is not None and r not in known)]
    if bad:
        raise BadInput(f"unknown AWS region(s): {', '.join(bad)}", "use region names such as eu-west-1,us-west-2")
    return regions


def kms_keys_by_region(values: Iterable[str], regions: Iterable[str]) -> dict[str, str]:
    """`--kms-key` values -> region -> key. A key ARN names its own region; `REGION=KEY` names it explicitly;
    a bare alias or id applies to every target region."""
    regions = tuple(regions)
    keys: dict[str, str] = {}
    for value in values:
        region, sep, key = value.partition("=")
        if not sep:
            key = value
            arn = re.match(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):", key)
            targets: tuple[str, ...] = (arn.group(1),) if arn else regions
        else:
            targets = (region.strip(),)
        check_kms_key(key.strip())
        for target in targets:
            if target not in regions:
                raise BadInput(f"--kms-key {value} is for {target}, which is not in --regions",
                               "give one key per copied region: --kms-key REGION=KEY or a key ARN of that region")
            keys[target] = key.strip()
    return keys


def unshareable_snapshots(snapshots: Iterable[Mapping[str, Any]],
                          key_manager: Callable[[str], str | None]) -> list[str]:
    """Ids of encrypted snapshots whose KMS key is AWS-managed (`key_manager(key) == "AWS"`, i.e. aws/ebs) or
    not reported at all: other accounts cannot create volumes from them, so they cannot launch the image."""
    risky = []
    for snap in snapshots:
        if not snap.get("Encrypted"):
            continue
        key = snap.get("KmsKeyId")
        if not key or key_manager(str(key)) == "AWS":
            risky.append(str(snap["SnapshotId"]))
    return risky
