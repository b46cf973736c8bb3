"""What a plan means now: each charger's `want_a` for the slot in force (rounded up to its step, and to its
minimum when it charges at all, so the allocator never starves a plan), and the per-slot profile the status
chart draws."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime

from gateway.allocate import step_ceil
from gateway.domain import J1772_MIN_A, EvseState
from gateway.planner.plan import Plan
from gateway.planner.slots import EPS, SHORT_KWH


def targets(plan: Plan, evses: Iterable[EvseState], now: datetime | None = None) -> dict[str, float | None]:
    """Each charger's `want_a` at `now` (default: when the plan was made): that slot's planned power in amps,
    rounded up; None: no cap (no plan for it, or `now` outside the plan).

    A plan is reused from tick to tick until it is recomputed, so `now` picks the slot. A charge-now session
    is never planned down to nothing: it may always take its minimum, so that the allocator's rotation, not
    the plan, decides when it waits.
    """
    out: dict[str, float | None] = {}
    moment = plan.now if now is None else now
    current = next((k for k, s in enumerate(plan.slots) if s.start <= moment < s.end), None)
    for evse in evses:
        session = plan.sessions.get(evse.id)
        if session is None or current is None or session.unmet_kwh > SHORT_KWH:
            # A session the plan cannot fully serve gains nothing from waiting: the allocator's own
            # urgency order gives it what the limits allow, rather than the plan's share of a slot.
            out[evse.id] = None
            continue
        hours = plan.slots[current].hours
        kw = session.kwh[current] / hours if hours > 0 else 0.0
        if (kw <= EPS and not session.charge_now) or evse.kw_per_a <= 0:
            out[evse.id] = 0.0
            continue
        amps = step_ceil(kw / evse.kw_per_a, evse.step_a)
        amps = max(amps, step_ceil(max(J1772_MIN_A, evse.min_a), evse.step_a))
        out[evse.id] = min(evse.max_a, amps)
    return out


def apply_targets(evses: Sequence[EvseState], plan: Plan, now: datetime | None = None) -> list[EvseState]:
    """The chargers with `want_a` set from the plan at `now` (None where the plan does not cap them)."""
    wants = targets(plan, evses, now)
    return [replace(e, want_a=wants.get(e.id)) for e in evses]


def site_profile(plan: Plan) -> list[tuple[datetime, datetime, float, float, float]]:
    """(start, end, planned EV kW, planned site kW, EV limit kW) per slot: what the status chart draws."""
    return [
        (s.start, s.end, kw, kw + s.non_ev_kw, s.ev_cap_kw)
        for s, kw in zip(plan.slots, plan.ev_kw(), strict=True)
    ]
