"""Events as the status endpoint's `/api/events` shows them: every stored event in full, as plain JSON.

`/api/status` lists only what is in force or coming; this is the whole record an operator needs to check
what the VTN sent and what the gateway made of it: each interval with its own start and end, the
randomized start offset drawn for the event, the opt state, targets and whether it is acted on.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from gateway.domain import Event


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def event_json(event: Event, now: datetime) -> dict[str, Any]:
    end = event.end
    if end is not None and end <= now:
        phase = "over"
    elif event.start <= now:
        phase = "active" if event.acted_on else "in force, not acted on"
    else:
        phase = "upcoming"
    signals = []
    for signal in event.signals:
        at = event.start
        intervals = []
        for interval in signal.intervals:
            stop = at + interval.duration if interval.duration.total_seconds() > 0 else end
            intervals.append({"start": _iso(at), "end": _iso(stop), "value": interval.value})
            at = stop if stop is not None else at
        signals.append({"name": signal.name.value, "type": signal.type.value, "id": signal.signal_id,
                        "unit": signal.unit, "targets": list(signal.targets), "intervals": intervals})
    return {
        "id": event.event_id,
        "modification_number": event.modification_number,
        "status": event.status.value,
        "phase": phase,
        "opt": event.opt.value,
        "acted_on": event.acted_on,
        "test": event.test_event,
        "priority": event.priority,
        "market_context": event.market_context,
        "targets": list(event.targets),
        "response_required": event.response_required,
        "dtstart": _iso(event.dtstart),
        "start_offset_s": event.start_offset.total_seconds(),
        "start": _iso(event.start),
        "end": _iso(end),
        "cancelled_at": _iso(event.cancelled_at),
        "signals": signals,
    }


def events_json(events: Iterable[Event], now: datetime) -> list[dict[str, Any]]:
    """The events by start, each as `event_json`."""
    return [event_json(e, now) for e in sorted(events, key=lambda e: (e.start, e.event_id))]
