"""Domain events to and from JSON text for the store: every field, timedeltas as seconds, times ISO 8601.

A stored event must come back exactly as it went in (the randomized offset included), so the round
trip is tested for every field.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from gateway.domain import Event, EventStatus, Interval, OptState, Signal, SignalName, SignalType


def _dt(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_dt(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def event_to_json(event: Event) -> str:
    body: dict[str, Any] = {
        "event_id": event.event_id,
        "modification_number": event.modification_number,
        "dtstart": _dt(event.dtstart),
        "duration_s": event.duration.total_seconds(),
        "signals": [
            {
                "name": s.name.value,
                "type": s.type.value,
                "signal_id": s.signal_id,
                "unit": s.unit,
                "targets": list(s.targets),
                "intervals": [[i.duration.total_seconds(), i.value] for i in s.intervals],
            }
            for s in event.signals
        ],
        "priority": event.priority,
        "status": event.status.value,
        "test_event": event.test_event,
        "start_after_s": event.start_after.total_seconds(),
        "start_offset_s": event.start_offset.total_seconds(),
        "cancelled_at": _dt(event.cancelled_at),
        "opt": event.opt.value,
        "market_context": event.market_context,
        "targets": list(event.targets),
        "response_required": event.response_required,
        "created_at": _dt(event.created_at),
    }
    return json.dumps(body, separators=(",", ":"))


def event_from_json(text: str) -> Event:
    b = json.loads(text)
    dtstart = _parse_dt(b["dtstart"])
    assert dtstart is not None
    return Event(
        event_id=b["event_id"],
        modification_number=int(b["modification_number"]),
        dtstart=dtstart,
        duration=timedelta(seconds=b["duration_s"]),
        signals=tuple(
            Signal(
                name=SignalName(s["name"]),
                type=SignalType(s["type"]),
                intervals=tuple(Interval(timedelta(seconds=d), float(v)) for d, v in s["intervals"]),
                signal_id=s["signal_id"],
                unit=s["unit"],
                targets=tuple(s["targets"]),
            )
            for s in b["signals"]
        ),
        priority=int(b["priority"]),
        status=EventStatus(b["status"]),
        test_event=bool(b["test_event"]),
        start_after=timedelta(seconds=b["start_after_s"]),
        start_offset=timedelta(seconds=b["start_offset_s"]),
        cancelled_at=_parse_dt(b["cancelled_at"]),
        opt=OptState(b["opt"]),
        market_context=b["market_context"],
        targets=tuple(b["targets"]),
        response_required=bool(b["response_required"]),
        created_at=_parse_dt(b["created_at"]),
    )
