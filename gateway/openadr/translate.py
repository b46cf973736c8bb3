"""openleadr's event dicts → domain `Event`s: names, types, units and targets checked, the rest dropped.

Input is one event from openleadr's `parse_message` (already schema-valid, with durations and date-times
made trustworthy by `xmlguard.normalize_tree`). Signals outside the 2.0b name/type combinations are
dropped with one log line and the event is still acknowledged (conformance: unknown signals are not an
error). Ids come back from openleadr as ints when they look like numbers, so every id goes through str().
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.domain import Event, EventStatus, Interval, Signal, SignalName, SignalType

log = logging.getLogger("gateway.openadr")

ST = SignalType
VALID_TYPES: dict[SignalName, frozenset[SignalType]] = {
    SignalName.SIMPLE: frozenset({ST.LEVEL}),
    SignalName.LOAD_CONTROL: frozenset(
        {
            ST.X_LOAD_CONTROL_CAPACITY,
            ST.X_LOAD_CONTROL_LEVEL_OFFSET,
            ST.X_LOAD_CONTROL_PERCENT_OFFSET,
            ST.X_LOAD_CONTROL_SETPOINT,
        }
    ),
    SignalName.LOAD_DISPATCH: frozenset({ST.SETPOINT, ST.DELTA, ST.MULTIPLIER}),
    SignalName.ELECTRICITY_PRICE: frozenset({ST.PRICE, ST.PRICE_RELATIVE, ST.PRICE_MULTIPLIER}),
    SignalName.ENERGY_PRICE: frozenset({ST.PRICE, ST.PRICE_RELATIVE, ST.PRICE_MULTIPLIER}),
    SignalName.DEMAND_CHARGE: frozenset({ST.PRICE}),
}
_SCALE = {"p": 1e-12, "n": 1e-9, "micro": 1e-6, "m": 1e-3, "c": 1e-2, "d": 1e-1, "k": 1e3, "M": 1e6, "G": 1e9,
          "T": 1e12, "none": 1.0}
LATEST_YEAR = 9000
_POWER_KEYS = ("powerReal", "powerApparent", "powerReactive")
_UNIT_KEYS = (*_POWER_KEYS, "currencyPerKWh", "currencyPerKW", "currency", "energyReal", "customUnit")


class BadEvent(Exception):
    """An event we cannot understand at all (not just one of its signals)."""


@dataclass(frozen=True, slots=True)
class Translated:
    event: Event
    targeted: bool  # False: it names resources or VENs, none of them ours
    dropped: tuple[str, ...]  # one description per signal left out


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _signals_of(raw: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    signals = raw.get("event_signals")
    if isinstance(signals, Mapping) and "event_signals" in signals:
        signals = signals["event_signals"]
    return [s for s in as_list(signals) if isinstance(s, Mapping)]


def _targets(raw: Any, ven_id: str | None, resources: Mapping[str, object]) -> tuple[tuple[str, ...], bool]:
    """Our resource ids among the targets, and whether the event addresses us at all."""
    targets = [t for t in as_list(raw) if isinstance(t, Mapping)]
    if not targets:
        return (), True
    ours: list[str] = []
    addressed = False
    for t in targets:
        for kind, value in t.items():
            value = str(value)
            if kind == "resource_id":
                if value in resources:
                    ours.append(value)
                    addressed = True
            elif kind == "ven_id":
                addressed = addressed or value == ven_id
            else:  # group, party, endDeviceAsset, …: we cannot tell, so we take it as meant for the site
                addressed = True
    return tuple(dict.fromkeys(ours)), addressed


def _unit_and_factor(signal: Mapping[str, Any]) -> tuple[str | None, float]:
    """The unit key and the factor that turns values into kW (power) or leaves them alone."""
    for key in _UNIT_KEYS:
        item = signal.get(key)
        if isinstance(item, Mapping):
            if key in _POWER_KEYS:
                scale = _SCALE.get(str(item.get("si_scale_code", "none")), 1.0)
                units = str(item.get("item_units", "W"))
                base = {"W": 1.0, "kW": 1e3, "MW": 1e6, "VA": 1.0, "kVA": 1e3, "VAR": 1.0, "kVAR": 1e3}.get(units, 1.0)
                return key, scale * base / 1000.0
            return key, 1.0
    return None, 1.0


def _intervals(signal: Mapping[str, Any]) -> tuple[Interval, ...]:
    raw = signal.get("intervals")
    if isinstance(raw, Mapping) and "interval" in raw:
        raw = raw["interval"]
    items = [i for i in as_list(raw) if isinstance(i, Mapping)]
    # uid orders intervals; openleadr keeps document order, which VTNs are supposed to match.
    if all(isinstance(i.get("uid"), int) for i in items):
        items.sort(key=lambda i: int(i["uid"]))
    out = []
    for item in items:
        payload = item.get("signal_payload")
        if isinstance(payload, Mapping):  # payloadFloat not flattened by some shapes
            payload = payload.get("value", payload.get("payload_float"))
        if isinstance(payload, bool) or not isinstance(payload, int | float):
            raise ValueError(f"interval value {payload!r} is not a number")
        value = float(payload)
        if not math.isfinite(value):
            raise ValueError(f"interval value {value} is not finite")
        duration = item.get("duration") or timedelta(0)
        if not isinstance(duration, timedelta):
            raise ValueError(f"interval duration {duration!r} is not a duration")
        out.append(Interval(duration=duration, value=value))
    if not out:
        raise ValueError("no intervals")
    return tuple(out)


def _signal(
    raw: Mapping[str, Any], ven_id: str | None, resources: Mapping[str, object]
) -> Signal | str:
    """A domain signal, or why it is left out."""
    name_s = str(raw.get("signal_name", ""))
    type_s = str(raw.get("signal_type", ""))
    label = f"{name_s}/{type_s}"
    name_s = "SIMPLE" if name_s == "simple" else name_s  # 2.0a spelling, still allowed by the 2.0b schema
    try:
        name = SignalName(name_s)
        stype = SignalType(type_s)
    except ValueError:
        return f"{label}: not a signal this gateway acts on"
    if stype not in VALID_TYPES[name]:
        return f"{label}: type not valid for this signal name in 2.0b"
    try:
        intervals = _intervals(raw)
    except ValueError as exc:
        return f"{label}: {exc}"
    unit, factor = _unit_and_factor(raw)
    if (name is SignalName.LOAD_DISPATCH and stype in (ST.SETPOINT, ST.DELTA)) or stype is ST.X_LOAD_CONTROL_SETPOINT:
        intervals = tuple(Interval(i.duration, i.value * factor) for i in intervals)
        unit = "powerReal" if unit in _POWER_KEYS or unit is None else unit
    if stype is ST.LEVEL and any(i.value not in (0.0, 1.0, 2.0, 3.0) for i in intervals):
        return f"{label}: SIMPLE levels must be 0, 1, 2 or 3"
    if stype is ST.X_LOAD_CONTROL_CAPACITY and any(not 0.0 <= i.value <= 1.0 for i in intervals):
        return f"{label}: capacity must be a fraction between 0 and 1"
    targets, _ = _targets(raw.get("targets"), ven_id, resources)
    return Signal(
        name=name,
        type=stype,
        intervals=intervals,
        signal_id=str(raw.get("signal_id", "")),
        unit=unit,
        targets=targets,
    )


def translate_event(
    raw: Mapping[str, Any], *, ven_id: str | None, resources: Mapping[str, object], now: datetime
) -> Translated:
    """One openleadr event dict → a domain Event (opt and randomized offset filled in later)."""
    descriptor = raw.get("event_descriptor")
    period = raw.get("active_period")
    if not isinstance(descriptor, Mapping) or not isinstance(period, Mapping):
        raise BadEvent("event without eventDescriptor or activePeriod")
    event_id = str(descriptor.get("event_id", "")).strip()
    if not event_id:
        raise BadEvent("event without an eventID")
    try:
        modification = int(descriptor.get("modification_number", 0))
        status = EventStatus(str(descriptor.get("event_status", "none")))
        priority = int(descriptor.get("priority") or 0)
    except (TypeError, ValueError) as exc:
        raise BadEvent(f"event {event_id}: bad descriptor field ({exc})") from None
    if modification < 0 or priority < 0:
        raise BadEvent(f"event {event_id}: negative modificationNumber or priority")
    dtstart = period.get("dtstart")
    duration = period.get("duration") or timedelta(0)
    if not isinstance(dtstart, datetime) or dtstart.tzinfo is None:
        raise BadEvent(f"event {event_id}: dtstart {dtstart!r} is not a date-time")
    if not isinstance(duration, timedelta):
        raise BadEvent(f"event {event_id}: duration {duration!r} is not a duration")
    tolerance = period.get("tolerance")
    start_after = timedelta(0)
    if isinstance(tolerance, Mapping):
        tolerate = tolerance.get("tolerate", tolerance)
        if isinstance(tolerate, Mapping) and isinstance(tolerate.get("startafter"), timedelta):
            start_after = tolerate["startafter"]
    signals: list[Signal] = []
    dropped: list[str] = []
    for raw_signal in _signals_of(raw):
        result = _signal(raw_signal, ven_id, resources)
        if isinstance(result, str):
            dropped.append(result)
        else:
            signals.append(result)
    longest = max([duration, *(sum((i.duration for i in s.intervals), timedelta(0)) for s in signals)])
    try:
        last = dtstart + start_after + longest
    except OverflowError:
        last = datetime.max.replace(tzinfo=dtstart.tzinfo)
    if last.year > LATEST_YEAR:  # would overflow the calendar once offsets and cancels are added
        raise BadEvent(f"event {event_id}: dtstart {dtstart.isoformat()} with its durations ends past {LATEST_YEAR}")
    targets, addressed = _targets(raw.get("targets"), ven_id, resources)
    created = descriptor.get("created_date_time")
    event = Event(
        event_id=event_id,
        modification_number=modification,
        dtstart=dtstart,
        duration=duration,
        signals=tuple(signals),
        priority=priority,
        status=status,
        test_event=descriptor.get("test_event") is True,
        start_after=start_after,
        market_context=str(descriptor.get("market_context") or ""),
        targets=targets,
        response_required=str(raw.get("response_required", "always")) == "always",
        created_at=created if isinstance(created, datetime) else now,
    )
    return Translated(event=event, targeted=addressed, dropped=tuple(dropped))


def describe(events: Sequence[Event]) -> str:
    return ",".join(f"{e.event_id}#{e.modification_number}" for e in events)
