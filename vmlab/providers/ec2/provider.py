"""`Ec2Provider`: the Provider protocol on Amazon EC2 (boto3 stays inside this package).

Each launch creates, and terminate removes, three things tied by the tag `vmlab:launch`: an ed25519 key pair
(imported, the private half never leaves the caller), a security group in the default VPC allowing only TCP 22
from the caller's /32, and the instance (IMDSv2 only, encrypted gp3 root, shutdown = stop).

Example::

    provider = Ec2Provider(region="us-east-1")
    inst = provider.launch(LaunchSpec(name="builder", image="ubuntu-24.04", ssh_public_key=pub, host_key=priv,
                                      tags={"vmlab:run": "bake-1a2b"}))
    ...                                   # SSH to inst.user@inst.host, host key pinned
    img = provider.create_image(inst.id, "lab-v1", {"vmlab:recipe-hash": "ab12"})
    provider.terminate(inst.id)          # also deletes the key pair and security group
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vmlab.errors import BadInput, HostError
from vmlab.interrupts import ctrl_c_ignored, hold_signals
from vmlab.providers.base import Instance, LaunchSpec, Progress
from vmlab.providers.ec2 import bases as base_images
from vmlab.providers.ec2.amis import Amis
from vmlab.providers.ec2.client import Aws, error_code, translated
from vmlab.providers.ec2.imaging import ImageVerbs, check_instance_id
from vmlab.providers.ec2.launchplan import (
    check_kms_key,
    new_launch_id,
    resource_name,
    run_request,
    run_with_fallback,
)
from vmlab.providers.ec2.network import ssh_permission
from vmlab.providers.ec2.planning import PlanVerbs
from vmlab.providers.ec2.records import (
    HOST_ENV,
    INSTANCE_TAG,
    LAUNCH_TAG,
    USER_TAG,
    tag_dict,
    tag_filters,
    tag_list,
    tag_specs,
    to_instance,
)
from vmlab.providers.ec2.typechoice import ChooseVerbs

log = logging.getLogger("vmlab.providers.ec2")

LIVE_STATES = ["pending", "running", "stopping", "stopped"]
KEY_TYPES = ("ssh-ed25519", "ssh-rsa")


def _quiet(_msg: str, _frac: float | None) -> None:
    """The progress callback used when the caller gives none."""


@dataclass
class _Made:
    """What one launch has created so far, so a failure removes exactly that."""

    launch_id: str
    key_name: str | None = None
    key_id: str | None = None
    group_id: str | None = None
    instance_id: str | None = None
    #: run_instances was called: an instance may exist even when its id never came back (a signal in flight)
    ran: bool = False
    removed: list[str] = field(default_factory=list)


class Ec2Provider(ImageVerbs, PlanVerbs, ChooseVerbs):
    """EC2 in one region (`region`, else AWS_REGION / AWS_DEFAULT_REGION / the profile's).

    `poll` is the delay between describe calls while waiting (EC2 is eventually consistent; 5 s keeps the call
    count low), `timeout` bounds each wait. `bases` maps base aliases to their lookup (tests seed their own).
    `kms_key` encrypts every root volume this provider launches with that customer-managed KMS key.
    """

    name = "ec2"
    default_base = "ubuntu-24.04"

    def __init__(self, region: str | None = None, *, profile: str | None = None, progress: Progress | None = None,
                 bases: Mapping[str, base_images.Base] | None = None, poll: float = 5.0,
                 timeout: float = 900.0, image_timeout: float = 3600.0, kms_key: str | None = None) -> None:
        self.aws = Aws(region, profile)
        self.kms_key = check_kms_key(kms_key) if kms_key else None
        self.progress: Progress = progress or _quiet
        self.bases = dict(bases if bases is not None else base_images.BASES)
        self.poll = poll
        self.timeout = timeout
        self.amis = Amis(self.aws, poll=poll, timeout=image_timeout)

    @property
    def region(self) -> str:
        """The region (checked: an unknown region or missing credentials chain is BadInput here)."""
        with translated("open an AWS session"):
            return self.aws.region

    # ---- helpers -------------------------------------------------------------------------------------------
    def _note(self, message: str) -> None:
        log.info("%s", message)
        self.progress(message, None)

    def _raw(self, instance_id: str) -> dict[str, Any] | None:
        try:
            found = self.aws.ec2.describe_instances(InstanceIds=[check_instance_id(instance_id)])["Reservations"]
        except Exception as exc:
            if error_code(exc) == "InvalidInstanceID.NotFound":
                return None
            raise
        return dict(found[0]["Instances"][0]) if found else None

    def _vmlab_raw(self, instance_id: str) -> dict[str, Any]:
        raw = self._raw(instance_id)
        if raw is None:
            raise BadInput(f"no EC2 instance {instance_id} in {self.aws.region}", "list labs with `vmlab ls`")
        if LAUNCH_TAG not in tag_dict(raw.get("Tags")):
            raise BadInput(f"instance {instance_id} was not launched by vmlab", "vmlab only manages its own instances")
        return raw

    def _wait_address(self, instance_id: str) -> dict[str, Any]:
        """Wait until the instance has a public address (seconds after launch), not for status checks."""
        deadline = time.monotonic() + self.timeout
        running_without_ip = 0
        while True:
            raw = self._raw(instance_id)
            if raw is None:
                raise HostError(f"instance {instance_id} vanished", "see the EC2 console")
            state = raw.get("State", {}).get("Name", "pending")
            if state in ("stopping", "stopped", "shutting-down", "terminated"):
                reason = raw.get("StateReason", {}).get("Message") or "no reason given"
                raise HostError(f"instance {instance_id} is {state} before it came up: {reason}",
                                "see the instance's console output in the EC2 console")
            if raw.get("PublicIpAddress") or os.environ.get(HOST_ENV):
                return raw
            if state == "running":
                running_without_ip += 1
                if running_without_ip > 3:
                    raise HostError(f"instance {instance_id} is running without a public IP address",
                                    "enable 'auto-assign public IPv4' on the default VPC's subnets")
            if time.monotonic() > deadline:
                raise HostError(f"instance {instance_id} still {state} after {self.timeout:.0f} s", "try again")
            time.sleep(self.poll)

    def _wait(self, waiter_name: str, instance_id: str) -> None:
        from botocore.exceptions import WaiterError

        waiter = self.aws.ec2.get_waiter(waiter_name)
        attempts = max(1, math.ceil(self.timeout / max(self.poll, 0.1)))
        try:
            waiter.wait(InstanceIds=[instance_id], WaiterConfig={"Delay": self.poll, "MaxAttempts": attempts})
        except WaiterError as exc:
            raise HostError(f"instance {instance_id}: {waiter_name.replace('_', ' ')} did not happen "
                            f"({str(exc).splitlines()[0]})", "see the EC2 console") from exc

    # ---- instances -----------------------------------------------------------------------------------------
    def launch(self, spec: LaunchSpec) -> Instance:
        """Launch an instance from `spec.image` (an alias such as ubuntu-24.04, an AMI id, or your image's name)
        with a fresh key pair and a security group for SSH from the caller only. Returns once the instance has
        an address; SSH comes up later. On any failure everything this call created is removed."""
        prep = self._prepare(spec)
        with translated("launch an instance"):
            ec2 = self.aws.ec2
            image, instance_type = prep.image, prep.instance_type
            made = _Made(new_launch_id())
            name = resource_name(spec, made.launch_id)
            tags = {**spec.tags, "Name": spec.name, LAUNCH_TAG: made.launch_id,
                    USER_TAG: base_images.login_user(image, prep.alias)}
            try:
                made.key_id = ec2.import_key_pair(KeyName=name, PublicKeyMaterial=prep.public_key.encode(),
                                                  TagSpecifications=tag_specs(["key-pair"], tags))["KeyPairId"]
                made.key_name = name
                made.group_id = ec2.create_security_group(
                    GroupName=name, Description=f"vmlab: SSH to {spec.name} from {prep.cidr} only",
                    VpcId=prep.vpc, TagSpecifications=tag_specs(["security-group"], tags))["GroupId"]
                ec2.authorize_security_group_ingress(GroupId=made.group_id,
                                                     IpPermissions=[ssh_permission(prep.cidr)])
                request = run_request(spec, ami=image["ImageId"], root=prep.root, key_name=name,
                                      group_id=made.group_id, instance_type=instance_type, tags=tags,
                                      user_data=prep.user_data, client_token=f"vmlab-{made.launch_id}",
                                      kms_key=self.kms_key, subnet=prep.subnet)
                made.ran = True
                raw, _spot = run_with_fallback(ec2.run_instances, request, spec.spot, spec.max_price, self._note)
                made.instance_id = str(raw["InstanceId"])
                ec2.create_tags(Resources=[made.key_id, made.group_id],
                                Tags=tag_list({INSTANCE_TAG: made.instance_id}))
                raw = self._wait_address(made.instance_id)
                hold_signals()  # from here the caller's clean-up owns the instance
            except BaseException:
                self._undo_launch(made)
                raise
        log.debug("launched %s (%s) from %s", made.instance_id, instance_type, image["ImageId"])
        return to_instance(raw, os.environ)

    def _undo_launch(self, made: _Made) -> None:
        """Remove what a failed launch made, newest first; keep going past errors (and say what stayed). A second
        Ctrl-C meanwhile is ignored: leaking a paid instance is worse than waiting a moment."""
        with ctrl_c_ignored():
            self._undo_steps(made)

    def _undo_steps(self, made: _Made) -> None:
        if made.ran and not made.instance_id:
            made.instance_id = self._launched_by(made.launch_id)
        steps = []
        if made.instance_id:
            steps.append((f"instance {made.instance_id}", lambda: self._terminate_and_wait(made.instance_id or "")))
        if made.group_id:
            held = bool(made.instance_id)  # only an instance holds the group: without one, no need to wait
            steps.append((f"security group {made.group_id}",
                          lambda: self._delete_group(made.group_id or "", wait=held)))
        if made.key_name:
            steps.append((f"key pair {made.key_name}", lambda: self.aws.ec2.delete_key_pair(KeyName=made.key_name)))
        for what, undo in steps:
            try:
                undo()
                made.removed.append(what)
            except Exception as exc:  # one stuck resource must not leak the others
                log.warning("could not remove %s after a failed launch: %s (tagged %s=%s)", what, exc,
                            LAUNCH_TAG, made.launch_id)

    def _launched_by(self, launch_id: str) -> str | None:
        """The instance a launch made (found by its launch tag), when its id never reached this process."""
        found = self.aws.ec2.describe_instances(Filters=tag_filters({LAUNCH_TAG: launch_id}))["Reservations"]
        ids = [i["InstanceId"] for r in found for i in r["Instances"]
               if i.get("State", {}).get("Name") != "terminated"]
        return str(ids[0]) if ids else None

    def _terminate_and_wait(self, instance_id: str) -> None:
        raw = self._raw(instance_id)
        if raw is None or raw.get("State", {}).get("Name") == "terminated":
            return
        request = raw.get("SpotInstanceRequestId")
        if request:
            # a persistent spot request would start a new instance after this one terminates
            self.aws.ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=[request])
        self.aws.ec2.terminate_instances(InstanceIds=[instance_id])
        self._wait("instance_terminated", instance_id)

    def _delete_group(self, group_id: str, wait: bool = True) -> None:
        """Delete a security group, waiting out (up to the provider's timeout) the seconds in which a terminated
        instance's interface still holds it (DependencyViolation); with `wait` False (no instance known to
        hold it) a single try."""
        deadline = time.monotonic() + (self.timeout if wait else 0.0)
        while True:
            try:
                self.aws.ec2.delete_security_group(GroupId=group_id)
                return
            except Exception as exc:
                code = error_code(exc)
                if code == "InvalidGroup.NotFound":
                    return
                if code != "DependencyViolation" or time.monotonic() > deadline:
                    raise
            time.sleep(self.poll)

    def _launch_resources(self, instance_id: str, launch_id: str | None) -> tuple[list[str], list[str]]:
        """Names of the key pairs and ids of the security groups made for this instance (by instance id or
        launch id). Key pairs are deleted by name: moto ignores KeyPairId in DeleteKeyPair."""
        ec2 = self.aws.ec2
        keys: dict[str, None] = {}
        groups: dict[str, None] = {}
        selectors = [{INSTANCE_TAG: instance_id}] + ([{LAUNCH_TAG: launch_id}] if launch_id else [])
        for wanted in selectors:
            for k in ec2.describe_key_pairs(Filters=tag_filters(wanted)).get("KeyPairs", []):
                keys[k["KeyName"]] = None
            for g in ec2.describe_security_groups(Filters=tag_filters(wanted)).get("SecurityGroups", []):
                groups[g["GroupId"]] = None
        return list(keys), list(groups)

    def describe(self, instance_id: str) -> Instance | None:
        """The instance's current state and address, or None when EC2 does not know it."""
        with translated(f"describe {instance_id}"):
            raw = self._raw(instance_id)
        return to_instance(raw, os.environ) if raw else None

    def list_instances(self, tags: Mapping[str, str] | None = None) -> list[Instance]:
        """Live (not terminated) instances vmlab launched that carry all of `tags` ("*" = any value)."""
        filters = [{"Name": "tag-key", "Values": [LAUNCH_TAG]}, *tag_filters(tags),
                   {"Name": "instance-state-name", "Values": LIVE_STATES}]
        with translated("list instances"):
            pages = self.aws.ec2.get_paginator("describe_instances").paginate(Filters=filters)
            raws = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
        return [to_instance(raw, os.environ) for raw in raws]

    def stop(self, instance_id: str) -> Instance:
        """Stop the instance and wait until it is stopped (the disk is kept; `start` resumes it)."""
        with translated(f"stop {instance_id}"):
            self._vmlab_raw(instance_id)
            self.aws.ec2.stop_instances(InstanceIds=[instance_id])
            self._wait("instance_stopped", instance_id)
            raw = self._raw(instance_id)
        return to_instance(raw or {}, os.environ)

    def start(self, instance_id: str) -> Instance:
        """Start a stopped instance and wait for its (new) public address."""
        with translated(f"start {instance_id}"):
            self._vmlab_raw(instance_id)
            self.aws.ec2.start_instances(InstanceIds=[instance_id])
            raw = self._wait_address(instance_id)
        return to_instance(raw, os.environ)

    def terminate(self, instance_id: str) -> None:
        """Terminate the instance, wait until it is gone, then delete its security group and key pair.
        Idempotent: an instance already terminated (or forgotten by EC2) only has its leftovers removed."""
        check_instance_id(instance_id)
        with translated(f"terminate {instance_id}"):
            raw = self._raw(instance_id)
            tags = tag_dict(raw.get("Tags")) if raw else {}
            if raw is not None and LAUNCH_TAG not in tags:
                raise BadInput(f"instance {instance_id} was not launched by vmlab",
                               "vmlab only terminates its own instances")
            self._terminate_and_wait(instance_id)
            keys, groups = self._launch_resources(instance_id, tags.get(LAUNCH_TAG))
            for group in groups:
                self._delete_group(group)
            for key in keys:
                self.aws.ec2.delete_key_pair(KeyName=key)
