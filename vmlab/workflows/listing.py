"""`vmlab ls`: lab records joined with the instances each provider (and region) reports, with uptime and an
estimated cost so far.

The cost is hourly price x time since the instance last started (EC2's LaunchTime): an estimate that leaves out
disks, traffic and earlier runs before a stop. The hourly price is the one recorded at launch (bundled table or
spot history); instances without a local record get the provider's list price (`Quotes`), spot ones none.

Example::

    result = list_labs(LabStore().all(), provider_name=None, region=None, opener=open_provider)
    print(json.dumps(result.to_json()))
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from vmlab.hub.names import CLASS_TAG
from vmlab.providers.base import Instance, Provider
from vmlab.providers.capabilities import Quotes, Regional
from vmlab.state import LabRecord

#: opens the provider of a name (None: the default) in a region (None: its default), options checked
Opener = Callable[[str | None, str | None], Provider]
COST_NOTE = ("estimates: hourly price when launched x time since the last start; disks, traffic and stopped time "
             "are not counted")


@dataclass(frozen=True)
class LabRow:
    """One lab of `vmlab ls`: recorded on this machine, or only tagged (`state` says "(no local record)")."""

    name: str
    provider: str
    region: str | None
    instance: str
    state: str
    address: str
    type: str | None
    spot: bool
    market: str
    created: str | None
    launched_at: str | None
    uptime_s: int | None
    hourly_price: float | None
    cost_so_far: float | None
    tunnel_port: int | None
    agent: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LsResult:
    rows: list[LabRow]

    def to_json(self) -> dict[str, Any]:
        return {"labs": [r.to_json() for r in self.rows], "cost_note": COST_NOTE}


def uptime_seconds(inst: Instance | None, now: dt.datetime) -> float | None:
    """Seconds since the instance last started, while it runs (None when stopped or unknown)."""
    if inst is None or inst.state != "running" or not inst.launched_at:
        return None
    try:
        started = dt.datetime.fromisoformat(inst.launched_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    if started.tzinfo is None:
        started = started.replace(tzinfo=dt.timezone.utc)
    return max((now - started).total_seconds(), 0.0)


def cost_so_far(hourly: float | None, uptime: float | None) -> float | None:
    if hourly is None or uptime is None:
        return None
    return round(hourly * uptime / 3600, 4)


def _list_price(provider: Provider, inst: Instance) -> float | None:
    if not isinstance(provider, Quotes) or inst.spot or not inst.instance_type:
        return None
    return provider.list_price(inst.instance_type)


def _targets(records: list[LabRecord], provider_name: str | None, region: str | None) -> list[tuple[str, str | None]]:
    """(provider, region) pairs to ask: the filter's, else every pair the records name, else the default.
    Only records of a regional provider carry a region (the opener refuses --region for the others)."""
    if region is not None:
        from vmlab.providers import name_for

        return [(name_for(Regional, provider_name), region)]
    pairs = {(r.provider, r.region) for r in records if provider_name in (None, r.provider)}
    if provider_name and not any(p == provider_name for p, _ in pairs):
        pairs.add((provider_name, None))
    return sorted(pairs, key=str) or [(provider_name or "", None)]


def list_labs(records: list[LabRecord], provider_name: str | None, region: str | None, opener: Opener,
              class_name: str | None = None) -> LsResult:
    """`class_name`: only the labs of that class (tagged `vmlab:class` by vmlab.hub.LabSpawner)."""
    now = dt.datetime.now(dt.timezone.utc)
    wanted = {"vmlab:lab": "*", **({CLASS_TAG: class_name} if class_name else {})}
    rows: list[LabRow] = []
    seen: set[tuple[str, str | None]] = set()
    for pname, reg in _targets(records, provider_name, region):
        provider = opener(pname or None, reg)
        here = provider.current_region() if isinstance(provider, Regional) else None
        if (provider.name, here) in seen:  # a record without region and one naming the default region
            continue
        seen.add((provider.name, here))
        instances = {i.id: i for i in provider.list_instances(wanted)}
        mine = [r for r in records if r.provider == provider.name
                and (not isinstance(provider, Regional) or (r.region or here) == here)
                and (not class_name or r.instance_id in instances)]
        for r in mine:
            rows.append(_recorded_row(provider, r, instances.pop(r.instance_id, None), here, now))
        for inst in instances.values():
            rows.append(_unrecorded_row(provider, inst, here, now))
    return LsResult(rows)


def _recorded_row(provider: Provider, r: LabRecord, inst: Instance | None, here: str | None,
                  now: dt.datetime) -> LabRow:
    from vmlab.workflows import tunnel_bg

    up = uptime_seconds(inst, now)
    return LabRow(name=r.name, provider=r.provider, region=here, instance=r.instance_id,
                  state=inst.state if inst else "missing", address=f"{r.host}:{r.port}", type=r.instance_type,
                  spot=r.spot, market="spot" if r.spot else "on-demand", created=r.created,
                  launched_at=inst.launched_at if inst else None, uptime_s=round(up) if up is not None else None,
                  hourly_price=r.hourly_price, cost_so_far=cost_so_far(r.hourly_price, up),
                  tunnel_port=(tunnel_bg.running(r.name) or {}).get("local_port"),
                  agent=_agent_row(provider, r, inst))


def _unrecorded_row(provider: Provider, inst: Instance, here: str | None, now: dt.datetime) -> LabRow:
    up = uptime_seconds(inst, now)
    hourly = _list_price(provider, inst)
    return LabRow(name=inst.tags.get("vmlab:lab", inst.name), provider=provider.name, region=here,
                  instance=inst.id, state=inst.state + " (no local record)", address=f"{inst.host}:{inst.port}",
                  type=inst.instance_type, spot=inst.spot, market="spot" if inst.spot else "on-demand",
                  created=inst.launched_at, launched_at=inst.launched_at,
                  uptime_s=round(up) if up is not None else None, hourly_price=hourly,
                  cost_so_far=cost_so_far(hourly, up), tunnel_port=None, agent=None)


def _agent_row(provider: Provider, record: LabRecord, inst: Instance | None) -> dict[str, Any] | None:
    """The agent's status of a running lab that syncs, for `ls` (a few seconds at most per lab)."""
    from vmlab.errors import VmlabError
    from vmlab.workflows.labpower import agent_status

    if inst is None or inst.state != "running" or not record.agent.sync_url:
        return None
    try:
        status = agent_status(provider, record, timeout=5.0)
    except VmlabError as e:
        return {"summary": "unreachable", "error": str(e)}
    if status is None:
        return {"summary": "no status yet"}
    return {**status.to_json(), "summary": status.summary()}
