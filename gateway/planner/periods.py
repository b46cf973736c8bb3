"""The planner for a simulator with one price per fixed period (the ACN benchmark's `Planner` hook):
`period_price_planner`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from gateway.domain import EvseState
from gateway.planner.plan import make_plan
from gateway.planner.slots import PlanSettings, build_slots
from gateway.planner.targets import targets
from gateway.tariff import PriceStep

PeriodPlanner = Callable[[Sequence[EvseState], datetime, timedelta, Sequence[float]], dict[str, float]]


def period_price_planner(
    ev_capacity_kw: float | None = None, demand: bool = False, settings: PlanSettings | None = None
) -> PeriodPlanner:
    """A planner for a simulator that knows one price per fixed period from now on (acnportal's `get_prices`).

    The returned function takes (chargers, now, period, prices) and answers `want_a` per charger it caps
    (chargers it leaves uncapped are left out). With `demand`, it keeps the site's EV power under the
    highest target it has had to plan for so far (starting from zero, as at the start of a month), raising
    it only when a departure needs it: the simulator has no meter, so the plan's own peak stands in for it.
    """
    peak: list[float] = [0.0]

    def plan_caps(evses: Sequence[EvseState], now: datetime, period: timedelta,
                  prices: Sequence[float]) -> dict[str, float]:
        horizon = period * max(1, len(prices))
        cfg = settings or PlanSettings(interval=period, horizon=horizon, ev_capacity_kw=ev_capacity_kw)
        steps = [PriceStep(now + n * period, now + (n + 1) * period, float(p), "period") for n, p in enumerate(prices)]
        slots = build_slots(now, cfg, prices=steps)
        plan = make_plan(evses, slots, now, cfg, peak_kw=peak[0] if demand else None)
        if demand and plan.peak_kw is not None:
            peak[0] = max(peak[0], plan.peak_kw)
        return {ident: amps for ident, amps in targets(plan, evses).items() if amps is not None}

    return plan_caps
