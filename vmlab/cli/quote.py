"""What `vmlab up` checks and shows before it launches: the instance type against the image, what the type gives
(vCPU, memory, GPUs) and roughly costs per hour, for a provider that quotes prices (`Quotes`); others launch
without a quote."""

from __future__ import annotations

from typing import Any

from vmlab.cli.output import Output
from vmlab.errors import BadInput
from vmlab.providers.base import Image, LaunchOptions, Provider
from vmlab.providers.capabilities import ChoosesTypes, Firewalled, Quotes, TypeChoice


class TypeQuote:
    """The `quote` of `vmlab up`: check the type against the image, print what it gives and costs; the offer
    shown stays in `offer` (for the --json document)."""

    def __init__(self, provider: Quotes, out: Output, instance_type: str | None, spot: bool,
                 max_price: float | None) -> None:
        self.provider, self.out = provider, out
        self.instance_type, self.spot, self.max_price = instance_type, spot, max_price
        self.offer: dict[str, Any] | None = None

    def __call__(self, image: Image) -> tuple[float | None, float | None]:
        offer = self.provider.offer(self.instance_type, image.id, self.spot)
        self.offer = offer.to_json()
        self.out.say(offer.describe())
        low = offer.spot_low
        if self.spot and self.max_price is not None and low is not None and low > self.max_price:
            self.out.say(f"note: spot costs at least ${low:.4g}/h now, above --max-price {self.max_price:g}: EC2 "
                         "will refuse spot and the lab starts on-demand", "yellow")
        elif self.spot and not offer.spot:
            self.out.say("note: no recent spot price for this type here; the lab may start on-demand", "yellow")
        return offer.on_demand, offer.hourly(True) if self.spot else None


def launch_options(provider: Provider, spot: bool, max_price: float | None, volume_size: int | None,
                   ssh_cidr: str | None) -> LaunchOptions:
    """The launch flags of `up` and `bake`, checked (open_provider already refused those the provider cannot
    honour)."""
    if max_price is not None and not spot:
        raise BadInput("--max-price applies to spot instances only", "add --spot or drop --max-price")
    if max_price is not None and max_price <= 0:
        raise BadInput(f"--max-price {max_price} is not positive", "give dollars per hour, e.g. 0.25")
    return LaunchOptions(spot=spot, max_price=max_price, volume_size_gb=volume_size,
                         ssh_cidr=check_ssh_cidr(provider, ssh_cidr) if ssh_cidr else None)


def launch_checks(provider: Provider, out: Output, instance_type: str | None, spot: bool, max_price: float | None,
                  volume_size: int | None, ssh_cidr: str | None) -> tuple[LaunchOptions, TypeQuote | None]:
    """The launch options of `up`, and for a provider that quotes prices the quote to run once the image is
    known."""
    options = launch_options(provider, spot, max_price, volume_size, ssh_cidr)
    if not isinstance(provider, Quotes):
        return options, None
    return options, TypeQuote(provider, out, instance_type, spot, max_price)


def resolve_type(provider: Provider, out: Output, instance_type: str | None,
                 spot: bool) -> tuple[str | None, TypeChoice | None]:
    """`--type` as a concrete type: a generic one (`m+t4`, vmlab.typespec) is parsed, then resolved by a provider
    that knows its offers (`ChoosesTypes`) to the cheapest that fits, and the choice is shown. Nothing is made."""
    from vmlab.typespec import is_generic, parse_request

    if instance_type is None or not is_generic(instance_type):
        return instance_type, None
    request = parse_request(instance_type)
    from vmlab.providers import require

    chooser = require(provider, ChoosesTypes, f"choose an instance type from a size (--type {instance_type})")
    choice = chooser.choose_type(request, spot)
    out.say(choice.why)
    return choice.instance_type, choice


def check_ssh_cidr(provider: Provider, cidr: str) -> str:
    """`--ssh-cidr` normalised by the provider (open_provider already refused it for one without a firewall)."""
    from vmlab.providers import require

    return require(provider, Firewalled, "limit SSH to a network range (--ssh-cidr)").check_ssh_cidr(cidr)
