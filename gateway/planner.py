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
A tariff comes from the config (`load_config(path).tariff.to_tariff(site.timezone)`;
`config/example-tariff-tou.toml` is SCE TOU-EV-4 as acnportal ships it) or is built directly
(`gateway.tariff.Tariff`). A simulator that has one price per fixed period (the ACN benchmark) can use
`period_price_planner(ev_capacity_kw, demand)`, which fits `bench/acn.py`'s `Planner` hook as it is.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from gateway.allocate import step_ceil
from gateway.domain import J1772_MIN_A, EvseState, Segment
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


# ------------------------------------------------------------------------------------------------ slots


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


# ------------------------------------------------------------------------------------------------ plans


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


def _delivered(x: list[dict[int, float]]) -> float:
    return sum(v for flows in x for v in flows.values())


def _per_slot(x: list[dict[int, float]], count: int) -> list[float]:
    used = [0.0] * count
    for flows in x:
        for k, kwh in flows.items():
            used[k] += kwh
    return used


def _under(caps: list[float], slots: Sequence[Slot], site_kw: float) -> list[float]:
    """Each slot's EV energy limit with the site's power (EV plus non-EV) also kept under `site_kw`."""
    return [min(c, max(0.0, site_kw - s.non_ev_kw) * s.hours) for c, s in zip(caps, slots, strict=True)]


def _raise_peak(sessions: list[_Session], slots: Sequence[Slot], caps: list[float], peak_kw: float,
                capped: float, free: list[dict[int, float]]) -> tuple[float, list[dict[int, float]]]:
    """The lowest site power target (≥ peak_kw, to 0.5 % or 0.1 kW) under which the plan delivers all it can.

    `capped` is what the plan delivers under `peak_kw`, `free` the plan without a target (its own peak is
    where the search starts from above). The energy deliverable under a target is a concave, piecewise
    linear function of the target (a parametric max-flow), so the chord between a target too low and one
    high enough crosses the goal at a target that is high enough: false position, with a bisection step
    whenever the chord makes little progress, needs a few plans where bisection needs ten.
    """
    goal = _delivered(free) - 1e-6
    used = _per_slot(free, len(slots))
    high = max((u / s.hours + s.non_ev_kw for u, s in zip(used, slots, strict=True) if s.hours > 0),
               default=peak_kw)
    high = max(high, peak_kw)
    low, low_energy, high_energy, best = peak_kw, capped, goal + 1e-6, free
    while high - low > max(0.1, 0.005 * high):
        chord = low + (high - low) * (goal - low_energy) / max(high_energy - low_energy, 1e-12)
        guess = chord if low < chord < high - 0.25 * (high - low) else (low + high) / 2
        x = _fill(sessions, slots, _under(caps, slots, guess))
        energy = _delivered(x)
        if energy >= goal:
            high, high_energy, best = guess, energy, x
        else:
            low, low_energy = guess, energy
    return high, best


def _asap(sessions: list[_Session], caps: list[float]) -> list[dict[int, float]]:
    """Earliest slots first; inside a slot, earliest departure first."""
    x: list[dict[int, float]] = [{} for _ in sessions]
    left = [s.demand for s in sessions]
    order = sorted(range(len(sessions)), key=lambda i: (sessions[i].departure, sessions[i].evse.id))
    for k, cap in enumerate(caps):
        room = cap
        for i in order:
            if room <= EPS:
                break
            give = min(left[i], sessions[i].caps[k], room)
            if give > EPS:
                x[i][k] = give
                left[i] -= give
                room -= give
    return x


def _fill(sessions: list[_Session], slots: Sequence[Slot], caps: list[float]) -> list[dict[int, float]]:
    """Polymatroid greedy: each slot in price order gets as much energy as can be routed into it."""
    n = len(sessions)
    x: list[dict[int, float]] = [{} for _ in range(n)]
    if n == 0:
        return x
    residual = [s.demand for s in sessions]
    unmet = sum(residual)
    order = sorted(range(len(slots)), key=lambda k: (slots[k].price, k))
    # Earliest departure first: a session that leaves later has more slots to fall back on.
    by_departure = sorted(range(n), key=lambda i: (sessions[i].last, sessions[i].evse.id))
    lasts = [sessions[i].last for i in by_departure]
    room = list(caps)
    # Open slot → sessions that still need energy and had room left there when its capacity ran out. A
    # session that needs energy never gives any up (only satisfied ones are rerouted), so entries only
    # ever go stale, and are dropped when looked at.
    takers: dict[int, list[int]] = {}
    taker_slots: dict[int, set[int]] = {}  # the same, by session: where it may still take more
    for k in order:
        if unmet <= EPS:
            break
        if room[k] <= EPS:
            continue
        waiting: list[int] = []
        for i in by_departure[bisect.bisect_left(lasts, k):]:
            if residual[i] <= EPS:
                continue
            if room[k] <= EPS:
                if sessions[i].caps[k] > EPS:
                    waiting.append(i)
                continue
            give = min(residual[i], sessions[i].caps[k], room[k])
            if give > EPS:
                x[i][k] = x[i].get(k, 0.0) + give
                residual[i] -= give
                room[k] -= give
                unmet -= give
                if residual[i] > EPS and x[i][k] < sessions[i].caps[k] - EPS:
                    waiting.append(i)
        if room[k] <= EPS:
            if waiting:
                takers[k] = waiting
                for i in waiting:
                    taker_slots.setdefault(i, set()).add(k)
            continue
        if unmet <= EPS:
            continue
        # Any path into k ends in an open slot where a session that still needs energy has room to take
        # more; without one (the usual case once the sessions that leave early are as full as they can be)
        # there is nothing to search for.
        for i in [i for i, where in taker_slots.items() if residual[i] <= EPS or not where]:
            del taker_slots[i]
        if not taker_slots:
            continue
        unmet -= _swap(sessions, x, residual, room, k, by_departure, lasts, takers, taker_slots)
        while room[k] > EPS and unmet > EPS:
            pushed = _augment(sessions, x, residual, room, k, by_departure, lasts, taker_slots)
            if pushed <= EPS:
                break
            unmet -= pushed
    return x


def _swap(sessions: list[_Session], x: list[dict[int, float]], residual: list[float], room: list[float],
          target: int, by_departure: list[int], lasts: list[int], takers: dict[int, list[int]],
          taker_slots: dict[int, set[int]]) -> float:
    """The short augmenting paths in bulk: a session moves energy from slot b to `target`, one in need takes b.

    These are nearly all the paths a busy site needs, and finding them directly is far cheaper than a
    search per path; `_augment` then finds any longer path that is left.
    """
    moved = 0.0
    for j in by_departure[bisect.bisect_left(lasts, target):]:
        if room[target] <= EPS:
            break
        if residual[j] > EPS:
            continue  # it would have taken the room in target itself
        x_j, caps_j = x[j], sessions[j].caps
        for b in [b for b in x_j if b in takers]:
            waiting = takers[b]
            while waiting and b in x_j and room[target] > EPS and x_j.get(target, 0.0) < caps_j[target] - EPS:
                u = waiting[-1]
                u_room = sessions[u].caps[b] - x[u].get(b, 0.0)
                if residual[u] <= EPS or u_room <= EPS:
                    waiting.pop()  # satisfied or full there: it will not take b again
                    taker_slots.get(u, set()).discard(b)
                    continue
                take = min(room[target], caps_j[target] - x_j.get(target, 0.0), x_j[b], residual[u], u_room)
                x_j[target] = x_j.get(target, 0.0) + take
                x_j[b] -= take
                if x_j[b] <= EPS:
                    del x_j[b]
                x[u][b] = x[u].get(b, 0.0) + take
                residual[u] -= take
                room[target] -= take
                moved += take
            if not waiting:
                del takers[b]
        if not takers:
            break
    return moved


def _augment(sessions: list[_Session], x: list[dict[int, float]], residual: list[float], room: list[float],
             target: int, by_departure: list[int], lasts: list[int], taker_slots: dict[int, set[int]]) -> float:
    """Augmenting paths into slot `target`: sessions with unmet demand take slots others give up.

    Breadth-first from `target`: a session present there with room to take more either still needs energy
    (a path ends) or gives up energy in another open slot, where another session may take it over, and so
    on. One search finds many paths; each is then pushed as far as what is left along it allows (a later
    path may share a step an earlier one used up, and then carries less or nothing). Returns the energy
    pushed (0 when no path exists).
    """
    came_to: dict[int, int] = {}  # session → slot where it takes more
    came_slot: dict[int, int] = {target: -1}  # slot → session that gives it up
    queue = deque([target])
    found: list[int] = []
    wanted = 0.0
    n = len(by_departure)
    # Sessions are visited once; `skip` jumps over visited positions of `by_departure` (path halving), so
    # each slot's scan costs what it visits plus the sessions already full there, not the whole site.
    skip = list(range(n + 1))

    def unvisited(p: int) -> int:
        while skip[p] != p:
            skip[p] = skip[skip[p]]
            p = skip[p]
        return p

    while queue and wanted < room[target]:
        b = queue.popleft()
        p = unvisited(bisect.bisect_left(lasts, b))
        while p < n:
            j = by_departure[p]
            if x[j].get(b, 0.0) >= sessions[j].caps[b] - EPS:
                p = unvisited(p + 1)
                continue
            skip[p] = p + 1
            came_to[j] = b
            if residual[j] > EPS:
                found.append(j)  # it takes more and gives nothing up: the end of a path
                wanted += residual[j]
            else:
                for c, amount in x[j].items():
                    if amount > EPS and c not in came_slot:
                        came_slot[c] = j
                        queue.append(c)
            p = unvisited(p + 1)
    pushed = 0.0
    for end in found:
        if room[target] <= EPS:
            break
        pushed += _push(sessions, x, residual, room, target, end, came_to, came_slot, taker_slots)
    return pushed


def _push(sessions: list[_Session], x: list[dict[int, float]], residual: list[float], room: list[float],
          target: int, end: int, came_to: dict[int, int], came_slot: dict[int, int],
          taker_slots: dict[int, set[int]]) -> float:
    """Push what is left along the search tree's path from `end` back to `target`; the energy pushed."""
    path: list[tuple[int, int]] = []  # (session, slot it takes more in)
    j = end
    while True:
        b = came_to[j]
        path.append((j, b))
        giver = came_slot[b]
        if giver < 0:
            break
        j = giver
    # Each session further along the path gives up, in the slot the one before it takes more in, what it
    # takes more of in its own slot.
    gives = [(later, slot) for (later, _), (_, slot) in zip(path[1:], path[:-1], strict=True)]
    delta = min(room[target], residual[end])
    for j, b in path:
        delta = min(delta, sessions[j].caps[b] - x[j].get(b, 0.0))
    for j, c in gives:
        delta = min(delta, x[j].get(c, 0.0))
    if delta <= EPS:
        return 0.0
    for j, b in path:
        x[j][b] = x[j].get(b, 0.0) + delta
        if x[j][b] >= sessions[j].caps[b] - EPS:
            taker_slots.get(j, set()).discard(b)
    for j, c in gives:
        x[j][c] -= delta
        if x[j][c] <= EPS:
            del x[j][c]
    residual[end] -= delta
    room[target] -= delta
    return delta


# ------------------------------------------------------------------------------------------------ targets


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


__all__ = [
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
