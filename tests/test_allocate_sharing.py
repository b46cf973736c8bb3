"""The allocator's general linear limits and its deadline sharing, checked like the rest of the core.

Random sites come from the shared generator (tests/support/allocation.py), with random linear limits
added; the checks are independent of the allocator's own bookkeeping: every limit holds, no charger could
take another step, and under deadline sharing no charger is held back for one in a lower tier.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given
from support.allocation import NOW, PROPERTY, check_safe_and_full, could_step, eligible, with_linear

from gateway.allocate import (
    LinearLimit,
    Problem,
    ProblemError,
    Sharing,
    allocate,
    deadline_tier,
)
from gateway.domain import Circuit, EvseState


@PROPERTY
@given(with_linear())
def test_linear_limits_hold_and_no_capacity_under_them_is_left(problem: Problem) -> None:
    check_safe_and_full(problem)


@PROPERTY
@given(with_linear(Sharing.DEADLINE))
def test_deadline_sharing_keeps_every_limit_and_leaves_nothing_usable(problem: Problem) -> None:
    check_safe_and_full(problem)


@PROPERTY
@given(with_linear(Sharing.DEADLINE))
def test_deadline_sharing_never_holds_a_charger_back_for_a_lower_tier_or_priority(problem: Problem) -> None:
    amps = dict(allocate(problem).amps)

    def rank(e: EvseState) -> tuple[int, int, float]:
        return (e.priority, *deadline_tier(e, problem.now, problem.critical_slack, problem.deadline_step))

    for h in problem.evses:
        if not eligible(h):
            continue
        without_lower = {e.id: (0.0 if e.held_a is None and rank(e) < rank(h) else amps[e.id]) for e in problem.evses}
        assert not could_step(problem, without_lower, h), f"{h.id} held back by a lower tier"


def test_a_negative_coefficient_is_refused() -> None:
    circuits = [Circuit("main", None, 40.0, ("L1",))]
    evses = [EvseState("e0", "main", ("L1",), 230.0, max_a=32.0, connected=True)]
    with pytest.raises(ProblemError, match="not negative"):
        allocate(Problem(circuits, evses, NOW, linear=(LinearLimit("x", 10.0, {"e0": -1.0}),)))


def test_a_linear_limit_weighs_each_charger_by_its_own_coefficient() -> None:
    circuits = [Circuit("main", None, 200.0, ("L1",))]
    evses = [EvseState(f"e{n}", "main", ("L1",), 230.0, max_a=32.0, connected=True) for n in range(2)]
    row = LinearLimit("winding", 30.0, {"e0": 1.0, "e1": 0.5})  # 1.5 × level = 30 A → both at 20 A
    result = allocate(Problem(circuits, evses, NOW, linear=(row,)))
    assert result.amps == {"e0": 20.0, "e1": 20.0}
    assert result.binding["e0"] == "linear:winding"


def _two_cars(sharing: Sharing) -> dict[str, float]:
    circuits = [Circuit("main", None, 32.0, ("L1",))]
    soon = EvseState("soon", "main", ("L1",), 230.0, max_a=32.0, connected=True, energy_needed_kwh=6.0,
                     departure=NOW + timedelta(hours=1, minutes=30))
    late = replace(soon, id="late", departure=NOW + timedelta(hours=8))
    return dict(allocate(Problem(circuits, [late, soon], NOW, sharing=sharing)).amps)


def test_fair_sharing_stays_the_default_and_splits_evenly() -> None:
    assert Problem([], [], NOW).sharing is Sharing.FAIR
    assert _two_cars(Sharing.FAIR) == {"late": 16.0, "soon": 16.0}


def test_deadline_sharing_gives_the_car_about_to_be_late_all_it_can_take() -> None:
    # 6 kWh at 7.4 kW is 49 min of a 90 min stay: under an hour of slack, so it goes first.
    assert _two_cars(Sharing.DEADLINE) == {"late": 0.0, "soon": 32.0}


def test_deadline_tiers_put_savable_cars_before_lost_ones_and_unknown_departures_last() -> None:
    car = EvseState("c", "main", ("L1",), 230.0, max_a=32.0, connected=True, energy_needed_kwh=7.36)  # 1 h at max
    step, slack = timedelta(minutes=5), timedelta(hours=1)
    savable = deadline_tier(replace(car, departure=NOW + timedelta(hours=1, minutes=30)), NOW, slack, step)
    lost = deadline_tier(replace(car, departure=NOW + timedelta(minutes=30)), NOW, slack, step)
    relaxed_soon = deadline_tier(replace(car, departure=NOW + timedelta(hours=3)), NOW, slack, step)
    relaxed_late = deadline_tier(replace(car, departure=NOW + timedelta(hours=9)), NOW, slack, step)
    unknown = deadline_tier(car, NOW, slack, step)
    assert savable > lost > relaxed_soon > relaxed_late > unknown


def test_a_charger_whose_full_power_underflows_to_zero_still_gets_a_decision() -> None:
    # Found by hypothesis: max_a = 5e-324 is > 0, yet volts × amps rounds to 0 kW, and the laxity
    # divided by it. Like a charger with no maximum at all, it has no full-power time to subtract.
    circuits = [Circuit("main", None, 32.0, ("L1",))]
    tiny = EvseState("tiny", "main", ("L1",), 120.0, max_a=5e-324, connected=True, energy_needed_kwh=5.0,
                     departure=NOW + timedelta(hours=2))
    real = replace(tiny, id="real", max_a=32.0)
    step, slack = timedelta(minutes=5), timedelta(hours=1)
    assert deadline_tier(tiny, NOW, slack, step) == deadline_tier(replace(tiny, max_a=0.0), NOW, slack, step)
    for sharing in Sharing:
        result = allocate(Problem(circuits, [tiny, real], NOW, sharing=sharing))
        assert result.amps == {"tiny": 0.0, "real": 32.0}
        assert result.binding["tiny"] == "max below minimum"
