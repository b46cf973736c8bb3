"""Decisions at the schedule's boundaries: one apscheduler job for each moment a segment starts or ends.

The loop decides on every tick anyway; these jobs make a decision happen on the very second an event
interval starts or ends (a curtailment binds when it starts, not up to a tick later; the site is let go
when it ends), whatever the tick. `follow()` is given the schedule of each decision and replaces the jobs
only when its boundaries moved (an event arrived, was modified, cancelled or opted out of). Moments past,
or further ahead than the horizon, get no job: the horizon moves on with every decision.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from gateway.domain import Segment

log = logging.getLogger("gateway.runtime")
HORIZON = timedelta(days=2)
MAX_JOBS = 256  # a schedule with more boundaries than this in two days gets the nearest ones


def boundary_moments(segments: Iterable[Segment], now: datetime, *, horizon: timedelta = HORIZON,
                     limit: int = MAX_JOBS) -> tuple[datetime, ...]:
    """The moments after `now` (and within the horizon) at which a segment starts or ends, in order."""
    moments = {m for s in segments for m in (s.start, s.end) if m is not None and now < m <= now + horizon}
    return tuple(sorted(moments)[:limit])


class Boundaries:
    """Calls `fire(why)` on the event loop at each boundary of the schedule last given to `follow()`."""

    def __init__(self, fire: Callable[[str], None], *, wall_clock: Callable[[], datetime] | None = None) -> None:
        self._fire = fire
        self._wall = wall_clock or (lambda: datetime.now(UTC))
        self._scheduler: AsyncIOScheduler | None = None
        self._moments: tuple[datetime, ...] = ()

    def start(self) -> None:
        """Start the scheduler on the running event loop; jobs for what `follow()` was given so far."""
        if self._scheduler is None:
            self._scheduler = AsyncIOScheduler(timezone=UTC)
            self._scheduler.start()
            self._apply()

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    def follow(self, segments: Iterable[Segment], now: datetime) -> None:
        moments = boundary_moments(segments, now)
        if moments != self._moments:
            self._moments = moments
            self._apply()

    @property
    def pending(self) -> tuple[datetime, ...]:
        """When the jobs now scheduled will run."""
        if self._scheduler is None:
            return ()
        return tuple(sorted(job.next_run_time for job in self._scheduler.get_jobs()))

    def _apply(self) -> None:
        scheduler = self._scheduler
        if scheduler is None:
            return
        scheduler.remove_all_jobs()
        # Only moments still ahead on the wall clock: apscheduler runs on it, whatever clock the loop uses.
        wall = self._wall()
        for moment in self._moments:
            if moment > wall:
                scheduler.add_job(self._run, DateTrigger(run_date=moment, timezone=UTC),
                                  args=[f"schedule boundary at {moment.isoformat()}"],
                                  misfire_grace_time=60, coalesce=True)

    async def _run(self, why: str) -> None:
        # A coroutine, so apscheduler's asyncio executor runs it on the loop, not in a worker thread:
        # `fire` sets an asyncio.Event, which is not thread-safe.
        self._fire(why)
