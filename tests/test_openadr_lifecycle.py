"""Pure rules: event lifecycle (modification order, implied cancel, randomization), opt decisions, and
the translation of signal units."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from gateway.config.openadr import OpenAdrSection
from gateway.domain import Event, EventStatus, Interval, OptState, Signal, SignalName, SignalType
from gateway.openadr import lifecycle, opt
from gateway.openadr.translate import translate_event

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)


def event(event_id: str = "e", mod: int = 0, *, start: datetime = NOW + timedelta(hours=1),
          start_after: timedelta = timedelta(0), status: EventStatus = EventStatus.FAR,
          level: float = 1.0) -> Event:
    return Event(event_id, mod, start, timedelta(hours=1),
                 (Signal(SignalName.SIMPLE, SignalType.LEVEL, (Interval(timedelta(hours=1), level),)),),
                 status=status, start_after=start_after)


def fixed(offset_s: float) -> lifecycle.Draw:
    return lambda _: timedelta(seconds=offset_s)


def test_new_modified_same_and_older() -> None:
    r = lifecycle.reconcile({}, [event(mod=0)], NOW, fixed(0), complete_list=True)
    (stored,) = r.changed
    assert r.verdicts[0].code == 200
    same = lifecycle.reconcile({"e": stored}, [event(mod=0, level=3)], NOW, fixed(0), complete_list=True)
    assert same.changed == () and same.verdicts[0].code == 200
    newer = lifecycle.reconcile({"e": stored}, [event(mod=2, level=3)], NOW, fixed(0), complete_list=True)
    assert newer.changed[0].signals[0].intervals[0].value == 3
    older = lifecycle.reconcile({"e": newer.changed[0]}, [event(mod=1)], NOW, fixed(0), complete_list=True)
    assert older.changed == () and older.verdicts[0].code == 450


@given(st.floats(min_value=0, max_value=3600), st.floats(min_value=-100, max_value=10_000))
def test_offset_is_drawn_once_inside_startafter_and_kept(window_s: float, draw_s: float) -> None:
    window = timedelta(seconds=window_s)
    first = lifecycle.reconcile({}, [event(start_after=window)], NOW, fixed(draw_s), complete_list=True)
    e = first.changed[0]
    assert timedelta(0) <= e.start_offset <= window
    again = lifecycle.reconcile({"e": e}, [event(mod=1, start_after=window)], NOW, fixed(draw_s + 7),
                                complete_list=True)
    assert again.changed[0].start_offset == e.start_offset


def test_a_new_startafter_draws_again() -> None:
    e = lifecycle.reconcile({}, [event(start_after=timedelta(minutes=5))], NOW, fixed(60), complete_list=True)
    m = lifecycle.reconcile({"e": e.changed[0]}, [event(mod=1, start_after=timedelta(minutes=20))], NOW,
                            fixed(900), complete_list=True)
    assert m.changed[0].start_offset == timedelta(seconds=900)


def test_cancel_of_an_active_event_is_randomized_with_the_same_offset() -> None:
    active = dataclasses.replace(event(start=NOW - timedelta(minutes=10)), start_offset=timedelta(seconds=30))
    r = lifecycle.reconcile({"e": active}, [dataclasses.replace(event(mod=1, start=NOW - timedelta(minutes=10)),
                                                                status=EventStatus.CANCELLED)],
                            NOW, fixed(0), complete_list=True)
    c = r.changed[0]
    assert c.cancelled_at == NOW and c.end == NOW + timedelta(seconds=30) and c.acted_on


def test_implied_cancel_and_completion() -> None:
    pending = event("p")
    over = dataclasses.replace(event("o", start=NOW - timedelta(hours=3)))
    r = lifecycle.reconcile({"p": pending, "o": over}, [], NOW, fixed(0), complete_list=True)
    by_id = {e.event_id: e for e in r.changed}
    assert by_id["p"].status is EventStatus.CANCELLED and not by_id["p"].acted_on
    assert by_id["o"].status is EventStatus.COMPLETED
    assert lifecycle.reconcile({"p": pending}, [], NOW, fixed(0), complete_list=False).changed == ()


def test_opt_rules_and_override() -> None:
    config = OpenAdrSection(market_contexts=("http://u/ev",), ev_capacity_kw=50, critical_kw=20)
    e = dataclasses.replace(event(level=1), market_context="http://u/ev")
    assert opt.decide(e, config).opt is OptState.OPT_IN  # level 1 → 25 kW left
    assert opt.decide(dataclasses.replace(e, market_context="x"), config).reason.startswith("not enrolled")
    tight = dataclasses.replace(event(level=2), market_context="http://u/ev")  # 12.5 kW < 20 kW
    assert opt.decide(tight, config).opt is OptState.OPT_OUT
    assert opt.decide(tight, config, override=(OptState.OPT_IN, "fleet can wait")).opt is OptState.OPT_IN
    assert opt.decide(e, config, targeted=False).opt is OptState.OPT_OUT


def test_load_dispatch_in_watts_becomes_kilowatts() -> None:
    raw = {
        "event_descriptor": {"event_id": 123, "modification_number": 0, "event_status": "far"},
        "active_period": {"dtstart": NOW, "duration": timedelta(hours=1)},
        "event_signals": [{"signal_name": "LOAD_DISPATCH", "signal_type": "setpoint", "signal_id": 7,
                           "powerReal": {"item_units": "W", "si_scale_code": "none"},
                           "intervals": [{"duration": timedelta(hours=1), "signal_payload": 40000, "uid": 0}]}],
        "targets": [{"resource_id": "fleet"}, {"ven_id": "ven-1"}],
    }
    t = translate_event(raw, ven_id="ven-1", resources={"fleet": ()}, now=NOW)
    assert t.event.event_id == "123" and t.targeted and t.event.targets == ("fleet",)
    assert t.event.signals[0].intervals[0].value == 40.0 and t.event.signals[0].unit == "powerReal"
    other = translate_event({**raw, "targets": [{"ven_id": "someone-else"}]}, ven_id="ven-1", resources={}, now=NOW)
    assert not other.targeted
