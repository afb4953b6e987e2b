"""The image verbs of `Ec2Provider` (a mixin over its `aws`, `amis`, `progress`, `poll` and `timeout`): create,
describe, list, delete, share with accounts / organizations / OUs / everyone, and copy to other regions.

Example::

    provider = Ec2Provider(region="us-east-1")
    image = provider.create_image("i-0abc...", "lab-v1", {"vmlab:recipe-hash": "ab12"})
    provider.share(image.id, Grantees.checked(accounts=["123456789012"]))
    copy, made = provider.copy_image_to(image.id, "eu-west-1", kms_key="alias/vmlab")
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from vmlab.errors import BadInput
from vmlab.providers.base import Image, Progress
from vmlab.providers.capabilities import ShareRequest
from vmlab.providers.ec2.amis import Amis
from vmlab.providers.ec2.capabilities import CloudVerbs
from vmlab.providers.ec2.client import Aws, error_code, translated
from vmlab.providers.ec2.records import to_image
from vmlab.providers.ec2.sharing import Grantees, check_accounts, check_regions, kms_keys_by_region

log = logging.getLogger("vmlab.providers.ec2")

INSTANCE_ID_RE = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")


def check_instance_id(instance_id: str) -> str:
    if not INSTANCE_ID_RE.match(instance_id):
        raise BadInput(f"{instance_id!r} is not an EC2 instance id", "ids look like i-0123456789abcdef0")
    return instance_id


class ImageVerbs(CloudVerbs):
    """Mixed into Ec2Provider, which sets these attributes. Copies to other regions open the provider there
    (CloudVerbs.in_region), so this module never imports the provider."""

    aws: Aws
    amis: Amis
    progress: Progress
    poll: float
    timeout: float

    def create_image(self, instance_id: str, name: str, tags: Mapping[str, str],
                     progress: Progress | None = None) -> Image:
        """An AMI of the instance (rebooted for a consistent disk), available and tagged, snapshots too."""
        check_instance_id(instance_id)
        with translated(f"create image {name}"):
            raw = self.amis.create(instance_id, name, tags, progress or self.progress)
        return to_image(raw)

    def describe_image(self, image: str) -> Image | None:
        """An image by AMI id or by the name of one of yours (ambiguous names are refused)."""
        with translated(f"describe image {image}"):
            raw = self.amis.raw(image)
            if raw is None:
                return None
            try:
                shared = self.amis.shared_with(raw["ImageId"])
            except Exception as exc:  # only the owner may read launch permissions (a public base image)
                if not error_code(exc):
                    raise
                shared = ()
        return to_image(raw, shared)

    def list_images(self, tags: Mapping[str, str] | None = None) -> list[Image]:
        """Your images that carry all of `tags` (default: every image vmlab made)."""
        with translated("list images"):
            return [to_image(raw) for raw in self.amis.matching(tags)]

    def delete_image(self, image_id: str) -> None:
        """Deregister the image and delete its snapshots; deleting a missing image is a no-op. Only an image vmlab
        made in this account is deleted (BadInput otherwise: a base AMI, a public or shared one)."""
        with translated(f"delete image {image_id}"):
            self.amis.delete(image_id)

    def check_delete_image(self, image: str) -> None:
        """BadInput unless `delete_image` would delete this image (id or name): made by vmlab, in this account."""
        with translated(f"describe image {image}"):
            raw = self.amis.raw(image)
            why = self.amis.refusal(raw) if raw is not None else None
        if why is not None:
            raise BadInput(f"refusing to delete: {why}", "vmlab deletes only the images it made in this account")

    def share_image(self, image_id: str, accounts: tuple[str, ...], remove: bool = False) -> Image:
        """Let `accounts` launch the image and create volumes from its snapshots (or revoke it, `remove`)."""
        return self.share(image_id, Grantees(accounts=check_accounts(accounts)), remove)

    def share(self, image: str, who: Grantees, remove: bool = False) -> Image:
        """Share the image (id or name) with accounts, organizations, OUs or everyone, or revoke that."""
        with translated(f"share image {image}"):
            raw = self.amis.share(image, who, remove)
            shared = self.amis.shared_with(raw["ImageId"])
        return to_image(raw, shared)

    # ---- SharesImages -------------------------------------------------------------------------------------
    def check_share(self, request: ShareRequest, regions_text: str | None,
                    key_values: tuple[str, ...]) -> ShareRequest:
        """The request checked before any AWS call: account ids, organization and OU ARNs, the AMI id, the
        region names and which KMS key each copy gets. BadInput on the first problem."""
        from dataclasses import replace

        from vmlab.providers.ec2.bases import check_ami_id

        who = Grantees.checked(request.accounts, request.orgs, request.ous, request.public)
        if request.image.startswith("ami-"):
            check_ami_id(request.image)
        check_regions(regions_text)  # the names' form first: the known list needs the session
        regions = check_regions(regions_text, self.known_regions() if regions_text else None)
        if key_values and not regions:
            raise BadInput("--kms-key applies to the copies made with --regions", "add --regions or drop --kms-key")
        keys = kms_keys_by_region(key_values, regions)
        return replace(request, accounts=who.accounts, orgs=who.orgs, ous=who.ous, regions=regions, keys=keys)

    def share_with(self, image: str, request: ShareRequest) -> Image:
        """Share (or with `request.remove` revoke) the image with the request's grantees."""
        return self.share(image, Grantees(request.accounts, request.orgs, request.ous, request.public),
                          request.remove)

    def unshareable_snapshots(self, image: str) -> list[str]:
        return self.default_key_snapshots(image)

    def check_copy_key(self, region: str, key: str) -> None:
        """BadInput/HostError when `key` cannot encrypt a copy in `region` (checked before anything is shared)."""
        with translated(f"check KMS key {key} in {region}"):
            self.in_region(region, kms_key=key).verify_kms_key()

    def describe_owned(self, image: str) -> Image:
        """An image of this account by id or name; BadInput when it is missing or owned by another account
        (only the owner may share an AMI)."""
        with translated(f"describe image {image}"):
            raw = self.amis.resolve(image)
            account = self.aws.client("sts").get_caller_identity()["Account"]  # needs no permission
        if str(raw.get("OwnerId")) != str(account):
            raise BadInput(f"image {raw['ImageId']} belongs to account {raw.get('OwnerId', '?')}, not this one",
                           "only the owner can share an AMI; copy it into this account first")
        return to_image(raw)

    def find_copy(self, source_region: str, source_id: str) -> str | None:
        """The id of the copy vmlab made of `source_id` (from `source_region`) in this region, if any."""
        with translated(f"look for a copy of {source_id}"):
            raw = self.amis.find_copy(source_region, source_id)
        return str(raw["ImageId"]) if raw else None

    def launch_permissions(self, image: str) -> list[dict[str, str]]:
        """Everyone the image is shared with, as EC2 lists it ({"UserId"}, {"OrganizationArn"}, {"Group"}...)."""
        with translated(f"read the permissions of image {image}"):
            return self.amis.launch_permissions(self.amis.resolve(image)["ImageId"])

    def default_key_snapshots(self, image: str) -> list[str]:
        """The image's encrypted snapshots whose key is AWS-managed or unknown (see Amis.default_key_snapshots)."""
        with translated(f"read the snapshots of image {image}"):
            return self.amis.default_key_snapshots(self.amis.resolve(image))

    def copy_image_to(self, image: str, region: str, kms_key: str | None = None,
                      progress: Progress | None = None) -> tuple[Image, bool]:
        """Copy the image into `region` (encrypted, tagged like the source, `kms_key` there when given) and wait
        until it is available; an existing vmlab copy is reused. Returns (the copy, whether it was made now)."""
        with translated(f"copy image {image} to {region}"):
            source = self.amis.resolve(image)
            target = self.in_region(region)
            target_region = target.region
            raw, made = target.amis.copy_from(source, self.aws.region, kms_key, progress or self.progress)
        log.debug("copied %s to %s as %s", source["ImageId"], target_region, raw["ImageId"])
        return to_image(raw), made
