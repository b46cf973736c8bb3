"""The linear constraints of one decision: every phase conductor of every circuit (worked out once per
circuit tree and kept while the tree stays the same), the site's kW limit, the EV kW limit, group caps and
linear limits, each as `Σ coef·amps ≤ headroom`; which of them is already over its limit, said with its
units; and which one keeps a charger from more."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from gateway.allocate.problem import EPS, Problem, ProblemError
from gateway.domain import Circuit, EvseState


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
