"""The `[tariff]` section: what energy costs when no VTN sends prices, and how charging is planned around it.

A tariff is one of `flat_price`, `hourly` (24 prices, local hours 0..23) or `[[tariff.periods]]` (time-of-use
periods by weekday and, with `[[tariff.seasons]]`, by season), plus an optional `demand_charge_kw`. Times are
the site's local time (`site.timezone`); `holidays` are priced like Sundays. Periods must cover every minute
of every day of every season exactly once: an overlap or a gap is one error line each, with the field path and
the days and times at fault, so `gateway check-config` says what to fix. `[tariff.plan]` tunes the planner
(`gateway.planner`). `to_tariff` and `to_settings` turn the section into the pure core's `Tariff` and
`PlanSettings`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import date, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from gateway.config.numbers import Real, Whole
from gateway.tariff import DAY_NAMES, MINUTES_PER_DAY, Season

_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
_DATE = re.compile(r"^(\d{1,2})-(\d{1,2})$")
_LEAP_YEAR = 2024  # season dates are checked against a leap year, so 02-29 is a valid day


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _minutes(value: object) -> int:
    if not isinstance(value, str) or not (match := _TIME.match(value.strip())):
        raise ValueError(f"expected a local time like '16:00' (got {value!r})")
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes >= 60 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"{value!r} is not a time of day (00:00 … 24:00)")
    return hours * 60 + minutes


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _month_day(value: object) -> tuple[int, int]:
    if not isinstance(value, str) or not (match := _DATE.match(value.strip())):
        raise ValueError(f"expected a day of the year like '06-01' (month-day, got {value!r})")
    month, day = int(match.group(1)), int(match.group(2))
    try:
        date(_LEAP_YEAR, month, day)
    except ValueError:
        raise ValueError(f"{value!r} is not a day of the year") from None
    return month, day


def _days(value: object) -> frozenset[int]:
    """'all', 'weekdays', 'weekends', 'mon-fri', 'sat' or a list of those."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise ValueError(
            f"expected days like 'weekdays', 'weekends', 'all', 'mon-fri' or ['sat', 'sun'] (got {value!r})"
        )
    out: set[int] = set()
    for item in items:
        word = str(item).strip().lower()
        if word in ("all", "every day", "daily"):
            out |= set(range(7))
        elif word in ("weekdays", "weekday"):
            out |= set(range(5))
        elif word in ("weekends", "weekend"):
            out |= {5, 6}
        elif "-" in word:
            first, _, last = word.partition("-")
            if first[:3] not in DAY_NAMES or last[:3] not in DAY_NAMES:
                raise ValueError(f"unknown day range {item!r} (use mon … sun, like 'mon-fri')")
            a, b = DAY_NAMES.index(first[:3]), DAY_NAMES.index(last[:3])
            out |= {d % 7 for d in range(a, b + 1 if b >= a else b + 8)}
        elif word[:3] in DAY_NAMES and DAY_NAMES[DAY_NAMES.index(word[:3])].startswith(word[:3]):
            out.add(DAY_NAMES.index(word[:3]))
        else:
            raise ValueError(f"unknown day {item!r} (use mon … sun, weekdays, weekends or all)")
    return frozenset(out)


def _day_list(days: frozenset[int] | set[int]) -> str:
    if len(days) == 7:
        return "every day"
    ordered = sorted(days)
    runs: list[list[int]] = []
    for d in ordered:
        if runs and runs[-1][-1] == d - 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    return ", ".join(DAY_NAMES[r[0]] if len(r) == 1 else f"{DAY_NAMES[r[0]]}-{DAY_NAMES[r[-1]]}" for r in runs)


class SeasonEntry(_Strict):
    name: str = Field(min_length=1)
    start: tuple[int, int]  # written "06-01": first day included
    end: tuple[int, int]  # written "09-30": last day included

    @field_validator("start", "end", mode="before")
    @classmethod
    def _date(cls, value: object) -> tuple[int, int]:
        return _month_day(value)


class PeriodEntry(_Strict):
    name: str = Field(min_length=1)
    price: Real = Field(ge=-10, le=100)  # per kWh; negative prices exist on dynamic tariffs
    days: frozenset[int] = frozenset(range(7))
    start: int  # written "16:00"
    end: int  # written "21:00"; "24:00" is midnight at the end of the day
    seasons: tuple[str, ...] = ()  # empty: every season

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value: object) -> frozenset[int]:
        return _days(value)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time(cls, value: object) -> int:
        return _minutes(value)

    @model_validator(mode="after")
    def _ordered(self) -> PeriodEntry:
        if self.end <= self.start:
            raise _errors([(("end",), f"{_clock(self.end)} is not after start {_clock(self.start)}; "
                                      "split a period that runs past midnight in two")])
        return self


class PlanSection(_Strict):
    """How charging is planned around the prices (see `gateway.planner`)."""

    interval_min: Whole = Field(default=15, ge=1, le=60)
    horizon_h: Real = Field(default=48.0, gt=0, le=168)
    no_departure: Literal["charge-now", "dwell"] = "charge-now"
    default_dwell_h: Real = Field(default=8.0, gt=0, le=72)
    default_energy_kwh: Real | None = Field(default=None, gt=0, le=1000)  # None: all it can take


class TariffSection(_Strict):
    name: str = ""
    currency: str = Field(default="USD", min_length=1, max_length=8)
    flat_price: Real | None = Field(default=None, ge=-10, le=100)  # per kWh
    hourly: tuple[Real, ...] | None = None  # 24 prices per kWh, local hours 0..23
    periods: tuple[PeriodEntry, ...] = ()
    seasons: tuple[SeasonEntry, ...] = ()
    demand_charge_kw: Real | None = Field(default=None, ge=0, le=1000)  # per kW of the month's 15-min peak
    # Priced like a Sunday: "12-25" every year, "2026-11-26" once (floating holidays).
    holidays: tuple[tuple[int, int] | date, ...] = ()
    plan: PlanSection = Field(default_factory=PlanSection)

    @field_validator("holidays", mode="before")
    @classmethod
    def _holidays(cls, value: object) -> tuple[tuple[int, int] | date, ...]:
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected a list of days like ['12-25', '2026-11-26'] (got {value!r})")
        out: list[tuple[int, int] | date] = []
        for item in value:
            if isinstance(item, date):
                out.append(item)  # TOML's own date literal
                continue
            text = str(item).strip()
            if text.count("-") == 2:
                try:
                    out.append(date.fromisoformat(text))
                except ValueError:
                    raise ValueError(f"{item!r} is not a date (YYYY-MM-DD)") from None
            else:
                out.append(_month_day(text))
        return tuple(out)

    @field_validator("hourly")
    @classmethod
    def _day_of_hours(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and len(value) != 24:
            raise ValueError(f"expected 24 prices (local hours 0 … 23), got {len(value)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TariffSection:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        given = [k for k in ("flat_price", "hourly", "periods") if getattr(self, k) not in (None, ())]
        if len(given) > 1:
            problems.append(((given[1],), f"give one of flat_price, hourly or periods, not {' and '.join(given)}"))
        if self.seasons and not self.periods:
            problems.append((("seasons",), "seasons only apply to periods: add [[tariff.periods]] or drop them"))
        season_problems = self._season_problems()
        problems += season_problems
        if self.periods:
            problems += self._period_problems(coverage=not season_problems)
        if problems:
            raise _errors(problems)
        return self

    def _season_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        seen: dict[str, int] = {}
        for n, s in enumerate(self.seasons):
            if s.name in seen:
                problems.append((("seasons", n, "name"), f"season {s.name!r} is already seasons[{seen[s.name]}]"))
            seen.setdefault(s.name, n)
        if not self.seasons:
            return problems
        runs: dict[tuple[int, ...], list[list[date]]] = defaultdict(list)
        day = date(_LEAP_YEAR, 1, 1)
        while day.year == _LEAP_YEAR:
            holders = tuple(n for n, s in enumerate(self.core_seasons()) if s.contains(day.month, day.day))
            if len(holders) != 1:
                spans = runs[holders]
                if spans and spans[-1][-1] == day - timedelta(days=1):
                    spans[-1].append(day)
                else:
                    spans.append([day])
            day += timedelta(days=1)
        for holders, spans in runs.items():
            where = ", ".join(f"{a:%m-%d}..{b:%m-%d}" if a != b else f"{a:%m-%d}" for a, b in
                              ((s[0], s[-1]) for s in spans))
            if not holders:
                problems.append((("seasons",), f"no season covers {where}"))
            else:
                names = " and ".join(f"seasons[{n}] ({self.seasons[n].name!r})" for n in holders)
                problems.append((("seasons", holders[-1]), f"overlaps: {names} both cover {where}"))
        return problems

    def _period_problems(self, coverage: bool) -> list[tuple[tuple[str | int, ...], str]]:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        known = {s.name for s in self.seasons}
        for n, p in enumerate(self.periods):
            for name in p.seasons:
                if name not in known:
                    hint = f" (known: {', '.join(sorted(known))})" if known else " (no [[tariff.seasons]] defined)"
                    problems.append((("periods", n, "seasons"), f"unknown season {name!r}{hint}"))
        if problems or not coverage:
            return problems  # overlaps and gaps would be reported against seasons that are wrong
        scopes: list[str | None] = [s.name for s in self.seasons] or [None]
        overlaps: dict[tuple[int, int, int, int], dict[str | None, set[int]]] = defaultdict(lambda: defaultdict(set))
        gaps: dict[tuple[int, int], dict[str | None, set[int]]] = defaultdict(lambda: defaultdict(set))
        for season in scopes:
            for weekday in range(7):
                live = sorted(
                    (p.start, p.end, n) for n, p in enumerate(self.periods)
                    if weekday in p.days and (season is None or not p.seasons or season in p.seasons)
                )
                at = 0
                for i, (start, end, n) in enumerate(live):
                    if start > at:
                        gaps[(at, start)][season].add(weekday)
                    at = max(at, end)
                    for other_start, other_end, m in live[i + 1:]:
                        if other_start >= end:
                            break
                        overlap = (max(start, other_start), min(end, other_end), min(n, m), max(n, m))
                        overlaps[(overlap[2], overlap[3], overlap[0], overlap[1])][season].add(weekday)
                if at < MINUTES_PER_DAY:
                    gaps[(at, MINUTES_PER_DAY)][season].add(weekday)
        for (first, second, start, end), by_season in overlaps.items():
            problems.append((
                ("periods", second),
                f"{self.periods[second].name!r} overlaps periods[{first}] ({self.periods[first].name!r}) "
                f"{_clock(start)}-{_clock(end)} {_where(by_season)}",
            ))
        for (start, end), by_season in sorted(gaps.items()):
            problems.append((("periods",), f"no period covers {_clock(start)}-{_clock(end)} {_where(by_season)}"))
        return problems

    def core_seasons(self) -> tuple[Season, ...]:
        return tuple(Season(s.name, s.start, s.end) for s in self.seasons)

    def describe(self) -> str:
        """One line for `check-config`'s summary."""
        if self.periods:
            kind = f"{len(self.periods)} time-of-use periods" + (f" in {len(self.seasons)} seasons"
                                                                 if self.seasons else "")
        elif self.hourly:
            kind = "24 hourly prices"
        elif self.flat_price is not None:
            kind = f"flat {self.flat_price:g} {self.currency}/kWh"
        else:
            kind = "none (OpenADR prices only; without them every hour costs the same)"
        name = f"{self.name!r}: " if self.name else ""
        demand = f", demand charge {self.demand_charge_kw:g} {self.currency}/kW" if self.demand_charge_kw else ""
        return f"{name}{kind}{demand}; plans every {self.plan.interval_min} min over {self.plan.horizon_h:g} h"


def _where(by_season: dict[str | None, set[int]]) -> str:
    """'on mon-fri in summer; on sat, sun in winter' (seasons with the same days grouped)."""
    by_days: dict[frozenset[int], list[str]] = defaultdict(list)
    for season, days in by_season.items():
        by_days[frozenset(days)].append("" if season is None else season)
    parts = []
    for weekdays, seasons in by_days.items():
        named = [s for s in seasons if s]
        parts.append(f"on {_day_list(weekdays)}" + (f" in {', '.join(named)}" if named else ""))
    return "; ".join(parts)


def _errors(problems: list[tuple[tuple[str | int, ...], str]]) -> ValidationError:
    """Several problems at once, each at its own path (pydantic prefixes the section's own path)."""
    return ValidationError.from_exception_data(
        "TariffSection",
        [InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=None)
         for loc, message in problems],
    )


__all__ = ["PeriodEntry", "PlanSection", "SeasonEntry", "TariffSection"]
