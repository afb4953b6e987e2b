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
    return click.option("--provider", "provider_name", metavar="local|ec2|container", default=None,
                        help="Where VMs (or containers) run (default: $VMLAB_PROVIDER or local).")(f)


def capable_provider_option(does: str) -> Callable[[F], F]:
    """--provider for a command only some providers can run (gc, share-ami)."""
    return click.option("--provider", "provider_name", metavar="NAME", default=None,
                        help=f"The provider that {does} (default: $VMLAB_PROVIDER when it can, else the first "
                             "registered one that can).")


def region_option(f: F) -> F:
    return click.option("--region", default=None, metavar="REGION",
                        help="AWS region (EC2 only; default: $AWS_REGION, then the profile's).")(f)


def _needs() -> dict[str, type[Any]]:
    """Option -> the capability a provider needs for it (vmlab.providers.capabilities)."""
    from vmlab.providers.capabilities import CustomerKeys, Firewalled, Quotes, Regional

    return {"region": Regional, "kms_key": CustomerKeys, "spot": Quotes, "max_price": Quotes,
            "ssh_cidr": Firewalled}


def check_options(provider_name: str, **given: Any) -> None:
    """BadInput when options were given that the provider `provider_name` cannot honour (instead of ignoring
    them silently: a --spot or --region that does nothing would mislead)."""
    from vmlab.providers import implements, names_with, provider_class

    cls = provider_class(provider_name)
    needs = _needs()
    used = [(f"--{k.replace('_', '-')}", needs[k]) for k, v in given.items()
            if v not in (None, False, (), "") and not implements(cls, needs[k])]
    if used:
        able = " or ".join(names_with(used[0][1])) or "another provider"
        verb = "applies" if len(used) == 1 else "apply"
        raise BadInput(f"{', '.join(flag for flag, _ in used)} only {verb} to --provider {able} "
                       f"(not {provider_name})", f"drop {used[0][0]}, or add --provider {able}")


def open_provider(name: str | None, region: str | None = None, *, kms_key: str | None = None,
                  **flags: Any) -> Provider:
    """The provider `name` (default $VMLAB_PROVIDER or local). Options it cannot honour are refused; a regional
    provider's region is checked at once, so an unknown region fails before anything is created."""
    from vmlab.providers import default_provider_name, get_provider
    from vmlab.providers.capabilities import Regional

    name = name or default_provider_name()
    check_options(name, region=region, kms_key=kms_key, **flags)
    options = {k: v for k, v in (("region", region), ("kms_key", kms_key)) if v}
    provider = get_provider(name, **options)
    if isinstance(provider, Regional):
        provider.current_region()  # BadInput when unknown
    return provider
