"""Steps of the wall clock, pure: told from the monotonic clock, summed, and what a decision makes of them.

The runtime's timers run on asyncio's monotonic clock, but readings, leases, events and the records are
stamped with the wall clock, which a bad NTP step (or someone's `date`) can move by an hour at once. At
each look `look()` compares how far the wall clock moved with how far the monotonic clock did: a
difference over `JUMP_S` is a step. `skew_s` is the sum of the steps since start: how far the wall clock
now is from where it would be had it not stepped. While it is not ~0 nobody knows which of the two is
right (the step may have been a correction), so `nows()` gives both moments and `strictest()` holds the
site under the lower limits of the segments in force at either: a DR event is kept on whichever clock is
right. The runtime moves its own wall-clock stamps (readings' ages, resend and write timers) by each step
(`rebased`: not those already made on the new clock), so elapsed times stay true. No I/O, no clock:
both times are parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.domain import Segment

JUMP_S = 5.0  # a tick takes milliseconds and NTP slews by at most 0.5 ms/s: more than this is a step


@dataclass(frozen=True, slots=True)
class ClockState:
    wall: datetime | None = None  # at the last look
    mono: float = 0.0
    skew_s: float = 0.0  # the sum of the steps seen since start
    step_s: float = 0.0  # the step seen at the last look (0: none)
    elapsed_s: float = 0.0  # monotonic seconds between the last two looks


def look(state: ClockState, wall: datetime, mono: float, jump_s: float = JUMP_S) -> ClockState:
    """The state after looking at both clocks once more."""
    if state.wall is None:
        return ClockState(wall, mono)
    elapsed = mono - state.mono
    step = (wall - state.wall).total_seconds() - elapsed
    if abs(step) <= jump_s:
        return ClockState(wall, mono, state.skew_s, 0.0, elapsed)
    return ClockState(wall, mono, state.skew_s + step, step, elapsed)


def rebased(stamp: datetime, state: ClockState, slack_s: float = 0.5) -> datetime:
    """A wall-clock stamp moved onto the clock as it is after the step of the last look: stamps made
    before the step move by it; those made since (between the two looks, already on the new clock) stay."""
    if not state.step_s or state.wall is None:
        return stamp
    since = state.wall - timedelta(seconds=state.elapsed_s + slack_s)
    if since <= stamp <= state.wall + timedelta(seconds=slack_s):
        return stamp
    return stamp + timedelta(seconds=state.step_s)


def stepped(state: ClockState, jump_s: float = JUMP_S) -> bool:
    """The wall clock is away from where it would be without its steps (the alarm is in force)."""
    return abs(state.skew_s) > jump_s


def nows(now: datetime, state: ClockState, jump_s: float = JUMP_S) -> tuple[datetime, ...]:
    """The moments it may be: the wall clock's, and, while it is stepped, where it would be without."""
    if not stepped(state, jump_s):
        return (now,)
    return (now, now - timedelta(seconds=state.skew_s))


def _lower(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _groups(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    out = dict(a)
    for key, kw in b.items():
        out[key] = min(kw, out.get(key, kw))
    return out


def strictest(segments: Iterable[Segment | None]) -> Segment | None:
    """One segment holding the lowest of each limit of those given (None: none is in force); its price
    and start are the first's, its end the earliest, its reasons all of them."""
    found = [s for s in segments if s is not None]
    if not found:
        return None
    out = found[0]
    for other in found[1:]:
        ends = [e for e in (out.end, other.end) if e is not None]
        out = Segment(
            start=out.start,
            end=min(ends) if ends else None,
            site_kw=_lower(out.site_kw, other.site_kw),
            ev_kw=_lower(out.ev_kw, other.ev_kw),
            price=out.price if out.price is not None else other.price,
            demand_charge=out.demand_charge if out.demand_charge is not None else other.demand_charge,
            group_kw=_groups(out.group_kw, other.group_kw),
            reasons=tuple(dict.fromkeys((*out.reasons, *other.reasons))),
        )
    return out
