"""The allocation property tests' independent checker and random sites: loads on every constraint worked
out afresh from a problem and an answer (never from the allocator's bookkeeping), whether a charger could
take another step, and hypothesis strategies for random circuit trees, chargers and linear limits."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from gateway.allocate import LinearLimit, Problem, Sharing, allocate, usable_range
from gateway.domain import Circuit, EvseState, GroupLimit, NonEvLoad, SiteLimits

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NOW = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
TOL = 1e-6


# ------------------------------------------------------------------------------- an independent checker


def _ancestors(circuits: dict[str, Circuit], cid: str) -> list[Circuit]:
    out = []
    node: str | None = cid
    while node is not None:
        out.append(circuits[node])
        node = circuits[node].parent
    return out


def loads(problem: Problem, amps: dict[str, float]) -> dict[str, tuple[float, float, float]]:
    """For every constraint: (limit, uncontrolled load, EV load under the given amps)."""
    circuits = {c.id: c for c in problem.circuits}
    out: dict[str, list[float]] = {}
    for c in problem.circuits:
        for p in c.phases:
            out[f"{c.id}/{p}"] = [c.limit_of(p), 0.0, 0.0]
    for load in problem.non_ev:
        a = load.amps
        if load.measured_at is not None and problem.now - load.measured_at > problem.stale_after:
            a = max(a, load.worst_a) if load.worst_a is not None else circuits[load.circuit].limit_of(load.phase)
        for node in _ancestors(circuits, load.circuit):
            if load.phase in node.phases:
                out[f"{node.id}/{load.phase}"][1] += a
    lim = problem.limits
    if lim.site_kw is not None:
        out["site"] = [lim.site_kw, lim.non_ev_kw, 0.0]
    if lim.ev_kw is not None:
        out["ev"] = [lim.ev_kw, 0.0, 0.0]
    for g in lim.groups:
        out[f"group:{g.id}"] = [g.kw, 0.0, 0.0]
    for e in problem.evses:
        a = amps[e.id]
        slot = 1 if e.held_a is not None else 2
        for node in _ancestors(circuits, e.circuit):
            for p in e.phases:
                if p in node.phases:
                    out[f"{node.id}/{p}"][slot] += a
        kw = e.kw_per_a * a
        if lim.site_kw is not None:
            out["site"][slot] += kw
        if lim.ev_kw is not None:
            out["ev"][slot] += kw
        for g in lim.groups:
            if e.id in g.evse_ids:
                out[f"group:{g.id}"][slot] += kw
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


def constraints_of(problem: Problem, evse: EvseState) -> set[str]:
    circuits = {c.id: c for c in problem.circuits}
    names = {f"{n.id}/{p}" for n in _ancestors(circuits, evse.circuit) for p in evse.phases if p in n.phases}
    if problem.limits.site_kw is not None:
        names.add("site")
    if problem.limits.ev_kw is not None:
        names.add("ev")
    names |= {f"group:{g.id}" for g in problem.limits.groups if evse.id in g.evse_ids}
    return names


def feasible(problem: Problem, amps: dict[str, float]) -> bool:
    return all(unc + ev <= lim + TOL or ev <= TOL for lim, unc, ev in loads(problem, amps).values())


def eligible(e: EvseState) -> bool:
    low, high = usable_range(e)
    wants = e.energy_needed_kwh is None or e.energy_needed_kwh > 1e-6
    return e.connected and wants and e.held_a is None and high >= low


def can_step(problem: Problem, amps: dict[str, float], e: EvseState) -> bool:
    """Could this charger take its next step (or its minimum, if paused) without breaking anything?"""
    low, high = usable_range(e)
    nxt = amps[e.id] + e.step_a if amps[e.id] > 0 else low
    if nxt > high + TOL:
        return False
    trial = dict(amps)
    trial[e.id] = nxt
    before = loads(problem, amps)
    after = loads(problem, trial)
    return all(unc + ev <= lim + TOL for name, (lim, unc, ev) in after.items() if after[name] != before[name])


# ------------------------------------------------------------------------------- random sites


@st.composite
def problems(draw: st.DrawFn) -> Problem:
    phases = draw(st.sampled_from([("L1", "L2"), ("L1", "L2", "L3"), ("L1",)]))
    circuits = [Circuit("main", None, draw(st.floats(0, 400)), phases)]
    for n in range(draw(st.integers(0, 6))):
        parent = draw(st.sampled_from(circuits))
        own = tuple(p for p in parent.phases if draw(st.booleans())) or parent.phases[:1]
        circuits.append(Circuit(f"c{n}", parent.id, draw(st.floats(0, 200)), own))
    evses = []
    for n in range(draw(st.integers(0, 12))):
        circuit = draw(st.sampled_from(circuits))
        own = tuple(p for p in circuit.phases if draw(st.booleans())) or circuit.phases[-1:]
        step = draw(st.sampled_from([0.1, 0.5, 1.0, 2.0, 6.0]))
        min_a = draw(st.floats(6, 12))
        evses.append(
            EvseState(
                id=f"e{n}",
                circuit=circuit.id,
                phases=own,
                voltage_v=draw(st.sampled_from([120.0, 208.0, 230.0, 240.0, 400.0])),
                max_a=draw(st.floats(0, 80)),
                min_a=min_a,
                step_a=step,
                priority=draw(st.integers(0, 2)),
                connected=draw(st.booleans()) or draw(st.booleans()),
                energy_needed_kwh=draw(st.one_of(st.none(), st.floats(0, 60))),
                departure=draw(st.one_of(st.none(), st.just(NOW + timedelta(hours=draw(st.floats(0, 12)))))),
                waiting_since=draw(st.one_of(st.none(), st.just(NOW - timedelta(minutes=draw(st.integers(0, 60)))))),
                held_a=draw(st.one_of(st.none(), st.none(), st.none(), st.floats(0, 40))),
                want_a=draw(st.one_of(st.none(), st.none(), st.floats(0, 80))),
                power_factor=draw(st.sampled_from([1.0, 0.95])),
            )
        )
    non_ev = []
    for c in circuits:
        for p in c.phases:
            if draw(st.booleans()):
                age = draw(st.sampled_from([0, 5, 60]))
                non_ev.append(
                    NonEvLoad(c.id, p, draw(st.floats(-60, 150)), NOW - timedelta(seconds=age),
                              draw(st.one_of(st.none(), st.floats(0, 200))))
                )
    groups: tuple[GroupLimit, ...] = ()
    if len(evses) > 0 and draw(st.booleans()):
        members = frozenset(e.id for e in evses if draw(st.booleans()))
        groups = (GroupLimit("fleet", members, draw(st.floats(0, 50))),)
    limits = SiteLimits(
        site_kw=draw(st.one_of(st.none(), st.floats(0, 150))),
        ev_kw=draw(st.one_of(st.none(), st.floats(0, 100))),
        non_ev_kw=draw(st.floats(-20, 40)),
        groups=groups,
    )
    return Problem(circuits, evses, NOW, non_ev, limits, min_on_time=timedelta(minutes=draw(st.integers(0, 10))))


@st.composite
def with_linear(draw: st.DrawFn, sharing: Sharing = Sharing.FAIR) -> Problem:
    problem = draw(problems())
    linear = []
    for n in range(draw(st.integers(0, 3))):
        coefs = {e.id: draw(st.floats(0, 2)) for e in problem.evses if draw(st.booleans())}
        linear.append(LinearLimit(f"row{n}", draw(st.floats(0, 120)), coefs))
    return replace(problem, linear=tuple(linear), sharing=sharing)


def linear_loads(problem: Problem, amps: dict[str, float]) -> dict[str, tuple[float, float, float]]:
    """For every linear limit: (limit, load of held chargers, load of the others)."""
    out = {}
    for lin in problem.linear:
        held = sum(c * amps[e.id] for e in problem.evses if e.held_a is not None for k, c in lin.coefs.items()
                   if k == e.id)
        free = sum(c * amps[e.id] for e in problem.evses if e.held_a is None for k, c in lin.coefs.items()
                   if k == e.id)
        out[f"linear:{lin.id}"] = (lin.limit, held, free)
    return out


def all_loads(problem: Problem, amps: dict[str, float]) -> dict[str, tuple[float, float, float]]:
    return {**loads(problem, amps), **linear_loads(problem, amps)}


STEP_TOL = 1e-9


def could_step(problem: Problem, amps: dict[str, float], e: EvseState) -> bool:
    if not can_step(problem, amps, e):
        return False
    trial = dict(amps)
    trial[e.id] = amps[e.id] + e.step_a if amps[e.id] > 0 else usable_range(e)[0]
    before, after = linear_loads(problem, amps), linear_loads(problem, trial)
    # Room is usable only when the step keeps every limit within the allocator's own float tolerance (1e-9):
    # a step over a limit by 6e-9 (a coefficient of 1e-9 on a zero limit, found by hypothesis) is no room,
    # even though the safety checks above forgive float noise up to TOL.
    return all(unc + ev <= lim + STEP_TOL for name, (lim, unc, ev) in after.items() if after[name] != before[name])


def check_safe_and_full(problem: Problem) -> dict[str, float]:
    result = allocate(problem)
    amps = dict(result.amps)
    for name, (limit, uncontrolled, ev) in all_loads(problem, amps).items():
        if uncontrolled > limit + TOL:
            assert ev <= TOL, f"{name} is overloaded by held chargers, yet others got {ev}"
        else:
            assert uncontrolled + ev <= limit + TOL, f"{name}: {uncontrolled}+{ev} > {limit}"
    for e in problem.evses:
        a = amps[e.id]
        if e.held_a is None and a > 0:
            low, high = usable_range(e)
            assert eligible(e) and low - TOL <= a <= high + TOL and a >= 6.0 - TOL
            assert abs(a / e.step_a - round(a / e.step_a)) < 1e-6
        if eligible(e):
            assert not could_step(problem, amps, e), f"{e.id} could take more: {a} ({result.binding[e.id]})"
    return amps
