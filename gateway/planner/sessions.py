"""The sessions a plan is made for, as the planner works on them: each connected charger's energy wanted,
departure and the most it can take in each slot."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.domain import EvseState
from gateway.planner.slots import PlanSettings, Slot


@dataclass(slots=True)
class _Session:
    evse: EvseState
    rate_kw: float
    demand: float  # kWh still to place
    requested: float
    departure: datetime
    caps: list[float]  # the most it can take in each slot (kWh); 0 after it leaves
    last: int  # index of the last slot it is present in (-1: none)
    charge_now: bool
    greedy: bool = False  # no energy request and no default: it wants all it can take


def _sessions(evses: Iterable[EvseState], slots: Sequence[Slot], now: datetime,
              settings: PlanSettings) -> list[_Session]:
    hours = [slot.hours for slot in slots]
    ends = [slot.end for slot in slots]
    out: list[_Session] = []
    for evse in evses:
        if not evse.connected or evse.max_a <= 0:
            continue
        rate = evse.kw_per_a * evse.max_a
        # A car still plugged in after the departure it gave is treated as one that gave none: planning
        # it for a moment already past would hold it at 0 A for as long as it stays.
        known = evse.departure if evse.departure is not None and evse.departure > now else None
        charge_now = known is None and settings.no_departure == "charge-now"
        departure = known if known is not None else now + settings.default_dwell
        # Present in every slot that ends by its departure, and in part of the one it leaves in.
        full = bisect.bisect_right(ends, departure)
        caps = [rate * h for h in hours[:full]]
        last = full - 1
        if full < len(slots) and departure > slots[full].start:
            caps.append(rate * (departure - slots[full].start).total_seconds() / 3600.0)
            last = full
        caps += [0.0] * (len(slots) - len(caps))
        window = sum(caps)
        if evse.energy_needed_kwh is not None:
            requested = max(0.0, evse.energy_needed_kwh)
        else:
            requested = window if settings.default_energy_kwh is None else settings.default_energy_kwh
        greedy = evse.energy_needed_kwh is None and settings.default_energy_kwh is None
        out.append(_Session(evse, rate, min(requested, window), requested, departure, caps, last, charge_now,
                            greedy))
    return out
