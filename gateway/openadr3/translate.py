"""OpenADR 3 events → domain `Event`s, pure: payload types, units, timing and targets, like their 2.0b kin.

Each interval payload type becomes one domain signal over the event's intervals, in the gateway's units:
SIMPLE → SIMPLE level; IMPORT_CAPACITY_LIMIT and DISPATCH_SETPOINT → a LOAD_DISPATCH setpoint (kW at the
site, or at the targeted resources); DISPATCH_SETPOINT_RELATIVE → a LOAD_DISPATCH delta (kW);
CONTROL_LEVEL_OFFSET → x-loadControlLevelOffset; CONTROL_LEVEL_OFFSET_PERCENT (a fraction −1..1) →
x-loadControlPercentOffset (percent); PRICE → ELECTRICITY_PRICE price per kWh in the site's currency;
ALERT_GRID_EMERGENCY → the configured emergency SIMPLE level while it lasts. GHG and the other ALERT_*
types change nothing: they come back as `notes`, logged and kept with the event for the operator. Any other
payload type is dropped with one line; an event left with nothing the gateway acts on or shows is refused.

Timing: an interval's own intervalPeriod overrides the event's, which overrides the program's; a start of
0001-01-01 means "now" and P9999Y "no end" (User Guide). Intervals must follow each other without gaps
(the domain's intervals are consecutive). An interval a level type (SIMPLE, the level offsets, the emergency)
is absent from asks for normal operation (level 0); a limit or price absent from one is refused, as the
domain has no "nothing asked" value for them. randomizeStart becomes
`start_after`; priority 0 (highest in 3.x) becomes the domain's 1. The modificationDateTime, in
milliseconds, is the modification number: a later version replaces an earlier one, as in 2.0b.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.domain import Event, EventStatus, Interval, Signal, SignalName, SignalType
from gateway.openadr3 import models

LIMIT_TYPES: dict[str, tuple[SignalName, SignalType]] = {
    "IMPORT_CAPACITY_LIMIT": (SignalName.LOAD_DISPATCH, SignalType.SETPOINT),
    "DISPATCH_SETPOINT": (SignalName.LOAD_DISPATCH, SignalType.SETPOINT),
    "DISPATCH_SETPOINT_RELATIVE": (SignalName.LOAD_DISPATCH, SignalType.DELTA),
}
POWER_UNITS = {"KW": 1.0, "W": 0.001, "MW": 1000.0}  # KW is the enumeration's; W and MW read when written
SHOWN = ("GHG",)  # logged and shown, not acted on
# Levels whose 0 is "normal operation": an interval without one asks for normal, the others are refused.
NORMAL_LEVEL_TYPES = (SignalType.LEVEL, SignalType.X_LOAD_CONTROL_LEVEL_OFFSET,
                      SignalType.X_LOAD_CONTROL_PERCENT_OFFSET)
EMERGENCY = "ALERT_GRID_EMERGENCY"


class BadEvent(ValueError):
    """An event the gateway refuses as a whole (nothing of it is stored)."""


@dataclass(frozen=True, slots=True)
class Translated:
    event: Event
    targeted: bool  # False: it names targets, none of them ours
    dropped: tuple[str, ...]  # payload types left out, one line each
    notes: tuple[str, ...]  # alerts and GHG values, and assumptions (a limit without units read as kW)
    report_descriptors: tuple[models.ReportDescriptor, ...] = ()


@dataclass(frozen=True, slots=True)
class Context:
    """What the translation needs to know about the site."""

    ven_name: str
    resources: Collection[str]  # names of our resources (chargers, circuits, configured groups)
    currency: str | None = None  # the tariff's ISO 4217 code; a price in another one is refused
    emergency_level: int = 3


def modification_number(event: models.Event) -> int:
    return int(event.modification_date_time.timestamp() * 1000)


def _period(*periods: models.IntervalPeriod | None) -> tuple[datetime | None, timedelta | None, bool, str | None]:
    """(start, duration, infinite, randomizeStart) from the most specific period that says each."""
    start: datetime | None = None
    duration: timedelta | None = None
    infinite = False
    randomize: str | None = None
    for p in periods:  # most specific first
        if p is None:
            continue
        if start is None and p.start is not None:
            start = p.start
        if duration is None and not infinite and p.duration is not None:
            d = models.parse_duration(p.duration)
            infinite, duration = d is None, d
        if randomize is None and p.randomize_start is not None:
            randomize = p.randomize_start
    return start, duration, infinite, randomize


def _targets(raw: list[str | models.ValuesMap] | None, ctx: Context) -> tuple[tuple[str, ...], bool]:
    """Our resources among the targets, and whether the event is for us at all (no targets: the site)."""
    names = models.target_names(raw)
    if not names:
        return (), True
    ours = [n for _, n in names if n in ctx.resources]
    addressed = bool(ours)
    for kind, name in names:
        if kind in ("VEN_NAME", "") and name == ctx.ven_name:
            addressed = True
        elif kind not in ("", "VEN_NAME", "RESOURCE_NAME"):
            addressed = True  # a group, a service area …: the VTN sent it to us, so it is meant for the site
        elif kind == "" and name not in ctx.resources and name != ctx.ven_name:
            addressed = True  # 3.1.0 targets are free strings (a group): the VTN chose to send it to us
    return tuple(dict.fromkeys(ours)), addressed


def _descriptors(event: models.Event, program: models.Program | None) -> dict[str, models.EventPayloadDescriptor]:
    out: dict[str, models.EventPayloadDescriptor] = {}
    for raw in (program.payload_descriptors or []) if program is not None else []:
        if raw.get("objectType", "EVENT_PAYLOAD_DESCRIPTOR") == "EVENT_PAYLOAD_DESCRIPTOR":
            try:
                d = models.EventPayloadDescriptor.model_validate(raw)
            except ValueError:
                continue
            out[d.payload_type] = d
    for d in event.payload_descriptors or []:
        out[d.payload_type] = d
    return out


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise BadEvent(f"{what}: value {value!r} is not a finite number")
    return float(value)


def _value(ptype: str, values: list[object], d: models.EventPayloadDescriptor | None, ctx: Context,
           notes: list[str]) -> tuple[SignalName, SignalType, float] | None:
    """One payload's (signal name, type, value in our units); None: not acted on (noted)."""
    if not values:
        raise BadEvent(f"{ptype}: no values")
    first = values[0]
    units = (d.units or "").upper() if d is not None else ""
    if ptype == "SIMPLE":
        v = _number(first, ptype)
        if v not in (0.0, 1.0, 2.0, 3.0):
            raise BadEvent(f"SIMPLE level {v:g} is not 0, 1, 2 or 3")
        return SignalName.SIMPLE, SignalType.LEVEL, v
    if ptype in LIMIT_TYPES:
        name, stype = LIMIT_TYPES[ptype]
        v = _number(first, ptype)
        if not units:
            notes.append(f"{ptype}: no units in its payloadDescriptor: read as KW")
            units = "KW"
        if units not in POWER_UNITS:
            raise BadEvent(f"{ptype} in {units}: not a real-power limit this gateway can hold (KW)")
        return name, stype, v * POWER_UNITS[units]
    if ptype == "CONTROL_LEVEL_OFFSET":
        v = _number(first, ptype)
        if v != int(v) or not -10 <= v <= 10:
            raise BadEvent(f"CONTROL_LEVEL_OFFSET {v:g} is not a whole number from -10 to 10")
        return SignalName.LOAD_CONTROL, SignalType.X_LOAD_CONTROL_LEVEL_OFFSET, v
    if ptype == "CONTROL_LEVEL_OFFSET_PERCENT":
        v = _number(first, ptype)
        if not -1.0 <= v <= 1.0:
            raise BadEvent(f"CONTROL_LEVEL_OFFSET_PERCENT {v:g} is outside -1..1")
        return SignalName.LOAD_CONTROL, SignalType.X_LOAD_CONTROL_PERCENT_OFFSET, v * 100.0
    if ptype == "PRICE":
        v = _number(first, ptype)
        if units and units != "KWH":
            raise BadEvent(f"PRICE per {units}: only prices per KWH are read")
        currency = (d.currency or "").upper() if d is not None else ""
        if currency and ctx.currency is not None and currency != ctx.currency.upper():
            raise BadEvent(f"PRICE in {currency}, the site's tariff is in {ctx.currency.upper()}")
        return SignalName.ELECTRICITY_PRICE, SignalType.PRICE, v
    if ptype == EMERGENCY:
        notes.append(f"{ptype}: {first} (curtailed to SIMPLE level {ctx.emergency_level})")
        return SignalName.SIMPLE, SignalType.LEVEL, float(ctx.emergency_level)
    if ptype.startswith("ALERT_") or ptype in SHOWN:
        unit = " g/kWh" if ptype == "GHG" else ""
        notes.append(f"{ptype}: {first}{unit}")
        return None
    return None


def translate(event: models.Event, program: models.Program | None, ctx: Context, now: datetime) -> Translated:
    """One OpenADR 3 event → a domain Event (opt and randomized offset filled in later). BadEvent: refused."""
    if not event.intervals:
        raise BadEvent(f"event {event.id}: no intervals")
    base = event.interval_period
    program_period = program.interval_period if program is not None else None
    descriptors = _descriptors(event, program)
    starts: list[tuple[datetime, timedelta | None]] = []
    randomize: str | None = None
    for n, interval in enumerate(sorted(event.intervals, key=lambda i: i.id)):
        start, duration, infinite, rnd = _period(interval.interval_period, base, program_period)
        own = interval.interval_period.start if interval.interval_period is not None else None
        if n > 0 and own is None:
            start = None  # the event's (or program's) start is the first interval's; the others follow it
        randomize = randomize or rnd
        if start is None:
            if not starts:
                raise BadEvent(f"event {event.id}: no start time (no intervalPeriod)")
            previous_start, previous_duration = starts[-1]
            if previous_duration is None:
                raise BadEvent(f"event {event.id}: interval {interval.id} follows one without an end")
            start = previous_start + previous_duration
        elif start.year == models.NOW_YEAR:
            start = now
        if starts:
            previous_start, previous_duration = starts[-1]
            if previous_duration is None or previous_start + previous_duration != start:
                raise BadEvent(f"event {event.id}: interval {interval.id} does not follow the one before it (gaps "
                               "and overlaps are not supported)")
        if duration is None and not infinite:
            duration = timedelta(0)  # PT0S: instantaneous or open-ended, read as open-ended
            infinite = True
        if not infinite and duration is not None and duration <= timedelta(0):
            raise BadEvent(f"event {event.id}: interval {interval.id} has a negative duration")
        if infinite and n != len(event.intervals) - 1:
            raise BadEvent(f"event {event.id}: only the last interval may be open-ended")
        starts.append((start, None if infinite else duration))
    by_type: dict[tuple[SignalName, SignalType, str], list[float]] = {}
    dropped: list[str] = []
    notes: list[str] = []
    ordered = sorted(event.intervals, key=lambda i: i.id)
    for n, interval in enumerate(ordered):
        for payload in interval.payloads:
            try:
                asked = _value(payload.type, payload.values, descriptors.get(payload.type), ctx, notes)
            except BadEvent as exc:
                raise BadEvent(f"event {event.id}: {exc}") from None
            if asked is None:
                if not payload.type.startswith("ALERT_") and payload.type not in SHOWN:
                    dropped.append(f"{payload.type}: not a payload type this gateway acts on")
                continue
            name, stype, value = asked
            key = (name, stype, payload.type)
            by_type.setdefault(key, [math.nan] * len(ordered))[n] = value
    for (name, stype, ptype), values in by_type.items():
        missing = [ordered[n].id for n, v in enumerate(values) if math.isnan(v)]
        if missing and stype in NORMAL_LEVEL_TYPES:
            by_type[(name, stype, ptype)] = [0.0 if math.isnan(v) else v for v in values]
        elif missing:
            raise BadEvent(f"event {event.id}: {ptype} is missing from interval(s) "
                           + ", ".join(str(i) for i in missing) + " (a limit or price must be in every interval)")
    signals = tuple(
        Signal(name=name, type=stype, signal_id=ptype, unit=_unit(name, ctx),
               intervals=tuple(Interval(d or timedelta(0), v) for (_, d), v in zip(starts, values, strict=True)))
        for (name, stype, ptype), values in by_type.items()
    )
    if not signals and not notes:
        raise BadEvent(f"event {event.id}: no payload this gateway acts on or shows ("
                       + "; ".join(dict.fromkeys(dropped)) + ")")
    dtstart = starts[0][0]
    open_ended = starts[-1][1] is None
    duration = timedelta(0) if open_ended else sum((d or timedelta(0) for _, d in starts), timedelta(0))
    start_after = timedelta(0)
    if randomize is not None:
        start_after = abs(models.parse_duration(randomize) or timedelta(0))
    targets, addressed = _targets(event.targets, ctx)
    domain = Event(
        event_id=event.id,
        modification_number=modification_number(event),
        dtstart=dtstart,
        duration=duration,
        signals=signals,
        priority=0 if event.priority is None else event.priority + 1,
        status=EventStatus.NONE,
        start_after=start_after,
        market_context=program.program_name if program is not None else "",
        targets=targets,
        response_required=False,
        created_at=event.created_date_time or now,
    )
    return Translated(domain, addressed, tuple(dict.fromkeys(dropped)), tuple(notes),
                      tuple(event.report_descriptors or ()))


def _unit(name: SignalName, ctx: Context) -> str | None:
    if name is SignalName.ELECTRICITY_PRICE:
        return f"{ctx.currency or 'currency'}/kWh"
    if name is SignalName.LOAD_DISPATCH:
        return "kW"
    return None


def resources_of(charger_ids: Collection[str], groups: Mapping[str, Collection[str]]) -> list[str]:
    """The resource names the VEN announces: one per charger and per circuit or configured group."""
    return list(dict.fromkeys([*charger_ids, *groups]))
