"""Keeping a charging plan for the control loop: when to re-plan, and each charger's `want_a` in between.

The planner (`gateway.planner`) places each session's energy in the cheapest slots before its departure
under the limit timeline; the control loop only needs the plan's target for the slot in force now. A plan
is made again when it is older than `replan_every`, when the set of sessions changes (a car arrives or
leaves, gives a new departure or energy need) and when the schedule changes; in between, the same plan
answers for the current slot. Pure apart from the plan it keeps: `now` is always a parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from gateway.domain import EvseState, Segment
from gateway.planner import Plan, PlanSettings, build_slots, make_plan, targets
from gateway.tariff import Tariff, price_timeline

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

# Only sessions the planner can shift change its answer: those with a departure (and, for a useful shift,
# an energy need). Rounded so that the energy counter creeping up does not re-plan every tick.
SessionKey = tuple[tuple[str, datetime | None, float | None], ...]


def session_key(evses: Sequence[EvseState]) -> SessionKey:
    return tuple(sorted(
        (e.id, e.departure, None if e.energy_needed_kwh is None else round(e.energy_needed_kwh))
        for e in evses if e.connected
    ))


@dataclass
class PlanKeeper:
    settings: PlanSettings
    tariff: Tariff | None = None
    replan_every: timedelta = timedelta(minutes=1)
    plan: Plan | None = None
    _key: SessionKey = ()
    _schedule: tuple[Segment, ...] = ()

    @classmethod
    def from_config(cls, config: GatewayConfig) -> PlanKeeper:
        from gateway.topology import ev_capacity_kw

        tariff = config.tariff.to_tariff(config.site.timezone)
        return cls(settings=config.tariff.to_settings(ev_capacity_kw(config)), tariff=tariff)

    def wants(self, evses: Sequence[EvseState], schedule: Sequence[Segment], now: datetime,
              non_ev_kw: float = 0.0) -> dict[str, float | None]:
        """Each charger's cap from the plan for the slot in force at `now` (None: not capped)."""
        key = session_key(evses)
        schedule = tuple(schedule)
        stale = self.plan is None or now - self.plan.now >= self.replan_every or not any(
            s.start <= now < s.end for s in self.plan.slots)
        # Segments are rebuilt from `now` every tick, so compare what they say rather than where they start.
        shape = tuple((s.end, s.site_kw, s.ev_kw, s.price, s.reasons) for s in schedule)
        known = tuple((s.end, s.site_kw, s.ev_kw, s.price, s.reasons) for s in self._schedule)
        if stale or key != self._key or shape != known:
            prices = price_timeline(self.tariff, now, now + self.settings.horizon, schedule)
            slots = build_slots(now, self.settings, schedule=schedule, prices=prices, non_ev_kw=non_ev_kw)
            self.plan = make_plan(evses, slots, now, self.settings)
            self._key, self._schedule = key, schedule
        assert self.plan is not None
        return targets(self.plan, evses, now)
