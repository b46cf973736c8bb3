"""Optimising sharing (`Sharing.OPTIMISE`): as safe as the other modes, and better where a greedy order fails.

The property checks are the independent ones of tests/support/allocation.py (every limit, 0 or a current on
the grid between the minimum and the maximum, no charger could take another step) and priority classes
served in order; the examples show what the optimiser is for: it trades one urgent car on two loaded rows
for two cars on one each, and it keeps a pilot where it is unless moving it gains enough.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.allocation import NOW, PROPERTY, check_safe_and_full, could_step, eligible, with_linear

from gateway.allocate import LinearLimit, Problem, Sharing, allocate
from gateway.allocate.milp import CHANGE_PENALTY, urgency
from gateway.domain import Circuit, EvseState, NonEvLoad


@st.composite
def optimised(draw: st.DrawFn) -> Problem:
    problem = draw(with_linear(Sharing.OPTIMISE))
    previous = {e.id: draw(st.sampled_from([0.0, 6.0, 16.0, 40.0])) for e in problem.evses if draw(st.booleans())}
    return replace(problem, previous=previous)


@PROPERTY
@given(optimised())
def test_optimised_sharing_keeps_every_limit_and_leaves_nothing_usable(problem: Problem) -> None:
    result = allocate(problem)
    assert result.notes == (), result.notes  # the solver answered: nothing fell back
    check_safe_and_full(problem)


@PROPERTY
@given(optimised())
def test_optimised_sharing_never_holds_a_charger_back_for_a_less_important_class(problem: Problem) -> None:
    amps = dict(allocate(problem).amps)
    for h in problem.evses:
        if not eligible(h):
            continue
        without_lower = {e.id: (0.0 if e.held_a is None and e.priority < h.priority else amps[e.id])
                         for e in problem.evses}
        assert not could_step(problem, without_lower, h), f"{h.id} held back by a less important class"


def _car(ident: str, hours: float, kwh: float = 2.0) -> EvseState:
    return EvseState(ident, "main", ("L1",), 230.0, max_a=32.0, connected=True, energy_needed_kwh=kwh,
                     departure=NOW + timedelta(hours=hours))


def test_one_car_on_two_full_rows_gives_way_to_two_cars_on_one_each() -> None:
    # A leaves first, but each amp it takes fills both rows; B and C each load one. In deadline order A
    # takes 32 A and stops both; the optimiser serves B and C, twice the energy, all limits kept.
    circuits = [Circuit("main", None, 200.0, ("L1",))]
    cars = [_car("a", 3.0), _car("b", 4.0), _car("c", 4.0)]
    rows = (LinearLimit("r1", 32.0, {"a": 1.0, "b": 1.0}), LinearLimit("r2", 32.0, {"a": 1.0, "c": 1.0}))
    greedy = allocate(Problem(circuits, cars, NOW, linear=rows, sharing=Sharing.DEADLINE)).amps
    best = allocate(Problem(circuits, cars, NOW, linear=rows, sharing=Sharing.OPTIMISE)).amps
    assert greedy == {"a": 32.0, "b": 0.0, "c": 0.0}
    assert best == {"a": 0.0, "b": 32.0, "c": 32.0}


def test_a_pilot_stays_put_unless_moving_it_gains_more_than_the_change_penalty() -> None:
    circuits = [Circuit("main", None, 32.0, ("L1",))]
    cars = [_car("on", 5.0), _car("waiting", 4.5)]  # the waiting car is a little more urgent
    assert urgency(4.2 * 3600, 4.5 * 3600) - urgency(4.7 * 3600, 5.0 * 3600) < 2 * CHANGE_PENALTY
    kept = allocate(Problem(circuits, cars, NOW, sharing=Sharing.OPTIMISE, previous={"on": 32.0})).amps
    assert kept == {"on": 32.0, "waiting": 0.0}
    # Fair sharing would split it; the optimiser does not churn for so little.
    assert allocate(Problem(circuits, cars, NOW)).amps == {"on": 16.0, "waiting": 16.0}
    # Once the waiting car has under an hour of slack, it is worth the change.
    critical = [cars[0], _car("waiting", 1.5, kwh=6.0)]  # 49 min at full power in a 90 min stay
    assert urgency(41 * 60, 1.5 * 3600) - urgency(4.7 * 3600, 5.0 * 3600) > 2 * CHANGE_PENALTY
    moved = allocate(Problem(circuits, critical, NOW, sharing=Sharing.OPTIMISE, previous={"on": 32.0})).amps
    assert moved == {"on": 0.0, "waiting": 32.0}


def test_without_scipy_it_says_so_once_and_serves_in_deadline_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)  # `import scipy.optimize` now fails
    circuits = [Circuit("main", None, 32.0, ("L1",))]
    cars = [_car("late", 8.0, kwh=6.0), _car("soon", 1.5, kwh=6.0)]
    result = allocate(Problem(circuits, cars, NOW, sharing=Sharing.OPTIMISE))
    assert dict(result.amps) == dict(allocate(Problem(circuits, cars, NOW, sharing=Sharing.DEADLINE)).amps)
    assert len(result.notes) == 1
    assert "needs scipy" in result.notes[0] and "deadline order" in result.notes[0]


def test_an_overloaded_constraint_gives_its_chargers_nothing_and_the_others_their_share() -> None:
    circuits = [Circuit("main", None, 100.0, ("L1",)), Circuit("hot", "main", 20.0, ("L1",)),
                Circuit("cool", "main", 40.0, ("L1",))]
    cars = [replace(_car("h", 3.0), circuit="hot"), replace(_car("c", 3.0), circuit="cool")]
    result = allocate(Problem(circuits, cars, NOW, non_ev=[NonEvLoad("hot", "L1", 25.0, NOW)],
                              sharing=Sharing.OPTIMISE))
    assert dict(result.amps) == {"h": 0.0, "c": 32.0}
    assert result.overloaded and result.notes == ()
