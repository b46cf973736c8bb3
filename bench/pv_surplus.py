"""Solar first over a day: real ACN sessions charged in `now`, `pv` and `minpv` modes under a PV profile.

One weekday of real sessions from ACN-Data (Caltech, 2020; Lee, Li, Low, "ACN-Data: Analysis and
Applications of an Open EV Charging Dataset", e-Energy '19) at a workplace with a PV array and an office
load, on a clear day and a cloudy day. The PV and the office load are synthetic and documented here:

- PV: `kwp · sin(π·(t − sunrise)/(sunset − sunrise))^1.5` between sunrise 07:00 and sunset 17:10 local (a
  January day in Pasadena); the cloudy day multiplies it by a seeded two-state cloud process, one state a
  minute: clear (factor 1.0) or cloud (0.25–0.45), leaving a cloud with probability 0.25 and entering one
  with 0.12, so clouds last a few minutes and come many times an hour (the case hysteresis is for).
- Office: `base_kw` all day plus `office_kw` from 08:00 to 18:00, with a ±10 % seeded minute-to-minute wiggle.

Every session is a single-phase car on 230 V taking 6–32 A in whole amps; it wants `kWhDelivered` and
leaves at its real `disconnectTime`. Each step (30 s) the gateway's own core (`gateway.surplus.
decide_surplus`) sees the grid meter and the cars' draws of the step before (the one-step lag of a real
loop), its caps are applied (floored to whole amps, 0 below 6 A) and the cars draw min(cap, 32 A, what is
left). No breaker or DR limit binds here (the allocator would add those); `now` charges every car at 32 A.

Measured per mode: sessions met (≥ 95 % of their energy), EV energy, the share of EV energy covered by the
PV surplus (self-consumption: EV power less the grid import it adds), the grid import for charging, and
contactor switchings per session (a car's current going from 0 to > 0 or back, after its first start).

    .venv/bin/python bench/pv_surplus.py [--day 2020-01-14] [--kwp 150] [--base-kw 20] [--office-kw 40]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.domain import power_kw_per_amp
from gateway.surplus import GridPoint, Hold, Mode, PvCharger, PvSettings, decide_surplus

DATA = Path(__file__).resolve().parents[2] / "shared/data/acn-caltech-2020/acndata_sessions_caltech_2020.json"
ZONE = ZoneInfo("America/Los_Angeles")
STEP = timedelta(seconds=30)
KW_PER_A = power_kw_per_amp(1, 230.0)
MIN_A, MAX_A = 6.0, 32.0
SUNRISE_H, SUNSET_H = 7.0, 17.0 + 10 / 60
MET_SHARE = 0.95


@dataclass
class Session:
    id: str
    arrive: datetime
    leave: datetime
    want_kwh: float
    got_kwh: float = 0.0
    draw_kw: float = 0.0
    switches: int = 0
    started: bool = False


def sessions_of(day: date, path: Path = DATA) -> list[Session]:
    items = json.loads(path.read_text())["_items"]
    start = datetime(day.year, day.month, day.day, tzinfo=ZONE)
    end = start + timedelta(days=1)
    out = []
    for item in items:
        arrive = parsedate_to_datetime(item["connectionTime"]).astimezone(ZONE)
        leave = min(parsedate_to_datetime(item["disconnectTime"]).astimezone(ZONE), end)
        if start <= arrive < end and leave > arrive and item["kWhDelivered"] > 0:
            out.append(Session(item["sessionID"], arrive, leave, float(item["kWhDelivered"])))
    return sorted(out, key=lambda s: s.arrive)


def clear_sky(kwp: float) -> Callable[[datetime], float]:
    def pv(t: datetime) -> float:
        h = t.hour + t.minute / 60 + t.second / 3600
        if not SUNRISE_H < h < SUNSET_H:
            return 0.0
        return float(kwp * math.sin(math.pi * (h - SUNRISE_H) / (SUNSET_H - SUNRISE_H)) ** 1.5)
    return pv


def cloudy(kwp: float, seed: int = 7) -> Callable[[datetime], float]:
    clear = clear_sky(kwp)
    rng = random.Random(seed)
    factors: list[float] = []
    in_cloud = False
    for _ in range(24 * 60):
        if in_cloud and rng.random() < 0.25:
            in_cloud = False
        elif not in_cloud and rng.random() < 0.12:
            in_cloud = True
        factors.append(rng.uniform(0.25, 0.45) if in_cloud else 1.0)

    def pv(t: datetime) -> float:
        return clear(t) * factors[t.hour * 60 + t.minute]
    return pv


def office(base_kw: float, office_kw: float, seed: int = 11) -> Callable[[datetime], float]:
    rng = random.Random(seed)
    wiggle = [rng.uniform(0.9, 1.1) for _ in range(24 * 60)]

    def load(t: datetime) -> float:
        busy = office_kw if 8 <= t.hour < 18 else 0.0
        return (base_kw + busy) * wiggle[t.hour * 60 + t.minute]
    return load


@dataclass
class Result:
    day: str
    mode: str
    sessions: int
    met: int = 0
    ev_kwh: float = 0.0
    solar_kwh: float = 0.0
    grid_kwh: float = 0.0
    switches: int = 0
    pv_kwh: float = 0.0
    exported_kwh: float = 0.0


def simulate(day: date, label: str, mode: Mode, pv: Callable[[datetime], float], load: Callable[[datetime], float],
             settings: PvSettings, sessions: Sequence[Session]) -> Result:
    cars = [Session(s.id, s.arrive, s.leave, s.want_kwh) for s in sessions]
    t = datetime(day.year, day.month, day.day, tzinfo=ZONE)
    end = t + timedelta(days=1)
    hours = STEP.total_seconds() / 3600
    memory: dict[str, Hold] = {}
    grid_kw = load(t) - pv(t)
    result = Result(label, mode.value if settings.stop_delay or mode is not Mode.PV else "pv, no delays", len(cars))
    while t < end:
        here = [c for c in cars if c.arrive <= t < c.leave]
        chargers = [PvCharger(c.id, mode, MIN_A, MAX_A, KW_PER_A, connected=True, draw_kw=c.draw_kw) for c in here]
        # the grid meter and the cars' draws as they were a step ago
        decision = decide_surplus(settings, chargers, GridPoint(grid_kw), memory, t)
        memory = dict(decision.memory)
        for c in cars:
            if c not in here:
                c.draw_kw = 0.0
                continue
            cap = MAX_A if mode in (Mode.NOW, Mode.PLAN) else decision.caps_a.get(c.id, 0.0)
            amps = float(math.floor(min(cap, MAX_A) + 1e-9))
            amps = amps if amps >= MIN_A else 0.0
            left = c.want_kwh - c.got_kwh
            kw = min(amps * KW_PER_A, max(0.0, left) / hours)
            if (kw > 0) != (c.draw_kw > 0) and (c.started or kw > 0):
                if c.started:
                    c.switches += 1
                c.started = True
            c.draw_kw = kw
            c.got_kwh += kw * hours
        ev_kw = sum(c.draw_kw for c in cars)
        site_kw, house_kw = load(t), load(t) - pv(t)
        grid_kw = site_kw + ev_kw - pv(t)
        from_grid = max(0.0, grid_kw) - max(0.0, house_kw)  # the import the EVs add
        result.ev_kwh += ev_kw * hours
        result.grid_kwh += from_grid * hours
        result.solar_kwh += (ev_kw - from_grid) * hours
        result.pv_kwh += pv(t) * hours
        result.exported_kwh += max(0.0, -grid_kw) * hours
        t += STEP
    result.met = sum(c.got_kwh >= MET_SHARE * c.want_kwh for c in cars)
    result.switches = sum(c.switches for c in cars)
    return result


def table(rows: Sequence[Result]) -> str:
    head = ("day", "mode", "sessions", "met", "EV kWh", "PV share of EV kWh", "grid kWh for EVs",
            "switchings / session", "PV kWh", "exported kWh")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        share = 100.0 * r.solar_kwh / r.ev_kwh if r.ev_kwh else 0.0
        lines.append(f"| {r.day} | {r.mode} | {r.sessions} | {r.met} | {r.ev_kwh:.0f} | {share:.0f} % | "
                     f"{r.grid_kwh:.0f} | {r.switches / max(1, r.sessions):.2f} | {r.pv_kwh:.0f} | "
                     f"{r.exported_kwh:.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--day", default="2020-01-14", help="a weekday of ACN-Data Caltech 2020 (local date)")
    parser.add_argument("--kwp", type=float, default=150.0, help="PV array peak, kW")
    parser.add_argument("--base-kw", type=float, default=20.0, help="office load all day, kW")
    parser.add_argument("--office-kw", type=float, default=40.0, help="office load added 08:00-18:00, kW")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args(argv)
    if not args.data.exists():
        print(f"no ACN data at {args.data} (see ../shared/data/acn-caltech-2020/README.md)", file=sys.stderr)
        return 2
    day = date.fromisoformat(args.day)
    sessions = sessions_of(day, args.data)
    load = office(args.base_kw, args.office_kw)
    settings = PvSettings(start_delay=timedelta(seconds=60), stop_delay=timedelta(seconds=180))
    no_delays = PvSettings(start_delay=timedelta(0), stop_delay=timedelta(0))
    rows = []
    for label, sun in (("clear", clear_sky(args.kwp)), ("cloudy", cloudy(args.kwp))):
        for mode in (Mode.NOW, Mode.PV, Mode.MINPV):
            rows.append(simulate(day, label, mode, sun, load, settings, sessions))
        rows.append(simulate(day, label, Mode.PV, sun, load, no_delays, sessions))
    print(f"ACN-Data Caltech {day} ({len(sessions)} sessions, {sum(s.want_kwh for s in sessions):.0f} kWh asked); "
          f"PV {args.kwp:g} kWp; office {args.base_kw:g} + {args.office_kw:g} kW; start/stop delays 60/180 s; "
          f"step {STEP.total_seconds():g} s; `now` is the reference")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
