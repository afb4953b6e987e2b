"""Options shared by several commands, and opening the provider they name (checked before anything is made)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vmlab.errors import BadInput

if TYPE_CHECKING:
    from vmlab.providers.base import Provider

F = TypeVar("F", bound=Callable[..., Any])


def provider_option(f: F) -> F:
    return click.option("--provider", "provider_name", metavar="local|ec2", default=None,
                        help="Where VMs run (default: $VMLAB_PROVIDER or local).")(f)


def region_option(f: F) -> F:
    return click.option("--region", default=None, metavar="REGION",
                        help="AWS region (EC2 only; default: $AWS_REGION, then the profile's).")(f)


def ec2_only(provider_name: str, **given: Any) -> None:
    """BadInput when options that only EC2 understands were given for another provider (instead of ignoring
    them silently: a --spot or --region that does nothing would mislead)."""
    used = [f"--{k.replace('_', '-')}" for k, v in given.items() if v not in (None, False, (), "")]
    if used:
        raise BadInput(f"{', '.join(used)} only apply to --provider ec2 (not {provider_name})",
                           f"drop {used[0]}, or add --provider ec2")


def open_provider(name: str | None, region: str | None = None, *, kms_key: str | None = None,
                  **ec2_flags: Any) -> Provider:
    """The provider `name` (default $VMLAB_PROVIDER or local). For ec2 the region is checked at once, so an
    unknown region fails before anything is created; for other providers ec2-only options are refused."""
    from vmlab.providers import PROVIDERS, default_provider_name, get_provider

    name = name or default_provider_name()
    if name != "ec2":
        if name in PROVIDERS:
            ec2_only(name, region=region, kms_key=kms_key, **ec2_flags)
        return get_provider(name)
    options: dict[str, Any] = {"region": region}
    if kms_key:
        options["kms_key"] = kms_key
    provider = get_provider("ec2", **options)
    getattr(provider, "region")  # noqa: B009 - touching it checks the region (BadInput when unknown)
    return provider
