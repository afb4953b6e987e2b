"""A generic `--type` (`m+t4`, vmlab.typespec) resolved to the cheapest EC2 type that fits: the candidates are
the types vmlab's price table has for the region (a type without a price cannot be ranked), kept when EC2 offers
them in the region and they give what is asked; ranked by the table's on-demand price, or with `spot` by the
latest spot price (the highest zone's, as `up` records it; on-demand when a type has no spot history).

Example::

    choice = provider.choose_type(parse_request("m+t4"), spot=True)
    print(choice.instance_type, choice.why)   # g4dn.xlarge  m+t4 -> g4dn.xlarge (4 vCPU, ...), spot ~$0.16/h ...
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from vmlab.errors import BadInput
from vmlab.providers.capabilities import TypeChoice
from vmlab.providers.ec2 import prices
from vmlab.providers.ec2.client import Aws, translated
from vmlab.providers.ec2.offers import Offer, to_offer
from vmlab.typespec import TypeRequest

#: DescribeInstanceTypes takes at most this many names a call
_BATCH = 100


def _fits(request: TypeRequest, offer: Offer) -> bool:
    return request.fits(vcpus=offer.vcpus, memory_mib=offer.memory_mib,
                        gpu_names=(offer.gpu_model or "").split(" + "), gpu_count=offer.gpu_count,
                        gpu_memory_mib=offer.gpu_memory_mib, architectures=offer.architectures)


def _price(offer: Offer, spot: bool) -> tuple[float, str]:
    if spot and offer.spot:
        return float(offer.hourly(True) or 0.0), "spot"
    return float(offer.on_demand or 0.0), "on-demand"


def pick(request: TypeRequest, offers: Sequence[Offer], spot: bool, region: str) -> TypeChoice:
    """The cheapest offer that fits (ties: the smaller type, then the name); BadInput when none fits."""
    fitting = [o for o in offers if o.on_demand is not None and _fits(request, o)]
    if not fitting:
        raise BadInput(f"no instance type in {region} gives {request.describe()} (--type {request.text}; vmlab "
                       f"ranks the {len(offers)} types of its price table offered there)",
                       "ask for less, another --region, or name a type with --type (e.g. g5.2xlarge)")
    ranked = sorted(fitting, key=lambda o: (_price(o, spot)[0], o.vcpus or 0, o.instance_type))
    best = ranked[0]
    price, market = _price(best, spot)
    note = " (no spot price: ranked on-demand)" if spot and not best.spot else ""
    gpus = f", {best.gpu_count}x {best.gpu_model}" if best.gpu_count else ""
    memory = f"{(best.memory_mib or 0) / 1024:g} GiB"
    runner_up = f"; next: {ranked[1].instance_type} ~${_price(ranked[1], spot)[0]:.4g}/h" if len(ranked) > 1 else ""
    why = (f"--type {request.text} -> {best.instance_type} ({best.vcpus} vCPU, {memory}{gpus}), {market} "
           f"~${price:.4g}/h{note}: the cheapest of {len(fitting)} fitting type(s) in {region}{runner_up}")
    return TypeChoice(best.instance_type, price, why)


class ChooseVerbs:
    """Mixed into Ec2Provider (ChoosesTypes), which sets `aws`."""

    aws: Aws

    def choose_type(self, request: Any, spot: bool = False) -> TypeChoice:
        """The cheapest type offered here that gives what `request` (a TypeRequest) asks."""
        region = self.aws.region
        table = prices.ON_DEMAND.get(region)
        if not table:
            raise BadInput(f"vmlab's price table has no prices for {region}, so it cannot rank types there "
                           f"(--type {request.text})", "name a type with --type (e.g. g4dn.xlarge)")
        with translated(f"choose an instance type for {request.text}"):
            offered = self._offered_in_region(sorted(table))
            raw = [t for i in range(0, len(offered), _BATCH) for t in self.aws.ec2.describe_instance_types(
                InstanceTypes=offered[i:i + _BATCH]).get("InstanceTypes", [])]
            offers = [to_offer(r, region) for r in raw]
            if spot:
                fitting = [o.instance_type for o in offers if _fits(request, o)]
                history = spot_history(self.aws.ec2, fitting)
                offers = [to_offer(r, region, history.get(str(r["InstanceType"]), [])) for r in raw]
        return pick(request, offers, spot, region)

    def _offered_in_region(self, names: list[str]) -> list[str]:
        pages = self.aws.ec2.get_paginator("describe_instance_type_offerings").paginate(
            LocationType="region", Filters=[{"Name": "instance-type", "Values": names}])
        found = {o["InstanceType"] for page in pages for o in page.get("InstanceTypeOfferings", [])}
        return [n for n in names if n in found]


def spot_history(ec2: Any, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Instance type -> its spot price history entries of the last 6 hours (Linux) in the client's region."""
    if not names:
        return {}
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=6)
    pages = ec2.get_paginator("describe_spot_price_history").paginate(
        InstanceTypes=names, ProductDescriptions=["Linux/UNIX", "Linux/UNIX (Amazon VPC)"], StartTime=since)
    history: dict[str, list[dict[str, Any]]] = {}
    for page in pages:
        for entry in page.get("SpotPriceHistory", []):
            history.setdefault(str(entry.get("InstanceType")), []).append(entry)
    return history
