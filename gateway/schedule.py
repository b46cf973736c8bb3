"""From demand-response events to the timeline of limits and prices the site must follow.

Pure: takes domain `Event`s (never openleadr objects) and `now`, returns consecutive `Segment`s from now
on, each with the site kW limit, the EV kW limit, per-resource caps, the price and the demand charge in
force, and the reasons (event, signal, value). Rules: the highest modificationNumber of an event wins;
test events, events opted out of and events cancelled before they started do nothing; an active event
that is cancelled ends at its cancel time (shifted by its randomized offset); where events overlap, the
one with the better OpenADR priority (1 highest, 0 none) governs each dimension (the price, the demand
charge, the site's limits, each targeted resource's limit), and among equals the most restrictive limit
(and the highest price) wins.

Prices given relative to the site's own (priceRelative, priceMultiplier) are their own piece kinds: under a
time-of-use tariff "0.05 more" means 0.05 more than the tariff's price at each moment, which a segment's
single price cannot say. `price_changes` gives them as `PriceChange`s, for `gateway.tariff.price_timeline`
to apply to the tariff's price; an absolute price of the same priority wins over them. Only when
`ScheduleSettings.base_price` is given (a site with one constant price) are they also turned into the
segment's `price`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gateway.domain import Event, Segment, Signal, SignalName, SignalType

DEFAULT_SIMPLE_LEVELS: Mapping[int, float] = {0: 1.0, 1: 0.5, 2: 0.25, 3: 0.0}


@dataclass(frozen=True, slots=True)
class ScheduleSettings:
    ev_capacity_kw: float  # normal EV capacity: fractions and offsets are of this
    simple_levels: Mapping[int, float] = field(default_factory=lambda: dict(DEFAULT_SIMPLE_LEVELS))
    # A constant price for priceRelative and priceMultiplier to modify into the segment's `price`. None (the
    # gateway): they modify the tariff's price at each moment instead (`price_changes`).
    base_price: float | None = None
    resource_capacity_kw: Mapping[str, float] = field(default_factory=dict)  # targeted resources


@dataclass(frozen=True, slots=True)
class PriceChange:
    """An OpenADR price relative to the tariff's over [start, end): the tariff's price × multiplier + relative."""

    start: datetime
    end: datetime | None
    relative: float = 0.0
    multiplier: float = 1.0
    reasons: tuple[str, ...] = ()

    def apply(self, price: float) -> float:
        return price * self.multiplier + self.relative


@dataclass(frozen=True, slots=True)
class _Piece:
    """One interval of one signal, turned into what it asks of the site."""

    start: datetime
    end: datetime | None
    kind: str  # "site_kw", "ev_kw", "group_kw:<resource>", "price", "price_relative", "price_multiplier",
    # "demand_charge"
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
        if kind is SignalType.PRICE:
            return ("price", value)
        if kind is SignalType.PRICE_RELATIVE:
            return ("price_relative", value)
        if kind is SignalType.PRICE_MULTIPLIER:
            return ("price_multiplier", value)
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
            # A value that is not a number asks nothing (the adapter refuses such payloads; the core never
            # turns one into a NaN limit, which every comparison would silently pass).
            asked = _asks(signal, interval.value, settings) if math.isfinite(interval.value) else None
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


def _stretches(events: Iterable[Event], now: datetime,
               settings: ScheduleSettings) -> Iterator[tuple[datetime, datetime | None, list[_Piece]]]:
    """Consecutive stretches from `now` on, each with the pieces live throughout it."""
    pieces = [p for e in latest_versions(events) for p in _pieces(e, settings)]
    pieces = [p for p in pieces if p.end is None or p.end > now]
    cuts = {now}
    for p in pieces:
        if p.start > now:
            cuts.add(p.start)
        if p.end is not None and p.end > now:
            cuts.add(p.end)
    times = sorted(cuts)
    for n, start in enumerate(times):
        end = times[n + 1] if n + 1 < len(times) else None
        yield start, end, [p for p in pieces if p.start <= start and (p.end is None or p.end > start)]


def build_schedule(events: Iterable[Event], now: datetime, settings: ScheduleSettings) -> tuple[Segment, ...]:
    """Consecutive segments from `now` on. The last one is open-ended and carries no limit."""
    segments: list[Segment] = []
    for start, end, live in _stretches(events, now, settings):
        segment = _resolve(live, start, end, settings.base_price)
        if segments and _same(segments[-1], segment):
            segments[-1] = Segment(
                segments[-1].start, segment.end, segment.site_kw, segment.ev_kw, segment.price,
                segment.demand_charge, segment.group_kw, segments[-1].reasons,
            )
        else:
            segments.append(segment)
    return tuple(segments)


def price_changes(events: Iterable[Event], now: datetime, settings: ScheduleSettings) -> tuple[PriceChange, ...]:
    """Where the events give a price relative to the tariff's (and no absolute price governs), from `now` on."""
    out: list[PriceChange] = []
    for start, end, live in _stretches(events, now, settings):
        chosen = _choose(live)
        relative, multiplier = chosen.get("price_relative"), chosen.get("price_multiplier")
        if relative is None and multiplier is None:
            continue
        change = PriceChange(
            start, end, relative.value if relative is not None else 0.0,
            multiplier.value if multiplier is not None else 1.0,
            tuple(sorted(p.reason for p in (relative, multiplier) if p is not None)),
        )
        last = out[-1] if out else None
        if last is not None and last.end == start and (last.relative, last.multiplier, last.reasons) == (
                change.relative, change.multiplier, change.reasons):
            out[-1] = PriceChange(last.start, end, last.relative, last.multiplier, last.reasons)
        else:
            out.append(change)
    return tuple(out)


PRICE_KINDS = ("price", "price_relative", "price_multiplier")


def _family(kind: str) -> str:
    """What a piece competes with on priority: the price, the demand charge, the site's limits, or the limit
    of one targeted resource. An event for one resource says nothing about the site or another resource, so
    a better-priority event there must not lift their limits."""
    if kind in PRICE_KINDS:
        return "price"
    if kind == "demand_charge":
        return kind
    if kind.startswith("group_kw:"):
        return "limit:" + kind.split(":", 1)[1]
    return "limit"


def _choose(live: list[_Piece]) -> dict[str, _Piece]:
    """The piece that governs each kind: the best priority per family, then the tightest limit or the
    highest price. An absolute price governs over relative ones of the same priority."""
    chosen: dict[str, _Piece] = {}
    best_rank: dict[str, float] = {}
    for p in live:
        family = _family(p.kind)
        best_rank[family] = min(best_rank.get(family, math.inf), p.rank)
    for p in live:
        family = _family(p.kind)
        if p.rank != best_rank[family]:
            continue  # a better-priority event governs this dimension
        known = chosen.get(p.kind)
        if known is None:
            chosen[p.kind] = p
            continue
        tighter = p.value < known.value if family.startswith("limit") else p.value > known.value
        if tighter:
            chosen[p.kind] = p
    if "price" in chosen:
        chosen.pop("price_relative", None)
        chosen.pop("price_multiplier", None)
    return chosen


def _resolve(live: list[_Piece], start: datetime, end: datetime | None, base_price: float | None = None) -> Segment:
    chosen = _choose(live)
    groups = {
        k.split(":", 1)[1]: p.value for k, p in chosen.items() if k.startswith("group_kw:") and p.value != math.inf
    }
    reasons = tuple(sorted({p.reason for p in chosen.values()}))

    def value(kind: str) -> float | None:
        return chosen[kind].value if kind in chosen and chosen[kind].value != math.inf else None

    price = value("price")
    relative, multiplier = chosen.get("price_relative"), chosen.get("price_multiplier")
    if price is None and base_price is not None and (relative is not None or multiplier is not None):
        price = base_price * (multiplier.value if multiplier is not None else 1.0) + (
            relative.value if relative is not None else 0.0)
    return Segment(start, end, value("site_kw"), value("ev_kw"), price, value("demand_charge"), groups, reasons)


def _same(a: Segment, b: Segment) -> bool:
    return (a.site_kw, a.ev_kw, a.price, a.demand_charge, dict(a.group_kw), a.reasons) == (
        b.site_kw, b.ev_kw, b.price, b.demand_charge, dict(b.group_kw), b.reasons,
    )


def segment_at(schedule: Iterable[Segment], moment: datetime) -> Segment | None:
    for segment in schedule:
        if segment.covers(moment):
            return segment
    return None
