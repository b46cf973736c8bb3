"""`gateway plan FILE|-`: the charging plan for a site at one moment, and what it is expected to cost.

The input is `gateway allocate`'s JSON plus the price and limit timelines: `tariff` (the keys of the
config's `[tariff]`, times in `timezone`), `prices` [{start, end?, price}] (as OpenADR price events would
give; they win over the tariff), `limits` [{start, end?, site_kw?, ev_kw?}] (the limit timeline; without
it `site_limit_kw`/`ev_limit_kw` hold throughout), `ev_capacity_kw?`, `peak_kw?` (the month's 15-minute
peak so far: set it to keep under it) and `plan` (the keys of `[tariff.plan]`). It prints each session's
planned power over time, the expected cost against charging as fast as possible, and the allocation now
with the plan's targets applied (`--json` for the same as JSON). `--config SITE.toml` takes the tariff, time
zone and normal EV capacity from a site config where the input leaves them out. Bad input (or a bad site
config): one line per problem, exit 2.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from gateway.planner import Plan

NAME = "plan"
HELP = "plan charging against prices and the limit timeline from a JSON description; print profiles and cost"


@functools.cache
def input_model() -> type[BaseModel]:
    """The input's pydantic model, built on first use: pydantic stays out of every other command's start-up."""
    from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

    from gateway.allocation_input import AllocationIn
    from gateway.config.numbers import Real
    from gateway.config.tariff import PlanSection, TariffSection

    class Stretch(BaseModel):
        """A stretch of time from `start`, open-ended without `end`."""

        model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
        start: AwareDatetime
        end: AwareDatetime | None = None

    class PriceIn(Stretch):
        price: Real = Field(ge=-10, le=100)

    class LimitIn(Stretch):
        site_kw: Real | None = Field(default=None, ge=0)
        ev_kw: Real | None = Field(default=None, ge=0)

    class PlanIn(AllocationIn):
        tariff: TariffSection | None = None
        timezone: str = "UTC"
        prices: tuple[PriceIn, ...] = ()
        limits: tuple[LimitIn, ...] = ()
        ev_capacity_kw: Real | None = Field(default=None, ge=0)
        peak_kw: Real | None = Field(default=None, ge=0)
        plan: PlanSection | None = None

        @field_validator("timezone")
        @classmethod
        def _zone(cls, value: str) -> str:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r} (like 'America/Los_Angeles')") from None
            return value

        @model_validator(mode="after")
        def _timelines(self) -> PlanIn:
            problems: list[str] = []
            for kind, items in (("prices", self.prices), ("limits", self.limits)):
                ordered = sorted(range(len(items)), key=lambda n: items[n].start)
                for n, item in enumerate(items):
                    if item.end is not None and item.end <= item.start:
                        problems.append(f"{kind}[{n}].end: not after its start")
                for a, b in itertools.pairwise(ordered):
                    end_a = items[a].end
                    if end_a is None or end_a > items[b].start:
                        problems.append(f"{kind}[{b}].start: overlaps {kind}[{a}]")
            if self.plan is not None and self.tariff is not None and "plan" in self.tariff.model_fields_set:
                problems.append("plan: give the planner's settings either here or in tariff.plan, not both")
            if problems:
                raise ValueError("\n".join(problems))
            return self

    return PlanIn


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the input JSON, or - for standard input")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--config", metavar="SITE_TOML",
                        help="take the tariff, time zone and normal EV capacity from this site config "
                             "where the input does not give them")


def parse_plan_input(data: Any) -> Any:
    """The validated input (an instance of `input_model()`), or ConfigError with one line per problem."""
    from gateway.allocation_input import validate_input

    return validate_input(input_model(), data)


def run(args: argparse.Namespace) -> int:
    from gateway.allocate import ProblemError
    from gateway.allocation_input import read_json_input
    from gateway.config import ConfigError

    try:
        data = read_json_input(args.file)
        spec = parse_plan_input(data)
        if args.config:
            spec = with_site_config(spec, data, args.config)
        result = compute(spec)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except ProblemError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(result, indent=2) if args.json else render(result), flush=True)
    except BrokenPipeError:
        # `gateway plan … | head`: the reader has seen enough; say nothing more (not even at exit).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def with_site_config(spec: Any, data: dict[str, Any], path: str) -> Any:
    """The input with the site config's tariff, time zone and EV capacity where the input has none."""
    from gateway.assembly import ev_capacity_kw
    from gateway.config import load_config

    config = load_config(path)
    update: dict[str, Any] = {}
    if "tariff" not in data:
        update["tariff"] = config.tariff
    if "timezone" not in data:
        update["timezone"] = config.site.timezone
    if "ev_capacity_kw" not in data:
        update["ev_capacity_kw"] = ev_capacity_kw(config)
    return spec.model_copy(update=update)


def compute(spec: Any) -> dict[str, Any]:
    """The plan, its baseline and the allocation now, as plain data (what `--json` prints)."""
    from dataclasses import replace

    from gateway.allocate import allocate
    from gateway.allocation_input import to_problem
    from gateway.assembly import plan_settings_of, tariff_of
    from gateway.config.tariff import PlanSection, TariffSection
    from gateway.domain import Segment
    from gateway.planner import apply_targets, asap_plan, build_slots, make_plan, targets
    from gateway.tariff import demand_charge_at, price_timeline

    section = spec.plan or (spec.tariff.plan if spec.tariff is not None else PlanSection())
    tariff = tariff_of(spec.tariff, spec.timezone) if spec.tariff is not None else None
    tariff_section = (spec.tariff or TariffSection()).model_copy(update={"plan": section})
    settings = plan_settings_of(tariff_section, spec.ev_capacity_kw)
    now = spec.now
    horizon_end = now + settings.horizon
    if spec.limits:
        limits = tuple(Segment(x.start, x.end, x.site_kw, x.ev_kw, reasons=(f"limits[{n}]",))
                       for n, x in enumerate(spec.limits))
    else:
        limits = (Segment(now, None, spec.site_limit_kw, spec.ev_limit_kw),)
    price_events = tuple(Segment(p.start, p.end, price=p.price, reasons=(f"prices[{n}]",))
                         for n, p in enumerate(spec.prices))
    steps = price_timeline(tariff, now, horizon_end, price_events)
    problem = to_problem(spec)
    evses = list(problem.evses)
    slots = build_slots(now, settings, schedule=limits, prices=steps, non_ev_kw=spec.non_ev_kw)
    peak = spec.peak_kw
    plan = make_plan(evses, slots, now, settings, peak_kw=peak)
    baseline = asap_plan(evses, slots, now, settings)
    planned = apply_targets(evses, plan)
    # The allocation now follows the limits in force now, from the timeline as much as from the input.
    current = next((seg for seg in limits if seg.covers(now)), None)
    site_kw = _tightest(problem.limits.site_kw, current.site_kw if current else None)
    ev_limit = _tightest(problem.limits.ev_kw, current.ev_kw if current else None, spec.ev_capacity_kw)
    if plan.peak_kw is not None:
        site_kw = _tightest(site_kw, plan.peak_kw)
    site_limits = replace(problem.limits, site_kw=site_kw, ev_kw=ev_limit)
    problem_now = replace(problem, evses=planned, limits=site_limits)
    allocation = allocate(problem_now)
    wants = targets(plan, evses)
    # What raising the month's peak costs: the demand charge in force now (an event's, else the tariff's).
    charge = demand_charge_at(tariff, price_events, now)
    zone = ZoneInfo(spec.timezone)
    currency = tariff.currency if tariff is not None else ""
    sessions = []
    for evse in evses:
        session = plan.sessions.get(evse.id)
        if session is None:
            continue
        sessions.append({
            "id": evse.id,
            "requested_kwh": round(session.requested_kwh, 3)
            if session.energy_known or settings.default_energy_kwh is not None else None,
            "energy_given": session.energy_known,
            "planned_kwh": round(session.planned_kwh, 3),
            "unmet_kwh": round(session.unmet_kwh, 3),
            "departure": session.departure.astimezone(zone).isoformat(),
            "departure_given": evse.departure is not None and evse.departure > now,
            "charge_now": session.charge_now,
            "cost": round(plan.session_cost(evse.id), 4),
            "want_a": wants.get(evse.id),
            "amps_now": allocation.amps.get(evse.id, 0.0),
            "binding": allocation.binding.get(evse.id, ""),
            "profile": _profile(plan, session.kwh, zone),
        })
    energy = sum(s.planned_kwh for s in plan.sessions.values())
    base_energy = sum(s.planned_kwh for s in baseline.sessions.values())
    ev_kw = plan.ev_kw()
    return {
        "now": now.astimezone(zone).isoformat(),
        "timezone": spec.timezone,
        "currency": currency,
        "tariff": tariff.name if tariff is not None else None,
        "slots": len(slots),
        "sessions": sessions,
        "planned": {"kwh": round(energy, 3), "cost": round(plan.cost(), 4),
                    "peak_ev_kw": round(max(ev_kw, default=0.0), 3),
                    "peak_target_kw": None if plan.peak_kw is None else round(plan.peak_kw, 3),
                    "peak_raise_cost": _raise_cost(spec.peak_kw, plan.peak_kw, charge)},
        "as_fast_as_possible": {"kwh": round(base_energy, 3), "cost": round(baseline.cost(), 4),
                                "peak_ev_kw": round(max(baseline.ev_kw(), default=0.0), 3)},
        "site": [{"start": s.start.astimezone(zone).isoformat(), "end": s.end.astimezone(zone).isoformat(),
                  "ev_kw": round(kw, 3), "ev_limit_kw": None if s.ev_cap_kw == float("inf") else
                  round(s.ev_cap_kw, 3), "price": s.price} for s, kw in zip(slots, ev_kw, strict=True)],
        "allocation": dict(allocation.amps),
        "overloaded": list(allocation.overloaded),  # the allocator states them with units
    }


def _raise_cost(month_peak: float | None, target: float | None, charge: float | None) -> float | None:
    if month_peak is None or target is None or charge is None:
        return None
    return round(max(0.0, target - month_peak) * charge, 4)


def _tightest(*limits: float | None) -> float | None:
    known = [x for x in limits if x is not None]
    return min(known) if known else None


def _profile(plan: Plan, kwh: Sequence[float], zone: ZoneInfo) -> list[dict[str, Any]]:
    """Consecutive slots at the same power and price merged: [{start, end, kw, price}], charging only."""
    out: list[dict[str, Any]] = []
    for slot, energy in zip(plan.slots, kwh, strict=True):
        kw = round(energy / slot.hours, 3) if slot.hours > 0 else 0.0
        if kw <= 0:
            continue
        start, end = slot.start.astimezone(zone).isoformat(), slot.end.astimezone(zone).isoformat()
        if out and out[-1]["end"] == start and out[-1]["kw"] == kw and out[-1]["price"] == slot.price:
            out[-1]["end"] = end
        else:
            out.append({"start": start, "end": end, "kw": kw, "price": slot.price})
    return out


def _when(iso: str, now: datetime) -> str:
    moment = datetime.fromisoformat(iso)
    return f"{moment:%H:%M}" if moment.date() == now.date() else f"{moment:%a %H:%M}"


def render(result: dict[str, Any]) -> str:
    """The human view: a few lines per session, then the site's totals."""
    now = datetime.fromisoformat(result["now"])
    cur = f" {result['currency']}" if result["currency"] else ""
    lines = [f"plan at {now:%Y-%m-%d %H:%M} {result['timezone']}"
             + (f" on tariff {result['tariff']!r}" if result["tariff"] else "")
             + f", {result['slots']} slots"]
    for s in result["sessions"]:
        left = f", {s['unmet_kwh']:g} kWh short" if s["unmet_kwh"] > 0.001 else ""
        leave = _when(s["departure"], now) + ("" if s["departure_given"] else " (default)")
        mode = " charge-now" if s["charge_now"] else ""
        want = "no cap" if s["want_a"] is None else f"{s['want_a']:g} A"
        asked = "as much as it takes" if s["requested_kwh"] is None else f"{s['requested_kwh']:g} kWh"
        if s["requested_kwh"] is not None and not s["energy_given"]:
            asked += " (default)"
        lines.append(f"{s['id']}:{mode} {s['planned_kwh']:g} kWh planned of {asked} by {leave}{left}, "
                     f"cost {s['cost']:.2f}{cur}; now: plan {want}, allocated {s['amps_now']:g} A ({s['binding']})")
        for piece in s["profile"]:
            lines.append(f"    {_when(piece['start'], now)}-{_when(piece['end'], now)}  {piece['kw']:7.2f} kW"
                         f"  at {piece['price']:g}")
    p, b = result["planned"], result["as_fast_as_possible"]

    def per_kwh(part: dict[str, Any]) -> str:
        return f"{part['cost'] / part['kwh']:.4f}{cur}/kWh" if part["kwh"] > 0 else "-"

    lines.append(f"planned: {p['kwh']:g} kWh for {p['cost']:.2f}{cur} ({per_kwh(p)}), EV peak {p['peak_ev_kw']:g} kW"
                 + (f", site target {p['peak_target_kw']:g} kW" if p["peak_target_kw"] is not None else "")
                 + (f" (raising the month's peak costs {p['peak_raise_cost']:.2f}{cur})"
                    if p["peak_raise_cost"] else ""))
    lines.append(f"as fast as possible: {b['kwh']:g} kWh for {b['cost']:.2f}{cur} ({per_kwh(b)}), "
                 f"EV peak {b['peak_ev_kw']:g} kW")
    lines += [f"overloaded now (every charger under it gets 0 A): {line}" for line in result.get("overloaded", ())]
    return "\n".join(lines)
