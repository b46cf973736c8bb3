"""The plan kept by the control loop: a flexible session waits for cheaper prices; re-planning happens on
age, on a change of sessions and on a change of schedule, not every tick."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gateway.assembly import plan_keeper_of
from gateway.domain import EvseState, Segment
from gateway.planner import PlanSettings
from gateway.runtime.plans import PlanKeeper
from gateway.schedule import PriceChange
from gateway.tariff import Tariff

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def car(cid: str, departure: datetime | None, kwh: float | None) -> EvseState:
    return EvseState(cid, "main", ("L1", "L2", "L3"), 400.0, 32.0, connected=True, departure=departure,
                     energy_needed_kwh=kwh, power_factor=0.99)


def prices(values: list[float]) -> tuple[Segment, ...]:
    step = timedelta(minutes=15)
    return tuple(Segment(NOW + n * step, NOW + (n + 1) * step, price=p, reasons=(f"p:ELECTRICITY_PRICE:{p}",))
                 for n, p in enumerate(values))


def keeper() -> PlanKeeper:
    return PlanKeeper(PlanSettings(horizon=timedelta(hours=2), ev_capacity_kw=44.0))


def test_a_flexible_session_waits_for_the_cheap_slots() -> None:
    plans = keeper()
    schedule = prices([0.32, 0.28, 0.12, 0.10])
    wants = plans.wants([car("flex", NOW + timedelta(hours=1), 8.0)], schedule, NOW)
    assert wants["flex"] == 0.0
    later = NOW + timedelta(minutes=45)
    want = plans.wants([car("flex", NOW + timedelta(hours=1), 8.0)], schedule, later)["flex"]
    # In the cheap slot it charges: capped above the minimum, or (the plan cannot give it all it asked for
    # before it leaves) not capped at all, i.e. at its own maximum.
    assert want is None or want > 6


def test_a_plan_is_reused_until_something_changes() -> None:
    plans = keeper()
    schedule = prices([0.32, 0.28, 0.12, 0.10])
    cars = [car("flex", NOW + timedelta(hours=1), 8.0)]
    plans.wants(cars, schedule, NOW)
    first = plans.plan
    plans.wants(cars, schedule, NOW + timedelta(seconds=5))
    assert plans.plan is first  # same sessions, same schedule, young plan
    plans.wants([*cars, car("other", None, None)], schedule, NOW + timedelta(seconds=6))
    assert plans.plan is not first  # a car arrived
    second = plans.plan
    plans.wants([*cars, car("other", None, None)], prices([0.1, 0.1, 0.1, 0.1]), NOW + timedelta(seconds=7))
    assert plans.plan is not second  # the prices changed
    third = plans.plan
    plans.wants([*cars, car("other", None, None)], prices([0.1, 0.1, 0.1, 0.1]), NOW + timedelta(minutes=2))
    assert plans.plan is not third  # older than a minute


def test_a_car_that_asks_for_nothing_more_is_capped_to_nothing() -> None:
    plans = keeper()
    wants = plans.wants([replace(car("done", NOW + timedelta(hours=1), 0.0))], prices([0.3]), NOW)
    assert wants["done"] == 0.0


def test_a_price_relative_to_the_tariff_moves_the_plan() -> None:
    plans = PlanKeeper(PlanSettings(horizon=timedelta(hours=2), ev_capacity_kw=44.0), tariff=Tariff(flat_price=0.2))
    cars = [car("flex", NOW + timedelta(hours=1), 8.0)]
    assert plans.wants(cars, (), NOW)["flex"] != 0.0  # one price all along: it charges at once
    # The VTN makes the next 30 minutes 0.30 dearer than the tariff: the car waits for the tariff's price.
    dearer = (PriceChange(NOW, NOW + timedelta(minutes=30), relative=0.30, reasons=("r:ENERGY_PRICE:x",)),)
    assert plans.wants(cars, (), NOW + timedelta(seconds=1), changes=dearer)["flex"] == 0.0
    plan = plans.plan
    assert plan is not None and plan.slots[0].price == 0.5 and plan.slots[-1].price == 0.2


def test_the_plan_stays_under_what_the_service_carries_less_the_house() -> None:
    from gateway.config import parse_config
    from gateway.planner import site_profile

    config = parse_config({
        "site": {"wiring": "three-phase-400/230", "service_breaker_a": 40},  # 32 A usable: ~21.9 kW
        "chargers": [{"id": f"c{n}", "protocol": "ocpp2.0.1", "phases": "L1-L2-L3", "max_a": 32}
                     for n in range(4)],  # ~88 kW of chargers
    })
    plans = plan_keeper_of(config)
    assert plans.service_kw == pytest.approx(32 * 3 * 230 * 0.99 / 1000)
    cars = [car(f"c{n}", NOW + timedelta(hours=2), 30.0) for n in range(4)]
    plans.wants(cars, prices([0.32, 0.10, 0.10, 0.32]), NOW, non_ev_kw=5.0)
    assert plans.plan is not None
    profile = site_profile(plans.plan)
    assert plans.service_kw is not None
    assert profile and all(ev_kw <= plans.service_kw - 5.0 + 1e-6 for _, _, ev_kw, _, _ in profile)
    assert all(limit <= plans.service_kw - 5.0 + 1e-6 for *_, limit in profile)
