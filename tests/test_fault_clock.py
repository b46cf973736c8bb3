"""Fault: the gateway's wall clock steps ±1 h (a bad NTP step) while its monotonic clock runs on.

Pure: a step is told from the monotonic clock, summed, and both moments it may be are kept (the
strictest segment of either). Against real peers (the runtime in this process on an injected clock that
the Modbus pollers stamp their readings with too, like a process-wide step; five pymodbus chargers and a
pymodbus meter, sampled from the chargers' side every 50 ms): no conductor over 64 A across either step,
the chargers keep being decided (readings not taken for an hour old, nor for fresh when they are not),
telemetry keeps being written, and `clock.jump` is raised with the step's size (once) and cleared when
the clock steps back (once), in /api/status, /healthz and /metrics."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.fault_meter import HOUSE_A, USABLE_A, FaultSite, busy, gone, logged, running, sim_site, visible
from support.waiting import until

from gateway.domain import Event, Interval, Segment, Signal, SignalName, SignalType
from gateway.runtime.clock_jump import ClockState, look, nows, stepped, strictest

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
async def site() -> AsyncIterator[FaultSite]:
    async with sim_site() as s:
        yield s


def test_a_step_is_told_from_the_monotonic_clock_and_summed() -> None:
    state = look(ClockState(), T0, 100.0)
    state = look(state, T0 + timedelta(seconds=1.2), 101.0)  # a slow tick, NTP slewing: no step
    assert state.step_s == 0 and not stepped(state)
    state = look(state, T0 + timedelta(seconds=2) + HOUR, 102.0)  # +1 h at once
    assert state.step_s == pytest.approx(3600.0, abs=0.5) and stepped(state)
    assert nows(T0 + HOUR, state) == (T0 + HOUR, T0 + HOUR - timedelta(seconds=state.skew_s))
    state = look(state, T0 + timedelta(seconds=3), 103.0)  # and back
    assert state.step_s == pytest.approx(-3600.0, abs=0.5) and not stepped(state)
    assert nows(T0, state) == (T0,)


@given(steps=st.lists(st.floats(min_value=-7200, max_value=7200), max_size=20))
def test_the_skew_is_the_sum_of_the_steps(steps: list[float]) -> None:
    state, wall, mono = look(ClockState(), T0, 0.0), T0, 0.0
    total = 0.0
    for step in steps:
        mono += 1.0
        wall += timedelta(seconds=1.0 + step)
        state = look(state, wall, mono)
        total += step if abs(step) > 5.0 else 0.0
    assert state.skew_s == pytest.approx(total, abs=1e-3)  # datetimes keep microseconds


def test_the_strictest_segment_keeps_every_lower_limit() -> None:
    dr = Segment(T0, T0 + HOUR, site_kw=20.0, group_kw={"a": 5.0}, reasons=("e1:SIMPLE:level=2",))
    other = Segment(T0, None, ev_kw=30.0, site_kw=40.0, group_kw={"a": 7.0, "b": 3.0}, reasons=("p:PRICE",))
    both = strictest([dr, None, other])
    assert both is not None
    assert (both.site_kw, both.ev_kw, dict(both.group_kw)) == (20.0, 30.0, {"a": 5.0, "b": 3.0})
    assert both.reasons == ("e1:SIMPLE:level=2", "p:PRICE") and both.end == T0 + HOUR
    assert strictest([None, None]) is None


def telemetry_rows(store: Path) -> int:
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10.0)
    try:
        return int(conn.execute("SELECT count(*) FROM telemetry_site").fetchone()[0])
    finally:
        conn.close()


def more_rows(store: Path, wanted: int) -> bool:
    return telemetry_rows(store) >= wanted


@pytest.mark.slow
async def test_the_wall_clock_stepping_an_hour_either_way_breaks_no_limit_and_is_alarmed(
    site: FaultSite, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = "clock.jump"
    caplog.set_level(logging.INFO)
    offset = [timedelta(0)]

    def clock() -> datetime:
        return datetime.now(UTC) + offset[0]

    store = tmp_path / "gw.sqlite"
    async with running(site, tmp_path, clock=clock) as runtime:
        # The pollers stamp their readings with the same (stepped) wall clock, as in one process.
        assert runtime.modbus is not None
        for charger in runtime.modbus.chargers.values():  # type: ignore[attr-defined]
            charger._wall = clock
        runtime.meters["grid"]._wall = clock
        await busy(site)
        site.reset()
        for step, sign in ((HOUR, "+"), (-HOUR, "-")):
            offset[0] = step
            await until(lambda: runtime.alarms.active(key), 3, f"no alarm for a {sign}1 h step")
            alarm = runtime.alarms.get(key)
            assert alarm is not None and f"stepped {sign}3600 s" in alarm.message, alarm
            await visible(runtime, key)
            wanted = telemetry_rows(store) + 2
            await until(partial(more_rows, store, wanted), 5, "telemetry stopped after the step")
            drawing = site.drawing_a("L1")
            assert USABLE_A - HOUSE_A - 8 <= drawing <= USABLE_A - HOUSE_A + 1e-6, "chargers no longer decided"
            assert runtime.last is not None and all("silent" not in r for r in runtime.last.reasons.values())
            offset[0] = timedelta(0)
            await until(lambda: not runtime.alarms.active(key), 3, "the alarm did not clear")
            await gone(runtime, key)
            await asyncio.sleep(1.0)
        # The meter goes silent as the clock steps back: its last reading, stamped an hour "ahead", must go
        # stale on time (counted at its worst, leaving the cars nothing), not look fresh for an hour while
        # the house rises unseen.
        site.meter.image.mute = True
        offset[0] = -HOUR
        await until(lambda: runtime.alarms.active(key), 3, "no alarm for the second -1 h step")
        await asyncio.sleep(3.0)  # stale_after_s = 2
        site.house_a = 35.0
        await asyncio.sleep(2.0)
        site.meter.image.mute = False
        site.house_a = HOUSE_A
    assert site.samples > 100
    assert site.over == [], f"over the limit for {site.over_s():.2f} s, peak {site.peak_a:.1f} A"
    assert logged(caplog, key) == (3, 2)


@pytest.mark.slow
async def test_a_dr_event_in_force_is_kept_when_the_clock_steps_an_hour_ahead(
    site: FaultSite, tmp_path: Path
) -> None:
    offset = [timedelta(0)]

    def clock() -> datetime:
        return datetime.now(UTC) + offset[0]

    async with running(site, tmp_path, clock=clock) as runtime:
        assert runtime.modbus is not None
        for charger in runtime.modbus.chargers.values():  # type: ignore[attr-defined]
            charger._wall = clock
        runtime.meters["grid"]._wall = clock
        await busy(site)
        now = clock()
        level = Signal(SignalName.SIMPLE, SignalType.LEVEL, (Interval(timedelta(minutes=30), 3.0),))
        runtime.events_changed([Event("dr-1", 0, now - timedelta(minutes=1), timedelta(minutes=30), (level,))], now)
        await until(lambda: runtime.last is not None and runtime.last.ev_limit_kw is not None, 5, "no DR limit")
        assert runtime.last is not None and runtime.last.ev_limit_kw is not None
        cap_a = runtime.last.ev_limit_kw / (0.230 * 0.99)  # per-phase amps of three-phase EVs at that cap
        await until(lambda: site.drawing_a("L2") <= cap_a + 1e-6, 5, "the chargers never got under the DR cap")
        site.reset()
        offset[0] = HOUR  # the event "ended" an hour early on the stepped clock
        await asyncio.sleep(3.0)
        assert site.drawing_a("L2") <= cap_a + 1e-6, "the DR limit was dropped when the clock stepped ahead"
