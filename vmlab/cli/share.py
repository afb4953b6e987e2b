"""`vmlab share-ami`: let other accounts, an organization or OU (or everyone) launch an image; copy it to more
regions first when asked."""

from __future__ import annotations

import click

from vmlab.cli.options import capable_provider_option, open_provider, region_option
from vmlab.cli.output import Output, handle_errors, json_option


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
@capable_provider_option("shares the image")
@region_option
@json_option
@handle_errors
def share_ami(image: str, accounts: tuple[str, ...], orgs: tuple[str, ...], ous: tuple[str, ...], public: bool,
              yes: bool, regions: str | None, kms_keys: tuple[str, ...], remove: bool, provider_name: str | None,
              region: str | None, json_mode: bool) -> None:
    """Grant launch permission on IMAGE (a vmlab image's id or name) and volume permission on its snapshots;
    with --regions, copy it to each region first (waiting until available) and share each copy the same way.
    A copy that fails or is interrupted is deregistered, so nothing half-made is left. Without --provider: the
    first provider that can share images.

    \b
    Example:
      vmlab share-ami vmlab-lab-1a2b3c4d-20240601 --account 123456789012
      vmlab share-ami ami-0abc12345def67890 --org arn:aws:organizations::111122223333:organization/o-abcd123456 \\
          --regions eu-west-1,us-west-2 --kms-key eu-west-1=alias/vmlab --kms-key us-west-2=alias/vmlab
    """
    from vmlab.providers import name_for
    from vmlab.providers.capabilities import ShareRequest, SharesImages
    from vmlab.workflows import share

    out = Output(json_mode)
    provider = open_provider(name_for(SharesImages, provider_name), region)
    # everything the user typed is checked before the first cloud call
    request = share.check(provider, ShareRequest(image, accounts, orgs, ous, public, remove=remove), regions,
                          kms_keys, yes=yes)

    def warn(text: str) -> None:
        out.err.print(f"vmlab: warning: {text}", style="yellow", markup=False)

    result = share.share(provider, request, say=out.say, warn=warn)
    out.emit(result.to_json())
