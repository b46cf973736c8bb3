"""The status document built from the running `Runtime` (read only) at one moment.

The document's types, its health and the reasons in words are in `gateway.status.document`; this module reads
the runtime's parts (the VEN, the meters and their watch, the chargers' readings and acknowledgements, the
store's health, the last decision) and fills them in. `/api/status`, the page, `/metrics`, `/healthz` and the
alarm watch all take the document from `build`.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gateway.domain import ChargerStatus, OptState
from gateway.ports import Commissions, Curtailment
from gateway.schedule import build_schedule, segment_at
from gateway.status.document import (
    OVER_LIMIT_TOLERANCE_A,
    VTN_FAILING_S,
    CircuitDoc,
    ClockDoc,
    EvseDoc,
    MeterDoc,
    PhaseLoad,
    State,
    StoreDoc,
    VtnDoc,
    build_version,
    health_of,
    iso,
    reason_text,
    rounded,
)

if TYPE_CHECKING:
    from gateway.runtime.loop import Runtime


# ------------------------------------------------------------------------------------------------ the parts


def vtn_doc(rt: Runtime, now: datetime) -> VtnDoc:
    ven = rt.ven
    if ven is None:
        return VtnDoc(configured=False, registered=False, reachable=None, state="ok", ven_id=None, last_poll=None,
                      last_error=None, failing_since=None, polls={})
    failing = getattr(ven, "failing_since", None)
    reachable = getattr(ven, "reachable", None)
    last_ok = getattr(ven, "last_ok_at", None) or rt.vtn_last_poll
    state: State = "ok"
    if failing is not None:
        state = "failing" if (now - failing).total_seconds() >= VTN_FAILING_S else "degraded"
    elif reachable is None:
        state = "unknown"
    registered = bool(ven.registration.registration_id) and reachable is not False
    return VtnDoc(configured=True, registered=registered, reachable=reachable, state=state, ven_id=ven.ven_id,
                  last_poll=iso(last_ok), last_error=getattr(ven, "last_error", None) if failing else None,
                  failing_since=iso(failing), polls=dict(getattr(ven, "rounds", {})))


def meter_docs(rt: Runtime, now: datetime) -> list[MeterDoc]:
    out: list[MeterDoc] = []
    for section in rt.config.meters:
        meter = rt.meters.get(section.id)
        m = rt.measurements.get(section.id)
        circuit = section.circuit or rt.site.service_id
        state: Literal["fresh", "stale", "unreachable", "faulty", "unknown"] = "unknown"
        since: datetime | None = None
        age = meter.age_s() if meter is not None else None
        detail = ""
        if meter is not None:
            if meter.last_ok_at is None and meter.polls_failed == 0:
                detail = "not read yet"  # just started: its first poll is under way
            elif meter.stale():
                link_down = not getattr(meter.link, "online", True) and meter.polls_failed > 0
                state = "unreachable" if link_down else "stale"
                since = now - timedelta(seconds=max(0.0, age - meter.stale_after_s)) if age is not None else None
                detail = (f"no good reading for {age:.0f} s" if age is not None else "never read") + (
                    f" ({meter.polls_failed} failed polls)" if meter.polls_failed else "")
            else:
                state = "fresh"
            fault = rt.meter_watch.fault(section.id)
            if fault is not None and state == "fresh":
                state, detail = "faulty", fault.why
        elif m is not None:  # fed by hand (tests): as fresh as its stamp
            stale = (now - m.at).total_seconds() > section.stale_after_s
            state = "stale" if stale else "fresh"
            age = (now - m.at).total_seconds()
        out.append(MeterDoc(
            id=section.id, circuit=circuit, state=state, last_reading=iso(m.at if m is not None else None),
            stale_since=iso(since), age_s=rounded(age, 1), power_kw=rounded(m.power_kw if m is not None else None),
            current_a={p: round(a, 2) for p, a in (m.current_a.items() if m is not None else ())},
            polls_failed=meter.polls_failed if meter is not None else 0, detail=detail))
    return out


def plan_starts(rt: Runtime, now: datetime) -> dict[str, datetime]:
    """Per charger held by the plan, the start of its first planned slot still to come."""
    plan = rt.plans.plan
    if plan is None:
        return {}
    out: dict[str, datetime] = {}
    for cid, session in plan.sessions.items():
        for slot, kwh in zip(plan.slots, session.kwh, strict=False):
            if kwh > 1e-6 and slot.end > now:
                out[cid] = max(slot.start, now)
                break
    return out


def evse_docs(rt: Runtime, now: datetime, zone: Any) -> list[EvseDoc]:
    last = rt.last
    starts = plan_starts(rt, now)
    power = rt.charger_power_kw()
    readings = rt.readings
    # Asked once per driver, not per charger: a runtime-checkable protocol's isinstance is slow.
    nameplates = {name: d for name, d in rt.drivers.items() if isinstance(d, Commissions)}
    out: list[EvseDoc] = []
    for evse in rt.site.evses:
        reading = readings.get(evse.id)
        current = None
        if reading is not None and reading.current_a:
            current = max(reading.current_a.get(p, 0.0) for p in evse.phases)
        ack = rt.acks.get(evse.id)
        stale = reading is not None and now - reading.at > rt.site.charger_stale
        online = reading is not None and reading.status is not ChargerStatus.OFFLINE and not stale
        heard = (reading is not None and reading.status is not ChargerStatus.OFFLINE) or ack is not None
        limit = last.limits.get(evse.id) if last is not None and heard else None
        plugged = bool(reading is not None and reading.status.connected)
        session_kwh = None
        start = rt.session_start_kwh.get(evse.id)
        if plugged and reading is not None and reading.energy_kwh is not None and start is not None:
            session_kwh = max(0.0, reading.energy_kwh - start[1])
        ident = None
        driver = nameplates.get(rt.protocol_of.get(evse.id, ""))
        if driver is not None:  # what it said it is, or its register map's names
            ident = driver.nameplate(evse.id)
        reason = last.reasons.get(evse.id, "") if last is not None else ""
        over = (online and current is not None and limit is not None
                and current > limit + OVER_LIMIT_TOLERANCE_A and ack is not None and ack.accepted)
        out.append(EvseDoc(
            id=evse.id, protocol=rt.protocol_of.get(evse.id), online=online,
            last_seen=iso(reading.at if reading is not None and reading.status is not ChargerStatus.OFFLINE
                           else None) if reading is not None else None,
            plugged=plugged, connected=plugged,
            state=("silent" if stale else reading.status.value) if reading is not None else "not heard from",
            limit_a=limit, current_a=rounded(current), power_kw=rounded(power.get(evse.id) if plugged else None),
            may_draw_a=rounded(reading.applied_limit_a) if reading is not None else None,
            fallback_a=rounded(last.fallbacks.get(evse.id)) if last is not None else None,
            session_kwh=rounded(session_kwh, 3),
            vendor=getattr(ident, "vendor", None), model=getattr(ident, "model", None),
            firmware=getattr(ident, "firmware", None),
            reason=reason,
            reason_text=reason_text(reason, events=rt.events, now=now, zone=zone, plan_start=starts.get(evse.id),
                                    cap_until=rt.operator_cap_until),
            acknowledged=None if ack is None else (ack.accepted and evse.id not in rt.unacked),
            over_limit=bool(over),
        ))
    return out


def circuit_docs(rt: Runtime, meters: list[MeterDoc]) -> list[CircuitDoc]:
    """Per circuit and phase conductor: the load (a fresh meter's reading, else the chargers' reports plus
    the non-EV load the last decision counted) against the conductor's limit."""
    last = rt.last
    fresh = {m["circuit"]: m for m in meters if m["state"] == "fresh"}
    down = {m["circuit"] for m in meters if m["state"] in ("stale", "unreachable", "faulty")}
    non_ev: dict[tuple[str, str], float] = {}
    for item in (last.non_ev if last is not None else ()):
        non_ev[(item.circuit, item.phase)] = non_ev.get((item.circuit, item.phase), 0.0) + item.amps
    # What the plugged-in chargers report, summed per (circuit they hang on, phase) once, not per circuit.
    ev: dict[tuple[str, str], float] = {}
    readings = rt.readings
    for evse in rt.site.evses:
        reading = readings.get(evse.id)
        if reading is None or not reading.status.connected:
            continue
        for phase in evse.phases:
            key = (evse.circuit, phase)
            ev[key] = ev.get(key, 0.0) + max(0.0, reading.current_a.get(phase, 0.0))
    out: list[CircuitDoc] = []
    for circuit in rt.site.circuits:
        below = rt.site.below(circuit.id)
        phases: list[PhaseLoad] = []
        meter = fresh.get(circuit.id)
        for phase in circuit.phases:
            amps = sum(a for (c, p), a in non_ev.items() if c in below and p == phase)
            amps += sum(a for (c, p), a in ev.items() if c in below and p == phase)
            counted = amps if last is not None else None
            load: float | None = counted
            if meter is not None:
                load = meter["current_a"].get(phase)
            elif circuit.id in down:
                load = None  # not known: `counted` is the worst case the allocator assumes
            phases.append(PhaseLoad(phase=phase, load_a=rounded(load, 1), counted_a=rounded(counted, 1),
                                    limit_a=round(circuit.limit_of(phase), 1)))
        source: Literal["meter", "estimate", "meter down"] = (
            "meter" if meter is not None else "meter down" if circuit.id in down else "estimate")
        out.append(CircuitDoc(id=circuit.id, parent=circuit.parent, measured=meter is not None, source=source,
                              phases=phases))
    return out


def store_doc(rt: Runtime) -> StoreDoc:
    health = getattr(rt, "store_health", None)
    if health is None:
        return StoreDoc(writable=None, state="unknown", size_bytes=None, last_write=None, error=None)
    path = rt._path(rt.config.store.path)
    size, last_write = None, None
    files = [Path(f"{path}{suffix}") for suffix in ("", "-wal")]
    stats = [f.stat() for f in files if f.exists()]
    if stats:
        size = sum(s.st_size for s in stats)
        last_write = datetime.fromtimestamp(max(s.st_mtime for s in stats)).astimezone()
    trouble = health.trouble()
    damaged = bool(health.damage())
    state: State = "ok"
    if damaged or (trouble is not None and (trouble.precious or trouble.for_s >= 60)):
        state = "failing"
    elif trouble is not None:
        state = "degraded"
    return StoreDoc(writable=trouble is None, state=state, size_bytes=size, last_write=iso(last_write),
                    error=trouble.error if trouble is not None else (health.damage() or [None])[0])


def effective_limit(rt: Runtime) -> tuple[float | None, str]:
    """The site power allowed now and what binds it, at power factor 1 (as the allocator counts and the
    meter reads): the service's capacity, a DR site limit or the operator's cap, a DR EV limit plus the
    non-EV load, or the demand peak target."""
    last = rt.last
    if last is None:
        return None, ""
    service = rt.circuit_limit[rt.site.service_id]
    service_kw = sum(service.limit_of(p) for p in service.phases) * rt.site.ln_v / 1000.0
    candidates = [(service_kw, f"the service ({service.limit_a:g} A per phase)")]
    if last.site_limit_kw is not None:
        cap = rt.operator_cap_kw
        why = "the operator's cap" if cap is not None and abs(cap - last.site_limit_kw) < 1e-9 else "a DR site limit"
        candidates.append((last.site_limit_kw, why))
    if last.ev_limit_kw is not None and math.isfinite(last.ev_limit_kw):
        candidates.append((last.ev_limit_kw + last.non_ev_kw, "a DR EV limit plus the other loads"))
    if last.peak_kw is not None:
        candidates.append((last.peak_kw, "the demand peak target"))
    kw, why = min(candidates, key=lambda c: c[0])
    return kw, why


def event_docs(rt: Runtime, now: datetime) -> list[dict[str, Any]]:
    from gateway.schedule import build_schedule

    out: list[dict[str, Any]] = []
    for event in sorted(rt.events.values(), key=lambda e: e.start):
        end = event.end
        if end is not None and end <= now:
            continue  # over: the page shows what is in force and what is coming (/api/events has them all)
        started = event.start <= now
        active = started and event.acted_on
        phase = "upcoming" if not started else ("active" if active else "in force, not acted on")
        # What it means in kW: the schedule it alone would make (as if acted on, for an opted-out one).
        shown = event if event.acted_on else replace(event, opt=OptState.OPT_IN, test_event=False)
        timeline = []
        for seg in build_schedule([shown], min(event.start, now), rt.schedule_settings):
            if seg.end is None:
                continue
            if seg.site_kw is None and seg.ev_kw is None and seg.price is None and not seg.group_kw:
                continue
            timeline.append({"start": iso(seg.start), "end": iso(seg.end), "site_kw": rounded(seg.site_kw),
                             "ev_kw": rounded(seg.ev_kw), "price": seg.price,
                             "group_kw": {k: round(v, 2) for k, v in seg.group_kw.items()}})
        out.append({
            "id": event.event_id,
            "status": event.status.value,  # what the VTN said, as in /api/events
            "phase": phase,
            "opt": event.opt.value,
            "start": iso(event.start),
            "end": iso(end),
            "active": active,
            "test": event.test_event,
            "signals": [{"name": s.name.value, "type": s.type.value, "values": [i.value for i in s.intervals]}
                        for s in event.signals],
            "timeline": timeline,
        })
    return out


def build(rt: Runtime, now: datetime) -> dict[str, Any]:
    """The status document (plain JSON types) at `now`."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(rt.config.site.timezone)
    last = rt.last
    meters = meter_docs(rt, now)
    service_meter = [m for m in meters if m["circuit"] == rt.site.service_id]
    measured = rt.site_power_kw()
    load_state: str
    if service_meter and service_meter[0]["state"] != "fresh":
        load_kw, load_state = None, service_meter[0]["state"]  # never an old or assumed figure shown as measured
    elif measured is not None:
        load_kw, load_state = measured, "measured"
    else:
        load_kw, load_state = rt.load_kw(), "estimated"  # the chargers' reports plus the non-EV estimate
    limit_kw, limit_cause = effective_limit(rt)
    segment = None if last is None else {"site_kw": last.site_limit_kw, "ev_kw": last.ev_limit_kw}
    skew = rt.clock_state.skew_s
    doc: dict[str, Any] = {
        "now": now.isoformat(),
        "build": {"version": build_version(), "python": sys.version.split()[0], "pid": os.getpid()},
        "vtn": vtn_doc(rt, now),
        "events": event_docs(rt, now),
        "site": {
            "name": rt.config.site.name,
            "timezone": rt.config.site.timezone,
            "limit_kw": rounded(limit_kw),
            "limit_cause": limit_cause,
            "dr_site_limit_kw": rounded(last.site_limit_kw if last is not None else None),
            "ev_limit_kw": rounded(last.ev_limit_kw if last is not None else None),
            "load_kw": rounded(load_kw),
            "load_state": load_state,
            # What the allocator counts the non-EV load at (the worst case while a meter is not believed).
            "non_ev_counted_kw": rounded(last.non_ev_kw if last is not None else None),
            "ev_kw": rounded(rt.ev_power_kw()),
            "operator_cap_kw": rt.operator_cap_kw,
            "limits_in_force": segment,
            "power_factor_basis": 1.0,
        },
        "circuits": circuit_docs(rt, meters),
        "meters": meters,
        "evses": evse_docs(rt, now, zone),
        "store": store_doc(rt),
        "clock": ClockDoc(state="failing" if rt.alarms.active("clock.jump") else "ok", stepped_s=round(skew, 1)),
        "alarms": rt.alarms.as_json(),
        "loop": {
            "decisions": rt.decisions,
            "last_decision": iso(last.now if last is not None else None),
            "tick_s": rt.config.control.tick_s,
            "restarts": dict(rt.restarts),
        },
    }
    doc["health"] = health_of(doc, rt.healthy())
    return doc


def curtailment(rt: Runtime) -> Curtailment:
    """The caps the last decision was held under (a SIMPLE level, LOAD_CONTROL, a delta or an operator cap,
    not only a site limit), with the segment's per-resource caps and level."""
    import math
    import re

    last = rt.last
    if last is None:
        return Curtailment()
    segment = segment_at(build_schedule(rt.events.values(), last.now, rt.schedule_settings), last.now)
    levels = [round(float(r.rsplit("=", 1)[1])) for r in (segment.reasons if segment else ())
              if re.search(r":(level|x-loadControlLevelOffset)=-?[\d.]+$", r)]
    ev_kw = last.ev_limit_kw if last.ev_limit_kw is not None and math.isfinite(last.ev_limit_kw) else None
    normal = rt.schedule_settings.ev_capacity_kw
    return Curtailment(
        site_kw=last.site_limit_kw,
        ev_kw=ev_kw,
        group_kw=dict(segment.group_kw) if segment else {},
        normal_ev_kw=normal if normal > 0 else None,
        non_ev_kw=last.non_ev_kw,
        level=max(levels) if levels else None,
        manual_override=rt.operator_cap_kw is not None or bool(rt.paused),
    )


def load_kw(rt: Runtime) -> float | None:
    """Site power: the service meter, or the chargers' own power plus the non-EV estimate."""
    measured = rt.site_power_kw()
    if measured is not None:
        return measured
    ev = rt.ev_power_kw() or 0.0
    return ev + (rt.last.non_ev_kw if rt.last is not None else 0.0)


def effective_limit_kw(rt: Runtime) -> float | None:
    """The site power the last decision allowed: the lowest of the service's own capacity, the site
    limit in force, the EV limit plus the non-EV load and the demand peak target (what the status chart
    draws as "limit")."""
    last = rt.last
    if last is None:
        return None
    site = rt.config.site
    service = rt.circuit_limit[rt.site.service_id]
    # at PF 1, like the meter's kW and the allocator: load and limit on one basis
    service_kw = sum(service.limit_of(p) for p in service.phases) * site.ln_v / 1000.0
    candidates = [service_kw]
    if last.site_limit_kw is not None:
        candidates.append(last.site_limit_kw)
    if last.ev_limit_kw is not None:
        candidates.append(last.ev_limit_kw + last.non_ev_kw)
    if last.peak_kw is not None:
        candidates.append(last.peak_kw)
    return min(candidates)


def healthy(rt: Runtime) -> bool:
    """True while the loop decided within the last three ticks (plus the time a push may wait for
    chargers' answers: decreases and increases each wait up to the OCPP `ack_wait_s`)."""
    if rt.last is None:
        return False
    age = (rt.clock() - rt.last.now).total_seconds()
    pushing = 2 * rt.config.ocpp.ack_wait_s if rt.ocpp is not None else 0.0
    return age <= 3 * rt.config.control.tick_s + pushing


def events_detail(rt: Runtime) -> list[dict[str, Any]]:
    """Every stored event in full (for /api/events), ended and cancelled ones too."""
    from gateway.status.events import events_json

    return events_json(rt.events.values(), rt.clock())


def log_since(rt: Runtime, seq: int = 0, at: datetime | None = None) -> list[dict[str, object]]:
    return [e.as_json() for e in rt.recent_log.since(seq, at)]


def demand_status(rt: Runtime) -> dict[str, float | None]:
    """The demand charge as of the last decision: the month's metered peak, the target the site is
    held under and the charge per kW (all None while no demand charge is in force)."""
    last = rt.last
    if last is None or rt.demand_charge is None:
        return {"month_peak_kw": None, "peak_target_kw": None, "charge_per_kw": None}
    peak = rt.month_peak_kw
    return {
        "month_peak_kw": round(peak, 2) if peak is not None else None,
        "peak_target_kw": round(last.peak_kw, 2) if last.peak_kw is not None else None,
        "charge_per_kw": rt.demand_charge,
    }


def plan_points(rt: Runtime) -> list[tuple[datetime, datetime, float]]:
    """The current plan's site power per slot (EV plus the non-EV load it was made with)."""
    from gateway.planner import site_profile

    plan = rt.plans.plan
    if plan is None:
        return []
    return [(start, end, site_kw) for start, end, _, site_kw, _ in site_profile(plan)]
