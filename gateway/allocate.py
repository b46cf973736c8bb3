"""Split the site's capacity among its chargers: the pure decision at the heart of the gateway.

Every phase conductor of every circuit, the site's kW limit, the EV kW limit and any group caps are linear
constraints `Σ coef·amps ≤ headroom`, where headroom is the limit less what the gateway cannot control
(non-EV load, stale readings taken at their worst, chargers whose limit is held). The conductor
constraints of a circuit tree are worked out once and kept while the tree stays the same. Chargers are
served one priority class at a time, most important first. Inside a class they are admitted at their
minimum in order of urgency (protected by a minimum on-time, then least laxity, then longest waiting):
this is what makes the paused ones take turns; a charger on constraints with room for the whole class
is admitted whatever the order. The admitted ones then rise together (max-min fair above their minimum) until
each meets its own maximum or a full constraint, are rounded down to their step, and whatever the rounding
freed is handed out again step by step, lowest first, so no capacity a charger could use is left idle.
Limits that are no conductor of the tree (a transformer winding several phase pairs feed, a phasor limit
cut into linear pieces) come in as `LinearLimit`s. With `Sharing.DEADLINE` a class is served in urgency
tiers instead (cars about to miss their departure first, earliest departure first), each tier as above.
With `Sharing.OPTIMISE` a class's currents come from a small mixed-integer program (`gateway.optimise`:
urgency-weighted energy now, less a penalty per amp a pilot moves), checked against every constraint
again and topped up like the rest; without an answer in time the class is served as under DEADLINE.
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
from gateway.optimise import OptimiseError, solve, urgency

EPS = 1e-9


class Sharing(StrEnum):
    """How the chargers of one priority class share what their class may use."""

    FAIR = "fair"  # max-min fair in amps; urgency only orders who is admitted when minimums do not all fit
    DEADLINE = "deadline"  # urgency tiers (`deadline_tier`), each served in turn, max-min fair inside a tier
    OPTIMISE = "optimise"  # most urgent energy with few pilot changes, solved per class (`gateway.optimise`)


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
    previous: Mapping[str, float] = field(default_factory=dict)  # OPTIMISE: each charger's current limit
    optimise_time_s: float = 0.5  # OPTIMISE: the solver's time per class; no answer by then: DEADLINE


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

    def __init__(self, names: list[str], limits: list[float]) -> None:
        self.names = names
        self.headroom = limits.copy()
        self.limit = limits

    def add(self, name: str, limit: float) -> int:
        self.names.append(name)
        self.headroom.append(limit)
        self.limit.append(limit)
        return len(self.names) - 1


_Row = list[tuple[int, float]]  # a charger's (constraint, coefficient) entries


class _Topology:
    """What the circuit tree alone decides, worked out once per tree and kept while the tree stays the same.

    The runtime passes the same circuits every tick, so the conductor constraints, each circuit's path to
    the service and the constraint rows shared by chargers of one circuit, phasing and kW per amp are built
    on the first decision only. Paths and rows are filled in as first needed (a cycle in a part of the tree
    nobody uses is no error here, as before).
    """

    def __init__(self, circuits: tuple[Circuit, ...]) -> None:
        self.circuits = circuits
        self.by_id = {c.id: c for c in circuits}
        self.names: list[str] = []
        self.limits: list[float] = []
        self.own: dict[str, dict[str, int]] = {}  # circuit → phase → the constraint of that conductor
        for c in circuits:
            if c.parent is not None and c.parent not in self.by_id:
                raise ProblemError(f"circuit {c.id!r}: unknown parent {c.parent!r}")
            own = self.own[c.id] = {}
            for phase in c.phases:
                own[phase] = len(self.names)
                self.names.append(f"{c.id}/{phase}")
                self.limits.append(c.limit_of(phase))
        self.paths: dict[str, dict[str, _Row]] = {}
        # (circuit, phases, voltage, power factor, site and EV kW constraints) → the shared row and kW per amp
        self.rows: dict[tuple[str, tuple[str, ...], float, float, tuple[int, ...]], tuple[_Row, float]] = {}

    def path_of(self, circuit_id: str) -> dict[str, _Row]:
        """Circuit → phase → (constraint, 1.0) for each conductor of that phase up to the service."""
        known = self.paths.get(circuit_id)
        if known is not None:
            return known
        circuits = self.by_id
        by_phase: dict[str, _Row] = {p: [] for p in circuits[circuit_id].phases}
        node: str | None = circuit_id
        hops = 0
        while node is not None:
            hops += 1
            if hops > len(circuits):
                raise ProblemError(f"circuit {circuit_id!r}: cycle in the circuit tree")
            at_node = self.own[node]
            for phase, entries in by_phase.items():
                index = at_node.get(phase)
                if index is not None:
                    entries.append((index, 1.0))
            node = circuits[node].parent
        self.paths[circuit_id] = by_phase
        return by_phase

    def row(self, evse: EvseState, per_kw: tuple[int, ...]) -> tuple[_Row, float]:
        """The constraints a charger loads through its circuit and the site's kW limits, and its kW per amp."""
        key = (evse.circuit, evse.phases, evse.voltage_v, evse.power_factor, per_kw)
        known = self.rows.get(key)
        if known is not None:
            return known
        circuit = self.by_id.get(evse.circuit)
        if circuit is None:
            raise ProblemError(f"charger {evse.id!r}: unknown circuit {evse.circuit!r}")
        for phase in evse.phases:
            if phase not in circuit.phases:
                raise ProblemError(f"charger {evse.id!r}: circuit {evse.circuit!r} does not carry {phase}")
        paths = self.path_of(evse.circuit)
        entries: _Row = []
        for phase in evse.phases:
            entries += paths[phase]
        kw = evse.kw_per_a
        known = self.rows[key] = entries + [(index, kw) for index in per_kw], kw
        return known


_last_topology: _Topology | None = None


def _topology(circuits: Sequence[Circuit]) -> _Topology:
    """The cached topology of this tree, or a new one (kept for the next decision)."""
    global _last_topology
    known = _last_topology
    if known is not None and (known.circuits is circuits or known.circuits == tuple(circuits)):
        return known
    known = _last_topology = _Topology(tuple(circuits))
    return known


def _build(problem: Problem) -> tuple[_Constraints, list[_Row], list[float], list[str]]:
    """Constraints, each charger's (constraint, coefficient) list and kW per amp, and the overload descriptions."""
    topology = _topology(problem.circuits)
    circuits = topology.by_id
    cons = _Constraints(topology.names.copy(), topology.limits.copy())
    conductors_end = len(cons.names)
    path_of = topology.path_of

    for load in problem.non_ev:
        if load.circuit not in circuits:
            raise ProblemError(f"non-EV load on unknown circuit {load.circuit!r}")
        circuit = circuits[load.circuit]
        if load.phase not in circuit.phases:
            raise ProblemError(f"non-EV load on {load.circuit}/{load.phase}: the circuit has no {load.phase}")
        amps = load.amps
        stale = load.measured_at is None or problem.now - load.measured_at > problem.stale_after
        if load.measured_at is not None and stale:
            # Pessimistic: the worst recent reading, or nothing left for EVs at all.
            amps = max(amps, load.worst_a) if load.worst_a is not None else circuit.limit_of(load.phase)
        for index, _ in path_of(load.circuit)[load.phase]:
            cons.headroom[index] -= amps
            if math.isnan(cons.headroom[index]):  # the whole of an unlimited conductor: nothing left (not NaN)
                cons.headroom[index] = 0.0

    limits = problem.limits
    site = cons.add("site", limits.site_kw - limits.non_ev_kw) if limits.site_kw is not None else None
    ev = cons.add("ev", limits.ev_kw) if limits.ev_kw is not None else None
    groups = [(cons.add(f"group:{g.id}", g.kw), g.evse_ids) for g in limits.groups]
    linear: list[tuple[int, Mapping[str, float]]] = []
    for lin in problem.linear:
        if any(not (coef >= 0 and math.isfinite(coef)) for coef in lin.coefs.values()):
            raise ProblemError(f"linear limit {lin.id!r}: every coefficient must be finite and not negative")
        linear.append((cons.add(f"linear:{lin.id}", lin.limit), lin.coefs))

    members: list[_Row] = []
    kws: list[float] = []
    seen: set[str] = set()
    # Chargers on the same circuit and conductors at the same kW per amp load the same constraints with the
    # same coefficients: the topology works the row out once and shares it (nothing changes a row
    # afterwards). Only group and linear limits, which name chargers one by one, need a row of the charger's own.
    per_kw = tuple(index for index in (site, ev) if index is not None)
    row = topology.row
    headroom = cons.headroom
    for evse in problem.evses:
        if evse.id in seen:
            raise ProblemError(f"charger {evse.id!r} listed twice")
        seen.add(evse.id)
        entries, kw = row(evse, per_kw)
        if groups or linear:
            entries = entries.copy()
            for index, ids in groups:
                if evse.id in ids:
                    entries.append((index, kw))
            for index, coefs in linear:
                coef = coefs.get(evse.id, 0.0)
                if coef > 0:
                    entries.append((index, coef))
        members.append(entries)
        kws.append(kw)
        if evse.held_a is not None:
            for index, coef in entries:
                headroom[index] -= coef * evse.held_a

    overloaded = []
    if min(headroom, default=0.0) < -EPS:
        overloaded = _overloads(problem, cons, members, conductors_end, site)
    return cons, members, kws, overloaded


def _overloads(
    problem: Problem, cons: _Constraints, members: list[list[tuple[int, float]]], conductors_end: int, site: int | None
) -> list[str]:
    """One line per limit already exceeded by what the gateway cannot control, with units.

    Conductors in A (`panel-1/L1: non-EV load 85 A over its limit 80 A`), the site's kW limit in kW against
    the non-EV power (`site: non-EV load 60 kW over its limit 50 kW`); a share of chargers whose limit is
    held is named as such.
    """
    held = [0.0] * len(cons.names)
    for evse, entries in zip(problem.evses, members, strict=True):
        if evse.held_a is not None:
            for index, coef in entries:
                held[index] += coef * evse.held_a
    lines = []
    for i, name in enumerate(cons.names):
        if cons.headroom[i] >= -EPS:
            continue
        limit = cons.limit[i]
        if i == site and problem.limits.site_kw is not None:
            limit = problem.limits.site_kw  # the constraint is the headroom left by the non-EV power
        load = limit - cons.headroom[i]
        unit = " A" if i < conductors_end else "" if name.startswith("linear:") else " kW"
        if i >= conductors_end and i != site:
            what = "held chargers"  # EV, group and linear limits count no non-EV load
        elif held[i] > EPS:
            what = "non-EV load and held chargers"
        else:
            what = "non-EV load"
        lines.append(f"{name}: {what} {load:.4g}{unit} over its limit {limit:.4g}{unit}")
    return lines


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


def allocate(problem: Problem) -> Allocation:
    _refuse_non_finite(problem)
    cons, members, kws, overloaded = _build(problem)
    head = cons.headroom
    evses = problem.evses
    now = problem.now
    amps = [0.0] * len(evses)
    binding: dict[str, str] = {}
    candidates: list[int] = []
    # Chargers of one model share their grid: work each range out once, with where its top snaps to (most
    # chargers end a fill at their ceiling).
    on_grid: dict[tuple[float, float, float | None, float], tuple[float, float, float]] = {}
    grids = []
    lows: list[float] = []
    highs: list[float] = []
    for i, evse in enumerate(evses):
        grid = (evse.min_a, evse.max_a, evse.want_a, evse.step_a)
        known = on_grid.get(grid)
        if known is None:
            low, high = usable_range(evse)
            known = on_grid[grid] = low, high, step_floor(high, evse.step_a)
        grids.append(known)
        low, high, _ = known
        lows.append(low)
        highs.append(high)
        reason = _why_idle(evse, low, high)
        if reason is None:
            candidates.append(i)
        else:
            binding[evse.id] = reason
            amps[i] = evse.held_a if evse.held_a is not None else 0.0

    by_class: dict[int, list[int]] = {}
    for i in candidates:
        by_class.setdefault(evses[i].priority, []).append(i)

    def admission_order(order: list[int]) -> list[int]:
        return sorted(order, key=lambda i: admission_key(evses[i], now, problem.min_on_time, kws[i]))

    notes: list[str] = []
    for priority in sorted(by_class, reverse=True):
        if problem.sharing is Sharing.OPTIMISE:
            try:
                _optimise(by_class[priority], problem, lows, highs, kws, members, head, amps, admission_order)
                continue
            except OptimiseError as exc:
                notes.append(f"priority {priority}: {exc}; served in deadline order")
        tiers: dict[tuple[int, float], list[int]] = {}
        if problem.sharing is not Sharing.FAIR:
            for i in by_class[priority]:
                tier = deadline_tier(evses[i], now, problem.critical_slack, problem.deadline_step)
                tiers.setdefault(tier, []).append(i)
        else:
            tiers[(0, 0.0)] = by_class[priority]
        for tier in sorted(tiers, reverse=True):
            admitted, contested, rising, weight, users = _admit(
                tiers[tier], lows, highs, amps, members, head, admission_order
            )
            _fill(rising, amps, members, head, highs, weight, users)
            for i in admitted:
                snapped = grids[i][2] if amps[i] == highs[i] else step_floor(amps[i], evses[i].step_a)
                extra = snapped - amps[i]
                if extra != 0.0:
                    for c, coef in members[i]:
                        head[c] -= coef * extra
                amps[i] = snapped
            for i in contested:  # what rounding freed may now admit someone who did not fit
                if amps[i] == 0.0 and _fits(members[i], head, lows[i]):
                    _take(i, lows[i], amps, members[i], head)
                    admitted.append(i)
            _top_up(admitted, evses, amps, highs, members, head)

    for i in candidates:
        evse = evses[i]
        low, high, _ = grids[i]
        if amps[i] >= high - EPS:
            binding[evse.id] = "max" if evse.want_a is None or evse.want_a >= evse.max_a else "plan"
            continue
        binding[evse.id] = _blocking(members[i], head, evse.step_a if amps[i] > 0 else low, cons.names)
    return Allocation(
        amps={e.id: amps[i] for i, e in enumerate(evses)},
        binding=binding,
        overloaded=tuple(overloaded),
        notes=tuple(notes),
    )


def _optimise(
    order: list[int],
    problem: Problem,
    lows: list[float],
    highs: list[float],
    kws: list[float],
    members: list[_Row],
    head: list[float],
    amps: list[float],
    admission_order: Callable[[list[int]], list[int]],
) -> None:
    """Serve one priority class from the optimiser's answer (`gateway.optimise.solve`).

    The answer is floored to each charger's step grid and taken most urgent first, each charger checked
    against every constraint again (a solver's tolerance never becomes an overload, and a current under
    the minimum becomes 0). Then, as in the other modes, a paused charger whose minimum fits is admitted
    and whatever is left is handed out step by step: no usable capacity stays idle.
    """
    evses, now = problem.evses, problem.now
    weights = [urgency(_laxity_s(evses[i], now, kws[i])) for i in order]
    solved = solve(
        weights,
        [lows[i] for i in order],
        [highs[i] for i in order],
        [problem.previous.get(evses[i].id, 0.0) for i in order],
        [members[i] for i in order],
        head,
        problem.optimise_time_s,
    )
    admitted = []
    for j in sorted(range(len(order)), key=lambda j: -weights[j]):
        i = order[j]
        entries, step = members[i], evses[i].step_a
        room = min((head[c] / coef for c, coef in entries if coef > 0), default=math.inf)
        target = step_floor(min(solved[j], highs[i], room), step) if room > 0 else 0.0
        if target >= lows[i] - EPS:
            _take(i, target, amps, entries, head)
            admitted.append(i)
    for i in admission_order([i for i in order if amps[i] == 0.0]):
        if _fits(members[i], head, lows[i]):
            _take(i, lows[i], amps, members[i], head)
            admitted.append(i)
    _top_up(admitted, evses, amps, highs, members, head)


def _blocking(entries: _Row, head: list[float], need: float, names: list[str]) -> str:
    """The constraint that keeps a charger from `need` more amps: the one with the least room per amp.

    Room within 1e-9 A counts as a tie (two full conductors differ only by float noise), won by the
    constraint listed first in the site. No constraint blocking means the charger gave way in the rotation.
    """
    best, least = -1, math.inf
    for c, coef in entries:
        room = head[c]
        if room - coef * need < -EPS:
            room /= coef
            if room < least - EPS or (room <= least + EPS and c < best):
                best, least = c, min(room, least)
    return names[best] if best >= 0 else "rotation"


def _refuse_non_finite(problem: Problem) -> None:
    """Raise `ProblemError` for a number that is not one: NaN compares false with every limit (it read as "no
    limit", and a NaN load kept the water level from ever settling). A limit may be +inf (no limit); loads
    and a charger's own values must be finite."""
    limits = problem.limits
    caps: list[tuple[str, float | None]] = [("site_kw", limits.site_kw), ("ev_kw", limits.ev_kw)]
    caps += [(f"group {g.id!r}: kw", g.kw) for g in limits.groups]
    caps += [(f"linear limit {lin.id!r}: limit", lin.limit) for lin in problem.linear]
    for c in problem.circuits:
        caps.append((f"circuit {c.id!r}: limit_a", c.limit_a))
        caps += [(f"circuit {c.id!r}: phase_limits_a[{p}]", a) for p, a in c.phase_limits_a.items()]
    for what, value in caps:
        if value is not None and not (math.isfinite(value) or value == math.inf):
            raise ProblemError(f"{what} is {value}: a limit must be a number (inf for none)")
    loads: list[tuple[str, float | None]] = [("non_ev_kw", limits.non_ev_kw)]
    for load in problem.non_ev:
        loads.append((f"non-EV load on {load.circuit}/{load.phase}: amps", load.amps))
        loads.append((f"non-EV load on {load.circuit}/{load.phase}: worst_a", load.worst_a))
    for what, value in loads:
        if value is not None and not math.isfinite(value):
            raise ProblemError(f"{what} is {value}: a load must be a finite number")
    for e in problem.evses:
        # One sum per charger is the fast test (a NaN or an infinity spoils it); only a failing sum is looked
        # at field by field, which also lets a sum that merely overflows through.
        total = e.voltage_v + e.max_a + e.min_a + e.step_a + e.power_factor
        total += (e.energy_needed_kwh or 0.0) + (e.held_a or 0.0) + (e.measured_a or 0.0)
        if not math.isfinite(total):
            fields = {
                "voltage_v": e.voltage_v, "max_a": e.max_a, "min_a": e.min_a, "step_a": e.step_a,
                "power_factor": e.power_factor, "energy_needed_kwh": e.energy_needed_kwh, "held_a": e.held_a,
                "measured_a": e.measured_a,
            }
            for name, value in fields.items():
                if value is not None and not math.isfinite(value):
                    raise ProblemError(f"charger {e.id!r}: {name} is {value}: it must be a finite number")
        if e.want_a is not None and not (math.isfinite(e.want_a) or e.want_a == math.inf):
            raise ProblemError(f"charger {e.id!r}: want_a is {e.want_a}: a plan's cap must be a number (inf for none)")
        if not e.step_a > 0:
            raise ProblemError(f"charger {e.id!r}: step_a is {e.step_a}: it must be positive")


def _admit(
    order: list[int],
    lows: list[float],
    highs: list[float],
    amps: list[float],
    members: list[_Row],
    head: list[float],
    urgency: Callable[[list[int]], list[int]],
) -> tuple[list[int], list[int], list[int], list[float], list[list[int]]]:
    """Admit a tier at the minimum; return the admitted, the contested, who rises, their weights and users.

    A constraint with room for the whole tier at their minimum turns nobody away, so a charger loading only
    such constraints fits in every order and is admitted at once. Only the others (the contested: they load
    a constraint short of room) are admitted one by one, most urgent first, while they fit. A constraint
    with room for the whole tier at their ceilings stops nobody rising: a charger loading only such ones
    goes straight to its ceiling. The rest rise in the water fill, which gets from here the weight each
    constraint carries (what its rising chargers add per amp) and who loads it: one pass for all of it.
    """
    n_cons = len(head)
    extra = [0.0] * n_cons  # the minimums' load beyond `common` each
    peak = [0.0] * n_cons
    weight = [0.0] * n_cons
    users: list[list[int]] = [[] for _ in range(n_cons)]
    common = lows[order[0]] if order else 0.0  # most chargers share one minimum (6 A)
    for i in order:
        high = highs[i]
        entries = members[i]
        for c, coef in entries:
            peak[c] += coef * high
            weight[c] += coef
            users[c].append(i)
        above = lows[i] - common
        if above != 0.0:
            for c, coef in entries:
                extra[c] += coef * above
    demand = [common * w + more for w, more in zip(weight, extra, strict=True)]  # the whole tier at its minimum
    roomy = [have - most >= 0.0 for have, most in zip(head, peak, strict=True)]
    contested_ids: set[int] = set()
    for c in range(n_cons):
        if head[c] - demand[c] < -EPS:
            contested_ids.update(users[c])
    contested: list[int] = []
    admitted = list(order)
    if contested_ids:
        contested = urgency([i for i in order if i in contested_ids])
        admitted = [i for i in order if i not in contested_ids]
        for i in contested:  # out of the sums: they are admitted one by one below
            low = lows[i]
            for c, coef in members[i]:
                demand[c] -= coef * low
                weight[c] -= coef
    for c in range(n_cons):
        head[c] -= demand[c]
    for i in admitted:
        amps[i] += lows[i]
    for i in contested:  # (inlined `_fits`/`_take`: the hot path)
        low, entries = lows[i], members[i]
        for c, coef in entries:
            if head[c] - coef * low < -EPS:
                break
        else:
            amps[i] += low
            for c, coef in entries:
                head[c] -= coef * low
                weight[c] += coef
            admitted.append(i)
    rising = []
    for i in admitted:
        entries = members[i]
        for c, _ in entries:
            if not roomy[c]:
                rising.append(i)
                break
        else:
            rise = highs[i] - amps[i]
            for c, coef in entries:
                head[c] -= coef * rise
                weight[c] -= coef
            amps[i] = highs[i]
    return admitted, contested, rising, weight, users


def _fits(entries: list[tuple[int, float]], head: list[float], extra: float) -> bool:
    """Whether `extra` more amps on a charger with these (constraint, coefficient) entries breaks nothing."""
    for c, coef in entries:  # noqa: SIM110 (a plain loop: this is the hot path)
        if head[c] - coef * extra < -EPS:
            return False
    return True


def _take(i: int, extra: float, amps: list[float], entries: list[tuple[int, float]], head: list[float]) -> None:
    amps[i] += extra
    for c, coef in entries:
        head[c] -= coef * extra


def _fill(
    rising: list[int],
    amps: list[float],
    members: list[_Row],
    head: list[float],
    ceiling: list[float],
    weight: list[float],
    users: list[list[int]],
) -> None:
    """Raise a common water level under the `rising` chargers until each meets its ceiling or a full constraint.

    Max-min fair in amps: a charger above the lowest (a higher minimum) joins when the level reaches it.
    `weight[c]` comes in as what all of `rising` add to constraint c per amp of level, and `users[c]` lists
    (at least) who of them loads c. Events (a constraint filling, a charger reaching its ceiling, a charger
    joining) come off heaps in level order. A constraint's headroom is brought up to date only when its
    weight changes. A charger joining makes its constraints fill sooner, so they get a new heap entry at
    once; one leaving only makes them fill later, so their entry stays as a lower bound and is worked out
    again only if it comes to the top (`_settle`). Cost O(memberships + events · log), not a scan of every
    constraint per event. Hot loops are inlined and the state is in plain local lists (no closures): this is
    the allocator's innermost loop.
    """
    if not rising:
        return
    n_cons = len(head)
    level = min([amps[i] for i in rising])
    state = [_WAITING] * len(amps)
    joining = []
    for i in rising:
        if amps[i] <= level + EPS:
            state[i] = _RISING
        else:  # joins later, at its own minimum
            joining.append((amps[i], i))
            for c, coef in members[i]:
                weight[c] -= coef
    joining.sort(reverse=True)  # pop() takes the lowest
    n_rising = len(rising) - len(joining)
    reach = [(ceiling[i], i) for i in rising if state[i] == _RISING]
    heapq.heapify(reach)
    version = [0] * n_cons  # bumped at each change of weight; an entry of an older version is a lower bound
    exact = [0] * n_cons  # the version of c's latest exact entry in `fills`
    since = [level] * n_cons  # level at which head[c] was last brought up to date
    # (level at which c is full, version, c)
    fills = [(level + max(head[c], 0.0) / w, 0, c) for c, w in enumerate(weight) if w > EPS]
    heapq.heapify(fills)
    dirty: set[int] = set()
    mark = dirty.add
    push, pop = heapq.heappush, heapq.heappop

    while n_rising or joining:
        while joining and (state[joining[-1][1]] == _DONE or joining[-1][0] <= level + EPS):
            _, i = joining.pop()
            if state[i] == _DONE:
                continue
            state[i] = _RISING
            n_rising += 1
            push(reach, (ceiling[i], i))
            for c, coef in members[i]:
                if since[c] != level:
                    head[c] -= weight[c] * (level - since[c])
                    since[c] = level
                weight[c] += coef
                mark(c)
        for c in dirty:  # weights that rose: each constraint's new (sooner) fill level
            version[c] += 1
            if weight[c] > EPS:
                push(fills, (level + max(head[c], 0.0) / weight[c], version[c], c))
                exact[c] = version[c]
        dirty.clear()
        _settle(fills, version, exact, weight, head, since, level)
        while reach and state[reach[0][1]] != _RISING:
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
        # Freeze, in this order, the chargers at their ceiling, then the users of each constraint now full.
        capped = []
        while reach and reach[0][0] <= level + EPS:
            capped.append(pop(reach)[1])
        who: list[int] | None = capped
        while who is not None:
            for i in who:
                was = state[i]
                if was == _DONE:
                    continue
                state[i] = _DONE
                if was == _RISING:
                    n_rising -= 1
                    if amps[i] < level:
                        amps[i] = level
                    for c, coef in members[i]:
                        if since[c] != level:
                            head[c] -= weight[c] * (level - since[c])
                            since[c] = level
                        weight[c] -= coef
                        mark(c)
            who = None
            _settle(fills, version, exact, weight, head, since, level)
            if fills and fills[0][0] <= level + EPS:
                who = users[pop(fills)[2]]
        for c in dirty:  # weights that fell: their entries stay, as lower bounds
            version[c] += 1
        dirty.clear()
    for c in range(n_cons):  # bring every headroom up to date for the steps that follow
        if since[c] != level:
            head[c] -= weight[c] * (level - since[c])


_WAITING, _RISING, _DONE = 0, 1, 2  # a charger's state while the water level rises


def _settle(
    fills: list[tuple[float, int, int]],
    version: list[int],
    exact: list[int],
    weight: list[float],
    head: list[float],
    since: list[float],
    level: float,
) -> None:
    """Work out the top of `fills` until it is exact: the next constraint to fill, and when."""
    while fills:
        _, ver, c = fills[0]
        w = weight[c]
        if ver == version[c] and w > EPS:
            return
        heapq.heappop(fills)
        if w <= EPS or exact[c] == version[c]:
            continue  # nobody rises on it any more, or its exact entry is further down
        if since[c] != level:
            head[c] -= w * (level - since[c])
            since[c] = level
        heapq.heappush(fills, (level + max(head[c], 0.0) / w, version[c], c))
        exact[c] = version[c]


def _top_up(
    admitted: list[int],
    evses: Sequence[EvseState],
    amps: list[float],
    highs: list[float],
    members: list[list[tuple[int, float]]],
    head: list[float],
) -> None:
    """Hand out what is left one step at a time, lowest charger first, until nobody can take a step."""
    # A charger that cannot take a step now never can (amps only rise, headrooms only fall): leave it off.
    queue = [
        (amps[i], evses[i].id, i)
        for i in admitted
        if amps[i] + evses[i].step_a <= highs[i] + EPS and _fits(members[i], head, evses[i].step_a)
    ]
    heapq.heapify(queue)
    push, pop = heapq.heappush, heapq.heappop
    while queue:
        _, ident, i = pop(queue)
        step = evses[i].step_a
        if amps[i] + step > highs[i] + EPS:
            continue
        entries = members[i]
        for c, coef in entries:  # (inlined `_fits`/`_take`: the hot path)
            if head[c] - coef * step < -EPS:
                break
        else:
            for c, coef in entries:
                head[c] -= coef * step
            amps[i] = round(amps[i] + step, 6)
            push(queue, (amps[i], ident, i))
