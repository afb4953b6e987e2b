"""Where an instance type can launch: EC2 lists a type in a region whose zones may not all offer it, and a launch
into the default VPC lands in any of its zones. So vmlab asks DescribeInstanceTypeOfferings first and, when some
default subnets are in zones without the type, launches into a subnet of a zone that has it.

Example::

    subnet, zone = choose_subnet("g4dn.xlarge", "us-east-1", offered_zones(ec2, "g4dn.xlarge"),
                                 default_subnets(ec2, vpc_id))   # None when every zone offers it
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from vmlab.errors import BadInput
from vmlab.providers.ec2.client import error_code

#: regions named in an error (the full list is long)
SHOWN = 6


def offered_zones(ec2: Any, instance_type: str) -> set[str] | None:
    """The zones of the client's region that offer `instance_type`; None when the caller may not ask (an IAM
    policy without ec2:DescribeInstanceTypeOfferings: the launch then goes ahead unchecked, as before)."""
    try:
        pages = ec2.get_paginator("describe_instance_type_offerings").paginate(
            LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": [instance_type]}])
        return {o["Location"] for page in pages for o in page.get("InstanceTypeOfferings", [])}
    except Exception as exc:
        if error_code(exc) in ("UnauthorizedOperation", "AccessDenied"):
            return None
        raise


def default_subnets(ec2: Any, vpc_id: str) -> dict[str, str]:
    """zone -> id of the default VPC's default subnet in that zone."""
    found = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                          {"Name": "default-for-az", "Values": ["true"]}]).get("Subnets", [])
    return {s["AvailabilityZone"]: s["SubnetId"] for s in sorted(found, key=lambda s: s["AvailabilityZone"])}


def regions_offering(regions: list[str], ask: Callable[[str], bool]) -> list[str]:
    """The regions (of `regions`) where `ask(region)` says the type is offered; errors count as no."""
    found = []
    for region in regions:
        try:
            if ask(region):
                found.append(region)
        except Exception:  # noqa: BLE001 - a region not enabled for the account answers with an error
            continue
        if len(found) >= SHOWN:
            break
    return found


def not_offered(instance_type: str, region: str, elsewhere: list[str]) -> BadInput:
    where = f"it is offered in {', '.join(elsewhere)}" if elsewhere else "no region checked offers it"
    return BadInput(f"instance type {instance_type} is not offered in {region} ({where})",
                    "pass --region with one of those, or choose another type")


def choose_subnet(instance_type: str, region: str, offered: set[str] | None,
                  subnets: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(subnet id, zone) to launch into: (None, None) when the check was not possible or every default subnet's
    zone offers the type (EC2 then picks, spreading capacity); else the first offering zone with a default subnet.
    BadInput naming the offering zones when no default subnet is in one. `offered` must not be empty (the
    caller reports a type offered nowhere in the region)."""
    if offered is None or not subnets or set(subnets) <= offered:
        return None, None
    usable = [zone for zone in subnets if zone in offered]
    if not usable:
        zones = ", ".join(sorted(offered))
        raise BadInput(f"instance type {instance_type} is offered in {region} only in {zones}, where the default "
                       "VPC has no subnet", f"create one: `aws ec2 create-default-subnet --availability-zone "
                                            f"{sorted(offered)[0]}`, or choose another type")
    return subnets[usable[0]], usable[0]
