"""Every check of an EC2 launch, made before anything is created (a mixin of `Ec2Provider`): the SSH endpoint
override, the key, user data and SSH range, the image, root size, instance type (exists, runs the image, offered in
the region and in a zone of the default VPC), the KMS key and the VPC. `plan_launch` returns what a launch would
make, with prices and the vCPU quota when readable, and creates nothing (`vmlab up/bake --dry-run`).

Example::

    plan = provider.plan_launch(LaunchSpec(name="lab", image="ubuntu-24.04", ssh_public_key=pub,
                                           instance_type="g4dn.xlarge", spot=True))
    print(plan.creates, plan.on_demand_hourly, plan.limits)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vmlab.errors import BadInput
from vmlab.providers.base import LaunchPlan, LaunchSpec
from vmlab.providers.ec2 import bases as base_images
from vmlab.providers.ec2 import placement
from vmlab.providers.ec2.amis import Amis
from vmlab.providers.ec2.amis import check_image_name as valid_image_name
from vmlab.providers.ec2.client import Aws, error_code, translated
from vmlab.providers.ec2.launchplan import DEFAULT_INSTANCE_TYPE, check_spot, user_data_for, volume_size
from vmlab.providers.ec2.network import default_vpc, ssh_cidr
from vmlab.providers.ec2.offers import Offer, to_offer
from vmlab.providers.ec2.profile import settle_seconds
from vmlab.providers.ec2.quotas import vcpu_limit
from vmlab.providers.ec2.records import USER_TAG, root_mapping, ssh_endpoint
from vmlab.providers.ec2.typechoice import spot_history
from vmlab.safetext import check_user

KEY_TYPES = ("ssh-ed25519", "ssh-rsa")


@dataclass(frozen=True)
class Prepared:
    """A launch's inputs, all checked: what `launch` needs to create things without failing on its own input."""

    public_key: str
    user_data: str
    cidr: str
    image: dict[str, Any]
    alias: base_images.Base | None
    root: Mapping[str, Any]
    volume_gb: int
    instance_type: str
    raw_type: dict[str, Any]
    vpc: str
    subnet: str | None
    zone: str | None


class PlanVerbs:
    """Mixed into Ec2Provider, which sets these attributes."""

    aws: Aws
    amis: Amis
    bases: dict[str, base_images.Base]
    kms_key: str | None

    def _base_image(self, image: str) -> tuple[dict[str, Any], base_images.Base | None]:
        """The AMI description for an alias, an AMI id or the name of one of your images."""
        alias = self.bases.get(image)
        if alias is not None:
            image = base_images.resolve_alias(alias, self.aws.ec2, self.aws.ssm, self.aws.region)
        elif image.startswith("ami-"):
            base_images.check_ami_id(image)
        raw = self.amis.raw(image)
        if raw is None:
            if image.startswith("ami-"):
                raise BadInput(f"AMI {image} not found in {self.aws.region}",
                               "AMIs are regional: check the region, or share/copy the AMI to this account")
            raise base_images.unknown_base(image, self.bases)
        if raw.get("State") != "available":
            raise BadInput(f"AMI {raw['ImageId']} is {raw.get('State')}, not available", "wait, or choose another")
        return raw, alias

    def verify_kms_key(self) -> None:
        """Fail before creating anything when the KMS key does not exist in this region or is AWS-managed."""
        if not self.kms_key:
            return
        try:
            meta = self.aws.client("kms").describe_key(KeyId=self.kms_key)["KeyMetadata"]
        except Exception as exc:
            if error_code(exc) in ("NotFoundException", "InvalidArnException"):
                raise BadInput(f"KMS key {self.kms_key} not found in {self.aws.region}",
                               "KMS keys are regional: name a key of this region (`aws kms list-aliases`)") from None
            raise
        if meta.get("KeyManager") == "AWS":
            raise BadInput(f"KMS key {self.kms_key} is AWS-managed; other accounts can never use it",
                           "create a customer-managed key (`aws kms create-key`) and pass its alias or ARN")

    def _check_type(self, instance_type: str, image: Mapping[str, Any] | None) -> dict[str, Any]:
        """Fail before creating anything when the type does not exist here or cannot run the image (when one is
        given); returns EC2's description of the type."""
        try:
            types = self.aws.ec2.describe_instance_types(InstanceTypes=[instance_type]).get("InstanceTypes", [])
        except Exception as exc:
            if error_code(exc) in ("InvalidInstanceType", "InvalidParameterValue"):
                types = []
            else:
                raise
        if not types:
            raise BadInput(f"instance type {instance_type!r} does not exist in {self.aws.region}",
                           "see `aws ec2 describe-instance-types`; e.g. t3.large or g4dn.xlarge")
        arches = types[0].get("ProcessorInfo", {}).get("SupportedArchitectures", [])
        arch = image.get("Architecture", "x86_64") if image is not None else None
        if image is not None and arches and arch not in arches:
            raise BadInput(f"instance type {instance_type} ({'/'.join(arches)}) cannot run the {arch} image "
                           f"{image['ImageId']}", "choose a type of the image's architecture")
        return dict(types[0])

    def _placement(self, instance_type: str, vpc: str) -> tuple[str | None, str | None]:
        """(subnet, zone) for the type: BadInput when the region or the default VPC's zones do not offer it."""
        ec2 = self.aws.ec2
        offered = placement.offered_zones(ec2, instance_type)
        if offered is not None and not offered:
            raise placement.not_offered(instance_type, self.aws.region, self._regions_offering(instance_type))
        return placement.choose_subnet(instance_type, self.aws.region, offered,
                                       placement.default_subnets(ec2, vpc))

    def _regions_offering(self, instance_type: str) -> list[str]:
        regions = sorted(r["RegionName"] for r in self.aws.ec2.describe_regions().get("Regions", [])
                         if r["RegionName"] != self.aws.region)

        def offered_in(region: str) -> bool:
            client = self.aws.session.client("ec2", region_name=region)
            found = client.describe_instance_type_offerings(
                LocationType="region", Filters=[{"Name": "instance-type", "Values": [instance_type]}])
            return bool(found.get("InstanceTypeOfferings"))

        return placement.regions_offering(regions, offered_in)

    def _prepare(self, spec: LaunchSpec) -> Prepared:
        """Every check of a launch, in the order a user fixes them; nothing is created."""
        if not spec.name.strip():
            raise BadInput("instance name is empty", "pass a name")
        check_spot(spec)
        ssh_endpoint(None, os.environ)  # a bad VMLAB_EC2_SSH_HOST/PORT must fail now, not after the launch
        settle_seconds()
        public_key = spec.ssh_public_key.strip()
        if public_key.split(" ")[0] not in KEY_TYPES or len(public_key.split()) < 2:
            raise BadInput("ssh_public_key is not an ed25519 or RSA OpenSSH public key line",
                           "pass the text of KEY.pub (EC2 imports ed25519 and RSA keys)")
        user_data = user_data_for(spec)  # validates the host key and the caller's user data first
        cidr = ssh_cidr(spec.ssh_cidr, os.environ)
        with translated("check the launch"):
            image, alias = self._base_image(spec.image)
            # the tag is data from whoever can tag the image: it ends up in ssh_config and unit files
            check_user(base_images.login_user(image, alias), f"the {USER_TAG} tag of image {image['ImageId']}")
            root = root_mapping(image)
            size = volume_size(spec.volume_size_gb, int(root["Ebs"].get("VolumeSize") or 8))
            instance_type = spec.instance_type or DEFAULT_INSTANCE_TYPE
            raw_type = self._check_type(instance_type, image)
            self.verify_kms_key()
            vpc = default_vpc(self.aws.ec2, self.aws.region)
            subnet, zone = self._placement(instance_type, vpc)
        return Prepared(public_key, user_data, cidr, image, alias, root, size, instance_type, raw_type, vpc,
                        subnet, zone)

    def offer(self, instance_type: str | None, image: str | None = None, spot: bool = False) -> Offer:
        """What `instance_type` gives (vCPUs, memory, GPUs) and roughly costs here, checked against the image's
        architecture when `image` (alias, id or name) is given; with `spot`, the latest spot price per zone."""
        instance_type = instance_type or DEFAULT_INSTANCE_TYPE
        with translated(f"describe instance type {instance_type}"):
            raw_image = self._base_image(image)[0] if image else None
            return self._offer(self._check_type(instance_type, raw_image), spot)

    def _offer(self, raw_type: Mapping[str, Any], spot: bool) -> Offer:
        name = str(raw_type["InstanceType"])
        history = spot_history(self.aws.ec2, [name]).get(name, []) if spot else []
        return to_offer(raw_type, self.aws.region, history)

    def check_launch(self, spec: LaunchSpec) -> None:
        """BadInput (or the AWS error) on the first problem `launch(spec)` would meet; nothing is created."""
        self._prepare(spec)

    def plan_launch(self, spec: LaunchSpec) -> LaunchPlan:
        """Everything `launch(spec)` checks, and what it would create; nothing is created."""
        prep = self._prepare(spec)
        with translated(f"price instance type {prep.instance_type}"):
            offer = self._offer(prep.raw_type, spec.spot)
            limit = vcpu_limit(self.aws, prep.instance_type, spec.spot, offer.vcpus)
        gpus = f"{offer.gpu_count}x {offer.gpu_model}" if offer.gpu_count else None
        place = f" in {prep.zone}" if prep.zone else ""
        market = "spot (on-demand if refused)" if spec.spot else "on-demand"
        creates: tuple[str, ...] = (f"key pair (imported {prep.public_key.split()[0]})",
                   f"security group in {prep.vpc}: TCP 22 from {prep.cidr} only",
                   f"{market} instance {prep.instance_type}{place} from {prep.image['ImageId']}, IMDSv2 only",
                   f"root volume {prep.volume_gb} GB gp3, encrypted"
                   + (f" with {self.kms_key}" if self.kms_key else "") + ", deleted with the instance")
        return LaunchPlan(provider="ec2", image=prep.image["ImageId"], image_name=str(prep.image.get("Name", "")),
                          instance_type=prep.instance_type, volume_gb=prep.volume_gb, spot=spec.spot,
                          creates=creates, region=self.aws.region, zone=prep.zone, ssh_cidr=prep.cidr,
                          vcpus=offer.vcpus, memory_mib=offer.memory_mib, gpus=gpus,
                          on_demand_hourly=offer.on_demand, spot_hourly=offer.spot_high if spec.spot else None,
                          limits=(limit,))

    def check_image_name(self, name: str) -> None:
        """BadInput unless EC2 accepts `name` for a new image of yours here (valid and not taken)."""
        valid_image_name(name)
        with translated(f"look up image name {name}"):
            taken = self.aws.ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])
        if taken.get("Images"):
            raise BadInput(f"an image named {name!r} exists already ({taken['Images'][0]['ImageId']})",
                           "choose another --name, or remove it with `vmlab images rm`")
