"""The planning horizon cut into slots: how plans are made (`PlanSettings`), and `build_slots`, a regular
grid (15 min for 6 h, then hourly, by default) cut again at every change of limit or price, each slot with
one price and the EV power the limit timeline leaves."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from gateway.domain import Segment
from gateway.tariff import PriceStep

EPS = 1e-9


SHORT_KWH = 0.01  # a session planned this much below its request is left to the allocator (see `targets`)


NoDeparture = Literal["charge-now", "dwell"]


@dataclass(frozen=True, slots=True)
class PlanSettings:
    interval: timedelta = timedelta(minutes=15)
    horizon: timedelta = timedelta(hours=48)  # nothing is planned further ahead than this
    # Beyond `fine_for` the grid is `coarse_interval`: a plan that far ahead is recomputed many times before
    # it matters, and fewer slots keep every recomputation cheap. Limit and price changes still cut slots.
    fine_for: timedelta = timedelta(hours=6)
    coarse_interval: timedelta = timedelta(hours=1)
    ev_capacity_kw: float | None = None  # the site's normal EV capacity (None: only the timeline's limits)
    no_departure: NoDeparture = "charge-now"
    default_dwell: timedelta = timedelta(hours=8)
    # What a session that gives no energy request is assumed to need (None: all it can take until it leaves).
    # With "dwell" this is what lets a car that says nothing (OCPP 1.6) wait for the cheap hours.
    default_energy_kwh: float | None = None


@dataclass(frozen=True, slots=True)
class Slot:
    """A stretch of the horizon with one price and one EV power limit (kW, net of non-EV load)."""

    start: datetime
    end: datetime
    price: float
    ev_cap_kw: float  # math.inf: no limit known
    non_ev_kw: float = 0.0
    source: str = ""

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600.0


def build_slots(
    now: datetime,
    settings: PlanSettings,
    schedule: Sequence[Segment] = (),
    prices: Sequence[PriceStep] = (),
    non_ev_kw: float = 0.0,
    until: datetime | None = None,
) -> tuple[Slot, ...]:
    """Slots from `now` to `until` (default: now + horizon) on the interval grid and at every change."""
    end = now + settings.horizon if until is None else min(until, now + settings.horizon)
    if end <= now:
        return ()
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    cuts = {now, end}
    fine_end = min(end, now + settings.fine_for)
    for interval, begin, finish in ((settings.interval, now, fine_end),
                                    (max(settings.interval, settings.coarse_interval), fine_end, end)):
        step = interval.total_seconds()
        at = epoch + timedelta(seconds=(math.floor((begin - epoch).total_seconds() / step) + 1) * step)
        while at < finish:
            cuts.add(at)
            at += interval
    for segment in schedule:
        for moment in (segment.start, segment.end):
            if moment is not None and now < moment < end:
                cuts.add(moment)
    for step_ in prices:
        for moment in (step_.start, step_.end):
            if now < moment < end:
                cuts.add(moment)
    times = sorted(cuts)
    segments = sorted(schedule, key=lambda s: s.start)
    steps = sorted(prices, key=lambda p: p.start)
    out: list[Slot] = []
    si = pi = 0
    for begin, finish in itertools.pairwise(times):
        while si < len(segments) and _ends_by(segments[si], begin):
            si += 1
        while pi < len(steps) and steps[pi].end <= begin:
            pi += 1
        seg = segments[si] if si < len(segments) and segments[si].covers(begin) else None
        price_step = steps[pi] if pi < len(steps) and steps[pi].start <= begin < steps[pi].end else None
        cap = math.inf if settings.ev_capacity_kw is None else settings.ev_capacity_kw
        reasons: tuple[str, ...] = ()
        if seg is not None:
            if seg.ev_kw is not None:
                cap = min(cap, seg.ev_kw)
            if seg.site_kw is not None:
                cap = min(cap, seg.site_kw - non_ev_kw)
            reasons = seg.reasons
        price = price_step.price if price_step is not None and price_step.price is not None else 0.0
        source = price_step.source if price_step is not None else "none"
        if reasons:
            source += " | " + ",".join(reasons)
        out.append(Slot(begin, finish, price, max(0.0, cap), non_ev_kw, source))
    return tuple(out)


def _ends_by(segment: Segment, moment: datetime) -> bool:
    return segment.end is not None and segment.end <= moment
