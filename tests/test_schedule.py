"""Events to the timeline of limits and prices: signals, priority, modification, cancel, test events, offsets."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain import Event, EventStatus, Interval, OptState, Signal, SignalName, SignalType
from gateway.schedule import ScheduleSettings, build_schedule, latest_versions, price_changes, segment_at

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
CAP = ScheduleSettings(ev_capacity_kw=100.0, base_price=0.20, resource_capacity_kw={"fleet": 40.0})


def event(
    eid: str,
    name: SignalName,
    kind: SignalType,
    values: list[float],
    start: datetime = NOW + H,
    step: timedelta = H,
    **kw: object,
) -> Event:
    signal = Signal(name, kind, tuple(Interval(step, v) for v in values))
    fields: dict[str, object] = {"modification_number": 0, "dtstart": start, "duration": step * len(values)}
    fields.update(kw)
    return Event(eid, signals=(signal,), **fields)  # type: ignore[arg-type]


def at(events: list[Event], moment: datetime, settings_: ScheduleSettings = CAP):  # type: ignore[no-untyped-def]
    segment = segment_at(build_schedule(events, NOW, settings_), moment)
    assert segment is not None
    return segment


@pytest.mark.parametrize(("level", "ev_kw"), [(0, None), (1, 50.0), (2, 25.0), (3, 0.0)])
def test_simple_levels_map_to_a_fraction_of_normal_ev_capacity(level: int, ev_kw: float | None) -> None:
    e = event("e", SignalName.SIMPLE, SignalType.LEVEL, [level])
    assert at([e], NOW + 1.5 * H).ev_kw == ev_kw
    assert at([e], NOW + 0.5 * H).ev_kw is None  # not started yet
    assert at([e], NOW + 2.5 * H).ev_kw is None  # over


@pytest.mark.parametrize(
    ("name", "kind", "value", "field", "expected"),
    [
        (SignalName.LOAD_CONTROL, SignalType.X_LOAD_CONTROL_CAPACITY, 0.3, "ev_kw", 30.0),
        (SignalName.LOAD_CONTROL, SignalType.X_LOAD_CONTROL_LEVEL_OFFSET, 2, "ev_kw", 25.0),
        (SignalName.LOAD_CONTROL, SignalType.X_LOAD_CONTROL_PERCENT_OFFSET, -40, "ev_kw", 60.0),
        (SignalName.LOAD_CONTROL, SignalType.X_LOAD_CONTROL_SETPOINT, 12.5, "ev_kw", 12.5),
        (SignalName.LOAD_DISPATCH, SignalType.SETPOINT, 80.0, "site_kw", 80.0),
        (SignalName.LOAD_DISPATCH, SignalType.DELTA, -30.0, "ev_kw", 70.0),
        (SignalName.LOAD_DISPATCH, SignalType.MULTIPLIER, 0.5, "ev_kw", 50.0),
        (SignalName.ELECTRICITY_PRICE, SignalType.PRICE, 0.55, "price", 0.55),
        (SignalName.ENERGY_PRICE, SignalType.PRICE_RELATIVE, 0.10, "price", 0.30),
        (SignalName.ELECTRICITY_PRICE, SignalType.PRICE_MULTIPLIER, 3.0, "price", 0.60),
        (SignalName.DEMAND_CHARGE, SignalType.PRICE, 18.0, "demand_charge", 18.0),
    ],
)
def test_every_ev_relevant_signal_changes_the_site_as_documented(
    name: SignalName, kind: SignalType, value: float, field: str, expected: float
) -> None:
    segment = at([event("e", name, kind, [value])], NOW + 1.5 * H)
    assert getattr(segment, field) == pytest.approx(expected)
    assert segment.reasons and segment.reasons[0].startswith(f"e:{name.value}:{kind.value}=")


def test_signals_that_ask_for_more_than_normal_impose_nothing() -> None:
    for kind, value in [(SignalType.X_LOAD_CONTROL_PERCENT_OFFSET, 20), (SignalType.X_LOAD_CONTROL_CAPACITY, 1.2)]:
        assert at([event("e", SignalName.LOAD_CONTROL, kind, [value])], NOW + 1.5 * H).ev_kw is None
    delta_up = event("d", SignalName.LOAD_DISPATCH, SignalType.DELTA, [15.0])
    assert at([delta_up], NOW + 1.5 * H).ev_kw is None


def test_intervals_follow_each_other_from_the_start() -> None:
    e = event("e", SignalName.SIMPLE, SignalType.LEVEL, [1, 3, 2], step=timedelta(minutes=30))
    limits = [at([e], NOW + H + timedelta(minutes=m)).ev_kw for m in (10, 40, 70, 100)]
    assert limits == [50.0, 0.0, 25.0, None]


def test_the_highest_modification_number_wins_whatever_the_order() -> None:
    first = event("e", SignalName.SIMPLE, SignalType.LEVEL, [1])
    second = replace(first, modification_number=2, signals=event("e", SignalName.SIMPLE, SignalType.LEVEL, [3]).signals)
    for order in ([first, second], [second, first]):
        assert at(order, NOW + 1.5 * H).ev_kw == 0.0
        assert latest_versions(order) == [second]


def test_test_events_and_opted_out_events_never_act() -> None:
    e = event("e", SignalName.SIMPLE, SignalType.LEVEL, [3])
    assert at([replace(e, test_event=True)], NOW + 1.5 * H).ev_kw is None
    assert at([replace(e, opt=OptState.OPT_OUT)], NOW + 1.5 * H).ev_kw is None
    assert at([replace(e, opt=OptState.OPT_IN)], NOW + 1.5 * H).ev_kw == 0.0


def test_a_cancelled_event_before_start_does_nothing_and_an_active_one_ends_at_its_cancel() -> None:
    e = event("e", SignalName.SIMPLE, SignalType.LEVEL, [2], step=2 * H)
    assert at([replace(e, status=EventStatus.CANCELLED)], NOW + 1.5 * H).ev_kw is None
    cancelled = replace(e, status=EventStatus.CANCELLED, cancelled_at=NOW + 1.5 * H)
    assert at([cancelled], NOW + 1.2 * H).ev_kw == 25.0
    assert at([cancelled], NOW + 1.6 * H).ev_kw is None


def test_randomized_offset_shifts_the_whole_event_and_its_cancel() -> None:
    e = event("e", SignalName.SIMPLE, SignalType.LEVEL, [2], start_after=timedelta(minutes=10),
              start_offset=timedelta(minutes=7))
    assert at([e], NOW + H + timedelta(minutes=5)).ev_kw is None
    assert at([e], NOW + H + timedelta(minutes=8)).ev_kw == 25.0
    assert at([e], NOW + 2 * H + timedelta(minutes=6)).ev_kw == 25.0
    assert at([e], NOW + 2 * H + timedelta(minutes=8)).ev_kw is None
    cancelled = replace(e, status=EventStatus.CANCELLED, cancelled_at=NOW + 1.5 * H)
    assert at([cancelled], NOW + 1.5 * H + timedelta(minutes=6)).ev_kw == 25.0
    assert at([cancelled], NOW + 1.5 * H + timedelta(minutes=8)).ev_kw is None


def test_overlapping_events_the_most_restrictive_wins_at_equal_priority() -> None:
    a = event("a", SignalName.SIMPLE, SignalType.LEVEL, [1], step=2 * H)
    b = event("b", SignalName.LOAD_CONTROL, SignalType.X_LOAD_CONTROL_CAPACITY, [0.1], start=NOW + 1.5 * H)
    assert at([a, b], NOW + 1.2 * H).ev_kw == 50.0
    assert at([a, b], NOW + 1.7 * H).ev_kw == pytest.approx(10.0)
    assert at([a, b], NOW + 2.7 * H).ev_kw == 50.0


def test_a_better_priority_event_governs_even_when_less_restrictive() -> None:
    urgent = event("urgent", SignalName.SIMPLE, SignalType.LEVEL, [1], priority=1)
    routine = event("routine", SignalName.SIMPLE, SignalType.LEVEL, [3], priority=5)
    none_given = event("none", SignalName.SIMPLE, SignalType.LEVEL, [3], priority=0)
    segment = at([urgent, routine, none_given], NOW + 1.5 * H)
    assert segment.ev_kw == 50.0 and segment.reasons == ("urgent:SIMPLE:level=1",)
    assert at([routine, none_given], NOW + 1.5 * H).ev_kw == 0.0  # 5 beats 0 (none), both level 3


def test_prices_and_limits_are_resolved_separately() -> None:
    price = event("p", SignalName.ELECTRICITY_PRICE, SignalType.PRICE, [0.9], priority=1)
    limit = event("l", SignalName.SIMPLE, SignalType.LEVEL, [2], priority=3)
    segment = at([price, limit], NOW + 1.5 * H)
    assert (segment.price, segment.ev_kw) == (0.9, 25.0)


def test_targeted_events_limit_only_their_resource() -> None:
    e = event("e", SignalName.LOAD_CONTROL, SignalType.X_LOAD_CONTROL_CAPACITY, [0.5], targets=("fleet",))
    segment = at([e], NOW + 1.5 * H)
    assert segment.ev_kw is None and segment.group_kw == {"fleet": 20.0}


def test_a_targeted_event_of_better_priority_does_not_lift_the_site_or_another_resource() -> None:
    two = ScheduleSettings(ev_capacity_kw=100.0, resource_capacity_kw={"fleet": 40.0, "visitors": 60.0})
    site = event("site", SignalName.SIMPLE, SignalType.LEVEL, [2], priority=2)
    fleet = event("fleet", SignalName.LOAD_CONTROL, SignalType.X_LOAD_CONTROL_CAPACITY, [0.5], targets=("fleet",),
                  priority=1)
    visitors = event("visitors", SignalName.LOAD_CONTROL, SignalType.X_LOAD_CONTROL_CAPACITY, [0.5],
                     targets=("visitors",), priority=3)
    segment = at([site, fleet, visitors], NOW + 1.5 * H, two)
    assert segment.ev_kw == 25.0
    assert segment.group_kw == {"fleet": 20.0, "visitors": 30.0}
    # On one resource, priority still governs: a better-priority "normal" lifts a worse-priority cap.
    normal = event("normal", SignalName.LOAD_CONTROL, SignalType.X_LOAD_CONTROL_CAPACITY, [1.0],
                   targets=("visitors",), priority=1)
    assert at([visitors, normal], NOW + 1.5 * H, two).group_kw == {}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_value_that_is_not_a_number_asks_nothing(value: float) -> None:
    for name, kind in [(SignalName.SIMPLE, SignalType.LEVEL), (SignalName.LOAD_DISPATCH, SignalType.SETPOINT),
                       (SignalName.ELECTRICITY_PRICE, SignalType.PRICE)]:
        bad = event("bad", name, kind, [value, 2])
        schedule = build_schedule([bad], NOW, CAP)
        first = segment_at(schedule, NOW + 1.5 * H)
        assert first is not None
        assert (first.site_kw, first.ev_kw, first.price, first.reasons) == (None, None, None, ())
        later = segment_at(schedule, NOW + 2.5 * H)
        assert later is not None and later.reasons  # the next interval still acts


def test_open_ended_event_runs_until_cancelled() -> None:
    signal = Signal(SignalName.SIMPLE, SignalType.LEVEL, (Interval(timedelta(0), 2),))
    e = Event("e", 0, NOW - H, timedelta(0), (signal,))
    schedule = build_schedule([e], NOW, CAP)
    assert schedule[-1].end is None and schedule[-1].ev_kw == 25.0


def test_segments_are_consecutive_from_now_and_merge_when_equal() -> None:
    a = event("a", SignalName.SIMPLE, SignalType.LEVEL, [2, 2, 2], step=timedelta(minutes=20))
    schedule = build_schedule([a], NOW, CAP)
    assert schedule[0].start == NOW
    assert [s.ev_kw for s in schedule] == [None, 25.0, None]
    for left, right in itertools.pairwise(schedule):
        assert left.end == right.start


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3), st.integers(-120, 600), st.integers(1, 240), st.integers(0, 3), st.booleans(),
            st.integers(0, 3),
        ),
        max_size=8,
    )
)
def test_the_timeline_is_consecutive_and_never_looser_than_any_top_priority_event(
    specs: list[tuple[int, int, int, int, bool, int]],
) -> None:
    events = []
    for n, (level, start_min, dur_min, priority, test_event, mod) in enumerate(specs):
        events.append(
            event(f"e{n % 5}", SignalName.SIMPLE, SignalType.LEVEL, [level], start=NOW + timedelta(minutes=start_min),
                  step=timedelta(minutes=dur_min), priority=priority, test_event=test_event, modification_number=mod)
        )
    schedule = build_schedule(events, NOW, CAP)
    assert schedule[0].start == NOW and schedule[-1].end is None
    for left, right in itertools.pairwise(schedule):
        assert left.end == right.start
    live = [e for e in latest_versions(events) if not e.test_event]
    for segment in schedule:
        moment = segment.start
        active = [e for e in live if e.start <= moment < e.start + e.duration]
        if not active:
            assert segment.ev_kw is None
            continue
        ranks = [e.priority if e.priority > 0 else 99 for e in active]
        best = [e for e, r in zip(active, ranks, strict=True) if r == min(ranks)]
        expected = min(CAP.simple_levels[e.signals[0].intervals[0].value] * 100.0 for e in best)  # type: ignore[index]
        assert segment.ev_kw == (None if expected >= 100.0 else expected)


def test_relative_prices_without_a_base_price_are_changes_to_the_tariffs_price() -> None:
    plain = ScheduleSettings(ev_capacity_kw=100.0)
    relative = event("r", SignalName.ENERGY_PRICE, SignalType.PRICE_RELATIVE, [0.05, 0.10])
    multiplier = event("m", SignalName.ELECTRICITY_PRICE, SignalType.PRICE_MULTIPLIER, [2.0], start=NOW + 2 * H)
    # The segment says no absolute price (the tariff's stands) but still names the event.
    segment = at([relative, multiplier], NOW + 1.5 * H, plain)
    assert segment.price is None and segment.reasons == ("r:ENERGY_PRICE:priceRelative=0.05",)
    changes = price_changes([relative, multiplier], NOW, plain)
    assert [(c.start, c.end, c.relative, c.multiplier) for c in changes] == [
        (NOW + H, NOW + 2 * H, 0.05, 1.0), (NOW + 2 * H, NOW + 3 * H, 0.10, 2.0)]
    assert changes[1].apply(0.30) == pytest.approx(0.70)
    assert changes[1].reasons == ("m:ELECTRICITY_PRICE:priceMultiplier=2", "r:ENERGY_PRICE:priceRelative=0.1")


def test_an_absolute_price_governs_relative_ones_of_the_same_priority_but_not_better_ones() -> None:
    plain = ScheduleSettings(ev_capacity_kw=100.0)
    absolute = event("a", SignalName.ELECTRICITY_PRICE, SignalType.PRICE, [0.40])
    relative = event("r", SignalName.ENERGY_PRICE, SignalType.PRICE_RELATIVE, [0.05])
    assert price_changes([absolute, relative], NOW, plain) == ()
    assert at([absolute, relative], NOW + 1.5 * H, plain).price == 0.40
    better = replace(relative, priority=1)
    assert [c.relative for c in price_changes([absolute, better], NOW, plain)] == [0.05]
    assert at([absolute, better], NOW + 1.5 * H, plain).price is None
