"""The account's vCPU quota for an instance type's family, read from Service Quotas when the caller may (a plan
shows it; a launch over it fails with VcpuLimitExceeded). Unreadable quotas are said to be unreadable, not guessed.

Example::

    vcpu_limit(aws, "g4dn.xlarge", spot=False, vcpus=4)
    # "vCPU quota 'Running On-Demand G and VT instances' (L-DB2E81BA): 8; this launch uses 4"
"""

from __future__ import annotations

from typing import Any

#: (family letters, on-demand quota code, spot quota code, quota name); the first match wins, the last is default
FAMILIES: tuple[tuple[tuple[str, ...], str, str, str], ...] = (
    (("g", "vt"), "L-DB2E81BA", "L-3819A6DF", "G and VT instances"),
    (("p",), "L-417A185B", "L-7212CCBC", "P instances"),
    (("inf",), "L-1945791B", "L-B5D1601B", "Inf instances"),
    (("trn",), "L-2C3B7624", "L-6B0D517C", "Trn instances"),
    (("f",), "L-74FC7D96", "L-88CF9481", "F instances"),
    (("x",), "L-7295265B", "L-E3A00192", "X instances"),
    ((), "L-1216C47A", "L-34B43A08", "Standard (A, C, D, H, I, M, R, T, Z) instances"),
)


def family_quota(instance_type: str, spot: bool) -> tuple[str, str]:
    """(quota code, quota name) of the vCPU quota that `instance_type` counts against."""
    family = instance_type.split(".")[0]  # g4dn, vt1, inf2, p3 ...: letters, then the generation digit
    for prefixes, on_demand, spot_code, name in FAMILIES:
        if not prefixes or any(family.startswith(p) and family[len(p):len(p) + 1].isdigit() for p in prefixes):
            if spot:
                return spot_code, f"All {name.removesuffix(' instances')} Spot Instance Requests"
            return on_demand, f"Running On-Demand {name}"
    raise AssertionError(family)  # unreachable: the last entry matches everything


def vcpu_limit(aws: Any, instance_type: str, spot: bool, vcpus: int | None) -> str:
    """One line about the quota: its value when Service Quotas answers, else that it could not be read."""
    code, name = family_quota(instance_type, spot)
    uses = f"; this launch uses {vcpus}" if vcpus else ""
    try:
        quota = aws.client("service-quotas").get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]
        value = quota.get("Value")
    except Exception as exc:  # noqa: BLE001 - no permission, no endpoint (moto), a partition without the API
        return f"vCPU quota '{name}' ({code}): not readable here ({type(exc).__name__}){uses}"
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return f"vCPU quota '{name}' ({code}): {shown}{uses}"
