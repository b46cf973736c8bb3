"""What energy costs when: the site's tariff turned into a price timeline, OpenADR prices taking precedence.

Pure (no clock, no I/O). A `Tariff` is a flat price, 24 hourly prices, or time-of-use periods by weekday and
season, in the site's local time, with an optional demand charge per kW of the month's highest 15-minute
average; holidays are priced like Sundays. `price_timeline` cuts [start, end) into `PriceStep`s with one price
each: where a schedule `Segment` carries a price (an ELECTRICITY_PRICE / ENERGY_PRICE event) that price wins,
elsewhere the tariff's, modified where an event gives a price relative to it (`PriceChange`s from
`gateway.schedule.price_changes`: priceRelative, priceMultiplier). `demand_peak_kw` gives the month's peak
so far from meter readings, for the planner's target and the status page. Validation of a tariff a user
wrote lives with its config section (`gateway.config.tariff`); here a `Tariff` is assumed consistent and the
first matching period wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from gateway.domain import Segment
from gateway.schedule import PriceChange

DAY_NAMES: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60
DEMAND_WINDOW = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class Season:
    """A stretch of the year, first and last day included; it wraps over new year when it ends before it starts."""

    name: str
    start: tuple[int, int]  # (month, day)
    end: tuple[int, int]

    def contains(self, month: int, day: int) -> bool:
        key = (month, day)
        if self.start <= self.end:
            return self.start <= key <= self.end
        return key >= self.start or key <= self.end


@dataclass(frozen=True, slots=True)
class TouPeriod:
    """One price on some weekdays (0 = Monday) between two local times, in some seasons (none: all year)."""

    name: str
    price: float
    days: frozenset[int]
    start_min: int  # minutes after local midnight
    end_min: int  # exclusive; 1440 is midnight at the end of the day
    seasons: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Tariff:
    """A site's tariff. Exactly one of `flat_price`, `hourly` (24 prices) or `periods` is normally given."""

    name: str = ""
    currency: str = "USD"
    timezone: str = "UTC"
    flat_price: float | None = None
    hourly: tuple[float, ...] = ()
    periods: tuple[TouPeriod, ...] = ()
    seasons: tuple[Season, ...] = ()
    demand_charge_kw: float | None = None  # per kW of the month's highest 15-minute average
    # Days priced like a Sunday (US TOU rates price holidays as weekends): (month, day) every year, or dates.
    holidays: frozenset[tuple[int, int] | date] = frozenset()

    def weekday_of(self, day: date) -> int:
        """The weekday (0 = Monday) whose prices apply on `day`: Sunday's on a holiday."""
        if day in self.holidays or (day.month, day.day) in self.holidays:
            return 6
        return day.weekday()


@dataclass(frozen=True, slots=True)
class PriceStep:
    """A stretch of time with one price (currency per kWh; None: nothing known) and where it came from."""

    start: datetime
    end: datetime
    price: float | None
    source: str  # "openadr:<reason>", "tariff:<period>", "tariff:flat", "tariff:hour-17" or "none"


def season_of(tariff: Tariff, day: date) -> str | None:
    for season in tariff.seasons:
        if season.contains(day.month, day.day):
            return season.name
    return None


def day_prices(tariff: Tariff, day: date) -> list[tuple[int, int, float | None, str]]:
    """The tariff on one local day: (start minute, end minute, price, source), covering 0..1440 in order."""
    if tariff.periods:
        season = season_of(tariff, day)
        weekday = tariff.weekday_of(day)
        applicable = sorted(
            (p for p in tariff.periods
             if weekday in p.days and (not p.seasons or (season is not None and season in p.seasons))),
            key=lambda p: p.start_min,
        )
        out: list[tuple[int, int, float | None, str]] = []
        at = 0
        for p in applicable:
            if p.start_min > at:
                out.append((at, p.start_min, tariff.flat_price, "tariff:flat" if tariff.flat_price is not None
                            else "none"))
            begin = max(at, p.start_min)
            if p.end_min > begin:
                out.append((begin, p.end_min, p.price, f"tariff:{p.name}"))
                at = p.end_min
        if at < MINUTES_PER_DAY:
            out.append((at, MINUTES_PER_DAY, tariff.flat_price, "tariff:flat" if tariff.flat_price is not None
                        else "none"))
        return out
    if len(tariff.hourly) == 24:
        return [(h * 60, h * 60 + 60, tariff.hourly[h], f"tariff:hour-{h:02d}") for h in range(24)]
    if tariff.flat_price is not None:
        return [(0, MINUTES_PER_DAY, tariff.flat_price, "tariff:flat")]
    return [(0, MINUTES_PER_DAY, None, "none")]


def _local(day: date, minute: int, zone: ZoneInfo) -> datetime:
    """A wall-clock time on a local day (minute 1440: the next midnight), as an aware instant."""
    return (datetime.combine(day, time(0)) + timedelta(minutes=minute)).replace(tzinfo=zone)


def tariff_steps(tariff: Tariff | None, start: datetime, end: datetime) -> list[PriceStep]:
    """The tariff alone over [start, end), merged where consecutive steps have the same price and source."""
    if end <= start:
        return []
    if tariff is None:
        return [PriceStep(start, end, None, "none")]
    zone = ZoneInfo(tariff.timezone)
    day = start.astimezone(zone).date() - timedelta(days=1)  # a DST edge can pull the first step a day back
    last = end.astimezone(zone).date()
    steps: list[PriceStep] = []
    while day <= last:
        for begin_min, end_min, price, source in day_prices(tariff, day):
            begin = max(start, _local(day, begin_min, zone).astimezone(UTC))
            finish = min(end, _local(day, end_min, zone).astimezone(UTC))
            if steps and begin < steps[-1].end:
                begin = steps[-1].end  # the repeated hour when clocks go back: the first reading stands
            if finish <= begin:
                continue
            if steps and steps[-1].price == price and steps[-1].source == source and steps[-1].end == begin:
                steps[-1] = PriceStep(steps[-1].start, finish, price, source)
            else:
                steps.append(PriceStep(begin, finish, price, source))
        day += timedelta(days=1)
    return _fill(steps, start, end)


def _fill(steps: list[PriceStep], start: datetime, end: datetime) -> list[PriceStep]:
    """Close any hole (the skipped hour when clocks go forward) by stretching the step before it."""
    out: list[PriceStep] = []
    for step in steps:
        if out and out[-1].end < step.start:
            out[-1] = PriceStep(out[-1].start, step.start, out[-1].price, out[-1].source)
        out.append(step)
    if not out:
        return [PriceStep(start, end, None, "none")]
    if out[0].start > start:
        out[0] = PriceStep(start, out[0].end, out[0].price, out[0].source)
    if out[-1].end < end:
        out[-1] = PriceStep(out[-1].start, end, out[-1].price, out[-1].source)
    return out


def price_timeline(
    tariff: Tariff | None, start: datetime, end: datetime, schedule: Sequence[Segment] = (),
    changes: Sequence[PriceChange] = (),
) -> tuple[PriceStep, ...]:
    """Consecutive price steps over [start, end): OpenADR prices where a segment has one, else the tariff's,
    multiplied and shifted where a `PriceChange` is in force (an unknown price stays unknown)."""
    return _changed(_timeline(tariff, start, end, schedule), changes)


def _changed(steps: Sequence[PriceStep], changes: Sequence[PriceChange]) -> tuple[PriceStep, ...]:
    """The tariff's steps cut where the (non-overlapping) changes start and end, each changed part modified."""
    if not changes:
        return tuple(steps)
    ordered = sorted(changes, key=lambda c: c.start)
    out: list[PriceStep] = []
    for step in steps:
        if step.price is None or step.source.startswith("openadr:"):
            out.append(step)  # an absolute OpenADR price wins; nothing known is nothing to modify
            continue
        at = step.start
        for change in ordered:
            begin = max(change.start, at)
            finish = step.end if change.end is None else min(change.end, step.end)
            if finish <= begin:
                continue
            if begin > at:
                out.append(PriceStep(at, begin, step.price, step.source))
            reason = ",".join(change.reasons) or "event"
            out.append(PriceStep(begin, finish, change.apply(step.price), f"{step.source}+openadr:{reason}"))
            at = finish
        if at < step.end:
            out.append(PriceStep(at, step.end, step.price, step.source))
    return tuple(out)


def _timeline(
    tariff: Tariff | None, start: datetime, end: datetime, schedule: Sequence[Segment]
) -> tuple[PriceStep, ...]:
    out: list[PriceStep] = []
    at = start
    for segment in sorted(schedule, key=lambda s: s.start):
        seg_start = max(segment.start, start)
        seg_end = end if segment.end is None else min(segment.end, end)
        if segment.price is None or seg_end <= seg_start or seg_end <= at:
            continue
        seg_start = max(seg_start, at)
        out += tariff_steps(tariff, at, seg_start)
        reason = ",".join(segment.reasons) or "event"
        out.append(PriceStep(seg_start, seg_end, segment.price, f"openadr:{reason}"))
        at = seg_end
    out += tariff_steps(tariff, at, end)
    return tuple(out)


def demand_charge_at(tariff: Tariff | None, schedule: Sequence[Segment], moment: datetime) -> float | None:
    """The demand charge per kW in force: an OpenADR DEMAND_CHARGE where one applies, else the tariff's."""
    for segment in schedule:
        if segment.covers(moment) and segment.demand_charge is not None:
            return segment.demand_charge
    return tariff.demand_charge_kw if tariff is not None else None


def month_start(tariff: Tariff, moment: datetime) -> datetime:
    """Local midnight on the first of the month `moment` falls in: where the demand peak starts over."""
    zone = ZoneInfo(tariff.timezone)
    local = moment.astimezone(zone)
    return datetime(local.year, local.month, 1, tzinfo=zone)


def demand_peak_kw(
    readings: Iterable[tuple[datetime, float]], since: datetime | None = None, window: timedelta = DEMAND_WINDOW
) -> float:
    """The highest average site power over fixed clock-aligned windows (15 min by default), from readings.

    Readings are (moment, kW) samples; each window's average is the time-weighted mean of the samples in it,
    each sample holding until the next one (the last one holds for the rest of its window). Readings before
    `since` (the month's start) are ignored. Zero without readings.
    """
    samples = sorted((at, kw) for at, kw in readings if since is None or at >= since)
    if not samples:
        return 0.0
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    width = window.total_seconds()
    totals: dict[int, float] = {}
    for n, (at, kw) in enumerate(samples):
        offset = (at - epoch).total_seconds()
        bucket = int(offset // width)
        held_until = (samples[n + 1][0] - epoch).total_seconds() if n + 1 < len(samples) else (bucket + 1) * width
        while offset < held_until:
            bucket = int(offset // width)
            upto = min(held_until, (bucket + 1) * width)
            totals[bucket] = totals.get(bucket, 0.0) + kw * (upto - offset)
            offset = upto
    return max(total / width for total in totals.values())


def energy_cost(steps: Sequence[PriceStep], profile: Iterable[tuple[datetime, datetime, float]]) -> float:
    """What a power profile [(start, end, kW)] costs under a price timeline (unknown prices count as zero)."""
    total = 0.0
    for begin, finish, kw in profile:
        for step in steps:
            overlap = (min(finish, step.end) - max(begin, step.start)).total_seconds()
            if overlap > 0 and step.price is not None:
                total += kw * overlap / 3600.0 * step.price
    return total


__all__ = [
    "DAY_NAMES",
    "PriceStep",
    "Season",
    "Tariff",
    "TouPeriod",
    "day_prices",
    "demand_charge_at",
    "demand_peak_kw",
    "energy_cost",
    "month_start",
    "price_timeline",
    "season_of",
    "tariff_steps",
]
