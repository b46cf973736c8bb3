"""The demand charge's side of a decision, pure: the site power target while a demand charge is in force.

A demand charge bills the month's highest metered power, so while one is in force the site is held under
a target: the month's metered peak (paid for already, so usable in full), or the previous plan's target
when that is higher (a target the planner had to raise stays raised within the month). The planner
raises it only when a departure would otherwise be missed. `floor` keeps the target from starving cars
that gave no departure. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.domain import J1772_MIN_A, EvseState, Segment
from gateway.planner import Plan
from gateway.tariff import Tariff, demand_charge_at, month_start


@dataclass(frozen=True, slots=True)
class Demand:
    """The demand charge in force at a moment (None: none is), the month's metered peak and the target."""

    charge_per_kw: float | None = None
    month_peak_kw: float | None = None
    target_kw: float | None = None


def demand_at(tariff: Tariff, schedule: Sequence[Segment], now: datetime,
              peak_kw_since: Callable[[datetime], float], plan: Plan | None) -> Demand:
    """`peak_kw_since(t)`: the site's metered peak since `t` (the caller's log of site power)."""
    charge = demand_charge_at(tariff, schedule, now)
    if charge is None:
        return Demand()
    since = month_start(tariff, now)
    peak = peak_kw_since(since)
    previous = plan.peak_kw if plan is not None and plan.peak_kw is not None and plan.now >= since else 0.0
    return Demand(charge, peak, max(peak, previous))


def floor(target: float | None, states: Sequence[EvseState], now: datetime, non_ev_kw: float) -> float | None:
    """The target, never so low that a car which gave no departure cannot take its minimum.

    Such a car never raises the plan's target, so at the start of a month (or after a restart, the
    metered peak being kept in memory) a target at the house load would hold it at 0 A for good, the
    metered peak never growing; with room for one minimum the allocator's rotation serves them in turn
    and the month's peak grows only by that much."""
    if target is None:
        return None
    unplanned = [e for e in states if e.connected and e.max_a > 0 and (e.departure is None or e.departure <= now)]
    if not unplanned:
        return target
    least = max(max(J1772_MIN_A, e.min_a) * e.kw_per_a for e in unplanned)
    return max(target, non_ev_kw + least)
