"""Demand management in the control loop: while a demand charge is in force the plan is made under the
month's metered peak and the decision keeps the site's power under the plan's target, which is raised only
when a departure would otherwise be missed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.config import GatewayConfig, parse_config
from gateway.domain import ChargerReading, ChargerStatus, EvseState, Measurement
from gateway.runtime import demand
from gateway.runtime.decide import Decision
from gateway.runtime.loop import Runtime
from gateway.runtime.plans import SitePowerLog
from gateway.tariff import Tariff, demand_peak_kw

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
HOUSE_A = 3.0  # per phase: 2.07 kW at 230 V


def site_config(demand_charge: float | None = 15.0) -> GatewayConfig:
    # 3 × 100 A service (~55 kW usable); two 32 A three-phase chargers (~22 kW each); a meter at the service.
    tariff: dict[str, Any] = {"flat_price": 0.25}
    if demand_charge is not None:
        tariff["demand_charge_kw"] = demand_charge
    return parse_config({
        "site": {"wiring": "three-phase-400/230", "service_breaker_a": 100},
        "chargers": [
            {"id": "a", "protocol": "ocpp2.0.1", "phases": "L1-L2-L3", "max_a": 32},
            {"id": "b", "protocol": "ocpp1.6", "phases": "L1-L2-L3", "max_a": 32},
        ],
        "meters": [{"id": "grid", "includes_evs": True,
                    "modbus": {"model": "eastron-sdm630", "host": "127.0.0.1"}}],
        "control": {"min_on_time_s": 0, "deadband_a": 0.5},
        "tariff": tariff,
    })


async def runtime(config: GatewayConfig, needed_kwh: float, departs_in: timedelta) -> Runtime:
    rt = Runtime(config, clock=lambda: NOW, serve_status=False)
    # Earlier this month the site reached 10 kW over one 15-minute window.
    rt.power_log.record(datetime(2026, 1, 2, 10, 0, tzinfo=UTC), 10.0)
    rt.power_log.record(datetime(2026, 1, 2, 10, 15, tzinfo=UTC), 2.0)
    rt.on_measurement(Measurement("grid", NOW, power_kw=3 * HOUSE_A * 0.23,
                                  current_a={"L1": HOUSE_A, "L2": HOUSE_A, "L3": HOUSE_A}))
    rt.on_reading(ChargerReading("b", NOW, ChargerStatus.AVAILABLE))
    await decide(rt)  # the house load is known before the car arrives, as on a running site
    rt.on_reading(ChargerReading("a", NOW, ChargerStatus.PREPARING, current_a={"L1": 0.0, "L2": 0.0, "L3": 0.0},
                                 energy_kwh=0.0, departure=NOW + departs_in, energy_requested_kwh=needed_kwh,
                                 session_id="s-1"))
    return rt


async def decide(rt: Runtime) -> Decision:
    decision = await rt.decide_once()
    rt.unacked.clear()  # no chargers here to answer: as if every limit was acknowledged
    return decision


def site_kw(rt: Runtime) -> float:
    last = rt.last
    assert last is not None
    return last.non_ev_kw + sum(e.kw_per_a * last.limits[e.id] for e in last.evses)


async def test_the_site_stays_under_the_months_peak_when_the_departure_allows() -> None:
    rt = await runtime(site_config(), needed_kwh=20.0, departs_in=timedelta(hours=4))
    decision = await decide(rt)
    plan = rt.plans.plan
    assert plan is not None and plan.peak_kw is not None
    assert abs(plan.peak_kw - 10.0) < 1e-6  # 8 kW for 4 h covers 20 kWh: no need to go higher
    assert rt.month_peak_kw is not None and abs(rt.month_peak_kw - 10.0) < 1e-6
    assert rt.demand_charge == 15.0
    assert decision.peak_kw == plan.peak_kw
    assert decision.site_limit_kw is None  # no DR limit: the target is not reported as one
    assert site_kw(rt) <= 10.0 + 1e-6
    assert decision.limits["a"] > 6  # it charges now, with what the target leaves
    assert "demand peak target 10.0 kW" in decision.reasons["a"]
    limit = rt.effective_limit_kw()
    assert limit is not None and abs(limit - 10.0) < 1e-6


async def test_the_target_is_raised_only_as_far_as_the_departure_needs_and_then_kept() -> None:
    rt = await runtime(site_config(), needed_kwh=30.0, departs_in=timedelta(hours=2))
    await decide(rt)
    plan = rt.plans.plan
    assert plan is not None and plan.peak_kw is not None
    # 30 kWh in 2 h is 15 kW of EV power on top of ~2.07 kW of house: the target goes up to ~17 kW, not to
    # the service's 55 kW.
    assert 16.5 < plan.peak_kw < 17.6
    assert site_kw(rt) <= plan.peak_kw + 1e-6
    assert site_kw(rt) > 10.0
    raised = plan.peak_kw
    # A minute later the plan is made again; the raised target is where it starts from.
    later = NOW + timedelta(minutes=1, seconds=1)
    rt.clock = lambda: later
    assert rt.peak_target([], later) == raised
    await decide(rt)
    assert rt.plans.plan is not None and rt.plans.plan.now == later
    assert rt.plans.plan.peak_kw is not None and rt.plans.plan.peak_kw >= raised - 1e-6


async def test_without_a_demand_charge_nothing_holds_the_site_under_a_peak() -> None:
    rt = await runtime(site_config(demand_charge=None), needed_kwh=20.0, departs_in=timedelta(hours=4))
    decision = await decide(rt)
    assert decision.peak_kw is None and rt.month_peak_kw is None and rt.demand_charge is None
    assert rt.plans.plan is not None and rt.plans.plan.peak_kw is None
    assert site_kw(rt) > 10.0  # the flat price: charge now, as fast as it can


def test_the_power_log_keeps_what_the_peak_needs() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    samples = [(start + timedelta(seconds=s), 5.0 + (s % 997) / 100.0 + (20.0 if 3000 < s < 3400 else 0.0))
               for s in range(0, 4 * 3600, 7)]
    samples.append((start + timedelta(hours=6, seconds=5), 1.0))  # a gap: the last sample held over it
    log = SitePowerLog()
    for at, kw in samples:
        log.record(at, kw)
    assert abs(log.peak_kw(start) - demand_peak_kw(samples, since=start)) < 1e-9
    assert len(log.finished) <= 6 * 4
    # A new month forgets the old windows (the sample before it still holds into its first seconds).
    later = start + timedelta(hours=6)
    peak = log.peak_kw(later)
    assert log.finished == []
    assert abs(peak - demand_peak_kw([(later, samples[-2][1]), samples[-1]], since=later)) < 1e-9


async def test_the_status_reports_the_demand_charge() -> None:
    rt = await runtime(site_config(), needed_kwh=20.0, departs_in=timedelta(hours=4))
    await decide(rt)
    assert rt.status()["demand"] == {"month_peak_kw": 10.0, "peak_target_kw": 10.0, "charge_per_kw": 15.0}
    flat = await runtime(site_config(demand_charge=None), needed_kwh=20.0, departs_in=timedelta(hours=4))
    await decide(flat)
    assert flat.status()["demand"] == {"month_peak_kw": None, "peak_target_kw": None, "charge_per_kw": None}


async def test_the_plan_points_for_the_chart_are_the_plans_site_power() -> None:
    rt = await runtime(site_config(), needed_kwh=20.0, departs_in=timedelta(hours=4))
    await decide(rt)
    points = rt.plan_points()
    plan = rt.plans.plan
    assert plan is not None and len(points) == len(plan.slots)
    start, end, kw = points[0]
    assert start == NOW and end == plan.slots[0].end
    assert abs(kw - 10.0) < 1e-6  # charging now, up to the target: house plus car at 10 kW
    assert points[-1][2] == plan.slots[-1].non_ev_kw  # long after the departure: only the house


async def test_a_car_without_a_departure_is_not_starved_at_the_start_of_a_month() -> None:
    # No peak metered yet (a new month, or a restart): the plan's target is the house load alone and a car
    # that gave no departure never raises it. Held under it, the car would never charge and the metered peak
    # never grow; the target leaves it its minimum instead.
    rt = Runtime(site_config(), clock=lambda: NOW, serve_status=False)
    rt.on_measurement(Measurement("grid", NOW, power_kw=3 * HOUSE_A * 0.23,
                                  current_a={"L1": HOUSE_A, "L2": HOUSE_A, "L3": HOUSE_A}))
    rt.on_reading(ChargerReading("b", NOW, ChargerStatus.AVAILABLE))
    await decide(rt)
    rt.on_reading(ChargerReading("a", NOW, ChargerStatus.PREPARING, current_a={"L1": 0.0, "L2": 0.0, "L3": 0.0}))
    decision = await decide(rt)
    assert rt.plans.plan is not None and rt.plans.plan.peak_kw is not None and rt.plans.plan.peak_kw < 3.0
    assert decision.limits["a"] >= 6.0
    assert decision.peak_kw is not None and site_kw(rt) <= decision.peak_kw + 1e-6


def test_the_target_alone_is_the_months_peak_or_the_plans_when_higher_and_floored_for_cars_without_a_departure(
) -> None:
    """`runtime.demand` on its own: no Runtime, no clock."""
    now = datetime(2026, 6, 10, 12, tzinfo=UTC)
    tariff = Tariff(timezone="UTC", demand_charge_kw=15.0)
    found = demand.demand_at(tariff, [], now, lambda since: 40.0 if since.day == 1 else 99.0, None)
    assert found == demand.Demand(15.0, 40.0, 40.0)  # the month's peak, read from the month's start
    assert demand.demand_at(Tariff(timezone="UTC"), [], now, lambda since: 40.0, None) == demand.Demand()
    car = EvseState(id="cp1", circuit="main", phases=("L1",), voltage_v=230.0, max_a=32.0, connected=True)
    assert demand.floor(5.0, [car], now, non_ev_kw=4.0) == 4.0 + 6.0 * 0.23  # room for one minimum
    assert demand.floor(20.0, [car], now, non_ev_kw=4.0) == 20.0
    assert demand.floor(None, [car], now, non_ev_kw=4.0) is None
