"""The running gateway seen from outside: the JSON document behind `/api/status` (and the page and metrics).

Built from the runtime's last decision, the latest readings and the stored events, in plain JSON types so
the status endpoint needs to know nothing about the runtime's classes.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.runtime.loop import Runtime


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _round(value: float | None, digits: int = 2) -> float | None:
    return round(value, digits) if value is not None else None


def status_of(rt: Runtime, now: datetime) -> dict[str, Any]:
    last = rt.last
    ven = rt.ven
    events = []
    for event in sorted(rt.events.values(), key=lambda e: e.start):
        end = event.end
        if end is not None and end < now:
            continue  # over: the page shows what is in force and what is coming
        active = event.start <= now and (end is None or now < end) and event.acted_on
        events.append({
            "id": event.event_id,
            # what the VTN last said, unless the event has started since (the VTN's status is not live)
            "status": "active" if active else event.status.value,
            "opt": event.opt.value,
            "start": _iso(event.start),
            "end": _iso(end),
            "active": active,
            "test": event.test_event,
            "signals": [
                {"name": s.name.value, "type": s.type.value, "values": [i.value for i in s.intervals]}
                for s in event.signals
            ],
        })
    evses = []
    for evse in rt.site.evses:
        reading = rt.readings.get(evse.id)
        current = None
        if reading is not None and reading.current_a:
            current = max(reading.current_a.get(p, 0.0) for p in evse.phases)
        ack = rt.acks.get(evse.id)
        heard = (reading is not None and reading.status.value != "offline") or ack is not None
        evses.append({
            "id": evse.id,
            "protocol": rt.protocol_of.get(evse.id),
            "connected": bool(reading is not None and reading.status.connected),
            "state": reading.status.value if reading is not None else "unknown",
            # what the gateway decided for it; None for a charger this process never heard from or sent to
            "limit_a": last.limits.get(evse.id) if last is not None and heard else None,
            "current_a": _round(current),
            # the most it may be drawing as its driver knows it (a lease, an unanswered raise, its maximum)
            "may_draw_a": _round(reading.applied_limit_a) if reading is not None else None,
            "reason": last.reasons.get(evse.id, "") if last is not None else "",
            # True only once the charger has acknowledged the limit it is to hold now
            "acknowledged": ack is not None and ack.accepted and evse.id not in rt.unacked,
        })
    segment = None
    if last is not None:
        segment = {"site_kw": last.site_limit_kw, "ev_kw": last.ev_limit_kw}
    return {
        "now": now.isoformat(),
        "vtn": {
            "configured": ven is not None,
            "registered": bool(ven is not None and ven.registration.registration_id),
            "ven_id": ven.ven_id if ven is not None else None,
            "last_poll": _iso(rt.vtn_last_poll),
        },
        "events": events,
        "site": {
            "name": rt.config.site.name,
            # What the site may draw now, whichever limit binds (service, DR site limit, EV limit + non-EV).
            "limit_kw": _round(rt.effective_limit_kw()),
            "dr_site_limit_kw": _round(last.site_limit_kw if last is not None else None),
            "ev_limit_kw": _round(last.ev_limit_kw if last is not None else None),
            "load_kw": _round(rt.load_kw()),
            "ev_kw": _round(rt.ev_power_kw()),
            "operator_cap_kw": rt.operator_cap_kw,
            "limits_in_force": segment,
        },
        "evses": evses,
        "alarms": rt.alarms.as_json(),
        "loop": {
            "decisions": rt.decisions,
            "last_decision": _iso(last.now if last is not None else None),
            "tick_s": rt.config.control.tick_s,
            "restarts": dict(rt.restarts),
        },
    }
