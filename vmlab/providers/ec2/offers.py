"""What an instance type gives and roughly costs: vCPUs, memory, GPUs (describe_instance_types), the bundled
on-demand price (prices.py) and, for spot, the latest spot price per availability zone (spot price history).
Pure: the provider makes the calls and hands the answers in.

Example::

    offer = to_offer(raw_type, "us-east-1", spot_history=history)
    print(offer.describe())   # g4dn.xlarge: 4 vCPU, 16 GiB, 1x NVIDIA T4 (16 GiB); on-demand ~$0.526/h ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vmlab.providers.ec2 import prices


@dataclass(frozen=True)
class Offer:
    """One instance type in one region. Prices are USD per hour and estimates (see prices.py)."""

    instance_type: str
    region: str
    vcpus: int | None
    memory_mib: int | None
    gpu_model: str | None = None
    gpu_count: int = 0
    gpu_memory_mib: int | None = None
    architectures: tuple[str, ...] = ()
    on_demand: float | None = None
    #: availability zone -> latest spot price (empty unless spot prices were asked for)
    spot: Mapping[str, float] = field(default_factory=dict)

    @property
    def spot_low(self) -> float | None:
        return min(self.spot.values()) if self.spot else None

    @property
    def spot_high(self) -> float | None:
        return max(self.spot.values()) if self.spot else None

    def hourly(self, spot: bool) -> float | None:
        """The price to record for a lab: for spot the highest latest zone price (the lab's zone is EC2's
        choice, so the estimate errs high), else the on-demand table price."""
        return self.spot_high if spot and self.spot else self.on_demand

    def describe(self) -> str:
        """One line for humans."""
        memory = f"{self.memory_mib / 1024:g} GiB" if self.memory_mib else "? GiB"
        parts = [f"{self.vcpus or '?'} vCPU", memory]
        if self.gpu_count:
            gpu_mem = f" ({self.gpu_memory_mib / 1024:g} GiB)" if self.gpu_memory_mib else ""
            parts.append(f"{self.gpu_count}x {self.gpu_model or 'GPU'}{gpu_mem}")
        price = (f"on-demand ~${self.on_demand:.4g}/h (table of {prices.AS_OF})" if self.on_demand is not None
                 else "on-demand price unknown (not in vmlab's table)")
        text = f"{self.instance_type} in {self.region}: {', '.join(parts)}; {price}"
        if self.spot:
            low, high = self.spot_low, self.spot_high
            span = f"${low:.4g}" if low == high else f"${low:.4g}-${high:.4g}"
            text += f"; spot now {span}/h across {len(self.spot)} zone(s)"
        return text

    def to_json(self) -> dict[str, Any]:
        return {"type": self.instance_type, "region": self.region, "vcpus": self.vcpus,
                "memory_mib": self.memory_mib, "gpu_model": self.gpu_model, "gpu_count": self.gpu_count,
                "gpu_memory_mib": self.gpu_memory_mib, "architectures": list(self.architectures),
                "on_demand_hourly": self.on_demand, "spot_hourly": dict(self.spot),
                "price_note": f"estimate: on-demand from vmlab's table ({prices.AS_OF}), spot from price history"}


def latest_spot(history: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """The newest price per availability zone from spot price history entries."""
    newest: dict[str, tuple[Any, float]] = {}
    for entry in history:
        zone, stamp = str(entry.get("AvailabilityZone", "")), entry.get("Timestamp")
        try:
            price = float(entry["SpotPrice"])
        except (KeyError, TypeError, ValueError):
            continue
        if zone not in newest or (stamp is not None and str(stamp) > str(newest[zone][0])):
            newest[zone] = (stamp, price)
    return {zone: price for zone, (_, price) in sorted(newest.items())}


def to_offer(raw: Mapping[str, Any], region: str, spot_history: Iterable[Mapping[str, Any]] = ()) -> Offer:
    """An Offer from one describe_instance_types entry (and spot price history entries, when asked)."""
    gpus = raw.get("GpuInfo", {}).get("Gpus", []) or []
    count = sum(int(g.get("Count", 0)) for g in gpus)
    model = " + ".join(f"{g.get('Manufacturer', '')} {g.get('Name', '')}".strip() for g in gpus) or None
    gpu_memory = raw.get("GpuInfo", {}).get("TotalGpuMemoryInMiB")
    instance_type = str(raw["InstanceType"])
    return Offer(instance_type=instance_type, region=region,
                 vcpus=raw.get("VCpuInfo", {}).get("DefaultVCpus"),
                 memory_mib=raw.get("MemoryInfo", {}).get("SizeInMiB"),
                 gpu_model=model, gpu_count=count, gpu_memory_mib=gpu_memory,
                 architectures=tuple(raw.get("ProcessorInfo", {}).get("SupportedArchitectures", [])),
                 on_demand=prices.on_demand(region, instance_type), spot=latest_spot(spot_history))

