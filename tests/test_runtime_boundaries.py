"""Decisions at the schedule's boundaries: apscheduler jobs at each segment start and end, replaced when
the schedule changes, and the runtime deciding on the second an event starts even with a long tick."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from support.waiting import stopped, until

from gateway.config import parse_config
from gateway.domain import Event, Interval, Segment, Signal, SignalName, SignalType
from gateway.runtime.boundaries import Boundaries, boundary_moments
from gateway.runtime.loop import Runtime

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
M = timedelta(minutes=1)


def test_the_moments_are_the_starts_and_ends_ahead_within_the_horizon() -> None:
    segments = [Segment(NOW - M, NOW + M), Segment(NOW + M, NOW + 5 * M, ev_kw=10.0),
                Segment(NOW + 5 * M, NOW + timedelta(days=3)), Segment(NOW + timedelta(days=3), None)]
    assert boundary_moments(segments, NOW) == (NOW + M, NOW + 5 * M)
    assert boundary_moments(segments, NOW, limit=1) == (NOW + M,)
    assert boundary_moments(segments, NOW + 5 * M) == ()


async def test_a_job_fires_at_a_boundary_and_is_replaced_when_the_schedule_changes() -> None:
    fired: list[str] = []
    boundaries = Boundaries(fired.append)
    boundaries.start()
    try:
        now = datetime.now(UTC)
        soon, later = now + timedelta(seconds=0.3), now + timedelta(hours=1)
        boundaries.follow([Segment(now, soon, ev_kw=5.0), Segment(soon, later), Segment(later, None)], now)
        assert boundaries.pending == (soon, later)
        await until(lambda: bool(fired), 5.0, "no decision at the boundary")
        assert soon.isoformat() in fired[0]
        boundaries.follow([Segment(now, None)], now)  # the event was cancelled: nothing is left to wake for
        assert len(boundaries.pending) == 0
        # a boundary already past on the wall clock gets no job (the loop's clock may be another)
        boundaries.follow([Segment(now - M, now - timedelta(seconds=1))], now - 2 * M)
        assert len(boundaries.pending) == 0
    finally:
        boundaries.stop()


async def test_the_runtime_decides_when_an_event_starts_not_a_tick_later(tmp_path: Path) -> None:
    config = parse_config({
        "site": {"wiring": "three-phase-400/230", "service_breaker_a": 63},
        "chargers": [{"id": "a", "protocol": "ocpp2.0.1", "phases": "L1-L2-L3", "max_a": 32}],
        "ocpp": {"port": 0},
        "control": {"tick_s": 60, "charger_stale_s": 120},
        "store": {"path": str(tmp_path / "store.sqlite")},
    })
    runtime = Runtime(config, serve_status=False)
    task = asyncio.create_task(runtime.run())
    try:
        await asyncio.wait_for(runtime.started.wait(), 10)
        await until(lambda: runtime.decisions >= 1, 5.0)
        starts = datetime.now(UTC) + timedelta(seconds=1)
        level = Signal(SignalName.SIMPLE, SignalType.LEVEL, (Interval(timedelta(minutes=5), 2.0),))
        runtime.events_changed([Event("dr-1", 0, starts, timedelta(minutes=5), (level,))], datetime.now(UTC))
        # The tick is a minute away; the job at the event's start decides within a second or so.
        await until(lambda: runtime.last is not None and runtime.last.ev_limit_kw is not None, 10.0)
        assert runtime.last is not None and runtime.last.now >= starts
    finally:
        runtime.stop()
        await stopped(task, 15)
