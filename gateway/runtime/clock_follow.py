"""Following a step of the wall clock: every wall-clock stamp the runtime keeps moves with it, the
`clock.jump` alarm is raised or cleared, and a decision follows (`clock_jump` does the arithmetic)."""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from gateway.ports import (
    FollowsClock,
)
from gateway.runtime.clock_jump import ClockState

if TYPE_CHECKING:
    from gateway.runtime.loop import Runtime

log = logging.getLogger("gateway.runtime")


def watch_clock(rt: Runtime, mono: float | None = None) -> ClockState:
    """Look for a step of the wall clock (a bad NTP step, someone's `date`) against the monotonic one.

    On a step: one alarm ("clock.jump", with its size) while the clock is away from where it would be
    without its steps, cleared if it steps back; the runtime's own wall-clock stamps (when readings came
    in, when a limit was last sent unacknowledged, the last telemetry write, the non-EV window, the
    chargers' on/waiting times) move with it, so no elapsed time is read as an hour or as negative: a
    reading keeps its true age, a resend or a write is not put off for an hour. A decision follows."""
    from gateway.runtime.clock_jump import look, rebased, stepped

    now = rt.clock()
    state = look(rt.clock_state, now, time.monotonic() if mono is None else mono)
    rt.clock_state = state
    if not state.step_s:
        return state

    def moved(at: datetime) -> datetime:
        return rebased(at, state)

    rt.readings = {cid: replace(r, at=moved(r.at)) for cid, r in rt.readings.items()}
    rt.unacked = {cid: moved(at) for cid, at in rt.unacked.items()}
    if rt._recorded_at is not None:
        rt._recorded_at = moved(rt._recorded_at)
    rt.recorder.moved(moved)
    rt.non_ev_window = deque(((moved(at), loads) for at, loads in rt.non_ev_window))
    rt.memory = {cid: replace(m, decided_at=moved(m.decided_at),
                                on_since=moved(m.on_since) if m.on_since is not None else None,
                                waiting_since=moved(m.waiting_since) if m.waiting_since is not None else None)
                   for cid, m in rt.memory.items()}
    for following in [d for d in rt.drivers.values() if isinstance(d, FollowsClock)]:
        following.clock_stepped(state.step_s)  # leases and the chargers' clock skews move with it
    hours = state.step_s / 3600.0
    if stepped(state):
        started = rt.alarms.raise_(
            "clock.jump",
            f"the wall clock stepped {state.step_s:+.0f} s ({hours:+.2f} h) against the monotonic clock, "
            f"{state.skew_s:+.0f} s in all since start: event times and the chargers' clocks may be off by "
            "that much", now, severity="critical",
            action="check NTP on the gateway; once its clock is right, restart it (docs/operations.md: "
                   "Clock jumps)")
        if not started:  # a further step while the first is in force: its own line
            log.warning("wall clock stepped again step_s=%+.1f skew_s=%+.1f", state.step_s, state.skew_s)
    else:
        rt.alarms.clear("clock.jump", now, f"the wall clock stepped back by {state.step_s:+.0f} s")
    rt.trigger("wall clock stepped")
    return state
