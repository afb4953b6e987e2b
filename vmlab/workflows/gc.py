"""`vmlab gc`: what a provider that sweeps leftovers (`SweepsLeftovers`) finds, and removing it when confirmed.

Labs recorded on this machine are never removable; the host keys vmlab pinned for removed instances are
forgotten. Example::

    found = find(provider, labs=False)
    result = remove(provider, found, confirm=lambda n: True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vmlab.providers.base import Provider
from vmlab.providers.capabilities import Leftover, Regional, SweepsLeftovers


@dataclass
class GcResult:
    """What gc found (`leftovers`) and, once removal ran, what went and what failed (with why)."""

    region: str | None
    leftovers: list[Leftover]
    #: whether removal ran (confirmed)
    ran: bool = False
    removed: list[Leftover] = field(default_factory=list)
    failed: list[tuple[Leftover, str]] = field(default_factory=list)

    @property
    def removable(self) -> list[Leftover]:
        return [f for f in self.leftovers if f.removable]

    def to_json(self) -> dict[str, Any]:
        return {"region": self.region, "leftovers": [f.to_json() for f in self.leftovers],
                "removed": [f.id for f in self.removed],
                "failed": [{"id": f.id, "error": why} for f, why in self.failed]}


def sweeper(provider: Provider) -> SweepsLeftovers:
    from vmlab.providers import require

    return require(provider, SweepsLeftovers, "sweep leftovers (gc)")


def find(provider: Provider, labs: bool = False) -> GcResult:
    """The provider's leftovers; the instances of labs this machine records are kept whatever `labs` says."""
    from vmlab.state import LabStore

    sweep = sweeper(provider)
    region = provider.current_region() if isinstance(provider, Regional) else None
    recorded = {r.instance_id for r in LabStore().all() if r.provider == provider.name}
    return GcResult(region, sweep.find_leftovers(recorded, labs=labs))


def remove(provider: Provider, result: GcResult, confirm: Callable[[int], bool]) -> GcResult:
    """Remove the removable leftovers of `result` when `confirm(count)` says yes; fills removed/failed."""
    doomed = result.removable
    if not doomed or not confirm(len(doomed)):
        return result
    from vmlab.transport.hostkeys import forget

    result.ran = True
    result.removed, result.failed = sweeper(provider).remove_leftovers(doomed)
    for item in result.removed:
        if item.kind in ("instance", "lab"):
            forget(f"vmlab-{item.id}")  # the host key vmlab pinned for it
    return result
