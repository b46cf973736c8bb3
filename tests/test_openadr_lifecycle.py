"""Pure rules of the event lifecycle: modification order, implied cancel, randomization, cancel of an
active event."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from gateway import event_lifecycle as lifecycle
from gateway.domain import Event, EventStatus, Interval, Signal, SignalName, SignalType

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
