"""The planner: limits never broken, no more than asked, every departure a feasible plan meets, least cost.

Property tests compare `make_plan` with an independent min-cost max-flow (successive shortest paths) on
small random sites, and with charging as fast as possible; examples cover a two-period TOU tariff, a price
spike event, a shed in the limit timeline, the demand-charge peak target and the targets the allocator gets.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.allocate import Problem, allocate
from gateway.domain import Circuit, Event, EvseState, Interval, Segment, Signal, SignalName, SignalType, SiteLimits
from gateway.planner import (
    NoDeparture,
    Plan,
    PlanSettings,
    Slot,
    apply_targets,
    asap_plan,
    build_slots,
    make_plan,
    period_price_planner,
    site_profile,
    targets,
)
from gateway.schedule import ScheduleSettings, build_schedule, segment_at
from gateway.tariff import Tariff, TouPeriod, price_timeline

NOW = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
QUARTER = timedelta(minutes=15)
ALL_DAYS = frozenset(range(7))
TOU = Tariff(
    name="two-period",
    periods=(
        TouPeriod("off-peak", 0.10, ALL_DAYS, 0, 16 * 60),
        TouPeriod("on-peak", 0.40, ALL_DAYS, 16 * 60, 21 * 60),
        TouPeriod("off-peak-late", 0.10, ALL_DAYS, 21 * 60, 24 * 60),
    ),
)


def evse(ident: str, energy: float | None, hours: float | None, max_a: float = 32.0, **kw: Any) -> EvseState:
    departure = None if hours is None else NOW + timedelta(hours=hours)
    car = EvseState(ident, "main", ("L1", "L2"), 240.0, max_a, connected=True, energy_needed_kwh=energy,
                    departure=departure)
    return replace(car, **kw)


# ------------------------------------------------------------------------------------------------ the oracle


def min_cost_max_flow(demands: list[float], caps: list[list[float]], slot_caps: list[float],
                      prices: list[float]) -> tuple[float, float]:
    """(most energy deliverable, least cost of delivering it): successive shortest paths, Bellman-Ford."""
    n, m = len(demands), len(slot_caps)
    source, sink = 0, 1 + n + m
    graph: list[list[list[float]]] = [[] for _ in range(sink + 1)]  # edge: [to, cap, cost, reverse index]

    def edge(a: int, b: int, cap: float, cost: float) -> None:
        graph[a].append([b, cap, cost, len(graph[b])])
        graph[b].append([a, 0.0, -cost, len(graph[a]) - 1])

    for i, d in enumerate(demands):
        edge(source, 1 + i, d, 0.0)
        for k in range(m):
            if caps[i][k] > 0:
                edge(1 + i, 1 + n + k, caps[i][k], 0.0)
    for k in range(m):
        edge(1 + n + k, sink, slot_caps[k], prices[k])
    flow = cost = 0.0
    while True:
        dist = [math.inf] * (sink + 1)
        back: list[tuple[int, int] | None] = [None] * (sink + 1)
        dist[source] = 0.0
        for _ in range(sink + 1):
            changed = False
            for a in range(sink + 1):
                if dist[a] == math.inf:
                    continue
                for idx, (b, cap, c, _) in enumerate(graph[a]):
                    if cap > 1e-12 and dist[a] + c < dist[int(b)] - 1e-12:
                        dist[int(b)] = dist[a] + c
                        back[int(b)] = (a, idx)
                        changed = True
            if not changed:
                break
        if dist[sink] == math.inf:
            return flow, cost
        push = math.inf
        node = sink
        while node != source:
            a, idx = back[node]  # type: ignore[misc]
            push = min(push, graph[a][idx][1])
            node = a
        node = sink
        while node != source:
            a, idx = back[node]  # type: ignore[misc]
            graph[a][idx][1] -= push
            rev = int(graph[a][idx][3])
            graph[node][rev][1] += push
            node = a
        flow += push
        cost += push * dist[sink]


def session_caps(plan: Plan, e: EvseState) -> list[float]:
    rate = e.kw_per_a * e.max_a
    departure = plan.sessions[e.id].departure
    return [max(0.0, rate * (min(s.end, departure) - s.start).total_seconds() / 3600.0) for s in plan.slots]


# ------------------------------------------------------------------------------------------------ properties


@st.composite
def sites(draw: st.DrawFn) -> tuple[list[EvseState], tuple[Slot, ...]]:
    count = draw(st.integers(1, 12))
    prices = draw(st.lists(st.sampled_from([0.05, 0.1, 0.2, 0.3, 0.5, 0.9]), min_size=count, max_size=count))
    caps = draw(st.lists(st.sampled_from([0.0, 3.0, 7.7, 10.0, 15.0, 40.0]), min_size=count, max_size=count))
    slots = tuple(
        Slot(NOW + k * QUARTER, NOW + (k + 1) * QUARTER, prices[k], caps[k]) for k in range(count)
    )
    sessions = []
    for n in range(draw(st.integers(1, 6))):
        quarters = draw(st.integers(1, count))
        extra = draw(st.sampled_from([0, 5, 10]))  # a departure in the middle of a slot
        sessions.append(
            EvseState(
                f"ev-{n}", "main", ("L1", "L2"), 240.0, draw(st.sampled_from([16.0, 32.0, 48.0])), connected=True,
                energy_needed_kwh=draw(st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.0, 8.0, 20.0])),
                departure=NOW + quarters * QUARTER - timedelta(minutes=extra),
            )
        )
    return sessions, slots


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sites())
def test_plan_is_safe_complete_and_cheapest(site: tuple[list[EvseState], tuple[Slot, ...]]) -> None:
    evses, slots = site
    plan = make_plan(evses, slots, NOW, PlanSettings())
    # Never above a slot's limit nor a charger's own maximum, nothing after departure, no more than asked.
    for k, (slot, kw) in enumerate(zip(slots, plan.ev_kw(), strict=True)):
        assert kw <= slot.ev_cap_kw + 1e-6
        for e in evses:
            assert plan.sessions[e.id].kwh[k] <= session_caps(plan, e)[k] + 1e-6
            assert plan.sessions[e.id].kwh[k] >= 0
    for e in evses:
        assert plan.sessions[e.id].planned_kwh <= (e.energy_needed_kwh or 0.0) + 1e-6
    # The most energy any plan could deliver, at the least cost: an independent min-cost max-flow agrees.
    demands = [e.energy_needed_kwh or 0.0 for e in evses]
    best, least = min_cost_max_flow(demands, [session_caps(plan, e) for e in evses],
                                    [s.ev_cap_kw * s.hours for s in slots], [s.price for s in slots])
    delivered = sum(p.planned_kwh for p in plan.sessions.values())
    assert delivered == pytest.approx(best, abs=1e-6)
    assert plan.cost() == pytest.approx(least, abs=1e-6)
    # Every departure a feasible plan could meet is met.
    if best >= sum(demands) - 1e-9:
        assert all(p.unmet_kwh <= 1e-6 for p in plan.sessions.values())
    # Never dearer than charging as fast as possible when that meets every request too.
    fast = asap_plan(evses, slots, NOW, PlanSettings())
    fast_energy = sum(p.planned_kwh for p in fast.sessions.values())
    assert delivered >= fast_energy - 1e-6
    if fast_energy >= sum(demands) - 1e-6:
        assert plan.cost() <= fast.cost() + 1e-6


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sites(), st.sampled_from([0.0, 2.0, 5.0, 12.0]), st.sampled_from([0.0, 1.5]))
def test_peak_target_kept_unless_a_departure_needs_more(
    site: tuple[list[EvseState], tuple[Slot, ...]], peak: float, non_ev: float
) -> None:
    evses, bare = site
    slots = tuple(Slot(s.start, s.end, s.price, s.ev_cap_kw, non_ev) for s in bare)
    free = make_plan(evses, slots, NOW, PlanSettings())
    plan = make_plan(evses, slots, NOW, PlanSettings(), peak_kw=peak)
    assert plan.peak_kw is not None and plan.peak_kw >= peak
    for slot, kw in zip(slots, plan.ev_kw(), strict=True):
        assert kw + non_ev <= plan.peak_kw + 1e-6 or kw <= 1e-9
        assert kw <= slot.ev_cap_kw + 1e-6
    delivered = sum(p.planned_kwh for p in plan.sessions.values())
    assert delivered == pytest.approx(sum(p.planned_kwh for p in free.sessions.values()), abs=1e-4)
    if plan.peak_kw > peak + 1e-6:
        # Raised only as far as needed (to the bisection's tolerance): the plan reaches its new target.
        assert max(kw + non_ev for kw in plan.ev_kw()) >= plan.peak_kw - 0.01 * max(1.0, plan.peak_kw)


@st.composite
def timelines(draw: st.DrawFn) -> tuple[list[Event], list[EvseState], float, float | None]:
    """DR events (SIMPLE levels, LOAD_DISPATCH setpoints, price events) over the next day, sessions of every
    kind (with and without a departure or an energy request, some past their departure), the non-EV load
    and a demand target."""
    events = []
    for n in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["simple", "dispatch", "price"]))
        start = NOW + timedelta(minutes=draw(st.integers(-60, 20 * 60)))
        values = draw(st.lists(st.sampled_from([0, 1, 2, 3]) if kind == "simple" else
                               st.sampled_from([0.0, 4.0, 9.5, 30.0]) if kind == "dispatch" else
                               st.sampled_from([-0.05, 0.02, 0.6, 3.0]), min_size=1, max_size=4))
        name, signal_type = {"simple": (SignalName.SIMPLE, SignalType.LEVEL),
                             "dispatch": (SignalName.LOAD_DISPATCH, SignalType.SETPOINT),
                             "price": (SignalName.ELECTRICITY_PRICE, SignalType.PRICE)}[kind]
        step = timedelta(minutes=draw(st.sampled_from([7, 30, 60, 150])))
        intervals = tuple(Interval(step, float(v)) for v in values)
        events.append(Event(f"e{n}", 0, start, step * len(values), (Signal(name, signal_type, intervals),),
                            priority=draw(st.integers(0, 2))))
    cars = []
    for n in range(draw(st.integers(1, 8))):
        hours = draw(st.sampled_from([None, -1.0, 0.6, 2.0, 5.5, 11.0, 30.0]))
        energy = draw(st.sampled_from([None, 0.0, 3.0, 12.0, 40.0]))
        cars.append(evse(f"ev-{n}", energy, hours, draw(st.sampled_from([16.0, 32.0, 48.0])),
                         connected=draw(st.booleans()) or n == 0))
    return events, cars, draw(st.sampled_from([0.0, 1.5, 6.0])), draw(st.sampled_from([None, 0.0, 8.0]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timelines(), st.sampled_from(["charge-now", "dwell"]), st.sampled_from([None, 6.0]))
def test_a_plan_from_events_and_a_tariff_never_breaks_the_timeline(
    case: tuple[list[Event], list[EvseState], float, float | None], no_departure: NoDeparture,
    default_energy: float | None,
) -> None:
    """End to end: events → `build_schedule` → price timeline and slots → plan, checked against the schedule."""
    events, cars, non_ev, peak = case
    cfg = PlanSettings(ev_capacity_kw=20.0, no_departure=no_departure, horizon=timedelta(hours=24),
                       default_energy_kwh=default_energy)
    schedule = build_schedule(events, NOW, ScheduleSettings(ev_capacity_kw=20.0))
    slots = build_slots(NOW, cfg, schedule=schedule, prices=price_timeline(TOU, NOW, NOW + cfg.horizon, schedule),
                        non_ev_kw=non_ev)
    assert slots[0].start == NOW and slots[-1].end == NOW + cfg.horizon
    assert all(a.end == b.start for a, b in itertools.pairwise(slots))
    plan = make_plan(cars, slots, NOW, cfg, peak_kw=peak)
    for slot, kw in zip(slots, plan.ev_kw(), strict=True):
        # A slot lies inside one segment (slots are cut at every change): its limit holds all through it.
        segment = segment_at(schedule, slot.start)
        assert segment is not None and (segment.end is None or segment.end >= slot.end)
        limit = 20.0
        if segment.ev_kw is not None:
            limit = min(limit, segment.ev_kw)
        if segment.site_kw is not None:
            limit = min(limit, max(0.0, segment.site_kw - non_ev))
        assert kw <= limit + 1e-6, (slot, kw, limit)
        price = segment.price if segment.price is not None else tou_price(slot.start)
        assert slot.price == pytest.approx(price)
    for car in cars:
        session = plan.sessions.get(car.id)
        if not car.connected:
            assert session is None
            continue
        assert session is not None
        asked = car.energy_needed_kwh if car.energy_needed_kwh is not None else default_energy
        if asked is not None:
            assert session.planned_kwh <= asked + 1e-6
        for slot, kwh in zip(slots, session.kwh, strict=True):
            assert kwh >= 0
            assert kwh <= car.kw_per_a * car.max_a * slot.hours + 1e-6
            if slot.start >= session.departure:
                assert kwh == 0
    # A session that wants all it can take never crowds out one with a request and a departure: whatever
    # charging as fast as possible serves of those, the plan serves too; and where every session has both, the
    # plan is never dearer than charging as fast as possible.
    fast = asap_plan(cars, slots, NOW, cfg)
    # The sessions planned first: a departure (given or the default dwell) and a request (given or the default).
    requests = [p for p in plan.sessions.values()
                if not p.charge_now and (p.energy_known or default_energy is not None)]
    served = all(p.planned_kwh >= p.requested_kwh - 1e-9 for p in fast.sessions.values())
    if peak is None and served:
        assert all(p.planned_kwh >= p.requested_kwh - 1e-6 for p in requests)
        if len(requests) == len(plan.sessions):
            assert plan.cost() <= fast.cost() + 1e-6
    if peak is not None:
        # The demand target is raised for those only, never for a car that just wants all it can take.
        alone = make_plan([c for c in cars if c.id in {p.evse_id for p in requests}], slots, NOW, cfg, peak_kw=peak)
        assert plan.peak_kw == alone.peak_kw


def tou_price(moment: datetime) -> float:
    minute = moment.hour * 60 + moment.minute
    return next(p.price for p in TOU.periods if p.start_min <= minute < p.end_min)


# ------------------------------------------------------------------------------------------------ examples


def tou_slots(settings_: PlanSettings, schedule: tuple[Segment, ...] = (), tariff: Tariff = TOU) -> tuple[Slot, ...]:
    prices = price_timeline(tariff, NOW, NOW + settings_.horizon, schedule)
    return build_slots(NOW, settings_, schedule=schedule, prices=prices)


def test_two_period_tou_shifts_to_off_peak_and_meets_departure() -> None:
    cfg = PlanSettings(ev_capacity_kw=50.0)
    slots = tou_slots(cfg)
    car = evse("cp-1", 20.0, 14.0)  # 17:00 → 07:00, on-peak until 21:00
    plan = make_plan([car], slots, NOW, cfg)
    session = plan.sessions["cp-1"]
    assert session.planned_kwh == pytest.approx(20.0)
    assert all(kwh == 0 for s, kwh in zip(slots, session.kwh, strict=True) if s.price > 0.2)
    assert plan.cost() == pytest.approx(20.0 * 0.10)
    assert asap_plan([car], slots, NOW, cfg).cost() > plan.cost()
    assert targets(plan, [car]) == {"cp-1": 0.0}  # on-peak now: wait


def test_departure_inside_on_peak_pays_on_peak_only_for_what_it_must() -> None:
    cfg = PlanSettings(ev_capacity_kw=50.0)
    slots = tou_slots(cfg)
    car = evse("cp-1", 10.0, 3.0)  # leaves at 20:00, all on-peak
    plan = make_plan([car], slots, NOW, cfg)
    assert plan.sessions["cp-1"].planned_kwh == pytest.approx(10.0)
    assert plan.cost() == pytest.approx(10.0 * 0.40)
    assert targets(plan, [car])["cp-1"] == 32.0  # cheapest-first fills the earliest among equals


def test_price_spike_event_is_avoided() -> None:
    cfg = PlanSettings(ev_capacity_kw=50.0)
    spike = Segment(NOW + timedelta(hours=5), NOW + timedelta(hours=7), price=2.0, reasons=("spike:ELECTRICITY_PRICE",))
    slots = tou_slots(cfg, (spike,))
    car = evse("cp-1", 40.0, 13.0)  # 40 kWh at 7.68 kW: 5.2 h of the 8 off-peak hours
    plan = make_plan([car], slots, NOW, cfg)
    in_spike = sum(kwh for s, kwh in zip(slots, plan.sessions["cp-1"].kwh, strict=True) if s.price == 2.0)
    assert in_spike == 0.0
    assert plan.sessions["cp-1"].planned_kwh == pytest.approx(40.0)
    assert any("openadr:spike" in s.source for s in slots)


def test_shed_in_the_limit_timeline_is_respected_and_met_later() -> None:
    cfg = PlanSettings(ev_capacity_kw=20.0)
    flat = Tariff(flat_price=0.2)
    shed = Segment(NOW, NOW + timedelta(hours=1), ev_kw=0.0, reasons=("dr:SIMPLE=3",))
    slots = tou_slots(cfg, (shed, Segment(NOW + timedelta(hours=1), None)), flat)
    cars = [evse("a", 10.0, 3.0), evse("b", 10.0, 3.0)]
    plan = make_plan(cars, slots, NOW, cfg)
    profile = site_profile(plan)
    assert all(ev_kw == 0.0 for start, _, ev_kw, _, _ in profile if start < NOW + timedelta(hours=1))
    assert all(p.unmet_kwh == pytest.approx(0.0) for p in plan.sessions.values())
    assert targets(plan, cars) == {"a": 0.0, "b": 0.0}


def test_flat_price_charges_at_once() -> None:
    cfg = PlanSettings(ev_capacity_kw=50.0)
    slots = tou_slots(cfg, tariff=Tariff(flat_price=0.2))
    car = evse("cp-1", 5.0, 8.0)
    plan = make_plan([car], slots, NOW, cfg)
    assert plan.sessions["cp-1"].kwh[0] > 0
    assert targets(plan, [car])["cp-1"] == 32.0


def test_a_plan_reused_on_later_ticks_follows_its_slots() -> None:
    cfg = PlanSettings(ev_capacity_kw=50.0)
    car = evse("cp-1", 20.0, 14.0)  # on-peak until 21:00 (4 h from now), then off-peak
    plan = make_plan([car], tou_slots(cfg), NOW, cfg)
    assert targets(plan, [car]) == {"cp-1": 0.0}
    assert targets(plan, [car], NOW + timedelta(hours=4, minutes=1)) == {"cp-1": 32.0}
    assert apply_targets([car], plan, NOW + timedelta(hours=4))[0].want_a == 32.0
    assert targets(plan, [car], NOW + timedelta(days=3)) == {"cp-1": None}  # past the plan: no cap


def test_a_session_the_plan_cannot_serve_is_left_to_the_allocator() -> None:
    cfg = PlanSettings(ev_capacity_kw=50.0)
    short = evse("short", 30.0, 1.0)  # 7.68 kWh in the hour it stays, at most
    plan = make_plan([short], tou_slots(cfg), NOW, cfg)
    assert plan.sessions["short"].unmet_kwh > 20
    assert targets(plan, [short]) == {"short": None}


def test_targets_round_up_to_the_step_and_minimum() -> None:
    slot = Slot(NOW, NOW + QUARTER, 0.1, 100.0)
    car = evse("cp-1", 0.3, 0.25, step_a=2.0)  # 0.3 kWh in 15 min = 1.2 kW = 5 A → minimum 6 A
    plan = make_plan([car], (slot,), NOW, PlanSettings())
    assert targets(plan, [car]) == {"cp-1": 6.0}
    car = evse("cp-2", 1.5, 0.25, step_a=4.0)  # 6 kW = 25 A → 28 A on a 4 A step
    plan = make_plan([car], (slot,), NOW, PlanSettings())
    assert targets(plan, [car]) == {"cp-2": 28.0}
    assert apply_targets([car], plan)[0].want_a == 28.0


def test_sessions_without_departure_or_energy_never_starve() -> None:
    cfg = PlanSettings(ev_capacity_kw=10.0)
    slots = tou_slots(cfg)
    unknown = evse("walk-in", None, None)
    deadline = evse("fleet", 7.68 * 1.25, 1.25)  # needs the whole capacity... almost: 7.68 of 10 kW
    plan = make_plan([unknown, deadline], slots, NOW, cfg)
    assert plan.sessions["walk-in"].charge_now
    assert plan.sessions["walk-in"].unmet_kwh == 0.0  # it asked for nothing in particular
    assert plan.sessions["fleet"].unmet_kwh == pytest.approx(0.0)
    wants = targets(plan, [unknown, deadline])
    assert wants["walk-in"] is not None and wants["walk-in"] >= 6.0
    dwell = make_plan([unknown], slots, NOW, PlanSettings(ev_capacity_kw=10.0, no_departure="dwell"))
    assert not dwell.sessions["walk-in"].charge_now
    assert dwell.sessions["walk-in"].departure == NOW + timedelta(hours=8)


def test_a_default_energy_lets_a_car_that_says_nothing_wait_for_cheap_hours() -> None:
    slots = tou_slots(PlanSettings(ev_capacity_kw=50.0))
    quiet = evse("quiet", None, None)  # an OCPP 1.6 car: no departure, no energy request
    eager = make_plan([quiet], slots, NOW, PlanSettings(ev_capacity_kw=50.0, no_departure="dwell"))
    assert targets(eager, [quiet]) == {"quiet": 32.0}  # all it can take in 8 h: on-peak too
    cfg = PlanSettings(ev_capacity_kw=50.0, no_departure="dwell", default_dwell=timedelta(hours=10),
                       default_energy_kwh=10.0)
    plan = make_plan([quiet], slots, NOW, cfg)
    session = plan.sessions["quiet"]
    assert session.requested_kwh == 10.0 and not session.energy_known and session.unmet_kwh == 0.0
    assert session.planned_kwh == pytest.approx(10.0)
    assert all(kwh == 0 for s, kwh in zip(slots, session.kwh, strict=True) if s.price > 0.2)
    assert targets(plan, [quiet]) == {"quiet": 0.0}  # on-peak now: it waits for 21:00
    assert plan.cost() == pytest.approx(1.0)


def test_a_car_past_its_departure_still_charges() -> None:
    cfg = PlanSettings(ev_capacity_kw=50.0)
    late = evse("late", 5.0, -1.0)
    plan = make_plan([late], tou_slots(cfg), NOW, cfg)
    assert plan.sessions["late"].charge_now
    assert plan.sessions["late"].planned_kwh == pytest.approx(5.0)
    assert targets(plan, [late])["late"] == 32.0


def test_allocator_follows_the_plan_but_limits_win() -> None:
    cfg = PlanSettings(ev_capacity_kw=50.0)
    slots = tou_slots(cfg)
    cars = [evse("now", 10.0, 2.0), evse("later", 20.0, 14.0)]
    plan = make_plan(cars, slots, NOW, cfg)
    planned = apply_targets(cars, plan)
    circuits = [Circuit("main", None, 20.0, ("L1", "L2"))]  # less than the plan asks for "now"
    result = allocate(Problem(circuits=circuits, evses=planned, now=NOW))
    assert result.amps["later"] == 0.0
    assert result.amps["now"] == 20.0


def test_slots_cut_at_limit_and_price_changes() -> None:
    cfg = PlanSettings(interval=timedelta(minutes=15), horizon=timedelta(hours=2))
    odd = Segment(NOW + timedelta(minutes=7), NOW + timedelta(minutes=50), ev_kw=3.0)
    slots = build_slots(NOW + timedelta(minutes=2), cfg, schedule=(odd,))
    starts = [s.start - NOW for s in slots]
    assert timedelta(minutes=7) in starts and timedelta(minutes=50) in starts and timedelta(minutes=15) in starts
    assert slots[0].start == NOW + timedelta(minutes=2)
    assert slots[-1].end == NOW + timedelta(minutes=122)
    assert all(s.ev_cap_kw == 3.0 for s in slots if odd.covers(s.start))
    assert all(a.end == b.start for a, b in itertools.pairwise(slots))


def test_nothing_connected_or_no_slots() -> None:
    assert make_plan([evse("x", 5.0, 2.0, connected=False)], tou_slots(PlanSettings()), NOW,
                     PlanSettings()).sessions == {}
    plan = make_plan([evse("x", 5.0, 2.0)], (), NOW, PlanSettings())
    assert plan.sessions["x"].unmet_kwh == 5.0
    assert targets(plan, [evse("x", 5.0, 2.0)]) == {"x": None}


def test_period_price_planner_fits_a_simulator_hook() -> None:
    plan_caps = period_price_planner(ev_capacity_kw=10.0)
    prices = [0.4] * 12 + [0.1] * 12  # an hour dear, then an hour cheap, in 5-minute periods
    cars = [evse("a", 3.0, 2.0), evse("b", 3.0, 2.0)]
    caps = plan_caps(cars, NOW, timedelta(minutes=5), prices)
    assert caps == {"a": 0.0, "b": 0.0}  # 6 kWh fit in the cheap hour: wait
    caps = plan_caps(cars, NOW + timedelta(hours=1), timedelta(minutes=5), [0.1] * 12)
    assert set(caps) == {"a", "b"} and all(a >= 6.0 for a in caps.values())
    # With a demand charge the peak comes first: 6 kWh over the two hours is 3 kW, not 6 kW for one hour.
    flat = period_price_planner(ev_capacity_kw=10.0, demand=True)
    caps = flat(cars, NOW, timedelta(minutes=5), prices)
    assert sum(caps.values()) * 0.24 == pytest.approx(3.0, abs=0.6)  # 0.24 kW per A; rounded up to 1 A steps


def test_closed_loop_day_meets_departures_and_saves() -> None:
    """Plan, allocate and charge every 5 minutes for a day: what the plan promises is what the cars get."""
    step = timedelta(minutes=5)
    cfg = PlanSettings(ev_capacity_kw=15.0, interval=step)
    circuits = [Circuit("main", None, 80.0, ("L1", "L2"))]
    arrivals = [("a", 0.0, 20.0, 14.0), ("b", 0.5, 8.0, 2.5), ("c", 1.0, 30.0, 15.0), ("d", 3.0, 12.0, 12.0)]

    def day(planned: bool) -> tuple[dict[str, float], float]:
        needed = {ident: kwh for ident, _, kwh, _ in arrivals}
        cost, moment = 0.0, NOW
        while moment < NOW + timedelta(hours=16):
            here = [evse(ident, needed[ident], hours - (moment - NOW).total_seconds() / 3600)
                    for ident, at, _, hours in arrivals
                    if NOW + timedelta(hours=at) <= moment < NOW + timedelta(hours=hours) and needed[ident] > 1e-9]
            if planned:
                slots = build_slots(moment, cfg, prices=price_timeline(TOU, moment, moment + cfg.horizon))
                here = apply_targets(here, make_plan(here, slots, moment, cfg))
            result = allocate(Problem(circuits=circuits, evses=here, now=moment,
                                      limits=SiteLimits(ev_kw=cfg.ev_capacity_kw)))
            price = price_timeline(TOU, moment, moment + step)[0].price or 0.0
            for e in here:
                kwh = min(needed[e.id], result.amps.get(e.id, 0.0) * e.kw_per_a * step.total_seconds() / 3600)
                needed[e.id] -= kwh
                cost += kwh * price
            moment += step
        return needed, cost

    left_planned, cost_planned = day(planned=True)
    left_fast, cost_fast = day(planned=False)
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in left_fast.values())
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in left_planned.values())
    assert cost_planned < 0.6 * cost_fast
