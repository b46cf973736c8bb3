"""Keeping a charging plan for the control loop: when to re-plan, and each charger's `want_a` in between.

The planner (`gateway.planner`) places each session's energy in the cheapest slots before its departure
under the limit timeline; the control loop only needs the plan's target for the slot in force now. A plan
is made again when it is older than `replan_every`, when the set of sessions changes (a car arrives or
leaves, gives a new departure or energy need) and when the schedule changes; in between, the same plan
answers for the current slot. Pure apart from the plan it keeps: `now` is always a parameter.

With a demand charge in force the plan is given a site power target (`peak_kw`): the month's metered peak
so far, from the site power `SitePowerLog` keeps, or the previous plan's target when that is higher (a
target already raised is not searched for again). Power under what the month already reached costs nothing
more, so the plan charges freely up to it; the control loop then keeps the site under the plan's target.
The plan's EV capacity in each slot is also held under what the service can carry less the non-EV load
(`service_kw`): the schedule's limits say what the utility asks, not what the breaker allows, and a plan
above the breaker would promise the cheap slots more energy than the allocator can deliver in them.

The log keeps one average per finished 15-minute window (a month is ~3000 numbers, not millions of
samples) and the samples of the window now open.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from gateway.domain import EvseState, Segment
from gateway.planner import Plan, PlanSettings, build_slots, make_plan, targets
from gateway.schedule import PriceChange
from gateway.tariff import DEMAND_WINDOW, Tariff, demand_peak_kw, price_timeline

if TYPE_CHECKING:
    pass

# Only sessions the planner can shift change its answer: those with a departure (and, for a useful shift,
# an energy need). Rounded so that the energy counter creeping up does not re-plan every tick.
SessionKey = tuple[tuple[str, datetime | None, float | None], ...]


def session_key(evses: Sequence[EvseState]) -> SessionKey:
    return tuple(sorted(
        (e.id, e.departure, None if e.energy_needed_kwh is None else round(e.energy_needed_kwh))
        for e in evses if e.connected
    ))


@dataclass
class SitePowerLog:
    """Site power samples reduced to what the month's demand peak needs (see `gateway.tariff.demand_peak_kw`)."""

    window: timedelta = DEMAND_WINDOW
    finished: list[tuple[datetime, float]] = field(default_factory=list)  # (window start, average kW)
    current: list[tuple[datetime, float]] = field(default_factory=list)  # samples in the open window

    def _start_of(self, moment: datetime) -> datetime:
        epoch = datetime(2000, 1, 1, tzinfo=UTC)
        width = self.window.total_seconds()
        return epoch + timedelta(seconds=((moment - epoch).total_seconds() // width) * width)

    def record(self, at: datetime, kw: float) -> None:
        if self.current and at < self.current[-1][0]:
            return  # the clock stepped back: the window averages assume time moves forward
        if self.current and self._start_of(at) > self._start_of(self.current[0][0]):
            opened = self._start_of(self.current[0][0])
            self.finished.append((opened, demand_peak_kw(self.current, window=self.window)))
            held = self.current[-1][1]  # holds until this sample: over any window skipped, and into this one
            gap = opened + self.window
            while gap < self._start_of(at):
                self.finished.append((gap, held))
                gap += self.window
            self.current = [] if at == self._start_of(at) else [(self._start_of(at), held)]
        self.current.append((at, kw))

    def peak_kw(self, since: datetime) -> float:
        """The highest window average from `since` on (the open window as if its last sample held)."""
        self.finished = [(start, kw) for start, kw in self.finished if start >= since]
        done = max((kw for _, kw in self.finished), default=0.0)
        return max(done, demand_peak_kw(self.current, since=since, window=self.window))


@dataclass
class PlanKeeper:
    settings: PlanSettings
    tariff: Tariff | None = None
    replan_every: timedelta = timedelta(minutes=1)
    service_kw: float | None = None  # what the service entrance carries (continuous), None: not bounded here
    plan: Plan | None = None
    _key: SessionKey = ()
    _schedule: tuple[Segment, ...] = ()
    _changes: tuple[PriceChange, ...] = ()

    def wants(self, evses: Sequence[EvseState], schedule: Sequence[Segment], now: datetime,
              non_ev_kw: float = 0.0, peak_kw: float | None = None,
              changes: Sequence[PriceChange] = ()) -> dict[str, float | None]:
        """Each charger's cap from the plan for the slot in force at `now` (None: not capped).

        `peak_kw`: the site power target to plan under (a demand charge is in force), None without one.
        `changes`: OpenADR prices relative to the tariff's (`gateway.schedule.price_changes`).
        """
        key = session_key(evses)
        schedule = tuple(schedule)
        stale = self.plan is None or now - self.plan.now >= self.replan_every or not any(
            s.start <= now < s.end for s in self.plan.slots)
        # Segments are rebuilt from `now` every tick, so compare what they say rather than where they start.
        shape = tuple((s.end, s.site_kw, s.ev_kw, s.price, s.reasons) for s in schedule)
        known = tuple((s.end, s.site_kw, s.ev_kw, s.price, s.reasons) for s in self._schedule)
        # A demand charge starting or ending changes the plan; so does the metered peak passing the plan's
        # target (what the month has already reached is paid for: holding the site under less wastes it).
        target = None if self.plan is None else self.plan.peak_kw
        demand_changed = (peak_kw is None) != (target is None) or (
            peak_kw is not None and target is not None and peak_kw > target * 1.01 + 0.1)
        changes = tuple(changes)
        if stale or key != self._key or shape != known or demand_changed or changes != self._changes:
            settings = self.settings
            if self.service_kw is not None:
                room = max(0.0, self.service_kw - non_ev_kw)
                capacity = settings.ev_capacity_kw
                settings = replace(settings, ev_capacity_kw=room if capacity is None else min(capacity, room))
            prices = price_timeline(self.tariff, now, now + settings.horizon, schedule, changes)
            slots = build_slots(now, settings, schedule=schedule, prices=prices, non_ev_kw=non_ev_kw)
            self.plan = make_plan(evses, slots, now, settings, peak_kw=peak_kw)
            self._key, self._schedule, self._changes = key, schedule, changes
        assert self.plan is not None
        return targets(self.plan, evses, now)
