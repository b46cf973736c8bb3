"""A charging plan (`Plan`: each session's energy per slot, its cost and peak) and the two ways to make
one: `make_plan` (cheapest first, under the peak target) and `asap_plan` (the baseline)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from gateway.domain import EvseState
from gateway.planner.fill import _asap, _delivered, _fill, _per_slot, _raise_peak, _under
from gateway.planner.sessions import _sessions
from gateway.planner.slots import PlanSettings, Slot


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """One session's planned energy per slot (kWh, aligned with `Plan.slots`)."""

    evse_id: str
    requested_kwh: float  # what it asked for; when it did not say, the default or all it could take in its window
    departure: datetime  # the one planned for (a default when the session gave none)
    kwh: tuple[float, ...]
    charge_now: bool = False
    energy_known: bool = True  # False: it did not say; `requested_kwh` is the default or all it could take

    @property
    def planned_kwh(self) -> float:
        return sum(self.kwh)

    @property
    def unmet_kwh(self) -> float:
        """What it asked for and will not get (zero when it did not say what it needs)."""
        return max(0.0, self.requested_kwh - self.planned_kwh) if self.energy_known else 0.0


@dataclass(frozen=True, slots=True)
class Plan:
    now: datetime
    slots: tuple[Slot, ...]
    sessions: Mapping[str, SessionPlan] = field(default_factory=dict)
    peak_kw: float | None = None  # the site power target the plan keeps under (None: no demand charge)

    def ev_kw(self) -> tuple[float, ...]:
        """Planned EV power per slot."""
        totals = [0.0] * len(self.slots)
        for session in self.sessions.values():
            for k, kwh in enumerate(session.kwh):
                totals[k] += kwh
        return tuple(t / s.hours if s.hours > 0 else 0.0 for t, s in zip(totals, self.slots, strict=True))

    def cost(self) -> float:
        """Expected energy cost of the plan (the slots' prices × planned kWh)."""
        return sum(s.price * kwh for p in self.sessions.values() for s, kwh in zip(self.slots, p.kwh, strict=True))

    def session_cost(self, evse_id: str) -> float:
        return sum(s.price * kwh for s, kwh in zip(self.slots, self.sessions[evse_id].kwh, strict=True))


def make_plan(
    evses: Sequence[EvseState],
    slots: Sequence[Slot],
    now: datetime,
    settings: PlanSettings,
    peak_kw: float | None = None,
) -> Plan:
    """The cheapest plan that delivers the most energy; with `peak_kw`, site power stays under it if it can."""
    slots = tuple(slots)
    sessions = _sessions(evses, slots, now, settings)
    # Three stages, so that a session that wants all it can take never crowds out a concrete request:
    # first the sessions with a request and a departure (the cheapest plan that delivers the most, under the
    # peak target, raised only for them), then the charge-now sessions as early as what is left allows, then
    # the sessions that want everything until they leave, cheapest first, in what is still left.
    flexible = [s for s in sessions if not s.charge_now and not s.greedy]
    greedy = [s for s in sessions if not s.charge_now and s.greedy]
    caps = [s.ev_cap_kw * s.hours for s in slots]
    target = peak_kw
    if peak_kw is not None:
        x = _fill(flexible, slots, _under(caps, slots, peak_kw))
        if _delivered(x) < sum(s.demand for s in flexible) - 1e-6:
            # Short of what was asked: raise the target only if a plan without it would deliver more.
            free = _fill(flexible, slots, caps)
            if _delivered(x) < _delivered(free) - 1e-6:
                target, x = _raise_peak(flexible, slots, caps, peak_kw, _delivered(x), free)
        caps = _under(caps, slots, target if target is not None else peak_kw)
    else:
        x = _fill(flexible, slots, caps)
    now_sessions = [s for s in sessions if s.charge_now]
    left = [max(0.0, c - u) for c, u in zip(caps, _per_slot(x, len(slots)), strict=True)]
    x_now = _asap(now_sessions, left)
    left = [max(0.0, c - u) for c, u in zip(left, _per_slot(x_now, len(slots)), strict=True)]
    x_greedy = _fill(greedy, slots, left)
    plans: dict[str, SessionPlan] = {}
    staged = [*zip(flexible, x, strict=True), *zip(now_sessions, x_now, strict=True),
              *zip(greedy, x_greedy, strict=True)]
    for session, flows in staged:
        per_slot = [0.0] * len(slots)
        for k, value in flows.items():
            per_slot[k] = value
        plans[session.evse.id] = SessionPlan(
            session.evse.id, session.requested, session.departure, tuple(per_slot), session.charge_now,
            session.evse.energy_needed_kwh is not None,
        )
    return Plan(now, slots, plans, target)


def asap_plan(evses: Sequence[EvseState], slots: Sequence[Slot], now: datetime, settings: PlanSettings) -> Plan:
    """The baseline: everyone charges as fast as the limits allow, earliest departure first in each slot."""
    slots = tuple(slots)
    sessions = _sessions(evses, slots, now, settings)
    x = _asap(sessions, [s.ev_cap_kw * s.hours for s in slots])
    plans = {
        s.evse.id: SessionPlan(s.evse.id, s.requested, s.departure,
                               tuple(flows.get(k, 0.0) for k in range(len(slots))), s.charge_now,
                               s.evse.energy_needed_kwh is not None)
        for s, flows in zip(sessions, x, strict=True)
    }
    return Plan(now, slots, plans, None)
