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
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.allocation import NOW, PROPERTY, TOL, all_loads, check_safe_and_full, could_step, eligible, with_linear

from gateway.allocate import LinearLimit, Problem, Sharing, allocate, usable_range
from gateway.allocate.milp import CHANGE_PENALTY, PLAN_SLACK_H, PLAN_SURE_H, plan, urgency
from gateway.allocate.order import _laxity_s
from gateway.domain import Circuit, EvseState, NonEvLoad
from gateway.smoothing import ChargerMemory, SmoothingSettings, remembered, smooth


@st.composite
def optimised(draw: st.DrawFn) -> Problem:
    problem = draw(with_linear(Sharing.OPTIMISE))
    previous = {e.id: draw(st.sampled_from([0.0, 6.0, 16.0, 40.0])) for e in problem.evses if draw(st.booleans())}
    # Some of those with a limit in force started charging a few minutes ago (inside the minimum on-time or not)
    evses = [replace(e, on_since=NOW - timedelta(minutes=draw(st.integers(0, 12))))
             if previous.get(e.id, 0.0) > 0 and draw(st.booleans()) else e for e in problem.evses]
    return replace(problem, previous=previous, evses=evses)


def _protected(problem: Problem, e: EvseState) -> bool:
    return (eligible(e) and problem.previous.get(e.id, 0.0) > 0 and e.on_since is not None
            and problem.now - e.on_since < problem.min_on_time)


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


@PROPERTY
@given(optimised())
def test_a_charger_inside_its_minimum_on_time_is_not_paused_while_all_such_fit(problem: Problem) -> None:
    # One class (priority classes are checked above): when every protected charger fits at its minimum
    # with all the others at 0, none of them is paused, whoever else is more urgent.
    problem = replace(problem, evses=[replace(e, priority=0) for e in problem.evses])
    protected = [e for e in problem.evses if _protected(problem, e)]
    at_minimum = {e.id: (e.held_a if e.held_a is not None else usable_range(e)[0] if e in protected else 0.0)
                  for e in problem.evses}
    fits = all(ev <= TOL or unc + ev <= lim - 1e-6 for lim, unc, ev in all_loads(problem, at_minimum).values())
    amps = dict(allocate(problem).amps)
    if fits:
        assert all(amps[e.id] > 0 for e in protected), {e.id: amps[e.id] for e in protected}


def test_a_car_inside_its_minimum_on_time_keeps_charging_even_for_a_more_urgent_one() -> None:
    circuits = [Circuit("main", None, 10.0, ("L1",))]  # room for one car
    on = replace(_car("on", 8.0), on_since=NOW - timedelta(minutes=2))
    cars = [on, _car("urgent", 1.0, kwh=4.0)]  # 33 min at full power in a 60 min stay: under an hour to spare
    problem = Problem(circuits, cars, NOW, min_on_time=timedelta(minutes=5), sharing=Sharing.OPTIMISE,
                      previous={"on": 10.0})
    assert allocate(problem).amps == {"on": 10.0, "urgent": 0.0}
    # Its minimum on-time over, it gives way.
    later = replace(problem, min_on_time=timedelta(minutes=1))
    assert allocate(later).amps == {"on": 0.0, "urgent": 10.0}


def test_paused_cars_take_turns_when_no_departure_is_known() -> None:
    # Five cars with no departure on room for two at their minimum, a decision a minute for six hours:
    # with no urgency to weigh, the class is served in deadline order and its rotation brings each in.
    circuits = [Circuit("main", None, 15.0, ("L1",))]
    cars = [EvseState(f"c{n}", "main", ("L1",), 230.0, max_a=32.0, connected=True) for n in range(5)]
    memory: dict[str, ChargerMemory] = {}
    served = {c.id: 0 for c in cars}
    waits = {c.id: 0 for c in cars}
    longest = dict(waits)
    for minute in range(6 * 60):
        now = NOW + timedelta(minutes=minute)
        previous = {cid: mem.limit_a for cid, mem in memory.items()}
        result = allocate(Problem(circuits, remembered(cars, memory), now, min_on_time=timedelta(minutes=10),
                                  sharing=Sharing.OPTIMISE, previous=previous))
        assert result.notes == ()
        limits, memory, _ = smooth(result, cars, memory, now, SmoothingSettings())
        assert sum(limits.values()) <= 15.0 + 1e-9
        for cid, amps in limits.items():
            served[cid] += amps > 0
            waits[cid] = 0 if amps > 0 else waits[cid] + 1
            longest[cid] = max(longest[cid], waits[cid])
    assert all(minutes >= 60 for minutes in served.values()), served
    assert all(minutes <= 4 * 60 for minutes in longest.values()), longest


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
    # With 41 min of slack the waiting car can still be met after the one charging has finished: the plan
    # (milp.plan) loses no energy by waiting, so nothing moves yet.
    later = [cars[0], _car("waiting", 1.5, kwh=6.0)]  # 49 min at full power in a 90 min stay
    assert urgency(41 * 60, 1.5 * 3600) - urgency(4.7 * 3600, 5.0 * 3600) > 2 * CHANGE_PENALTY
    kept = allocate(Problem(circuits, later, NOW, sharing=Sharing.OPTIMISE, previous={"on": 32.0})).amps
    assert kept == {"on": 32.0, "waiting": 0.0}
    # Once it has under PLAN_SURE_H of slack, it is worth the change.
    critical = [cars[0], _car("waiting", 1.5, kwh=10.4)]  # 85 min at full power in a 90 min stay
    assert _laxity_s(critical[1], NOW) < PLAN_SURE_H * 3600
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


def test_no_optimum_within_the_budget_is_served_in_deadline_order_and_said() -> None:
    circuits = [Circuit("main", None, 2000.0, ("L1", "L2", "L3"))]
    phases = [("L1",), ("L2",), ("L3",), ("L1", "L2"), ("L2", "L3")]
    cars = [replace(_car(f"c{n:03}", 1.0 + (n % 37) / 4, kwh=5.0 + n % 11), phases=phases[n % 5],
                    voltage_v=230.0 if n % 5 < 3 else 400.0) for n in range(400)]
    rows = tuple(LinearLimit(f"r{k}", 900.0, {c.id: 1.0 + (k + n) % 3 / 2 for n, c in enumerate(cars) if n % 4 != k})
                 for k in range(4))
    problem = Problem(circuits, cars, NOW, linear=rows, sharing=Sharing.OPTIMISE, optimise_time_s=1e-3)
    result = allocate(problem)
    assert len(result.notes) == 1 and "no optimum in 0.001 s" in result.notes[0], result.notes
    assert "served in deadline order" in result.notes[0]
    assert dict(result.amps) == dict(allocate(replace(problem, sharing=Sharing.DEADLINE)).amps)


def test_without_departures_a_car_plugging_in_gets_its_fair_share_at_once() -> None:
    # Nobody gave a departure: no urgency to weigh a move against, so the two charging cars give way at
    # once as under fair sharing, instead of the newcomer waiting for its turn.
    circuits = [Circuit("main", None, 64.0, ("L1",))]
    cars = [EvseState(f"c{n}", "main", ("L1",), 230.0, max_a=32.0, connected=True) for n in range(3)]
    problem = Problem(circuits, cars, NOW, sharing=Sharing.OPTIMISE, previous={"c0": 32.0, "c1": 32.0})
    fair = allocate(replace(problem, sharing=Sharing.FAIR)).amps
    assert allocate(problem).amps == fair == {"c0": 22.0, "c1": 21.0, "c2": 21.0}


def test_without_a_departure_in_the_class_it_is_served_fairly_whatever_the_phases() -> None:
    # 40 A a conductor; three three-phase cars and one one-phase car on each conductor, no departures.
    # Maximising amps would pause three-phase cars for one-phase ones, maximising power the reverse; with
    # no urgency to weigh, the class is served as under deadline order (here: fair) and every car charges.
    circuits = [Circuit("feeder", None, 40.0, ("L1", "L2", "L3"))]
    three = [EvseState(f"t{n}", "feeder", ("L1", "L2", "L3"), 400.0, max_a=32.0, connected=True) for n in range(3)]
    one = [EvseState(f"o{p}", "feeder", (p,), 230.0, max_a=32.0, connected=True) for p in ("L1", "L2", "L3")]
    problem = Problem(circuits, [*three, *one], NOW, sharing=Sharing.OPTIMISE)
    amps = dict(allocate(problem).amps)
    assert all(a > 0 for a in amps.values()), amps
    assert amps == dict(allocate(replace(problem, sharing=Sharing.FAIR)).amps)


def _drive(cars: list[EvseState], circuits: list[Circuit], minutes: int, draw: float = 1.0,
           smoothing: SmoothingSettings | None = None) -> dict[str, float]:
    """Decide every minute for `minutes`, each car taking `draw` of what it was given; the energy each
    still needs. With `smoothing`, the limits go through the runtime's smoothing (deadband) first."""
    need = {c.id: c.energy_needed_kwh or 0.0 for c in cars}
    memory: dict[str, ChargerMemory] = {}
    previous: dict[str, float] = {}
    for minute in range(minutes):
        now = NOW + timedelta(minutes=minute)
        present = [replace(c, energy_needed_kwh=need[c.id]) for c in cars
                   if c.departure is not None and now < c.departure and need[c.id] > 1e-6]
        if smoothing is not None:
            present = remembered(present, memory)
        raw = allocate(Problem(circuits, present, now, sharing=Sharing.OPTIMISE, previous=previous))
        amps = dict(raw.amps)
        if smoothing is not None:
            amps, memory, _ = smooth(raw, present, memory, now, smoothing)
        for car in present:
            need[car.id] = max(need[car.id] - amps[car.id] * draw * car.kw_per_a / 60.0, 0.0)
        previous = dict(amps)
    return need


def test_the_plan_serves_first_the_cars_that_cannot_catch_up_later() -> None:
    # Room for one car at full power. "long" stays 5 h and needs 2 h of it; "s1" and "s2" leave after
    # 4.5 h and need 1.45 h each: 4.9 h of charging in 5 h, possible only with both short stays served
    # before "long" has taken more than 1.6 h. None is critical at first (over 1.5 h of laxity each) and
    # their departures are close to "long"'s, so urgency alone lets "long" go first and loses both;
    # the plan (milp.plan) sees that "long" can catch up after they have left and that they cannot.
    circuits = [Circuit("main", None, 32.0, ("L1",))]
    full_kw = 32.0 * 0.23
    cars = [_car("long", 5.0, kwh=2.0 * full_kw), _car("s1", 4.5, kwh=1.45 * full_kw),
            _car("s2", 4.5, kwh=1.45 * full_kw)]
    left = _drive(cars, circuits, 5 * 60)
    assert left == {"long": pytest.approx(0.0, abs=0.05), "s1": pytest.approx(0.0, abs=0.05),
                    "s2": pytest.approx(0.0, abs=0.05)}


@pytest.mark.parametrize("big_first", [True, False])
def test_where_either_car_could_go_first_the_plan_serves_the_one_with_less_slack(big_first: bool) -> None:
    # Room for one car at full power (7.36 kW) for the 4 h both stay, and 3.85 h of charging to do in it
    # (3.93 h with each car's pad): a little of the room now has to be used. "big" needs 2.05 h of it
    # (1.9 h of laxity), "small" 1.8 h (2.1 h). Without arrivals both are met whoever takes it, so energy
    # alone does not choose (the answer went to whichever car came second); but a car arriving later
    # takes room from whoever is left, and "big" has less slack to give. As LLF does, the plan serves
    # first the car whose laxity is under PLAN_SLACK_H.
    kw, full_kw = 0.23, 32 * 0.23
    big, small = 2.05 * full_kw, 1.8 * full_kw
    assert 4.0 - 2.05 < PLAN_SLACK_H < 4.0 - 1.8
    needs = [big, small] if big_first else [small, big]
    now, met = plan([kw, kw], [32.0, 32.0], needs, [4.0, 4.0], [0.0, 0.0], [[(0, 1.0)], [(0, 1.0)]], [32.0],
                    time_limit_s=5.0)
    amps = dict(zip(("big", "small") if big_first else ("small", "big"), now, strict=True))
    assert amps["small"] == 0.0 and amps["big"] > 5.0, amps
    assert met == [True, True]


def test_when_not_every_car_can_be_met_the_plan_meets_one_rather_than_shortchanging_both() -> None:
    # Room for one car at full power for an hour; two cars each need 50 min of it within that hour. Fair
    # shares (or equal urgencies) would leave both short; the plan meets one and gives the other the rest.
    circuits = [Circuit("main", None, 32.0, ("L1",))]
    full_kw = 32.0 * 0.23
    cars = [_car("a", 1.0, kwh=50 / 60 * full_kw), _car("b", 1.0, kwh=50 / 60 * full_kw)]
    left = _drive(cars, circuits, 60)
    assert min(left.values()) == pytest.approx(0.0, abs=0.05), left
    assert sum(left.values()) == pytest.approx(40 / 60 * full_kw, abs=0.1)  # and no energy lost for it


def test_cars_drawing_a_little_under_their_pilots_still_leave_met_where_the_plan_can_meet_one() -> None:
    # Room for one car at full power; "short" needs 64 of its 90 min at full power, "long" 122 of its 3 h:
    # not both can be met. Cars draw 97 % of their pilot and the runtime's deadband drops raises under
    # 0.5 A, so a plan that meets a car to the minute (no PLAN_PAD) leaves both short (the closer 0.36 kWh).
    # Planned 0.3 kWh over its need, "long" finishes early enough to be met (within 0.1 kWh, ACN's test).
    circuits = [Circuit("main", None, 32.0, ("L1",))]
    cars = [_car("short", 1.5, kwh=7.87), _car("long", 3.0, kwh=15.01)]
    left = _drive(cars, circuits, 3 * 60, draw=0.97, smoothing=SmoothingSettings(deadband_a=0.5))
    assert min(left.values()) < 0.1, left


def test_a_class_over_the_plan_size_is_optimised_without_a_plan_and_without_a_note(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Past PLAN_MAX_CARS the program that would follow a plan does not finish within a tick's share
    # (docs/allocation.md), so no plan is built; that is the design, not a fallback worth a note.
    import gateway.allocate.milp as milp

    planned: list[int] = []
    real_plan = milp.plan

    def counted(*args: Any, **kwargs: Any) -> tuple[list[float], list[bool]]:
        planned.append(len(args[0]))
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(milp, "plan", counted)
    circuits = [Circuit("main", None, 40.0, ("L1",))]
    cars = [_car(f"c{n}", 1.0 + n, kwh=5.0) for n in range(3)]
    monkeypatch.setattr(milp, "PLAN_MAX_CARS", 3)
    allocate(Problem(circuits, cars, NOW, sharing=Sharing.OPTIMISE))
    assert planned == [3]
    monkeypatch.setattr(milp, "PLAN_MAX_CARS", 2)
    allocation = allocate(Problem(circuits, cars, NOW, sharing=Sharing.OPTIMISE))
    assert planned == [3]
    assert allocation.notes == ()
    assert sum(allocation.amps.values()) == pytest.approx(40.0, abs=0.1)  # the program still shares it all
