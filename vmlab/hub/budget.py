"""A class's budget in USD per day (UTC), from the hourly prices vmlab shows at `up` (the provider's `Quotes`).

Spent today = what the labs of the class that run now have cost since they last started (or since midnight),
plus what labs stopped earlier today cost (the ledger the spawner keeps: one small JSON file per class in vmlab's
state dir). A new lab starts only when the budget covers what is spent plus one more hour of every running lab,
the new one included; running labs are stopped once what is spent reaches the budget. Prices are estimates
(disks and traffic are not counted), as in `vmlab ls`.

Example::

    spend = Spend.of(labs=[(hourly, started_at), ...], ledger_usd=1.2, now=now)
    check_can_spawn(spend, hourly=0.53, budget=20.0)      # BadInput when it would not fit
    spend.reached(20.0)                                   # True: stop the class's labs
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vmlab.errors import BadInput
from vmlab.fileio import write_atomic
from vmlab.paths import state_dir
from vmlab.providers.base import Provider
from vmlab.providers.capabilities import Quotes


def today(now: dt.datetime) -> str:
    return now.astimezone(dt.timezone.utc).date().isoformat()


def running_cost(hourly: float, started: dt.datetime, now: dt.datetime) -> float:
    """USD a lab running since `started` has cost today (UTC)."""
    midnight = dt.datetime.combine(now.astimezone(dt.timezone.utc).date(), dt.time(), dt.timezone.utc)
    return hourly * max((now - max(started, midnight)).total_seconds(), 0.0) / 3600


@dataclass(frozen=True)
class Spend:
    #: USD spent today
    spent: float
    #: USD per hour of the labs running now
    hourly: float

    @classmethod
    def of(cls, labs: Iterable[tuple[float, dt.datetime]], ledger_usd: float, now: dt.datetime) -> Spend:
        """`labs`: (hourly price, last start) of each running lab of the class."""
        running = list(labs)
        return cls(ledger_usd + sum(running_cost(h, s, now) for h, s in running), sum(h for h, _ in running))

    def reached(self, budget: float) -> bool:
        return budget > 0 and self.spent >= budget


def check_can_spawn(spend: Spend, hourly: float, budget: float, class_name: str = "the class") -> None:
    """BadInput when `budget` (USD/day, 0: none) cannot cover what is spent plus an hour of every lab, new one
    included."""
    if budget <= 0:
        return
    need = spend.spent + spend.hourly + hourly
    if need > budget:
        raise BadInput(f"{class_name}'s budget of ${budget:.2f} a day is reached: ${spend.spent:.2f} spent today, "
                       f"another hour of the running labs and this one would make ${need:.2f}",
                       "ask an instructor: stop idle labs, or raise c.LabSpawner.budget_usd_per_day")


def lab_price(provider: Provider, instance_type: str | None, hourly_usd: float, budget: float) -> float | None:
    """USD per hour of one lab: `hourly_usd` when set (c.LabSpawner.hourly_usd: the instructor's own figure wins),
    else the provider's on-demand price when it quotes one (None: unknown). BadInput when a budget is set and
    neither gives a price, before anything is made."""
    if hourly_usd > 0:
        return float(hourly_usd)
    quotes = isinstance(provider, Quotes) and bool(instance_type)
    price = provider.list_price(instance_type) if quotes and instance_type else None  # type: ignore[attr-defined]
    if price is None and budget > 0:
        which = (f"{provider.name} has none for {instance_type}" if quotes else
                 f"the {provider.name} provider quotes none" + ("" if instance_type or not isinstance(
                     provider, Quotes) else " without an instance type"))
        raise BadInput(f"a class budget needs prices: {which}",
                       "set c.LabSpawner.hourly_usd (USD per lab-hour), or budget_usd_per_day = 0")
    return price


class Ledger:
    """USD of lab sessions that ended, per class and UTC day (`state_dir()/hub/CLASS-spend.json`)."""

    def __init__(self, class_name: str, folder: Path | None = None) -> None:
        self.path = (folder or state_dir() / "hub") / f"{class_name}-spend.json"

    def _read(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def spent(self, now: dt.datetime) -> float:
        return self._read().get(today(now), 0.0)

    def add(self, usd: float, now: dt.datetime) -> None:
        """Add a session's cost to today's (days before today are dropped: the budget is per day)."""
        day = today(now)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.path, json.dumps({day: self._read().get(day, 0.0) + usd}) + "\n")
