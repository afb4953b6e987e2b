"""`vmlab share-ami`: let other accounts, an organization or OU (or everyone) launch an image; copy it to more
regions first when asked."""

from __future__ import annotations

from typing import Any

import click

from vmlab.cli.options import open_provider, region_option
from vmlab.cli.output import Output, handle_errors, json_option
from vmlab.errors import BadInput


@click.command(name="share-ami")
@click.argument("image")
@click.option("--account", "accounts", multiple=True, metavar="ID", help="A 12-digit AWS account id (repeatable).")
@click.option("--org", "orgs", multiple=True, metavar="ARN", help="An organization ARN (repeatable).")
@click.option("--ou", "ous", multiple=True, metavar="ARN", help="An organizational unit ARN (repeatable).")
@click.option("--public", is_flag=True, help="Share with every AWS account (needs --yes).")
@click.option("--yes", is_flag=True, help="Confirm --public.")
@click.option("--regions", default=None, metavar="R1,R2",
              help="Copy the image to these regions (encrypted, tagged like it) and share the copies too.")
@click.option("--kms-key", "kms_keys", multiple=True, metavar="[REGION=]KEY",
              help="KMS key for a region's copy: a key ARN (names its region), REGION=alias/NAME, or one alias "
                   "for every region (repeatable).")
@click.option("--remove", is_flag=True, help="Revoke instead of grant (on the image and its existing copies).")
@region_option
@json_option
@handle_errors
def share_ami(image: str, accounts: tuple[str, ...], orgs: tuple[str, ...], ous: tuple[str, ...], public: bool,
              yes: bool, regions: str | None, kms_keys: tuple[str, ...], remove: bool, region: str | None,
              json_mode: bool) -> None:
    """Grant launch permission on IMAGE (a vmlab image's id or name) and volume permission on its snapshots;
    with --regions, copy it to each region first (waiting until available) and share each copy the same way.
    A copy that fails or is interrupted is deregistered, so nothing half-made is left.

    \b
    Example:
      vmlab share-ami vmlab-lab-1a2b3c4d-20240601 --account 123456789012
      vmlab share-ami ami-0abc12345def67890 --org arn:aws:organizations::111122223333:organization/o-abcd123456 \\
          --regions eu-west-1,us-west-2 --kms-key eu-west-1=alias/vmlab --kms-key us-west-2=alias/vmlab
    """
    from vmlab.providers.ec2.bases import check_ami_id
    from vmlab.providers.ec2.client import known_regions
    from vmlab.providers.ec2.sharing import Grantees, check_regions, kms_keys_by_region

    out = Output(json_mode)
    # everything the user typed is checked before the first AWS call
    who = Grantees.checked(accounts, orgs, ous, public)
    if public and not yes and not remove:
        raise BadInput("--public shares the image with every AWS account", "add --yes if that is what you want")
    if image.startswith("ami-"):
        check_ami_id(image)
    targets = check_regions(regions)
    if kms_keys and not targets:
        raise BadInput("--kms-key applies to the copies made with --regions", "add --regions or drop --kms-key")
    keys = kms_keys_by_region(kms_keys, targets)
    provider: Any = open_provider("ec2", region)
    here = provider.region
    check_regions(regions, known_regions(provider.aws.session))
    if here in targets:
        raise BadInput(f"the image is already in {here}", f"drop {here} from --regions")
    source = provider.describe_owned(image)
    if not remove:
        from vmlab.providers.ec2.client import translated
        from vmlab.providers.ec2.provider import Ec2Provider

        for target, key in keys.items():  # a missing key would fail the copy after the source was shared
            with translated(f"check KMS key {key} in {target}"):
                Ec2Provider(target, kms_key=key).verify_kms_key()
    warnings = []
    if not remove and (who.accounts or who.orgs or who.ous or who.public):
        risky = provider.default_key_snapshots(source.id)
        if risky:
            warnings.append(f"snapshot(s) {', '.join(risky)} are encrypted with the AWS-managed aws/ebs key or a key "
                            "vmlab cannot see: other accounts cannot launch the image until it is re-encrypted with "
                            "a customer-managed key (`vmlab bake --kms-key`, or --regions with --kms-key)")
    for text in warnings:
        out.err.print(f"vmlab: warning: {text}", style="yellow", markup=False)
    verb = "revoked from" if remove else "shared with"
    results = [_share_one(provider, source.id, who, remove)]
    out.say(f"{source.name} ({source.id}, {here}) {verb} {_who(who)}")
    for target in targets:
        results.append(_copy_and_share(provider, out, source.id, target, keys.get(target), who, remove))
    out.emit({"image": source.id, "name": source.name, "region": here, "grantees": who.to_json(),
              "removed": remove, "images": results, "warnings": warnings})


def _who(who: Any) -> str:
    parts = [*who.accounts, *who.orgs, *who.ous] + (["everyone (public)"] if who.public else [])
    return ", ".join(parts)


def _share_one(provider: Any, image_id: str, who: Any, remove: bool) -> dict[str, Any]:
    provider.share(image_id, who, remove)
    return {"region": provider.region, "image": image_id, "launch_permissions": provider.launch_permissions(image_id)}


def _copy_and_share(provider: Any, out: Output, image_id: str, region: str, kms_key: str | None, who: Any,
                    remove: bool) -> dict[str, Any]:
    from vmlab.providers.ec2.provider import Ec2Provider

    target = Ec2Provider(region, poll=provider.poll, timeout=provider.timeout)
    if remove:
        existing = target.find_copy(provider.region, image_id)
        if existing is None:
            out.say(f"no copy of {image_id} in {region}: nothing to revoke there")
            return {"region": region, "image": None, "launch_permissions": []}
        result = _share_one(target, existing, who, True)
        out.say(f"copy {existing} ({region}) revoked from {_who(who)}")
        return result
    last = [""]

    def progress(message: str, fraction: float | None) -> None:
        if message != last[0]:
            last[0] = message
            out.say(f"  {region}: {message}" + (f" ({fraction:.0%})" if fraction is not None else ""))

    out.say(f"copying {image_id} to {region}" + (f" (KMS key {kms_key})" if kms_key else ""))
    copy, made = provider.copy_image_to(image_id, region, kms_key, progress)
    result = _share_one(target, copy.id, who, False)
    out.say(f"{'copied to' if made else 'found the copy in'} {region} as {copy.id}; shared with {_who(who)}")
    return {**result, "copied": made}
