"""The allocator's safety and quality invariants, checked by an independent evaluator over random sites."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.allocation import NOW, PROPERTY, TOL, can_step, constraints_of, eligible, feasible, loads, problems

from gateway.allocate import Problem, ProblemError, allocate, kept_fallbacks, step_floor, usable_range
from gateway.domain import Allocation, Circuit, EvseState, GroupLimit, NonEvLoad, SiteLimits


@PROPERTY
@given(problems())
def test_no_conductor_or_kw_limit_is_exceeded_by_what_the_gateway_controls(problem: Problem) -> None:
    result = allocate(problem)
    for name, (limit, uncontrolled, ev) in loads(problem, dict(result.amps)).items():
        if uncontrolled > limit + TOL:
            assert ev <= TOL, f"{name} is overloaded by uncontrolled load, yet EVs got {ev}"
            assert any(o.startswith(name + ":") for o in result.overloaded)
        else:
            assert uncontrolled + ev <= limit + TOL, f"{name}: {uncontrolled}+{ev} > {limit}"


@PROPERTY
@given(problems())
def test_every_charger_gets_zero_or_a_current_on_its_grid_between_its_min_and_max(problem: Problem) -> None:
    result = allocate(problem)
    for e in problem.evses:
        a = result.amps[e.id]
        if e.held_a is not None:
            assert a == e.held_a
            continue
        if a == 0:
            continue
        low, high = usable_range(e)
        assert low - TOL <= a <= high + TOL
        assert a >= 6.0 - TOL and a <= e.max_a + TOL
        assert abs(a / e.step_a - round(a / e.step_a)) < 1e-6, (a, e.step_a)
        if not eligible(e):
            pytest.fail(f"{e.id} is not eligible but got {a}")


@PROPERTY
@given(problems())
def test_nothing_goes_to_a_charger_unplugged_or_already_full(problem: Problem) -> None:
    result = allocate(problem)
    for e in problem.evses:
        if e.held_a is None and (not e.connected or e.energy_needed_kwh == 0):
            assert result.amps[e.id] == 0
            assert result.binding[e.id] in {"not connected", "energy delivered"}


@PROPERTY
@given(problems())
def test_no_capacity_is_left_that_a_charger_could_use(problem: Problem) -> None:
    result = allocate(problem)
    amps = dict(result.amps)
    for e in problem.evses:
        if eligible(e):
            assert not can_step(problem, amps, e), f"{e.id} could take more: {amps[e.id]} ({result.binding[e.id]})"


@PROPERTY
@given(problems())
def test_a_more_important_charger_is_never_held_back_for_a_less_important_one(problem: Problem) -> None:
    result = allocate(problem)
    for h in problem.evses:
        if not eligible(h):
            continue
        without_lower = {
            e.id: (0.0 if e.held_a is None and e.priority < h.priority else result.amps[e.id]) for e in problem.evses
        }
        assert not can_step(problem, without_lower, h), f"{h.id} (priority {h.priority}) starved by lower ones"


@PROPERTY
@given(problems())
def test_inside_a_priority_class_no_charger_could_give_a_step_to_a_poorer_one(problem: Problem) -> None:
    result = allocate(problem)
    amps = dict(result.amps)
    for i in problem.evses:
        for j in problem.evses:
            if i.id == j.id or not (eligible(i) and eligible(j)) or i.priority != j.priority:
                continue
            ai, aj = amps[i.id], amps[j.id]
            if ai <= 0 or aj - ai <= i.step_a + j.step_a + TOL or ai + i.step_a > usable_range(i)[1] + TOL:
                continue
            if aj - j.step_a < usable_range(j)[0] - TOL:
                continue
            trial = dict(amps)
            trial[j.id] = aj - j.step_a
            trial[i.id] = ai + i.step_a
            assert not feasible(problem, trial), f"{j.id} at {aj} could give to {i.id} at {ai}"


@PROPERTY
@given(problems())
def test_binding_names_a_constraint_the_charger_really_loads(problem: Problem) -> None:
    result = allocate(problem)
    for e in problem.evses:
        why = result.binding[e.id]
        if why in {"max", "plan", "held", "not connected", "energy delivered", "max below minimum"}:
            continue
        assert why in constraints_of(problem, e), (e.id, why)


# ------------------------------------------------------------------------------- the seeds' examples


def home(load_a: float) -> Problem:
    """100 A split-phase home (80 A continuous), a 48 A charger on a 60 A circuit, a dryer on both legs."""
    circuits = [Circuit("main", None, 80.0, ("L1", "L2")), Circuit("ev", "main", 48.0, ("L1", "L2"))]
    car = EvseState("garage", "ev", ("L1", "L2"), 240.0, max_a=48.0, connected=True, step_a=16.0)
    non_ev = [NonEvLoad("main", "L1", load_a, NOW), NonEvLoad("main", "L2", load_a, NOW)]
    return Problem(circuits, [car], NOW, non_ev)


@pytest.mark.parametrize(
    ("house_a", "expected"),
    [(10.0, 48.0), (32.0, 48.0), (40.0, 32.0), (55.0, 16.0), (70.0, 0.0), (90.0, 0.0), (12.0, 48.0)],
)
def test_home_charger_steps_down_48_32_16_pause_as_the_dryer_starts_and_back(house_a: float, expected: float) -> None:
    result = allocate(home(house_a))
    assert result.amps["garage"] == expected
    if expected < 48:
        assert result.binding["garage"] == "main/L1"


def test_home_overloaded_by_the_house_alone_is_reported() -> None:
    result = allocate(home(90.0))
    assert result.amps["garage"] == 0
    assert result.overloaded and result.overloaded[0].startswith("main/L1:")


def workplace(n_connected: int, site_kw: float | None = None) -> Problem:
    circuits = [
        Circuit("main", None, 160.0, ("L1", "L2", "L3")),
        Circuit("panel-a", "main", 80.0, ("L1", "L2", "L3")),
        Circuit("panel-b", "main", 80.0, ("L1", "L2", "L3")),
    ]
    pairs = [("L1", "L2"), ("L2", "L3"), ("L1", "L3")]
    evses = [
        EvseState(f"cp-{n:02d}", "panel-a" if n < 10 else "panel-b", pairs[n % 3], 208.0, max_a=32.0,
                  connected=n < n_connected)
        for n in range(20)
    ]
    return Problem(circuits, evses, NOW, limits=SiteLimits(site_kw=site_kw))


def test_workplace_20_ports_on_200_a_share_each_panel_evenly() -> None:
    result = allocate(workplace(20))
    amps = result.amps
    # Each panel: 10 chargers over three phase pairs, every conductor at most 80 A.
    for panel in ("a", "b"):
        ids = [e.id for e in workplace(20).evses if e.circuit == f"panel-{panel}"]
        assert sum(amps[i] for i in ids) >= 110  # 80 A × 3 conductors / 2 conductors per charger, minus steps
        assert max(amps[i] for i in ids) - min(amps[i] for i in ids) <= 1.0
    assert feasible(workplace(20), dict(amps))


def test_workplace_few_cars_get_their_full_32_a() -> None:
    result = allocate(workplace(3))  # one on each phase pair: two cars per 80 A conductor
    assert [result.amps[f"cp-{n:02d}"] for n in range(3)] == [32.0] * 3
    assert all(result.binding[f"cp-{n:02d}"] == "max" for n in range(3))
    crowded = allocate(workplace(4))  # a fourth on L1-L2: three cars share L1 and L2
    assert [crowded.amps[f"cp-{n:02d}"] for n in range(4)] == [27.0, 27.0, 27.0, 26.0]
    assert crowded.binding["cp-00"] == "panel-a/L1"


def test_workplace_dr_limit_pauses_some_cars_rather_than_giving_anyone_less_than_6_a() -> None:
    result = allocate(workplace(20, site_kw=20.0))
    on = [a for a in result.amps.values() if a > 0]
    assert all(a >= 6 for a in on)
    assert sum(a * 208 / 1000 for a in on) <= 20.0 + TOL
    assert len(on) == 16  # 20 kW / (6 A × 208 V) = 16 cars at their minimum


def test_two_chargers_sharing_a_40_a_circuit() -> None:
    circuits = [Circuit("main", None, 160.0, ("L1", "L2")), Circuit("shared", "main", 32.0, ("L1", "L2"))]
    evses = [EvseState(f"e{n}", "shared", ("L1", "L2"), 240.0, max_a=32.0, connected=True) for n in range(2)]
    result = allocate(Problem(circuits, evses, NOW))
    assert result.amps == {"e0": 16.0, "e1": 16.0}


def test_a_changed_tree_is_worked_out_anew_and_an_equal_one_gives_the_same_answer() -> None:
    # The allocator keeps the last tree's constraints between decisions: a breaker changed in place (same
    # ids) must take effect at once, and an equal tree built anew (or given as a list) must decide the same.
    evses = [EvseState(f"e{n}", "shared", ("L1", "L2"), 240.0, max_a=32.0, connected=True) for n in range(2)]

    def tree(shared_a: float) -> list[Circuit]:
        return [Circuit("main", None, 160.0, ("L1", "L2")), Circuit("shared", "main", shared_a, ("L1", "L2"))]

    assert allocate(Problem(tuple(tree(32.0)), evses, NOW)).amps == {"e0": 16.0, "e1": 16.0}
    assert allocate(Problem(tuple(tree(20.0)), evses, NOW)).amps == {"e0": 10.0, "e1": 10.0}
    assert allocate(Problem(tree(20.0), evses, NOW)).amps == {"e0": 10.0, "e1": 10.0}
    assert allocate(Problem(tuple(tree(32.0)), evses, NOW)).amps == {"e0": 16.0, "e1": 16.0}
    stray = [replace(evses[0], circuit="gone")]
    with pytest.raises(ProblemError, match="unknown circuit 'gone'"):
        allocate(Problem(tuple(tree(32.0)), stray, NOW))


def test_pv_export_raises_what_the_chargers_may_take() -> None:
    circuits = [Circuit("main", None, 40.0, ("L1",))]
    evses = [EvseState("e0", "main", ("L1",), 230.0, max_a=32.0, connected=True)]
    importing = allocate(Problem(circuits, evses, NOW, [NonEvLoad("main", "L1", 20.0, NOW)]))
    exporting = allocate(Problem(circuits, evses, NOW, [NonEvLoad("main", "L1", -10.0, NOW)]))
    assert importing.amps["e0"] == 20.0
    assert exporting.amps["e0"] == 32.0
    kw_capped = allocate(
        Problem(circuits, evses, NOW, limits=SiteLimits(site_kw=3.0, non_ev_kw=-2.0))
    )  # 3 kW import allowed + 2 kW of PV → 5 kW / 230 V
    assert kw_capped.amps["e0"] == 21.0


def test_a_stale_reading_counts_at_its_worst_and_a_missing_worst_leaves_nothing() -> None:
    circuits = [Circuit("main", None, 40.0, ("L1",))]
    evses = [EvseState("e0", "main", ("L1",), 230.0, max_a=32.0, connected=True)]
    old = NOW - timedelta(minutes=5)
    with_worst = allocate(Problem(circuits, evses, NOW, [NonEvLoad("main", "L1", 5.0, old, worst_a=25.0)]))
    without = allocate(Problem(circuits, evses, NOW, [NonEvLoad("main", "L1", 5.0, old)]))
    assert with_worst.amps["e0"] == 15.0
    assert without.amps["e0"] == 0.0


def test_a_held_charger_counts_as_its_held_current_and_is_left_alone() -> None:
    circuits = [Circuit("main", None, 40.0, ("L1",))]
    evses = [
        EvseState("slow-ack", "main", ("L1",), 230.0, max_a=32.0, connected=True, held_a=32.0),
        EvseState("other", "main", ("L1",), 230.0, max_a=32.0, connected=True),
    ]
    result = allocate(Problem(circuits, evses, NOW))
    assert result.amps == {"slow-ack": 32.0, "other": 8.0}
    assert result.binding["slow-ack"] == "held"


def test_higher_priority_is_served_first() -> None:
    circuits = [Circuit("main", None, 40.0, ("L1",))]
    evses = [
        EvseState("visitor", "main", ("L1",), 230.0, max_a=32.0, connected=True, priority=0),
        EvseState("fleet", "main", ("L1",), 230.0, max_a=32.0, connected=True, priority=1),
    ]
    result = allocate(Problem(circuits, evses, NOW))
    assert result.amps == {"fleet": 32.0, "visitor": 8.0}


def test_when_short_the_least_laxity_is_admitted_first() -> None:
    circuits = [Circuit("main", None, 10.0, ("L1",))]
    leaving_soon = EvseState("soon", "main", ("L1",), 230.0, max_a=32.0, connected=True,
                             energy_needed_kwh=10, departure=NOW + timedelta(hours=2))
    leaving_late = replace(leaving_soon, id="late", departure=NOW + timedelta(hours=9))
    result = allocate(Problem(circuits, [leaving_late, leaving_soon], NOW))
    assert result.amps == {"late": 0.0, "soon": 10.0}


def test_a_plan_caps_a_charger_below_its_max_and_says_so() -> None:
    circuits = [Circuit("main", None, 80.0, ("L1",))]
    evses = [EvseState("e0", "main", ("L1",), 230.0, max_a=32.0, connected=True, want_a=10.0),
             EvseState("e1", "main", ("L1",), 230.0, max_a=32.0, connected=True, want_a=3.0)]
    result = allocate(Problem(circuits, evses, NOW))
    assert result.amps == {"e0": 10.0, "e1": 0.0}
    assert result.binding == {"e0": "plan", "e1": "plan"}


def test_inconsistent_problems_are_refused_with_a_clear_message() -> None:
    circuits = [Circuit("main", None, 40.0, ("L1",))]
    with pytest.raises(ProblemError, match="unknown circuit 'nope'"):
        allocate(Problem(circuits, [EvseState("e", "nope", ("L1",), 230.0, max_a=16)], NOW))
    with pytest.raises(ProblemError, match="does not carry L2"):
        allocate(Problem(circuits, [EvseState("e", "main", ("L2",), 230.0, max_a=16)], NOW))


def test_step_grid_rounding_is_tolerant_of_float_noise() -> None:
    assert step_floor(0.3 / 0.1 * 0.1, 0.1) == 0.3
    assert step_floor(6.999999999, 1.0) == 7.0
    assert math.isclose(step_floor(12.34, 0.5), 12.0)


def test_allocation_is_a_plain_mapping_for_every_charger() -> None:
    result = allocate(workplace(3))
    assert isinstance(result, Allocation)
    assert set(result.amps) == set(result.binding) == {e.id for e in workplace(3).evses}


NAN, INF = math.nan, math.inf
ONE = [Circuit("main", None, 40.0, ("L1",))]
CAR = EvseState("e", "main", ("L1",), 230.0, max_a=16.0, connected=True)


@pytest.mark.parametrize(
    ("problem", "says"),
    [
        (Problem(ONE, [CAR], NOW, [NonEvLoad("main", "L1", NAN, NOW)]), "non-EV load on main/L1: amps is nan"),
        (Problem(ONE, [CAR], NOW, [NonEvLoad("main", "L1", INF, NOW)]), "amps is inf"),
        (Problem(ONE, [CAR], NOW, [NonEvLoad("main", "L1", 5.0, NOW, worst_a=NAN)]), "worst_a is nan"),
        (Problem([Circuit("main", None, NAN, ("L1",))], [CAR], NOW), "circuit 'main': limit_a is nan"),
        (Problem([Circuit("main", None, -INF, ("L1",))], [CAR], NOW), "limit_a is -inf"),
        (Problem([Circuit("main", None, 40.0, ("L1",), {"L1": NAN})], [CAR], NOW), r"phase_limits_a\[L1\] is nan"),
        (Problem(ONE, [CAR], NOW, limits=SiteLimits(site_kw=NAN)), "site_kw is nan"),
        (Problem(ONE, [CAR], NOW, limits=SiteLimits(ev_kw=NAN)), "ev_kw is nan"),
        (Problem(ONE, [CAR], NOW, limits=SiteLimits(site_kw=50.0, non_ev_kw=NAN)), "non_ev_kw is nan"),
        (Problem(ONE, [CAR], NOW, limits=SiteLimits(non_ev_kw=INF)), "non_ev_kw is inf"),
        (Problem(ONE, [CAR], NOW, limits=SiteLimits(groups=(GroupLimit("g", frozenset("e"), NAN),))), "kw is nan"),
        (Problem(ONE, [replace(CAR, max_a=NAN)], NOW), "charger 'e': max_a is nan"),
        (Problem(ONE, [replace(CAR, max_a=INF)], NOW), "charger 'e': max_a is inf"),
        (Problem(ONE, [replace(CAR, min_a=NAN)], NOW), "min_a is nan"),
        (Problem(ONE, [replace(CAR, held_a=INF)], NOW), "held_a is inf"),
        (Problem(ONE, [replace(CAR, voltage_v=NAN)], NOW), "voltage_v is nan"),
        (Problem(ONE, [replace(CAR, energy_needed_kwh=NAN)], NOW), "energy_needed_kwh is nan"),
        (Problem(ONE, [replace(CAR, want_a=NAN)], NOW), "want_a is nan"),
        (Problem(ONE, [replace(CAR, step_a=0.0)], NOW), "step_a is 0.0: it must be positive"),
    ],
)
def test_a_number_that_is_not_one_is_refused_not_read_as_no_limit_nor_looping(problem: Problem, says: str) -> None:
    with pytest.raises(ProblemError, match=says):
        allocate(problem)


def test_an_infinite_limit_means_no_limit_and_a_stale_reading_under_it_still_leaves_nothing() -> None:
    unlimited = [Circuit("main", None, INF, ("L1",))]
    assert allocate(Problem(unlimited, [CAR], NOW, limits=SiteLimits(site_kw=INF))).amps == {"e": 16.0}
    stale = [NonEvLoad("main", "L1", 5.0, NOW - timedelta(hours=1))]  # no worst reading: nothing left
    assert allocate(Problem(unlimited, [CAR], NOW, stale)).amps == {"e": 0.0}


def test_overloads_are_stated_with_units_against_the_limit_a_reader_configured() -> None:
    site = allocate(Problem(ONE, [CAR], NOW, limits=SiteLimits(site_kw=50.0, non_ev_kw=60.0)))
    assert site.overloaded == ("site: non-EV load 60 kW over its limit 50 kW",)
    conductor = allocate(Problem(ONE, [CAR], NOW, [NonEvLoad("main", "L1", 45.0, NOW)]))
    assert conductor.overloaded == ("main/L1: non-EV load 45 A over its limit 40 A",)
    held = allocate(Problem(ONE, [replace(CAR, held_a=30.0)], NOW, [NonEvLoad("main", "L1", 15.0, NOW)]))
    assert held.overloaded == ("main/L1: non-EV load and held chargers 45 A over its limit 40 A",)
    assert site.amps == conductor.amps == {"e": 0.0}


@PROPERTY
@given(problems(), st.lists(st.floats(0, 16), min_size=12, max_size=12), st.sets(st.integers(0, 11)))
def test_the_fallbacks_kept_leave_every_limit_under_any_mix_of_limits_and_fallbacks(
        problem: Problem, fallbacks: list[float], paused: set[int]) -> None:
    """Leases end at different instants: every charger may be on its limit or its own fallback, so each
    counts at the larger; a fallback stays above a limit only where every limit it loads has room for it."""
    drawn = fallbacks[:len(problem.evses)]
    problem = replace(problem, evses=[replace(e, fallback_a=f) for e, f in zip(problem.evses, drawn, strict=True)])
    amps = dict(allocate(problem).amps)
    off = {f"e{n}" for n in paused}
    kept = kept_fallbacks(problem, amps, off=off)
    assert set(kept) == {e.id for e in problem.evses if e.held_a is None}  # held ones are left as they are
    for e in problem.evses:
        if e.id in kept:
            fallback = 0.0 if e.id in off else e.fallback_a  # a pause keeps no fallback
            assert min(fallback, amps[e.id]) - TOL <= kept[e.id] <= fallback + TOL
    worst = {cid: max(a, kept.get(cid, 0.0)) for cid, a in amps.items()}
    for name, (limit, uncontrolled, ev) in loads(problem, worst).items():
        if uncontrolled > limit + TOL:  # over by what the gateway cannot control: nothing kept above a limit
            assert ev <= loads(problem, amps)[name][2] + TOL, name
        else:
            assert uncontrolled + ev <= limit + TOL, f"{name}: {uncontrolled}+{ev} > {limit}"
