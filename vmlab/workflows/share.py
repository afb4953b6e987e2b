"""`vmlab share-ami`: let accounts, organizations, OUs (or everyone) launch an image, copying it to more regions
first when asked, through a provider that shares images (`SharesImages`; copies also need `Regional`).

Everything the user typed is checked before the first cloud call; a KMS key that cannot encrypt a copy fails
before the source is shared. Example::

    request = check(provider, ShareRequest("vmlab-lab-ab12", accounts=("123456789012",)), "eu-west-1", ())
    result = share(provider, request, say=print)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from vmlab.errors import BadInput
from vmlab.providers.base import Provider
from vmlab.providers.capabilities import Regional, ShareRequest, SharesImages

Say = Callable[[str], None]


@dataclass
class ShareResult:
    """The image shared (or revoked), where, and per region the image and its launch permissions after."""

    image: str
    name: str
    region: str | None
    request: ShareRequest
    images: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "name": self.name, "region": self.region,
                "grantees": self.request.grantees(), "removed": self.request.remove, "images": self.images,
                "warnings": self.warnings}


def sharer(provider: Provider) -> SharesImages:
    from vmlab.providers import require

    return require(provider, SharesImages, "share images")


def check(provider: Provider, request: ShareRequest, regions_text: str | None,
          key_values: tuple[str, ...], yes: bool = False) -> ShareRequest:
    """The request checked without a cloud call (BadInput on the first problem)."""
    checked = sharer(provider).check_share(request, regions_text, key_values)
    if checked.public and not yes and not checked.remove:
        raise BadInput("--public shares the image with every AWS account", "add --yes if that is what you want")
    if checked.regions:
        from vmlab.providers import require

        require(provider, Regional, "copy images to other regions (--regions)")
    return checked


def share(provider: Provider, request: ShareRequest, say: Say = lambda _m: None,
          warn: Say = lambda _m: None) -> ShareResult:
    """Share (or revoke) the image here, then copy it to each of `request.regions` and share each copy."""
    source_provider = sharer(provider)
    here = provider.current_region() if isinstance(provider, Regional) else None
    if here is not None and here in request.regions:
        raise BadInput(f"the image is already in {here}", f"drop {here} from --regions")
    source = source_provider.describe_owned(request.image)
    if not request.remove:
        for target, key in request.keys.items():  # a missing key would fail the copy after the source was shared
            source_provider.check_copy_key(target, key)
    result = ShareResult(source.id, source.name, here, request)
    if not request.remove and request.who():
        risky = source_provider.unshareable_snapshots(source.id)
        if risky:
            result.warnings.append(
                f"snapshot(s) {', '.join(risky)} are encrypted with the AWS-managed aws/ebs key or a key vmlab "
                "cannot see: other accounts cannot launch the image until it is re-encrypted with a "
                "customer-managed key (`vmlab bake --kms-key`, or --regions with --kms-key)")
    for text in result.warnings:
        warn(text)
    result.images.append(_share_one(source_provider, here, source.id, request))
    say(f"{source.name} ({source.id}, {here}) {'revoked from' if request.remove else 'shared with'} {request.who()}")
    for target in request.regions:
        result.images.append(_copy_and_share(provider, source.id, target, request, say))
    return result


def _share_one(provider: SharesImages, region: str | None, image_id: str, request: ShareRequest) -> dict[str, Any]:
    provider.share_with(image_id, request)
    return {"region": region, "image": image_id, "launch_permissions": provider.launch_permissions(image_id)}


def _copy_and_share(provider: Provider, image_id: str, region: str, request: ShareRequest,
                    say: Say) -> dict[str, Any]:
    source = sharer(provider)
    here = cast(Regional, provider)
    target = sharer(here.in_region(region))
    if request.remove:
        existing = target.find_copy(here.current_region(), image_id)
        if existing is None:
            say(f"no copy of {image_id} in {region}: nothing to revoke there")
            return {"region": region, "image": None, "launch_permissions": []}
        result = _share_one(target, region, existing, request)
        say(f"copy {existing} ({region}) revoked from {request.who()}")
        return result
    last = [""]
    kms_key = request.keys.get(region)

    def progress(message: str, fraction: float | None) -> None:
        if message != last[0]:
            last[0] = message
            say(f"  {region}: {message}" + (f" ({fraction:.0%})" if fraction is not None else ""))

    say(f"copying {image_id} to {region}" + (f" (KMS key {kms_key})" if kms_key else ""))
    copy, made = source.copy_image_to(image_id, region, kms_key, progress)
    result = _share_one(target, region, copy.id, request)
    say(f"{'copied to' if made else 'found the copy in'} {region} as {copy.id}; shared with {request.who()}")
    return {**result, "copied": made}
