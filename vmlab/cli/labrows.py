"""The rows of `vmlab ls`: lab records joined with the instances each provider (and EC2 region) reports, with
uptime and an estimated cost so far.

The cost is hourly price x time since the instance last started (EC2's LaunchTime): an estimate that leaves out
disks, traffic and earlier runs before a stop. The hourly price is the one recorded at launch (bundled table or
spot history); instances without a local record get the table's on-demand price, spot ones none.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from vmlab.cli.options import ec2_only, open_provider
from vmlab.cli.output import Output
from vmlab.providers.base import Instance
from vmlab.state import LabRecord


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


def _table_price(provider: Any, inst: Instance) -> float | None:
    if provider.name != "ec2" or inst.spot or not inst.instance_type:
        return None
    from vmlab.providers.ec2.prices import on_demand

    return on_demand(provider.region, inst.instance_type)


def _targets(records: list[LabRecord], provider_name: str | None, region: str | None) -> list[tuple[str, str | None]]:
    """(provider, region) pairs to ask: the filter's, else every pair the records name, else the default."""
    if region is not None:
        if provider_name not in (None, "ec2"):
            ec2_only(provider_name, region=region)
        return [("ec2", region)]
    pairs = {(r.provider, r.region if r.provider == "ec2" else None) for r in records
             if provider_name in (None, r.provider)}
    if provider_name and not any(p == provider_name for p, _ in pairs):
        pairs.add((provider_name, None))
    return sorted(pairs, key=str) or [(provider_name or "", None)]


def lab_rows(records: list[LabRecord], provider_name: str | None, region: str | None) -> list[dict[str, Any]]:
    from vmlab.workflows import tunnel_bg

    now = dt.datetime.now(dt.timezone.utc)
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str | None]] = set()
    for pname, reg in _targets(records, provider_name, region):
        provider = open_provider(pname or None, reg)
        here = getattr(provider, "region", None)
        if (provider.name, here) in seen:  # a record without region and one naming the default region
            continue
        seen.add((provider.name, here))
        instances = {i.id: i for i in provider.list_instances({"vmlab:lab": "*"})}
        mine = [r for r in records if r.provider == provider.name
                and (provider.name != "ec2" or (r.region or here) == here)]
        for r in mine:
            inst = instances.pop(r.instance_id, None)
            up = uptime_seconds(inst, now)
            rows.append({"name": r.name, "provider": r.provider, "region": here, "instance": r.instance_id,
                         "state": inst.state if inst else "missing", "address": f"{r.host}:{r.port}",
                         "type": r.instance_type, "spot": r.spot, "market": "spot" if r.spot else "on-demand",
                         "created": r.created, "launched_at": inst.launched_at if inst else None,
                         "uptime_s": round(up) if up is not None else None, "hourly_price": r.hourly_price,
                         "cost_so_far": cost_so_far(r.hourly_price, up),
                         "tunnel_port": (tunnel_bg.running(r.name) or {}).get("local_port"),
                         "agent": _agent_row(provider, r, inst)})
        for inst in instances.values():
            up = uptime_seconds(inst, now)
            hourly = _table_price(provider, inst)
            rows.append({"name": inst.tags.get("vmlab:lab", inst.name), "provider": provider.name, "region": here,
                         "instance": inst.id, "state": inst.state + " (no local record)",
                         "address": f"{inst.host}:{inst.port}", "type": inst.instance_type, "spot": inst.spot,
                         "market": "spot" if inst.spot else "on-demand", "created": inst.launched_at,
                         "launched_at": inst.launched_at, "uptime_s": round(up) if up is not None else None,
                         "hourly_price": hourly, "cost_so_far": cost_so_far(hourly, up), "tunnel_port": None,
                         "agent": None})
    return rows


def _agent_row(provider: Any, record: Any, inst: Any) -> dict[str, Any] | None:
    """The agent's status of a running lab that syncs, for `ls` (a few seconds at most per lab)."""
    from vmlab.errors import VmlabError
    from vmlab.workflows.labs import agent_status

    if inst is None or inst.state != "running" or not (record.extra.get("agent") or {}).get("sync_url"):
        return None
    try:
        status = agent_status(provider, record, timeout=5.0)
    except VmlabError as e:
        return {"summary": "unreachable", "error": str(e)}
    if status is None:
        return {"summary": "no status yet"}
    return {**status.to_json(), "summary": status.summary()}



def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m"


def render_rows(out: Output, rows: list[dict[str, Any]]) -> None:
    if not rows:
        out.say("no labs; start one with `vmlab up`")
        return
    out.say(f"{'name':<16} {'state':<12} {'type':<13} {'market':<9} {'uptime':>8} {'$/h':>8} {'~cost':>8}  "
            f"{'instance':<22} address", "bold")
    for row in rows:
        price = f"{row['hourly_price']:.4g}" if row["hourly_price"] is not None else "?"
        cost = f"{row['cost_so_far']:.2f}" if row["cost_so_far"] is not None else "-"
        where = f"{row['provider']}" + (f" {row['region']}" if row.get("region") else "")
        out.say(f"{row['name']:<16} {row['state']:<12} {row['type'] or '-':<13} {row['market']:<9} "
                f"{_duration(row['uptime_s']):>8} {price:>8} {cost:>8}  {row['instance']:<22} {row['address']} "
                f"({where})" + (f"  tunnel: 127.0.0.1:{row['tunnel_port']}" if row["tunnel_port"] else "")
                + (f"  sync: {agent['summary']}" if (agent := row.get("agent") or {}).get("summary") else ""))
    if any(r["cost_so_far"] is not None for r in rows):
        out.say("~cost: estimate (hourly price x time since the last start; disks and traffic not included)")
