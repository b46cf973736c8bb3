"""Who is served first inside a priority class: the admission order (minimum on-time, then least laxity,
then longest waiting), the urgency tiers of deadline sharing, and why a charger gets nothing at all."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from gateway.domain import EvseState


def _laxity_s(evse: EvseState, now: datetime, kw_per_a: float | None = None) -> float:
    """Seconds of slack before the car must charge at full power to leave with what it asked for."""
    if evse.departure is None:
        return math.inf
    slack = (evse.departure - now).total_seconds()
    # May underflow to 0 for a vanishing maximum: no full power at all.
    full_kw = (evse.kw_per_a if kw_per_a is None else kw_per_a) * evse.max_a
    if evse.energy_needed_kwh is not None and full_kw > 0:
        slack -= 3600.0 * evse.energy_needed_kwh / full_kw
    return slack


def admission_key(
    evse: EvseState, now: datetime, min_on_time: timedelta, kw_per_a: float | None = None
) -> tuple[bool, float, float, str]:
    """Who is served first inside a priority class when not everyone fits at their minimum."""
    protected = evse.on_since is not None and now - evse.on_since < min_on_time
    # Longest waiting first; among those charging, the one charging longest yields first.
    turn = 0.0
    if evse.waiting_since is not None:
        turn = -(now - evse.waiting_since).total_seconds()
    elif evse.on_since is not None:
        turn = (now - evse.on_since).total_seconds()
    return (not protected, _laxity_s(evse, now, kw_per_a), turn, evse.id)


def deadline_tier(evse: EvseState, now: datetime, critical_slack: timedelta, step: timedelta) -> tuple[int, float]:
    """A charger's tier under DEADLINE sharing; a larger tier is served first, each to all it can take.

    First the cars that can still leave with what they asked for but have less than `critical_slack` to
    spare; then those that cannot make it even at full power (they still charge, but not ahead of the ones
    the energy would save); then the rest. Inside each, earliest departure first, departures within one
    `step` sharing a tier (max-min fair between them); an unknown departure comes last.
    """
    slack = _laxity_s(evse, now)
    rank = 2 if 0.0 <= slack < critical_slack.total_seconds() else 1 if slack < 0.0 else 0
    if evse.departure is None:
        return rank, -math.inf
    return rank, -float(math.floor((evse.departure - now) / step))


def _why_idle(evse: EvseState, low: float, high: float) -> str | None:
    if evse.held_a is not None:
        return "held"
    if not evse.connected:
        return "not connected"
    if evse.energy_needed_kwh is not None and evse.energy_needed_kwh <= 1e-6:
        return "energy delivered"
    if high < low:
        return "plan" if evse.want_a is not None and evse.want_a < evse.max_a else "max below minimum"
    return None
