"""Split the site's capacity among its chargers: the pure decision at the heart of the gateway.

Every phase conductor of every circuit, the site's kW limit, the EV kW limit and any group caps are linear
constraints `Σ coef·amps ≤ headroom`, where headroom is the limit less what the gateway cannot control
(non-EV load, stale readings taken at their worst, chargers whose limit is held). Chargers are served one
priority class at a time, most important first. Inside a class they are admitted at their minimum in order
of urgency (protected by a minimum on-time, then least laxity, then longest waiting): this is what makes
the paused ones take turns. The admitted ones then rise together (max-min fair above their minimum) until
each meets its own maximum or a full constraint, are rounded down to their step, and whatever the rounding
freed is handed out again step by step, lowest first, so no capacity a charger could use is left idle.
Limits that are no conductor of the tree (a transformer winding several phase pairs feed, a phasor limit
cut into linear pieces) come in as `LinearLimit`s. With `Sharing.DEADLINE` a class is served in urgency
tiers instead (cars about to miss their departure first, earliest departure first), each tier as above.
Smoothing over time (deadband, ramps, rotation memory) is a separate step: `gateway.smoothing`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from gateway.domain import J1772_MIN_A, Allocation, Circuit, EvseState, NonEvLoad, SiteLimits

EPS = 1e-9


class Sharing(StrEnum):
    """How the chargers of one priority class share what their class may use."""

    FAIR = "fair"  # max-min fair in amps; urgency only orders who is admitted when minimums do not all fit
    DEADLINE = "deadline"  # urgency tiers (`deadline_tier`), each served in turn, max-min fair inside a tier


@dataclass(frozen=True, slots=True)
class LinearLimit:
    """A constraint `Σ coefs[charger id] · amps ≤ limit` that is not one conductor of the circuit tree.

    Coefficients must not be negative: then pausing a charger never breaks a limit, which the admission
    order, the rounding down and the rotation all rely on. A phase-cancelling effect is left out (a
    conservative reading of the limit), never subtracted.
    """

    id: str
    limit: float
    coefs: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Problem:
    """Everything one decision needs. `now` decides what is stale and who has waited how long."""

    circuits: Sequence[Circuit]
    evses: Sequence[EvseState]
    now: datetime
    non_ev: Sequence[NonEvLoad] = ()
    limits: SiteLimits = field(default_factory=SiteLimits)
    stale_after: timedelta = timedelta(seconds=10)
    min_on_time: timedelta = timedelta(0)
    linear: Sequence[LinearLimit] = ()
    sharing: Sharing = Sharing.FAIR
    critical_slack: timedelta = timedelta(hours=1)  # DEADLINE: less slack than this is served first
    deadline_step: timedelta = timedelta(minutes=5)  # DEADLINE: departures this close share a tier


class ProblemError(ValueError):
    """The problem is inconsistent (unknown circuit, a phase the circuit does not carry, …)."""


def step_floor(amps: float, step: float) -> float:
    """The largest multiple of `step` at or below `amps` (tolerant of float noise)."""
    return round(math.floor(amps / step + 1e-6) * step, 6)


def step_ceil(amps: float, step: float) -> float:
    return round(math.ceil(amps / step - 1e-6) * step, 6)


def usable_range(evse: EvseState) -> tuple[float, float]:
    """The lowest and highest non-zero limit this charger may be given, on its step grid."""
    low = step_ceil(max(J1772_MIN_A, evse.min_a), evse.step_a)
    high = evse.max_a if evse.want_a is None else min(evse.max_a, evse.want_a)
    return low, step_floor(high, evse.step_a)


class _Constraints:
    """Constraint headrooms, names, and which chargers load each one with what coefficient."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.headroom: list[float] = []
        self.limit: list[float] = []
        self.index: dict[str, int] = {}

    def add(self, name: str, limit: float) -> int:
        self.index[name] = len(self.names)
        self.names.append(name)
        self.headroom.append(limit)
        self.limit.append(limit)
        return self.index[name]


def _build(problem: Problem) -> tuple[_Constraints, list[list[tuple[int, float]]], list[str]]:
    """Constraints, each charger's (constraint, coefficient) list, and the overload descriptions."""
    circuits = {c.id: c for c in problem.circuits}
    cons = _Constraints()
    for c in problem.circuits:
        if c.parent is not None and c.parent not in circuits:
            raise ProblemError(f"circuit {c.id!r}: unknown parent {c.parent!r}")
        for phase in c.phases:
            cons.add(f"{c.id}/{phase}", c.limit_of(phase))

    on_path: dict[str, dict[str, list[int]]] = {}  # circuit → phase → its constraints up to the service

    def path_of(circuit_id: str) -> dict[str, list[int]]:
        known = on_path.get(circuit_id)
        if known is not None:
            return known
        by_phase: dict[str, list[int]] = {p: [] for p in circuits[circuit_id].phases}
        node: str | None = circuit_id
        hops = 0
        while node is not None:
            hops += 1
            if hops > len(circuits):
                raise ProblemError(f"circuit {circuit_id!r}: cycle in the circuit tree")
            for phase, indices in by_phase.items():
                if phase in circuits[node].phases:
                    indices.append(cons.index[f"{node}/{phase}"])
            node = circuits[node].parent
        on_path[circuit_id] = by_phase
        return by_phase

    for load in problem.non_ev:
        if load.circuit not in circuits:
            raise ProblemError(f"non-EV load on unknown circuit {load.circuit!r}")
        own = circuits[load.circuit]
        if load.phase not in own.phases:
            raise ProblemError(f"non-EV load on {load.circuit}/{load.phase}: the circuit has no {load.phase}")
        amps = load.amps
        stale = load.measured_at is None or problem.now - load.measured_at > problem.stale_after
        if load.measured_at is not None and stale:
            # Pessimistic: the worst recent reading, or nothing left for EVs at all.
            amps = max(amps, load.worst_a) if load.worst_a is not None else own.limit_of(load.phase)
        for index in path_of(load.circuit)[load.phase]:
            cons.headroom[index] -= amps

    limits = problem.limits
    site = cons.add("site", limits.site_kw - limits.non_ev_kw) if limits.site_kw is not None else None
    ev = cons.add("ev", limits.ev_kw) if limits.ev_kw is not None else None
    groups = [(cons.add(f"group:{g.id}", g.kw), g.evse_ids) for g in limits.groups]
    linear: list[tuple[int, Mapping[str, float]]] = []
    for lin in problem.linear:
        if any(not (coef >= 0 and math.isfinite(coef)) for coef in lin.coefs.values()):
            raise ProblemError(f"linear limit {lin.id!r}: every coefficient must be finite and not negative")
        linear.append((cons.add(f"linear:{lin.id}", lin.limit), lin.coefs))

    members: list[list[tuple[int, float]]] = []
    seen: set[str] = set()
    # Chargers on the same circuit and conductors load the same conductor constraints: work them out once.
    on_conductors: dict[tuple[str, tuple[str, ...]], list[tuple[int, float]]] = {}
    for evse in problem.evses:
        if evse.id in seen:
            raise ProblemError(f"charger {evse.id!r} listed twice")
        seen.add(evse.id)
        if evse.circuit not in circuits:
            raise ProblemError(f"charger {evse.id!r}: unknown circuit {evse.circuit!r}")
        signature = (evse.circuit, evse.phases)
        conductors = on_conductors.get(signature)
        if conductors is None:
            own = circuits[evse.circuit]
            for phase in evse.phases:
                if phase not in own.phases:
                    raise ProblemError(f"charger {evse.id!r}: circuit {own.id!r} does not carry {phase}")
            paths = path_of(evse.circuit)
            conductors = [(index, 1.0) for phase in evse.phases for index in paths[phase]]
            on_conductors[signature] = conductors
        entries = conductors.copy()
        kw = evse.kw_per_a
        if site is not None:
            entries.append((site, kw))
        if ev is not None:
            entries.append((ev, kw))
        for index, ids in groups:
            if evse.id in ids:
                entries.append((index, kw))
        for index, coefs in linear:
            coef = coefs.get(evse.id, 0.0)
            if coef > 0:
                entries.append((index, coef))
        members.append(entries)
        if evse.held_a is not None:
            for index, coef in entries:
                cons.headroom[index] -= coef * evse.held_a

    overloaded = [
        f"{name}: uncontrolled load {cons.limit[i] - cons.headroom[i]:.4g} over its limit {cons.limit[i]:.4g}"
        for i, name in enumerate(cons.names)
        if cons.headroom[i] < -EPS
    ]
    return cons, members, overloaded


def _laxity_s(evse: EvseState, now: datetime) -> float:
    """Seconds of slack before the car must charge at full power to leave with what it asked for."""
    if evse.departure is None:
        return math.inf
    slack = (evse.departure - now).total_seconds()
    full_kw = evse.kw_per_a * evse.max_a  # may underflow to 0 for a vanishing maximum: no full power at all
    if evse.energy_needed_kwh is not None and full_kw > 0:
        slack -= 3600.0 * evse.energy_needed_kwh / full_kw
    return slack


def admission_key(evse: EvseState, now: datetime, min_on_time: timedelta) -> tuple[bool, float, float, str]:
    """Who is served first inside a priority class when not everyone fits at their minimum."""
    protected = evse.on_since is not None and now - evse.on_since < min_on_time
    # Longest waiting first; among those charging, the one charging longest yields first.
    turn = 0.0
    if evse.waiting_since is not None:
        turn = -(now - evse.waiting_since).total_seconds()
    elif evse.on_since is not None:
        turn = (now - evse.on_since).total_seconds()
    return (not protected, _laxity_s(evse, now), turn, evse.id)


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


def allocate(problem: Problem) -> Allocation:
    cons, members, overloaded = _build(problem)
    head = cons.headroom
    evses = problem.evses
    amps = [0.0] * len(evses)
    binding: dict[str, str] = {}
    candidates: list[int] = []
    ranges = [usable_range(e) for e in evses]
    lows = [r[0] for r in ranges]
    highs = [r[1] for r in ranges]
    for i, evse in enumerate(evses):
        reason = _why_idle(evse, lows[i], highs[i])
        if reason is None:
            candidates.append(i)
        else:
            binding[evse.id] = reason
            amps[i] = evse.held_a if evse.held_a is not None else 0.0

    users: list[list[int]] = [[] for _ in head]
    for i in candidates:
        for c, _ in members[i]:
            users[c].append(i)

    def fits(i: int, extra: float) -> bool:
        for c, coef in members[i]:  # noqa: SIM110 (a plain loop: this is the hot path)
            if head[c] - coef * extra < -EPS:
                return False
        return True

    def take(i: int, extra: float) -> None:
        amps[i] += extra
        for c, coef in members[i]:
            head[c] -= coef * extra

    by_class: dict[int, list[int]] = {}
    for i in candidates:
        by_class.setdefault(evses[i].priority, []).append(i)
    for priority in sorted(by_class, reverse=True):
        ranked = sorted(by_class[priority], key=lambda i: admission_key(evses[i], problem.now, problem.min_on_time))
        tiers: dict[tuple[int, float], list[int]] = {}
        if problem.sharing is Sharing.DEADLINE:
            for i in ranked:
                tier = deadline_tier(evses[i], problem.now, problem.critical_slack, problem.deadline_step)
                tiers.setdefault(tier, []).append(i)
        else:
            tiers[(0, 0.0)] = ranked
        for tier in sorted(tiers, reverse=True):
            order = tiers[tier]
            admitted = []
            for i in order:
                if fits(i, lows[i]):
                    take(i, lows[i])
                    admitted.append(i)
            _fill(admitted, amps, members, users, head, highs)
            for i in admitted:
                snapped = step_floor(amps[i], evses[i].step_a)
                take(i, snapped - amps[i])
                amps[i] = snapped
            for i in order:  # what rounding freed may now admit someone who did not fit
                if amps[i] == 0.0 and fits(i, lows[i]):
                    take(i, lows[i])
                    admitted.append(i)
            _top_up(admitted, evses, amps, highs, fits, take)

    for i in candidates:
        evse = evses[i]
        low, high = ranges[i]
        if amps[i] >= high - EPS:
            binding[evse.id] = "max" if evse.want_a is None or evse.want_a >= evse.max_a else "plan"
            continue
        need = evse.step_a if amps[i] > 0 else low
        blocking = [(head[c] / coef, c) for c, coef in members[i] if head[c] - coef * need < -EPS]
        binding[evse.id] = cons.names[min(blocking)[1]] if blocking else "rotation"
    return Allocation(
        amps={e.id: amps[i] for i, e in enumerate(evses)}, binding=binding, overloaded=tuple(overloaded)
    )


def _fill(
    admitted: list[int],
    amps: list[float],
    members: list[list[tuple[int, float]]],
    users: list[list[int]],
    head: list[float],
    ceiling: list[float],
) -> None:
    """Raise a common water level under the admitted chargers until each meets its ceiling or a full constraint.

    Max-min fair in amps: a charger admitted above the level (a higher minimum) joins when the level reaches
    it. Events (a constraint filling, a charger reaching its ceiling, a charger joining) come off heaps in
    level order. A constraint's headroom is brought up to date only when its weight (the chargers rising on
    it) changes, and each batch of events pushes one heap entry per constraint it touched, so the cost is
    O(memberships + events · log) rather than a scan of every constraint per event. Hot loops are inlined.
    """
    if not admitted:
        return
    n_cons = len(head)
    weight = [0.0] * n_cons
    version = [0] * n_cons
    joining = sorted([(amps[i], i) for i in admitted], reverse=True)  # pop() takes the lowest
    level = joining[-1][0]
    since = [level] * n_cons  # level at which head[c] was last brought up to date
    fills: list[tuple[float, int, int]] = []  # (level at which c is full, version, c)
    reach: list[tuple[float, int]] = []
    rising: set[int] = set()
    done: set[int] = set()
    dirty: set[int] = set()
    push, pop = heapq.heappush, heapq.heappop

    def freeze_all(who: list[int]) -> None:
        for i in who:
            if i in done:
                continue
            done.add(i)
            if i in rising:
                rising.discard(i)
                if amps[i] < level:
                    amps[i] = level
                for c, coef in members[i]:
                    if since[c] != level:
                        head[c] -= weight[c] * (level - since[c])
                        since[c] = level
                    weight[c] -= coef
                    dirty.add(c)

    def reschedule() -> None:
        for c in dirty:
            version[c] += 1
            if weight[c] > EPS:
                push(fills, (level + max(head[c], 0.0) / weight[c], version[c], c))
        dirty.clear()

    while rising or joining:
        while joining and (joining[-1][1] in done or joining[-1][0] <= level + EPS):
            _, i = joining.pop()
            if i in done:
                continue
            rising.add(i)
            push(reach, (ceiling[i], i))
            for c, coef in members[i]:
                if since[c] != level:
                    head[c] -= weight[c] * (level - since[c])
                    since[c] = level
                weight[c] += coef
                dirty.add(c)
        reschedule()
        while fills and (fills[0][1] != version[fills[0][2]] or weight[fills[0][2]] <= EPS):
            pop(fills)
        while reach and reach[0][1] not in rising:
            pop(reach)
        nxt = min(
            fills[0][0] if fills else math.inf,
            reach[0][0] if reach else math.inf,
            joining[-1][0] if joining else math.inf,
        )
        if nxt == math.inf:
            break
        if nxt > level:
            level = nxt
        capped = []
        while reach and reach[0][0] <= level + EPS:
            capped.append(pop(reach)[1])
        freeze_all(capped)
        while fills and fills[0][0] <= level + EPS:
            _, ver, c = pop(fills)
            if ver == version[c] and weight[c] > EPS:
                freeze_all(users[c])
        reschedule()
    for c in range(n_cons):  # bring every headroom up to date for the steps that follow
        if since[c] != level:
            head[c] -= weight[c] * (level - since[c])


def _top_up(
    admitted: list[int],
    evses: Sequence[EvseState],
    amps: list[float],
    highs: list[float],
    fits: Callable[[int, float], bool],
    take: Callable[[int, float], None],
) -> None:
    """Hand out what is left one step at a time, lowest charger first, until nobody can take a step."""
    queue = [(amps[i], evses[i].id, i) for i in admitted]
    heapq.heapify(queue)
    while queue:
        _, _, i = heapq.heappop(queue)
        step = evses[i].step_a
        if amps[i] + step <= highs[i] + EPS and fits(i, step):
            take(i, step)
            amps[i] = round(amps[i], 6)
            heapq.heappush(queue, (amps[i], evses[i].id, i))
