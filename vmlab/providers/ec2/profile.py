"""The IAM role and instance profile that let a lab's agent sync one bucket prefix, and nothing else.

`vmlab up --sync s3://bucket/alice` on EC2 attaches an instance profile whose only policy allows listing the
bucket under `alice/` and reading, writing and deleting objects under `alice/*` (the per-user-folder policy), so
the VM holds no long-lived key and a leaked VM credential reaches one user's folder only. The role and profile
are named after the URL (`vmlab-sync-` + a hash of bucket and prefix), tagged `vmlab:sync`, and reused by every
lab that syncs the same prefix; `vmlab down` and `gc` leave them (they cost nothing). Delete one with
`aws iam remove-role-from-instance-profile`, `delete-instance-profile`, `delete-role-policy` and `delete-role`.

Example::

    name, created = ensure_sync_profile(aws, "my-bucket", "alice/")
    LaunchSpec(..., instance_profile=name)
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

from vmlab.errors import BadInput
from vmlab.providers.ec2.client import Aws, error_code, translated

POLICY_NAME = "vmlab-sync-prefix"
TAG = "vmlab:sync"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def profile_name(bucket: str, prefix: str) -> str:
    """A stable IAM name for one bucket prefix (IAM names are at most 64 characters; this is 27)."""
    return "vmlab-sync-" + hashlib.sha256(f"{bucket}/{prefix.strip('/')}".encode()).hexdigest()[:16]


def prefix_policy(bucket: str, prefix: str) -> dict[str, Any]:
    """The policy document: list the bucket only under the folder `prefix/`, get/put/delete objects only under
    it. An empty prefix means the whole bucket."""
    prefix = prefix.strip("/")
    objects = f"arn:aws:s3:::{bucket}/{prefix}/*" if prefix else f"arn:aws:s3:::{bucket}/*"
    listing: dict[str, Any] = {"Sid": "ListThePrefix", "Effect": "Allow", "Action": "s3:ListBucket",
                               "Resource": f"arn:aws:s3:::{bucket}"}
    if prefix:
        # with the folder's slash: a bare `alice` would also let the VM list `alice2/` and `alice-archive/`
        listing["Condition"] = {"StringLike": {"s3:prefix": [f"{prefix}/", f"{prefix}/*"]}}
    return {
        "Version": "2012-10-17",
        "Statement": [
            listing,
            {"Sid": "ReadWriteThePrefix", "Effect": "Allow",
             "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
             "Resource": objects},
        ],
    }


def ensure_sync_profile(aws: Aws, bucket: str, prefix: str) -> tuple[str, bool]:
    """Find or create the role and instance profile for `bucket`/`prefix`; returns (profile name, created now).
    The policy is (re)written every time, so it always matches this version's document. If creating fails
    halfway, what this call made is removed."""
    iam = aws.client("iam")
    name = profile_name(bucket, prefix)
    url = f"s3://{bucket}/{prefix.strip('/')}"
    created: list[str] = []
    try:
        with translated(f"create the IAM role {name} for syncing {url}"):
            try:
                iam.get_role(RoleName=name)
            except Exception as e:
                if error_code(e) != "NoSuchEntity":
                    raise
                iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST),
                                Description=f"vmlab lab agent: sync {url}"[:1000],
                                Tags=[{"Key": TAG, "Value": url[:256]}])
                created.append("role")
            iam.put_role_policy(RoleName=name, PolicyName=POLICY_NAME,
                                PolicyDocument=json.dumps(prefix_policy(bucket, prefix)))
            try:
                profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
            except Exception as e:
                if error_code(e) != "NoSuchEntity":
                    raise
                profile = iam.create_instance_profile(InstanceProfileName=name,
                                                      Tags=[{"Key": TAG, "Value": url[:256]}])["InstanceProfile"]
                created.append("profile")
            if not any(role["RoleName"] == name for role in profile.get("Roles", [])):
                iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    except BaseException:
        delete_sync_profile(aws, name, role="role" in created, profile="profile" in created)
        raise
    return name, bool(created)


def delete_sync_profile(aws: Aws, name: str, role: bool = True, profile: bool = True) -> None:
    """Remove the profile and/or role `name` (used when the launch that made them fails)."""
    iam = aws.client("iam")
    with translated(f"delete the IAM role {name}"):
        if profile:
            _quietly(iam.remove_role_from_instance_profile, InstanceProfileName=name, RoleName=name)
            _quietly(iam.delete_instance_profile, InstanceProfileName=name)
        if role:
            _quietly(iam.delete_role_policy, RoleName=name, PolicyName=POLICY_NAME)
            _quietly(iam.delete_role, RoleName=name)


SETTLE_ENV = "VMLAB_IAM_SETTLE_SECONDS"


def wait_usable() -> None:
    """IAM is eventually consistent: RunInstances may refuse a profile made a moment ago, so `up` waits once
    after creating one (VMLAB_IAM_SETTLE_SECONDS, default 10; tests against moto set 0)."""
    time.sleep(settle_seconds())


def settle_seconds() -> float:
    """VMLAB_IAM_SETTLE_SECONDS, checked (launches check it before they create anything)."""
    text = os.environ.get(SETTLE_ENV) or "10"
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 600:
        raise BadInput(f"{SETTLE_ENV}={text!r} is not a number of seconds from 0 to 600", f"unset {SETTLE_ENV}")
    return seconds


def _quietly(call: Any, **kwargs: Any) -> None:
    try:
        call(**kwargs)
    except Exception as e:
        if error_code(e) != "NoSuchEntity":
            raise
