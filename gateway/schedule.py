"""From demand-response events to the timeline of limits and prices the site must follow.

Pure: takes domain `Event`s (never openleadr objects) and `now`, returns consecutive `Segment`s from now
on, each with the site kW limit, the EV kW limit, per-resource caps, the price and the demand charge in
force, and the reasons (event, signal, value). Rules: the highest modificationNumber of an event wins;
test events, events opted out of and events cancelled before they started do nothing; an active event
that is cancelled ends at its cancel time (shifted by its randomized offset); where events overlap, the
one with the better OpenADR priority (1 highest, 0 none) governs each dimension, and among equals the
most restrictive limit (and the highest price) wins.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gateway.domain import Event, Segment, Signal, SignalName, SignalType

DEFAULT_SIMPLE_LEVELS: Mapping[int, float] = {0: 1.0, 1: 0.5, 2: 0.25, 3: 0.0}


@dataclass(frozen=True, slots=True)
class ScheduleSettings:
    ev_capacity_kw: float  # normal EV capacity: fractions and offsets are of this
    simple_levels: Mapping[int, float] = field(default_factory=lambda: dict(DEFAULT_SIMPLE_LEVELS))
    base_price: float | None = None  # what priceRelative and priceMultiplier modify (the tariff's price)
    resource_capacity_kw: Mapping[str, float] = field(default_factory=dict)  # targeted resources


@dataclass(frozen=True, slots=True)
class _Piece:
    """One interval of one signal, turned into what it asks of the site."""

    start: datetime
    end: datetime | None
    kind: str  # "site_kw", "ev_kw", "group_kw:<resource>", "price", "demand_charge"
    value: float
    rank: float  # OpenADR priority, 0 → lowest
    reason: str


def latest_versions(events: Iterable[Event]) -> list[Event]:
    """One event per id: the highest modificationNumber (a lower one arriving late changes nothing)."""
    newest: dict[str, Event] = {}
    for event in events:
        known = newest.get(event.event_id)
        if known is None or event.modification_number > known.modification_number:
            newest[event.event_id] = event
    return list(newest.values())


def _level_fraction(level: float, settings: ScheduleSettings) -> float:
    """Fraction of normal EV capacity at a SIMPLE level (or level offset): 0 normal .. 3 the most shed."""
    step = min(3, max(0, round(level)))
    return settings.simple_levels.get(step, DEFAULT_SIMPLE_LEVELS[step])


def _asks(signal: Signal, value: float, settings: ScheduleSettings) -> tuple[str, float] | None:
    """What one interval value of one signal asks: (kind, value); None for a combination we do not act on.

    "Normal operation" (level 0, 100 % capacity, a positive delta) is a limit of +inf rather than nothing:
    an event of better priority that says "normal" must still override a worse-priority curtailment.
    """
    cap = settings.ev_capacity_kw
    name, kind = signal.name, signal.type
    fraction: float | None = None
    if name is SignalName.SIMPLE or kind is SignalType.X_LOAD_CONTROL_LEVEL_OFFSET:
        fraction = _level_fraction(value, settings)
    elif kind is SignalType.X_LOAD_CONTROL_CAPACITY:
        fraction = value
    elif kind is SignalType.X_LOAD_CONTROL_PERCENT_OFFSET:
        fraction = 1.0 + value / 100.0  # −30 → 70 % of normal
    elif kind is SignalType.X_LOAD_CONTROL_SETPOINT:
        return ("ev_kw", max(0.0, value))
    elif name is SignalName.LOAD_DISPATCH:
        if kind is SignalType.SETPOINT:
            return ("site_kw", max(0.0, value))
        if kind is SignalType.DELTA:
            return ("ev_kw", max(0.0, cap + value) if value < 0 else math.inf)
        if kind is SignalType.MULTIPLIER:
            fraction = value
    elif name in (SignalName.ELECTRICITY_PRICE, SignalName.ENERGY_PRICE):
        base = settings.base_price or 0.0
        if kind is SignalType.PRICE:
            return ("price", value)
        if kind is SignalType.PRICE_RELATIVE:
            return ("price", base + value)
        if kind is SignalType.PRICE_MULTIPLIER:
            return ("price", base * value)
    elif name is SignalName.DEMAND_CHARGE and kind is SignalType.PRICE:
        return ("demand_charge", value)
    if fraction is None:
        return None
    return ("ev_kw", max(0.0, fraction) * cap if fraction < 1.0 else math.inf)


def _pieces(event: Event, settings: ScheduleSettings) -> list[_Piece]:
    out: list[_Piece] = []
    if not event.acted_on:
        return out
    end = event.end
    rank = float(event.priority) if event.priority > 0 else math.inf
    for signal in event.signals:
        targets = signal.targets or event.targets
        at = event.start
        for n, interval in enumerate(signal.intervals):
            last = n == len(signal.intervals) - 1
            piece_end: datetime | None = at + interval.duration
            if interval.duration <= timedelta(0) and last:
                piece_end = end
            if end is not None and piece_end is not None:
                piece_end = min(piece_end, end)
            asked = _asks(signal, interval.value, settings)
            if asked is not None and (piece_end is None or piece_end > at):
                kind, value = asked
                reason = f"{event.event_id}:{signal.name.value}:{signal.type.value}={interval.value:g}"
                if targets and kind in ("ev_kw", "site_kw"):
                    for resource in targets:
                        scale = 1.0
                        if kind == "ev_kw" and settings.ev_capacity_kw > 0 and value != math.inf:
                            scale = settings.resource_capacity_kw.get(resource, 0.0) / settings.ev_capacity_kw
                        out.append(_Piece(at, piece_end, f"group_kw:{resource}", value * scale, rank, reason))
                else:
                    out.append(_Piece(at, piece_end, kind, value, rank, reason))
            if piece_end is None:
                break
            at = piece_end
    return out


def build_schedule(events: Iterable[Event], now: datetime, settings: ScheduleSettings) -> tuple[Segment, ...]:
    """Consecutive segments from `now` on. The last one is open-ended and carries no limit."""
    pieces = [p for e in latest_versions(events) for p in _pieces(e, settings)]
    pieces = [p for p in pieces if p.end is None or p.end > now]
    cuts = {now}
    for p in pieces:
        if p.start > now:
            cuts.add(p.start)
        if p.end is not None and p.end > now:
            cuts.add(p.end)
    times = sorted(cuts)
    segments: list[Segment] = []
    for n, start in enumerate(times):
        end = times[n + 1] if n + 1 < len(times) else None
        live = [p for p in pieces if p.start <= start and (p.end is None or p.end > start)]
        segment = _resolve(live, start, end)
        if segments and _same(segments[-1], segment):
            segments[-1] = Segment(
                segments[-1].start, segment.end, segment.site_kw, segment.ev_kw, segment.price,
                segment.demand_charge, segment.group_kw, segments[-1].reasons,
            )
        else:
            segments.append(segment)
    return tuple(segments)


def _resolve(live: list[_Piece], start: datetime, end: datetime | None) -> Segment:
    chosen: dict[str, _Piece] = {}
    families = {"price": "price", "demand_charge": "demand_charge"}
    best_rank: dict[str, float] = {}
    for p in live:
        family = families.get(p.kind, "limit")
        best_rank[family] = min(best_rank.get(family, math.inf), p.rank)
    for p in live:
        family = families.get(p.kind, "limit")
        if p.rank != best_rank[family]:
            continue  # a better-priority event governs this dimension
        known = chosen.get(p.kind)
        if known is None:
            chosen[p.kind] = p
            continue
        tighter = p.value < known.value if family == "limit" else p.value > known.value
        if tighter:
            chosen[p.kind] = p
    groups = {
        k.split(":", 1)[1]: p.value for k, p in chosen.items() if k.startswith("group_kw:") and p.value != math.inf
    }
    reasons = tuple(sorted({p.reason for p in chosen.values()}))

    def value(kind: str) -> float | None:
        return chosen[kind].value if kind in chosen and chosen[kind].value != math.inf else None

    return Segment(start, end, value("site_kw"), value("ev_kw"), value("price"), value("demand_charge"), groups,
                   reasons)


def _same(a: Segment, b: Segment) -> bool:
    return (a.site_kw, a.ev_kw, a.price, a.demand_charge, dict(a.group_kw), a.reasons) == (
        b.site_kw, b.ev_kw, b.price, b.demand_charge, dict(b.group_kw), b.reasons,
    )


def segment_at(schedule: Iterable[Segment], moment: datetime) -> Segment | None:
    for segment in schedule:
        if segment.covers(moment):
            return segment
    return None
