"""Deadband, ramps and rotation: what is sent over time, on top of the allocator's raw answers."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.allocate import Problem, allocate
from gateway.domain import Allocation, Circuit, EvseState
from gateway.smoothing import ChargerMemory, SmoothingSettings, remembered, smooth

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def car(name: str, connected: bool = True) -> EvseState:
    return EvseState(name, "main", ("L1",), 230.0, max_a=32.0, connected=connected)


def raw(**amps: float) -> Allocation:
    return Allocation(amps=amps, binding={k: "test" for k in amps})


def test_decreases_go_out_at_once_even_inside_the_deadband() -> None:
    memory = {"a": ChargerMemory(16.0, T0)}
    limits, _, changes = smooth(raw(a=15.8), [car("a")], memory, T0 + timedelta(seconds=1), SmoothingSettings(1.0))
    assert limits == {"a": 15.8}
    assert [(c.old_a, c.new_a) for c in changes] == [(16.0, 15.8)]


def test_small_increases_inside_the_deadband_are_not_sent() -> None:
    memory = {"a": ChargerMemory(16.0, T0)}
    limits, new_memory, changes = smooth(raw(a=16.4), [car("a")], memory, T0, SmoothingSettings(0.5))
    assert limits == {"a": 16.0} and changes == []
    assert new_memory["a"].decided_at == T0
    limits, _, changes = smooth(raw(a=16.5), [car("a")], memory, T0, SmoothingSettings(0.5))
    assert limits == {"a": 16.5} and len(changes) == 1


def test_the_deadband_never_holds_a_charger_at_zero() -> None:
    memory = {"a": ChargerMemory(0.0, T0)}
    limits, _, _ = smooth(raw(a=6.0), [car("a")], memory, T0, SmoothingSettings(10.0))
    assert limits == {"a": 6.0}


def test_increases_ramp_from_the_minimum_and_never_pass_the_raw_answer() -> None:
    settings_ = SmoothingSettings(deadband_a=0.0, ramp_a_per_s=2.0)
    memory = {"a": ChargerMemory(0.0, T0)}
    seen = []
    now = T0
    for _ in range(12):
        now += timedelta(seconds=1)
        limits, memory, _ = smooth(raw(a=20.0), [car("a")], memory, now, settings_)
        seen.append(limits["a"])
    assert seen[0] == 6.0  # from 0 straight to the J1772 minimum: nothing lower is allowed
    assert seen[1:8] == [8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0]
    assert max(seen) == 20.0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0, 40), min_size=1, max_size=20),
    st.floats(0, 3),
    st.one_of(st.none(), st.floats(0.5, 10)),
)
def test_what_is_sent_is_never_above_the_raw_answer_nor_above_what_was_in_force(
    answers: list[float], deadband: float, ramp: float | None
) -> None:
    settings_ = SmoothingSettings(deadband, ramp)
    memory: dict[str, ChargerMemory] = {}
    previous = 0.0
    for n, value in enumerate(answers):
        value = 0.0 if value < 6 else round(value)
        limits, memory, _ = smooth(raw(a=value), [car("a")], memory, T0 + timedelta(seconds=n), settings_)
        sent = limits["a"]
        # Safe: at or below the raw answer, or (suppressed increase) at or below what was already in force.
        assert sent <= value + 1e-9 or sent <= previous + 1e-9
        assert sent <= max(value, previous) + 1e-9
        assert sent == 0 or sent >= 6
        previous = sent


def test_rotation_memory_marks_who_charges_and_who_waits() -> None:
    evses = [car("a"), car("b"), car("gone", connected=False)]
    _limits, memory, _ = smooth(raw(a=10.0, b=0.0, gone=0.0), evses, {}, T0, SmoothingSettings())
    assert memory["a"].on_since == T0 and memory["a"].waiting_since is None
    assert memory["b"].waiting_since == T0 and memory["b"].on_since is None
    assert memory["gone"].waiting_since is None
    later = T0 + timedelta(minutes=1)
    _, memory, _ = smooth(raw(a=10.0, b=0.0, gone=0.0), evses, memory, later, SmoothingSettings())
    assert memory["a"].on_since == T0 and memory["b"].waiting_since == T0
    assert [e.waiting_since for e in remembered(evses, memory)] == [None, T0, None]


def run_site(n_cars: int, fit: int, minutes: int, min_on: timedelta) -> dict[str, list[float]]:
    """Tick once a minute on a circuit with room for `fit` cars at 6 A; return each car's limits."""
    circuits = [Circuit("main", None, 6.0 * fit + 3.0, ("L1",))]
    cars = [EvseState(f"c{n}", "main", ("L1",), 230.0, max_a=32.0, connected=True) for n in range(n_cars)]
    memory: dict[str, ChargerMemory] = {}
    history: dict[str, list[float]] = {c.id: [] for c in cars}
    for minute in range(minutes):
        now = T0 + timedelta(minutes=minute)
        result = allocate(Problem(circuits, remembered(cars, memory), now, min_on_time=min_on))
        limits, memory, _ = smooth(result, cars, memory, now, SmoothingSettings())
        total = sum(limits.values())
        assert total <= 6.0 * fit + 3.0 + 1e-9
        for cid, amps in limits.items():
            history[cid].append(amps)
    return history


def test_when_capacity_is_short_paused_cars_take_turns_and_nobody_starves() -> None:
    history = run_site(n_cars=5, fit=2, minutes=60, min_on=timedelta(minutes=10))
    for cid, limits in history.items():
        served = sum(1 for a in limits if a > 0)
        assert served >= 60 * 2 // 5 - 10, f"{cid} served only {served} of 60 minutes"
        # nobody waits much longer than the others need to have their turn
        longest_wait = max(len(run) for run in "".join("x" if a == 0 else "." for a in limits).split("."))
        assert longest_wait <= 35, f"{cid} waited {longest_wait} minutes in a row"


def test_without_a_minimum_on_time_the_longest_charging_car_yields_first() -> None:
    history = run_site(n_cars=3, fit=2, minutes=30, min_on=timedelta(0))
    for cid, limits in history.items():
        assert 18 <= sum(1 for a in limits if a > 0) <= 22, cid  # each about two thirds of the time


def test_minimum_on_time_prevents_flapping_between_waiting_cars() -> None:
    history = run_site(n_cars=3, fit=2, minutes=30, min_on=timedelta(minutes=10))
    for limits in history.values():
        switches = sum(1 for x, y in itertools.pairwise(limits) if (x > 0) != (y > 0))
        assert switches <= 4  # at most one on/off cycle per 10 minutes, roughly
