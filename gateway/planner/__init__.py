"""Charging plans: each connected session's energy per interval until it leaves, cheapest intervals first.

Pure: no I/O, no clock; `now` is a parameter. The API, in the order a caller uses it:

    slots = build_slots(now, settings, schedule=segments, prices=price_timeline(...), non_ev_kw=2.0)
    plan = make_plan(evses, slots, now, settings, peak_kw=month_peak)   # or asap_plan(...) as a baseline
    evses = apply_targets(evses, plan, now)      # every tick, until the plan is recomputed: want_a now
    allocation = allocate(Problem(..., evses=evses, ...))               # real-time limits still win

`build_slots` cuts the horizon into `Slot`s on a regular grid (15 min for 6 h, then hourly, by default) and at
every change of limit or price, each with one price and the EV power the limit timeline leaves
(`Segment.ev_kw`, `Segment.site_kw` less the non-EV load, the site's normal EV capacity). `make_plan` solves
"deliver as much of each request as possible before its departure, at the lowest energy cost, never above a
slot's capacity nor a charger's own maximum": slots are taken cheapest first (earliest among equal prices) and
each is filled as far as the sessions can use it, rerouting earlier choices along augmenting paths when that
lets more energy in. This is the greedy algorithm on the polymatroid of deliverable energy, so the plan
delivers the most energy any plan could (every departure a feasible plan meets is met) and costs the least
among such plans. With a demand charge, `peak_kw` (the month's running peak of the 15-minute average site
power) caps every slot, and is raised by the least amount, found by false position, only when a departure
would otherwise be missed. Sessions without a departure get `settings.no_departure`: "charge-now" (planned
into what is left, earliest first, never targeted below its minimum) or "dwell" (a departure `default_dwell`
from now); sessions without an energy request want `default_energy_kwh`, or without one all they can take
until they leave; the latter are planned last, into what the sessions with a request leave, so they never crowd
one out nor raise the peak target. `targets` turns the plan's current slot into amps, rounded up to the charger's
step (and to its minimum when it charges at all) so the allocator never starves a plan; the runtime recomputes
the plan when reality moves away from it (gateway/runtime/plans.py says when). For the status page and the control loop:
`Plan.ev_kw()`, `site_profile(plan)`, `Plan.cost()`, `Plan.peak_kw` (pass it back as the next `peak_kw`, with
the month's metered peak from `gateway.tariff.demand_peak_kw`, so a raised target is not searched for again).
A tariff comes from the config (`gateway.assembly.tariff_of(load_config(path).tariff, site.timezone)`;
`config/example-tariff-tou.toml` is SCE TOU-EV-4 as acnportal ships it) or is built directly
(`gateway.tariff.Tariff`). A simulator that has one price per fixed period (the ACN benchmark) can use
`period_price_planner(ev_capacity_kw, demand)`, which fits `bench/acn.py`'s `Planner` hook as it is.

The package, one job a module: `slots` (settings and the horizon's slots), `sessions` (what each session
wants and can take), `fill` (placing energy, cheapest first), `plan` (`Plan`, `make_plan`, `asap_plan`),
`targets` (what a plan means now) and `periods` (the fixed-period planner). Import from here.
"""

from __future__ import annotations

from gateway.planner.periods import PeriodPlanner, period_price_planner
from gateway.planner.plan import Plan, SessionPlan, asap_plan, make_plan
from gateway.planner.slots import NoDeparture, PlanSettings, Slot, build_slots
from gateway.planner.targets import apply_targets, site_profile, targets

__all__ = [
    "NoDeparture",
    "PeriodPlanner",
    "Plan",
    "PlanSettings",
    "SessionPlan",
    "Slot",
    "apply_targets",
    "asap_plan",
    "build_slots",
    "make_plan",
    "period_price_planner",
    "site_profile",
    "targets",
]
