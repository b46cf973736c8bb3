"""openleadr's event dicts → domain `Event`s: names, types, units and targets checked, the rest dropped.

Input is one event from openleadr's `parse_message` (already schema-valid, with durations and date-times
made trustworthy by `xmlguard.normalize_tree`). Signals outside the 2.0b name/type combinations are
dropped with one log line (the VEN refuses an event left with none). Values are turned into the gateway's
units (kW, currency per kWh or per kW) from the signal's itemBase and siScaleCode; a unit that cannot be
read as ours refuses the event (UnitRefused), so nothing is ever acted on in a unit misread. Ids come back
from openleadr as ints when they look like numbers, so every id goes through str().
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
# siScaleCode → multiplier (the 2.0b schema's whole enumeration, p to T).
SCALE = {"p": 1e-12, "n": 1e-9, "micro": 1e-6, "m": 1e-3, "c": 1e-2, "d": 1e-1, "none": 1.0, "k": 1e3, "M": 1e6,
         "G": 1e9, "T": 1e12}
LATEST_YEAR = 9000
# Every emix:itemBase the 2.0b schema allows (oadr_20b.xsd and oadr_power_20b.xsd), as openleadr names them.
ITEM_BASES = ("powerReal", "powerApparent", "powerReactive", "energyReal", "energyApparent", "energyReactive",
              "current", "voltage", "frequency", "currency", "currencyPerKWh", "currencyPerKW", "currencyPerThm",
              "Therm", "temperature", "pulseCount", "customUnit", "oadrGBDataDescription")
# openleadr 0.5.36 lists `currencyPerWK` (sic) among its item names, so `currencyPerKW` reaches us snake_cased, as
# does every item after the first signal without one (its loop `break`s there instead of `continue`).
_SNAKE_ITEMS = {"currency_per_kw": "currencyPerKW", "currency_per_k_wh": "currencyPerKWh",
                "currency_per_thm": "currencyPerThm", "oadr_gb_data_description": "oadrGBDataDescription",
                "gb_data_description": "oadrGBDataDescription"}
POWER_UNITS = {"powerReal": ("W", "J/s")}
LIMIT_TYPES = (ST.SETPOINT, ST.DELTA, ST.X_LOAD_CONTROL_SETPOINT)  # with LOAD_DISPATCH / LOAD_CONTROL
UNIT_REFUSED = 460  # "signal not supported": answered for an event whose signal we cannot read in our units


@dataclass(frozen=True, slots=True)
class ItemBase:
    """A signal's unit as the VTN wrote it: the itemBase element's name, its itemUnits and siScaleCode."""

    name: str
    units: str
    scale: str

    def describe(self) -> str:
        return f"{self.name} {self.scale if self.scale != 'none' else ''}{self.units}".strip()


class UnitRefused(ValueError):
    """A signal whose unit we cannot turn into ours: the event is refused (never acted on in the wrong unit)."""


class BadEvent(Exception):
    """An event we cannot understand at all (not just one of its signals)."""


@dataclass(frozen=True, slots=True)
class Translated:
    event: Event
    targeted: bool  # False: it names resources or VENs, none of them ours
    dropped: tuple[str, ...]  # one description per signal left out
    refused: tuple[str, ...] = ()  # signals in a unit we cannot read: the whole event is refused (460)
    notes: tuple[str, ...] = ()  # assumptions worth one log line (a power signal without a unit read as kW)


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


def item_base(signal: Mapping[str, Any]) -> ItemBase | None:
    """The signal's itemBase from openleadr's dict, in whichever of its shapes it arrives; None without one."""
    found: tuple[str, Mapping[str, Any]] | None = None
    m = signal.get("measurement")
    if isinstance(m, Mapping) and m.get("name"):
        found = (str(m["name"]), m)
    else:
        for key, value in signal.items():
            name = key if key in ITEM_BASES else _SNAKE_ITEMS.get(key)
            if name is not None and isinstance(value, Mapping):
                found = (name, value)
                break
    if found is None:
        return None
    name, item = found
    units = item.get("unit", item.get("item_units"))
    scale = item.get("scale", item.get("si_scale_code"))
    return ItemBase(name, "" if units is None else str(units).strip(), "none" if scale is None else str(scale).strip())


def _scale(item: ItemBase) -> float:
    if item.scale not in SCALE:
        raise UnitRefused(f"siScaleCode {item.scale!r} is not one of the 2.0b codes")
    return SCALE[item.scale]


def read_units(
    name: SignalName, stype: SignalType, intervals: tuple[Interval, ...], item: ItemBase | None,
    currency: str | None = None,
) -> tuple[tuple[Interval, ...], str | None, str | None]:
    """Values turned into the gateway's units: limits in kW, prices in currency per kWh (demand charges per
    kW). Returns (intervals, unit label, a note when a unit was assumed). Raises UnitRefused for a unit that
    cannot be read as one of ours: a limit in kVA, kVAR, A, V or a currency; a price per kW or per therm, or
    in a currency other than the site's. Unitless signal types (levels, fractions, multipliers) ignore it."""
    is_limit = stype in LIMIT_TYPES and name in (SignalName.LOAD_DISPATCH, SignalName.LOAD_CONTROL)
    if is_limit:
        if item is None:
            return intervals, "kW", "no itemBase: values read as kW"
        if item.name in POWER_UNITS:
            if item.units not in POWER_UNITS[item.name]:
                raise UnitRefused(f"{item.name} in {item.units!r} (expected W or J/s)")
            factor = _scale(item) / 1000.0
            return tuple(Interval(i.duration, i.value * factor) for i in intervals), "kW", None
        if item.name == "energyReal":
            if item.units != "Wh":
                raise UnitRefused(f"energyReal in {item.units!r} (expected Wh)")
            factor = _scale(item) / 1000.0
            if any(i.duration <= timedelta(0) for i in intervals):
                raise UnitRefused("energyReal over an interval without a duration has no power equivalent")
            # Energy over an interval → the average power that delivers it (kW), the limit we can hold.
            return (tuple(Interval(i.duration, i.value * factor / (i.duration.total_seconds() / 3600.0))
                          for i in intervals), "kW", None)
        raise UnitRefused(f"a {name.value} {stype.value} in {item.describe()} is not a real-power limit this "
                          "gateway can hold")
    if stype in (ST.PRICE, ST.PRICE_RELATIVE):
        wanted = "currencyPerKW" if name is SignalName.DEMAND_CHARGE else "currencyPerKWh"
        per = "kW" if name is SignalName.DEMAND_CHARGE else "kWh"
        if item is None:
            return intervals, f"{currency or 'currency'}/{per}", None
        if item.name != wanted:
            raise UnitRefused(f"a {name.value} {stype.value} in {item.describe()} (expected {wanted})")
        code = item.units.upper()
        if len(code) != 3 or not code.isalpha():
            raise UnitRefused(f"{item.name} with itemUnits {item.units!r}, not an ISO 4217 currency code")
        if currency is not None and code != currency.upper():
            raise UnitRefused(f"price in {code}, the site's tariff is in {currency.upper()}")
        factor = _scale(item)
        return tuple(Interval(i.duration, i.value * factor) for i in intervals), f"{code}/{per}", None
    return intervals, None, None


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
    raw: Mapping[str, Any], ven_id: str | None, resources: Mapping[str, object], currency: str | None = None,
    notes: list[str] | None = None,
) -> Signal | str:
    """A domain signal, or why it is left out. Raises UnitRefused for a unit we cannot read."""
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
    try:
        intervals, unit, note = read_units(name, stype, intervals, item_base(raw), currency)
    except UnitRefused as exc:
        raise UnitRefused(f"{label}: {exc}") from None
    if note and notes is not None:
        notes.append(f"{label}: {note}")
    if not all(math.isfinite(i.value) for i in intervals):
        return f"{label}: a value is out of range once converted"
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
    raw: Mapping[str, Any], *, ven_id: str | None, resources: Mapping[str, object], now: datetime,
    currency: str | None = None,
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
    refused: list[str] = []
    notes: list[str] = []
    for raw_signal in _signals_of(raw):
        try:
            result = _signal(raw_signal, ven_id, resources, currency, notes)
        except UnitRefused as exc:
            refused.append(str(exc))
            continue
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
    return Translated(event=event, targeted=addressed, dropped=tuple(dropped), refused=tuple(refused),
                      notes=tuple(notes))


def describe(events: Sequence[Event]) -> str:
    return ",".join(f"{e.event_id}#{e.modification_number}" for e in events)
