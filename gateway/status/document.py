"""The status document: one typed builder for what `/api/status`, the page, `/metrics` and `/healthz` say.

Built from the running runtime (read only) at one moment, by `gateway.runtime.status_view`; the types and
the pure parts (health, reasons in words) are here. Every component has one state here and every
reader takes it from here, so the API, the page, the metrics and the health check cannot disagree:

- `vtn`: configured, registered, reachable, the last round that went through, the last error, failing since;
- `meters`: fresh, stale (no good reading within `stale_after_s`), unreachable (its Modbus link is down), or
  faulty (the meter check does not believe it), with since when;
- `evses`: online and last seen, plugged, the limit in force, acknowledged (None: nothing sent to it by this
  process), drawing above it, kW and A, what it falls back to without the gateway, the session's energy,
  what it said it is, the reason in words;
- `store`: writable, its size on disk and last write; `clock`: stepped or not;
- `site`: load and limit on one basis (power factor 1, as the allocator counts), what binds the limit, and
  per circuit and phase conductor the load against the limit;
- `health`: `ok`, `degraded` (`/healthz` 200, the reasons listed) or `failing` (503), with one reason per
  component that is not ok. What fails: the loop not deciding, any critical alarm (the store cannot keep an
  operator's change or is damaged, a meter stale, unreachable or not believed, the clock stepped, the VTN
  unreachable for `VTN_FAILING_S`). What degrades: warnings (the VTN unreachable for less, a charger offline,
  not acknowledging, or drawing above its limit, the store slow to write).
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from importlib import metadata
from typing import Any, Literal, TypedDict

from gateway.domain import Event

State = Literal["ok", "degraded", "failing", "unknown"]
VTN_FAILING_S = 900.0  # the VTN unreachable this long: the utility cannot dispatch the site (healthz 503)
OVER_LIMIT_TOLERANCE_A = 1.0  # a charger's draw above its limit by more than this counts as over it
OVER_LIMIT_AFTER_S = 10.0  # ... for this long (a car ramping down after a decrease takes a few seconds)


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def rounded(value: float | None, digits: int = 2) -> float | None:
    return round(value, digits) if value is not None and math.isfinite(value) else None


def build_version() -> str:
    try:
        return metadata.version("ev-openadr-gateway")
    except metadata.PackageNotFoundError:  # a checkout run without installing
        return "unknown"


class Reason(TypedDict):
    component: str  # vtn, meter, charger, store, clock, loop, alarm
    id: str
    state: State
    message: str


class VtnDoc(TypedDict):
    configured: bool
    registered: bool
    reachable: bool | None
    state: State
    ven_id: str | None
    last_poll: str | None  # the last round with the VTN that went through
    last_error: str | None
    failing_since: str | None
    polls: dict[str, int]


class MeterDoc(TypedDict):
    id: str
    circuit: str
    state: Literal["fresh", "stale", "unreachable", "faulty", "unknown"]
    last_reading: str | None
    stale_since: str | None
    age_s: float | None
    power_kw: float | None
    current_a: dict[str, float]
    polls_failed: int
    detail: str


class EvseDoc(TypedDict):
    id: str
    protocol: str | None
    online: bool
    last_seen: str | None
    plugged: bool
    connected: bool  # the same as `plugged` (kept for scripts written against the old name)
    state: str
    limit_a: float | None
    current_a: float | None
    power_kw: float | None
    may_draw_a: float | None
    fallback_a: float | None  # what it falls back to by itself if the gateway stops, as last decided
    session_kwh: float | None
    vendor: str | None
    model: str | None
    firmware: str | None
    reason: str
    reason_text: str
    acknowledged: bool | None  # None: this process has sent it nothing yet
    over_limit: bool


class PhaseLoad(TypedDict):
    phase: str
    load_a: float | None  # None while the circuit's meter is down: the load is not known
    counted_a: float | None  # what the allocator counts on the conductor (the worst case while not known)
    limit_a: float


class CircuitDoc(TypedDict):
    id: str
    parent: str | None
    measured: bool  # True: a fresh meter reads it; False: the chargers' reports plus the non-EV estimate
    source: Literal["meter", "estimate", "meter down"]
    phases: list[PhaseLoad]


class StoreDoc(TypedDict):
    writable: bool | None
    state: State
    size_bytes: int | None
    last_write: str | None
    error: str | None


class ClockDoc(TypedDict):
    state: State
    stepped_s: float


class HealthDoc(TypedDict):
    state: State
    reasons: list[Reason]


# ------------------------------------------------------------------------------------------------ reasons


def _until(moment: datetime | None, zone: Any) -> str:
    return f" until {moment.astimezone(zone):%H:%M}" if moment is not None else ""


def reason_text(reason: str, *, events: dict[str, Event], now: datetime, zone: Any,
                plan_start: datetime | None = None, cap_until: datetime | None = None) -> str:
    """A charger's reason code (`decide`'s) in words an operator reads at a glance."""
    if not reason:
        return "not decided yet"
    if reason == "max":
        return "full speed: its own maximum"
    if reason == "not connected":
        return "no car plugged in"
    if reason.startswith("paused by operator"):
        return "paused by the operator" + (" (not acknowledged yet: counted at its maximum)"
                                           if "counted at max" in reason else "")
    if reason == "silent: counted at max":
        return "not heard from: counted at its maximum until it reports"
    if reason == "unacknowledged: counted at max":
        return "limit not acknowledged yet: counted at its maximum"
    if reason == "rotation":
        return "waiting its turn: the room is shared in rotation"
    if reason == "plan":
        if plan_start is not None and plan_start > now:
            return f"waiting for cheaper hours, starts {plan_start.astimezone(zone):%H:%M}"
        return "following the charging plan"
    if reason.startswith("ev draws less"):
        return "the car draws less than offered: the rest goes to others"
    match = re.fullmatch(r"(site|ev|group:[^ ]+) \((.*)\)", reason)
    if match:
        why = match.group(2)
        cap = re.fullmatch(r"operator cap ([\d.]+) kW", why)
        if cap:
            return f"capped: operator cap {cap.group(1)} kW{_until(cap_until, zone)}"
        if why.startswith("demand peak target"):
            return f"held under the {why} (demand charge)"
        parts = []
        for item in why.split("; "):
            bits = item.split(":")
            if len(bits) >= 3:
                event = events.get(bits[0])
                kind, _, value = bits[2].partition("=")
                what = f"level {value}" if kind in ("level", "x-loadControlLevelOffset") else f"{bits[1]} {value}"
                parts.append(f"DR event {bits[0]} {what}{_until(event.end if event else None, zone)}")
            else:
                parts.append(item)
        return "curtailed: " + ", ".join(parts)
    phase = re.fullmatch(r"([^/ ]+)/(L[123])", reason)
    if phase:
        return f"sharing: circuit {phase.group(1)} {phase.group(2)} is full"
    return reason


def health_of(doc: dict[str, Any], loop_on_time: bool) -> HealthDoc:
    """One state for the site from the components' and the alarms': failing, degraded or ok."""
    reasons: list[Reason] = []
    if not loop_on_time:
        reasons.append(Reason(component="loop", id="decide", state="failing",
                              message="the control loop has not decided recently"))
    for alarm in doc.get("alarms") or []:
        reasons.append(Reason(component="alarm", id=alarm["key"],
                              state="failing" if alarm["severity"] == "critical" else "degraded",
                              message=alarm["message"]))
    keys = {r["id"] for r in reasons}
    vtn = doc.get("vtn") or {}
    if vtn.get("configured") and vtn.get("state") in ("degraded", "failing") and "vtn.unreachable" not in keys:
        reasons.append(Reason(component="vtn", id="vtn", state=vtn["state"],
                              message=f"the VTN is unreachable since {vtn.get('failing_since')}"))
    for meter in doc.get("meters") or []:
        if meter["state"] in ("stale", "unreachable") and f"meter.{meter['id']}.stale" not in keys:
            reasons.append(Reason(component="meter", id=meter["id"], state="failing",
                                  message=f"meter {meter['id']} {meter['state']}: {meter['detail']}"))
    for evse in doc.get("evses") or []:
        if evse.get("online") is False:
            reasons.append(Reason(component="charger", id=evse["id"], state="degraded",
                                  message=f"charger {evse['id']} offline (last seen {evse.get('last_seen')}): "
                                          "counted at its maximum"))
        elif evse.get("acknowledged") is False:
            reasons.append(Reason(component="charger", id=evse["id"], state="degraded",
                                  message=f"charger {evse['id']} has not acknowledged its limit"))
    store = doc.get("store") or {}
    if store.get("state") in ("degraded", "failing") and not keys & {"store.write", "store.integrity"}:
        reasons.append(Reason(component="store", id="store", state=store["state"],
                              message=f"the store cannot be written: {store.get('error')}"))
    clock = doc.get("clock") or {}
    if clock.get("state") == "failing" and "clock.jump" not in keys:
        reasons.append(Reason(component="clock", id="clock", state="failing",
                              message=f"the wall clock stepped {clock.get('stepped_s')} s"))
    state: State = "ok"
    if any(r["state"] == "failing" for r in reasons):
        state = "failing"
    elif reasons:
        state = "degraded"
    return HealthDoc(state=state, reasons=reasons)
