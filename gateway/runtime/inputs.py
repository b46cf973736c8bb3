"""A decision's inputs at `now`: the schedule from the stored events (both moments while the clock is
stepped), the operator's controls, the readings, the plan's targets and the demand peak target, the
hand-back caps and the solar modes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from gateway.domain import Segment
from gateway.ports import (
    HandsBack,
)
from gateway.runtime import demand
from gateway.runtime.clock_jump import nows, strictest
from gateway.runtime.decide import Inputs, charger_states
from gateway.schedule import PriceChange, build_schedule, price_changes, segment_at
from gateway.tariff import Tariff

if TYPE_CHECKING:
    from gateway.runtime.loop import Runtime

log = logging.getLogger("gateway.runtime")


def inputs(rt: Runtime, now: datetime) -> Inputs:
    # While the wall clock is stepped (a bad NTP step), it may be either moment: the schedule is built
    # from the earlier and the strictest limits of both are in force, so no step ends a DR event early.
    moments = nows(now, rt.clock_state)
    schedule = build_schedule(rt.events.values(), min(moments), rt.schedule_settings)
    rt.boundaries.follow(schedule, now)
    inputs = Inputs(
        now=now,
        segment=strictest(segment_at(schedule, t) for t in moments),
        operator_cap_kw=rt.operator_cap(now),
        readings=dict(rt.readings),
        meters=rt.meter_readings(),
        unacked=frozenset(rt.unacked),
        memory=dict(rt.memory),
        non_ev_recent=recent_non_ev(rt, now),
        energy_needed_kwh=rt.energy_needed(),
        paused=frozenset(rt.paused),
    )
    peak_kw = rt.peak_target(schedule, now)
    changes = price_changes(rt.events.values(), now, rt.schedule_settings)
    wanted = plan_wants(rt, inputs, schedule, peak_kw, changes)
    # Without a plan (it failed) there is no target: the site is held only by its real limits.
    target = rt.plans.plan.peak_kw if peak_kw is not None and wanted is not None and rt.plans.plan else None
    inputs = replace(inputs, want_a=wanted or {}, unused_a=unused_caps(rt),
                     peak_kw=target_floor(rt, target, inputs))
    return rt.solar.apply(inputs, rt.measurements, rt.charger_power_kw(), frozenset(rt.paused))


def unused_caps(rt: Runtime) -> dict[str, float]:
    """The OCPP driver's hand-back: chargers whose EV has drawn well under its limit for a while."""
    caps: dict[str, float] = {}
    for name, driver in rt.drivers.items():
        if isinstance(driver, HandsBack):
            for cid, fam in rt.protocol_of.items():
                cap = driver.unused_cap(cid) if fam == name else None
                if cap is not None:
                    caps[cid] = cap
    return caps


def target_floor(rt: Runtime, target: float | None, inputs: Inputs) -> float | None:
    """The plan's peak target, never so low that a car which gave no departure cannot take its minimum
    (`demand.floor`)."""
    states, _ = charger_states(rt.site, inputs)
    return demand.floor(target, states, inputs.now, rt.last.non_ev_kw if rt.last is not None else 0.0)


def peak_target(rt: Runtime, schedule: Sequence[Segment], now: datetime) -> float | None:
    """The site power target to plan under while a demand charge is in force (None: none is); see
    `demand.demand_at`. What it found is kept for the status (`demand_status`)."""
    tariff = rt.plans.tariff or Tariff(timezone=rt.config.site.timezone)
    found = demand.demand_at(tariff, schedule, now, rt.power_log.peak_kw, rt.plans.plan)
    rt.demand_charge, rt.month_peak_kw = found.charge_per_kw, found.month_peak_kw
    return found.target_kw


def plan_wants(rt: Runtime, inputs: Inputs, schedule: Sequence[Segment], peak_kw: float | None = None,
          changes: Sequence[PriceChange] = ()) -> dict[str, float | None] | None:
    """The plan's caps for the sessions that gave a departure; the others share what is left by the
    allocator's own fairness (an as-soon-as-possible plan would cap them in an arbitrary order).
    None when the plan failed."""
    states, _ = charger_states(rt.site, inputs)
    non_ev_kw = rt.last.non_ev_kw if rt.last is not None else 0.0
    try:
        wants = rt.plans.wants(states, schedule, inputs.now, non_ev_kw, peak_kw, changes)
    except Exception:  # the plan is an optimisation: without it the site is still safe, only dearer
        if not rt._plan_failed:
            log.exception("charging plan failed; chargers are not capped by a plan until it works")
        rt._plan_failed = True
        return None
    rt._plan_failed = False
    flexible = {e.id for e in states if e.connected and e.departure is not None and e.departure > inputs.now}
    return {cid: amps for cid, amps in wants.items() if cid in flexible}


def recent_non_ev(rt: Runtime, now: datetime) -> dict[tuple[str, str], float]:
    while rt.non_ev_window and now - rt.non_ev_window[0][0] > rt.non_ev_hold:
        rt.non_ev_window.popleft()
    highest: dict[tuple[str, str], float] = {}
    for _, loads in rt.non_ev_window:
        for key, amps in loads.items():
            highest[key] = max(amps, highest.get(key, amps))
    return highest
