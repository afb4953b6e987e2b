"""Approximate on-demand prices of common EC2 instance types, for showing what a lab costs (EC2 has no price
call that moto or most IAM policies allow, so vmlab ships a small table).

Source: the public "Amazon EC2 On-Demand Pricing" page (Linux, shared tenancy, USD per hour), copied by hand in
2024. Prices change and differ by region; these are estimates for display only, never for billing. A type or
region missing here shows as "price unknown". Spot prices come from the live spot price history instead.

Example::

    on_demand("us-east-1", "g4dn.xlarge")    # 0.526
    on_demand("sa-east-1", "g4dn.xlarge")    # None: not in the table
"""

from __future__ import annotations

#: the date the table was copied (shown with every price, so nobody mistakes it for a quote)
AS_OF = "2024"

_US = {
    "t3.micro": 0.0104, "t3.small": 0.0208, "t3.medium": 0.0416, "t3.large": 0.0832, "t3.xlarge": 0.1664,
    "t3.2xlarge": 0.3328, "t4g.large": 0.0672, "t4g.xlarge": 0.1344,
    "m5.large": 0.096, "m5.xlarge": 0.192, "m5.2xlarge": 0.384, "m5.4xlarge": 0.768, "m6i.large": 0.096,
    "m6i.xlarge": 0.192, "m6g.large": 0.077, "m6g.xlarge": 0.154,
    "c5.large": 0.085, "c5.xlarge": 0.17, "c5.2xlarge": 0.34, "c5.4xlarge": 0.68, "c6i.large": 0.085,
    "r5.large": 0.126, "r5.xlarge": 0.252, "r5.2xlarge": 0.504,
    "g4dn.xlarge": 0.526, "g4dn.2xlarge": 0.752, "g4dn.4xlarge": 1.204, "g4dn.8xlarge": 2.176,
    "g4dn.12xlarge": 3.912,
    "g5.xlarge": 1.006, "g5.2xlarge": 1.212, "g5.4xlarge": 1.624, "g5.8xlarge": 2.448, "g5.12xlarge": 5.672,
    "g6.xlarge": 0.8048, "g6.2xlarge": 0.9776, "g6.4xlarge": 1.3232, "g6.12xlarge": 4.6016,
    "p3.2xlarge": 3.06, "p3.8xlarge": 12.24, "p3.16xlarge": 24.48,
}

_EU_WEST_1 = {
    "t3.medium": 0.0456, "t3.large": 0.0912, "t3.xlarge": 0.1824, "m5.large": 0.107, "m5.xlarge": 0.214,
    "m5.2xlarge": 0.428, "c5.large": 0.096, "c5.xlarge": 0.192, "r5.large": 0.141,
    "g4dn.xlarge": 0.587, "g4dn.2xlarge": 0.838, "g4dn.4xlarge": 1.343, "g5.xlarge": 1.123, "g5.2xlarge": 1.353,
    "p3.2xlarge": 3.305, "p3.8xlarge": 13.22,
}

_EU_CENTRAL_1 = {
    "t3.medium": 0.048, "t3.large": 0.096, "t3.xlarge": 0.192, "m5.large": 0.115, "m5.xlarge": 0.23,
    "m5.2xlarge": 0.46, "c5.large": 0.097, "c5.xlarge": 0.194, "r5.large": 0.152,
    "g4dn.xlarge": 0.658, "g4dn.2xlarge": 0.94, "g5.xlarge": 1.258, "g5.2xlarge": 1.516,
    "p3.2xlarge": 3.823,
}

_AP_NORTHEAST_1 = {
    "t3.medium": 0.0544, "t3.large": 0.1088, "m5.large": 0.124, "m5.xlarge": 0.248, "c5.large": 0.107,
    "g4dn.xlarge": 0.71, "g4dn.2xlarge": 1.015, "g5.xlarge": 1.459, "p3.2xlarge": 4.194,
}

#: region -> instance type -> USD per hour (Linux on-demand)
ON_DEMAND: dict[str, dict[str, float]] = {
    "us-east-1": _US, "us-east-2": _US, "us-west-2": _US,
    "eu-west-1": _EU_WEST_1, "eu-central-1": _EU_CENTRAL_1, "ap-northeast-1": _AP_NORTHEAST_1,
}


def on_demand(region: str, instance_type: str) -> float | None:
    """The table's hourly on-demand price of `instance_type` in `region`, or None when the table has none."""
    return ON_DEMAND.get(region, {}).get(instance_type)
