"""How `vmlab ls` shows its rows (vmlab.workflows.listing makes them)."""

from __future__ import annotations

from typing import Any

from vmlab.cli.output import Output


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
