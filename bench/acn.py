"""Scheduling quality on real charging sessions: our allocator side by side with acnportal's baselines.

Runs the gateway's `allocate` (through `GatewayAlgorithm`, an acnportal `BaseAlgorithm`) and acnportal's
uncontrolled, EDF, LLF and round-robin schedulers on the same ACN-Data sessions from the Caltech garage,
on acnportal's own Caltech network model (`caltech_acn(basic_evse=True, voltage=208, transformer_cap=CAP)`),
and prints one table: energy delivered, sessions fully met, violations found by acnportal's own
feasibility check, pilots strictly between 0 and 6 A, peak kW, Jain fairness, pilot changes per
session-hour and wall time. Optional cases: a demand-response window (the transformer rows derated), and
SCE's TOU EV tariff shipped with acnportal (energy cost per kWh delivered, demand charge on the peak).
Run on purpose, never as a test: `python bench/acn.py --start 2020-01-13 --days 7 --cap-kw 50`.
Data: ACN-Data (Lee, Li, Low, e-Energy '19, doi:10.1145/3307772.3328313), read in place, never copied.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

if __package__ in (None, ""):  # run as a script: make `bench.*` and `gateway.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from acnportal.acnsim import Simulator, analysis
from acnportal.acnsim.events import EventQueue, PluginEvent
from acnportal.acnsim.events.acndata_events import _convert_to_ev
from acnportal.acnsim.network.sites import caltech_acn
from acnportal.algorithms import (
    BaseAlgorithm,
    RoundRobin,
    SortedSchedulingAlgo,
    UncontrolledCharging,
    earliest_deadline_first,
    first_come_first_served,
    least_laxity_first,
)
from acnportal.signals.tariffs import TimeOfUseTariff

from bench.acn_adapter import Rates, evse_state, linear_limits, site_circuit, snap_to_allowed, station_rates
from gateway.allocate import Problem, Sharing, allocate
from gateway.domain import Allocation, EvseState
from gateway.smoothing import ChargerMemory, SmoothingSettings, remembered, smooth

# The shared data folder sits beside the repository (../shared); it is read in place, never copied.
DATA = (Path(__file__).resolve().parents[2] / "shared" / "data" / "acn-caltech-2020"
        / "acndata_sessions_caltech_2020.json")
TZ = ZoneInfo("America/Los_Angeles")
VOLTAGE = 208.0
TARIFF = "sce_tou_ev_4_march_2019"
CHANGE_A = 0.05  # a pilot moving by less is not a change (OCPP sends multiples of 0.1 A)

# A planner caps chargers below their maximum (`want_a`) to shift energy to cheap periods. It gets the
# chargers, now, and the price ($/kWh) per period from now on; it answers amps per charger id.
Planner = Callable[[Sequence[EvseState], datetime, timedelta, Sequence[float]], Mapping[str, float]]


# ------------------------------------------------------------------------------------------- our scheduler


class GatewayAlgorithm(BaseAlgorithm):  # type: ignore[misc]  # acnportal is untyped
    """The gateway's decision chain (allocate, then smoothing) as an acnportal scheduler, by default in the
    runtime's default sharing (`control.sharing = "optimise"`) with the limits in force passed each period.

    It reads only what the baselines read: the interface's constraint set, EVSE rates and voltages, the
    active sessions with their remaining energy and estimated departure, the current time and, with a
    planner, the tariff. It answers one period of pilots and is called every period, like EDF and LLF.
    """

    def __init__(
        self,
        arc_deg: float = 2.0,
        min_on: timedelta = timedelta(minutes=15),
        deadband_a: float = 0.5,
        planner: Planner | None = None,
        sharing: Sharing = Sharing.OPTIMISE,
    ) -> None:
        super().__init__()
        self.max_recompute = 1
        self.arc_deg = arc_deg
        self.min_on = min_on
        self.settings = SmoothingSettings(deadband_a=deadband_a)
        self.planner = planner
        self.sharing = sharing
        self.memory: dict[str, ChargerMemory] = {}
        self.previous: dict[str, float] = {}  # each station's limit in force (the optimiser's starting point)
        self.session_at: dict[str, str] = {}
        self._limits_key: bytes | None = None
        self._limits: list[Any] = []

    def _linear(self, infrastructure: Any) -> list[Any]:
        key = np.asarray(infrastructure.constraint_limits, dtype=float).tobytes()
        if key != self._limits_key:  # only a demand-response window changes them
            self._limits = linear_limits(infrastructure, self.arc_deg)
            self._limits_key = key
        return self._limits

    def schedule(self, active_sessions: list[Any]) -> dict[str, list[float]]:
        iface = self.interface
        infra = iface.infrastructure_info()
        period = timedelta(minutes=iface.period)
        now = iface.current_datetime
        rates: dict[str, Rates] = {}
        evses: list[EvseState] = []
        for s in active_sessions:
            if self.session_at.get(s.station_id) != s.session_id:
                self.memory.pop(s.station_id, None)  # a new car: no rotation memory from the last one
                self.session_at[s.station_id] = s.session_id
            i = infra.get_station_index(s.station_id)
            rates[s.station_id] = station_rates(infra, i)
            evses.append(
                evse_state(s.station_id, rates[s.station_id], float(infra.voltages[i]), float(s.remaining_demand),
                           now + period * (int(s.estimated_departure) - iface.current_time), period)
            )
        if self.planner is not None and evses:
            prices = list(iface.get_prices(int(24 * 60 / iface.period)))
            caps = self.planner(evses, now, period, prices)
            evses = [_capped(e, caps.get(e.id)) for e in evses]
        evses = remembered(evses, self.memory)
        self.previous = {sid: memory.limit_a for sid, memory in self.memory.items()}
        raw = self.decide(evses, now, self._linear(infra))
        limits, self.memory, _ = smooth(raw, evses, self.memory, now, self.settings)
        return {sid: [snap_to_allowed(limits.get(sid, 0.0), rates[sid])] for sid in rates}

    def decide(self, evses: list[EvseState], now: datetime, linear: list[Any]) -> Allocation:
        # The runtime's budget: half of its default 1 s tick (gateway.assembly.site_of)
        return allocate(Problem([site_circuit()], evses, now, min_on_time=self.min_on, linear=linear,
                                sharing=self.sharing, previous=self.previous, optimise_time_s=0.5))


class OnlineLP(GatewayAlgorithm):
    """A reference, not a contender: each period, the currents maximising a weighted throughput (an LP).

    Same inputs as ours and the baselines (no future arrivals). The weight of a car is
    `1 + beta / max(h, 5 min)` with `h` its hours to departure (`edf`) or its laxity in hours (`laxity`),
    plus `critical` while its laxity is under an hour and `sticky` while it is charging. The answer is
    fractional and, unless `minimum_a` makes each current 0 or at least that (a small MILP), ignores the
    6 A minimum (its sub-6 A pilots are counted like everyone's): it maps what online information allows,
    trading energy, sessions met and pilot changes, without our allocator's greedy structure.
    """

    def __init__(self, key: str = "edf", beta: float = 1.0, critical: float = 10.0, sticky: float = 0.0,
                 minimum_a: float = 0.0) -> None:
        super().__init__()
        self.key, self.beta, self.critical, self.sticky = key, beta, critical, sticky
        self.minimum_a = minimum_a

    def decide(self, evses: list[EvseState], now: datetime, linear: list[Any]) -> Allocation:
        from bench.acn_bound import weighted_period_lp

        weights, upper = [], []
        for e in evses:
            done = e.energy_needed_kwh is not None and e.energy_needed_kwh <= 1e-6
            upper.append(0.0 if done else e.max_a if e.want_a is None else min(e.max_a, e.want_a))
            left_h = (e.departure - now).total_seconds() / 3600 if e.departure is not None else math.inf
            need_h = (e.energy_needed_kwh or 0.0) / (e.kw_per_a * e.max_a) if e.max_a > 0 else 0.0
            lax_h = left_h - need_h
            h = left_h if self.key == "edf" else lax_h
            w = 1.0 + self.beta / max(h, 1 / 12) + (self.critical if 0.0 <= lax_h < 1.0 else 0.0)
            weights.append(w + (self.sticky if e.on_since is not None else 0.0))
        x = weighted_period_lp(weights, upper, [e.id for e in evses], linear, self.minimum_a)
        amps = {e.id: math.floor(a * 10 + 1e-6) / 10 for e, a in zip(evses, x, strict=True)}  # 0.1 A grid
        return Allocation(amps=amps, binding={}, overloaded=())


def references() -> dict[str, Callable[[], Any]]:
    return {
        "ref: online LP, EDF weights": partial(OnlineLP, "edf", 1.0, 10.0, 0.0),
        "ref: online LP, laxity weights": partial(OnlineLP, "laxity", 1.0, 3.0, 0.0),
        "ref: online LP, laxity, sticky": partial(OnlineLP, "laxity", 1.0, 3.0, 2.0),
        "ref: online MILP, laxity, sticky, 6 A min": partial(OnlineLP, "laxity", 1.0, 3.0, 2.0, 6.0),
    }


def _capped(evse: EvseState, cap: float | None) -> EvseState:
    """The charger with a planner's cap on top of the one it already has."""
    if cap is None:
        return evse
    want = cap if evse.want_a is None else min(cap, evse.want_a)
    return replace(evse, want_a=want)


class Derated(BaseAlgorithm):  # type: ignore[misc]
    """Any scheduler, with some constraint rows lowered by a factor inside demand-response windows.

    The lowered limits reach the inner scheduler through the interface's constraint set, as a site
    controller would see them; every algorithm gets the same.
    """

    def __init__(self, inner: Any, factor_at: Callable[[datetime], float], rows: Sequence[int]) -> None:
        super().__init__()
        self.inner = inner
        self.factor_at = factor_at
        self.rows = list(rows)
        self.max_recompute = 1
        self._base: np.ndarray | None = None

    def register_interface(self, interface: Any) -> None:
        super().register_interface(interface)
        self.inner.register_interface(interface)

    def schedule(self, active_sessions: list[Any]) -> dict[str, list[float]]:
        # The harness plays the utility here: it lowers the network's own limits, which is also what
        # acnportal's feasibility check and every scheduler's view then read.
        network = self.interface._simulator.network
        if self._base is None:
            self._base = np.array(network.magnitudes, dtype=float)
        now = self.interface.current_datetime
        limits = self._base.copy()
        limits[self.rows] *= self.factor_at(now)
        network.magnitudes = limits
        result: dict[str, list[float]] = self.inner.schedule(active_sessions)
        return result


class J1772Cut(BaseAlgorithm):  # type: ignore[misc]
    """Any scheduler with its pilots under J1772's 6 A minimum sent as 0 A, which is what a car does with
    them: a reference for what a baseline's sub-6 A pilots are worth (the room they free is not handed on)."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        self.max_recompute = 1

    def register_interface(self, interface: Any) -> None:
        super().register_interface(interface)
        self.inner.register_interface(interface)

    def schedule(self, active_sessions: list[Any]) -> dict[str, list[float]]:
        pilots: dict[str, list[float]] = self.inner.schedule(active_sessions)
        return {sid: [a if a >= 6.0 - 1e-9 else 0.0 for a in rates] for sid, rates in pilots.items()}


def j1772_cut() -> dict[str, Callable[[], Any]]:
    """EDF and LLF with their sub-6 A pilots sent as 0 A (`--j1772`)."""
    return {
        "EDF, pilots under 6 A as 0": lambda: J1772Cut(SortedSchedulingAlgo(earliest_deadline_first)),
        "LLF, pilots under 6 A as 0": lambda: J1772Cut(SortedSchedulingAlgo(least_laxity_first)),
    }


def baselines() -> dict[str, Callable[[], Any]]:
    return {
        "uncontrolled": UncontrolledCharging,
        "EDF": lambda: SortedSchedulingAlgo(earliest_deadline_first),
        "LLF": lambda: SortedSchedulingAlgo(least_laxity_first),
        # acnportal's default 0.1 A increment makes round robin ~10x slower than the rest for the same answer
        # within 1 A; it still gets every constraint checked exactly
        "round robin": lambda: RoundRobin(first_come_first_served, continuous_inc=1.0),
    }


# ------------------------------------------------------------------------------------------- sessions


@dataclass(frozen=True, slots=True)
class Scenario:
    start: datetime  # local midnight of the first day
    days: int
    period_min: float
    cap_kw: float
    battery_kw: float
    sessions: tuple[dict[str, Any], ...]
    dr_window: tuple[int, int] | None = None  # minutes after local midnight, weekdays
    dr_factor: float = 1.0
    tariff: str | None = None
    skipped: Mapping[str, int] = field(default_factory=dict)


def load_sessions(
    path: Path, start: datetime, days: int, period_min: float
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The sessions arriving in the window at a station of the network, in acnportal's document form."""
    items = json.loads(path.read_text())["_items"]
    stations = set(caltech_acn(basic_evse=True, voltage=VOLTAGE).station_ids)
    end = start + timedelta(days=days)
    skipped = {"unknown station": 0, "shorter than one period": 0, "overlaps the previous car": 0}
    chosen: list[dict[str, Any]] = []
    for item in items:
        arrive = parsedate_to_datetime(item["connectionTime"])
        if not start <= arrive < end:
            continue
        leave = parsedate_to_datetime(item["disconnectTime"])
        doc = {**item, "connectionTime": arrive, "disconnectTime": leave}
        if item["spaceID"] not in stations:
            skipped["unknown station"] += 1
        elif int(leave.timestamp() / 60 / period_min) <= int(arrive.timestamp() / 60 / period_min):
            skipped["shorter than one period"] += 1
        else:
            chosen.append(doc)
    chosen.sort(key=lambda d: d["connectionTime"])
    free_from: dict[str, int] = {}
    kept = []
    for doc in chosen:  # a station holds one car: drop a session logged over the previous one
        slot = int(doc["connectionTime"].timestamp() / 60 / period_min)
        if slot <= free_from.get(doc["spaceID"], -1):
            skipped["overlaps the previous car"] += 1
            continue
        free_from[doc["spaceID"]] = int(doc["disconnectTime"].timestamp() / 60 / period_min)
        kept.append(doc)
    return kept, skipped


def events_for(scenario: Scenario) -> EventQueue:
    """Fresh EVs (acnportal mutates them) with acnportal's own conversion: demand = energy delivered."""
    return EventQueue([PluginEvent(ev.arrival, ev) for ev in _evs(scenario)])


def cap_rows(cap_kw: float) -> list[int]:
    """The constraint rows whose limit follows the transformer size (the ones a site cap lowers)."""
    a = caltech_acn(basic_evse=True, voltage=VOLTAGE, transformer_cap=cap_kw).magnitudes
    b = caltech_acn(basic_evse=True, voltage=VOLTAGE, transformer_cap=2 * cap_kw).magnitudes
    return [i for i in range(len(a)) if not math.isclose(a[i], b[i])]


def dr_factor_at(scenario: Scenario) -> Callable[[datetime], float]:
    def factor(moment: datetime) -> float:
        if scenario.dr_window is None:
            return 1.0
        local = moment.astimezone(TZ)
        minute = local.hour * 60 + local.minute
        inside = local.weekday() < 5 and scenario.dr_window[0] <= minute < scenario.dr_window[1]
        return scenario.dr_factor if inside else 1.0

    return factor


# ------------------------------------------------------------------------------------------- one run


def run(name: str, make: Callable[[], Any], scenario: Scenario) -> dict[str, Any]:
    network = caltech_acn(basic_evse=True, voltage=VOLTAGE, transformer_cap=scenario.cap_kw)
    base_limits = np.array(network.magnitudes, dtype=float)
    scheduler = make()
    factor = dr_factor_at(scenario)
    if scenario.dr_window is not None:
        scheduler = Derated(scheduler, factor, cap_rows(scenario.cap_kw))
    signals = {"tariff": TimeOfUseTariff(scenario.tariff)} if scenario.tariff else {}
    sim = Simulator(network, scheduler, events_for(scenario), scenario.start, period=scenario.period_min,
                    signals=signals, verbose=False)
    t0 = time.perf_counter()
    with warnings.catch_warnings(), _stdout_silenced():
        warnings.simplefilter("ignore")  # acnportal warns per infeasible schedule; counted below instead
        sim.run()
    wall = time.perf_counter() - t0
    return {"algorithm": name, **measure(sim, scenario, base_limits, factor), "wall_s": round(wall, 2)}


@contextlib.contextmanager
def _stdout_silenced() -> Iterator[None]:
    """HiGHS (through scipy) sometimes prints a stray debugging line on the process's stdout from C++
    ("HighsMipSolverData::transformNewIntegerFeasibleSolution ..."; HiGHS issue 2783), which would break
    `--json`: the descriptor itself is pointed at /dev/null while the simulation runs."""
    sys.stdout.flush()
    saved = os.dup(1)
    sink = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(sink, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(sink)
        os.close(saved)


def measure(
    sim: Any, scenario: Scenario, base_limits: np.ndarray, factor: Callable[[datetime], float]
) -> dict[str, Any]:
    network = sim.network
    pilots = np.asarray(sim.pilot_signals, dtype=float)
    steps = pilots.shape[1]
    period = timedelta(minutes=scenario.period_min)
    moments = [scenario.start + period * t for t in range(steps)]
    rows = cap_rows(scenario.cap_kw)
    limits = np.tile(base_limits[:, None], (1, steps))
    dr_mask = np.array([factor(m) < 1.0 for m in moments], dtype=bool)
    for r in rows:
        limits[r, dr_mask] *= scenario.dr_factor
    tol = np.maximum(network.violation_tolerance, limits * network.relative_tolerance)
    current = np.abs(network.constraint_current(pilots))  # acnportal's own phasor sums
    over = current - limits
    bad = over > tol
    evs = list(sim.ev_history.values())
    ratio = [ev.energy_delivered / ev.requested_energy for ev in evs if ev.requested_energy > 0]
    changes = 0
    hours = 0.0
    for ev in evs:
        s = sim.index_of_evse(ev.station_id)
        a, d = ev.arrival, min(ev.departure, steps)
        seq = pilots[s, a:d]
        changes += int(np.sum(np.abs(np.diff(seq)) >= CHANGE_A))
        hours += (ev.departure - ev.arrival) * scenario.period_min / 60
    power = np.asarray(analysis.aggregate_power(sim), dtype=float)
    out: dict[str, Any] = {
        "energy_pct": round(100 * analysis.proportion_of_energy_delivered(sim), 2),
        "met_pct": round(100 * analysis.proportion_of_demands_met(sim), 2),
        "violations": int(np.sum(np.any(bad, axis=0))),
        "worst_over_a": round(float(max(0.0, over.max())) if over.size else 0.0, 3),
        "pilots_0_6": int(np.sum((pilots > 1e-9) & (pilots < 6.0 - 1e-9))),
        "peak_kw": round(float(power.max()) if power.size else 0.0, 1),
        "jain": round(sum(ratio) ** 2 / (len(ratio) * sum(x * x for x in ratio)), 4) if ratio else 1.0,
        "changes_per_h": round(changes / hours, 3) if hours else 0.0,
        "sessions": len(evs),
        "delivered_kwh": round(float(analysis.total_energy_delivered(sim)), 1),
    }
    if scenario.dr_window is not None:
        cap = scenario.cap_kw * scenario.dr_factor
        above = np.clip(power[: len(dr_mask)] - cap, 0.0, None)[dr_mask[: len(power)]]
        out["dr_kwh_above_cap"] = round(float(above.sum() * scenario.period_min / 60), 2)
        out["dr_peak_kw"] = round(float(power[dr_mask[: len(power)]].max()) if dr_mask.any() else 0.0, 1)
    if scenario.tariff:
        cost = float(analysis.energy_cost(sim))
        out["cost_per_kwh"] = round(cost / max(1e-9, out["delivered_kwh"]), 4)
        out["demand_charge"] = round(float(analysis.demand_charge(sim)), 2)
    return out


# ------------------------------------------------------------------------------------------- the table


COLUMNS = [
    ("algorithm", "algorithm", "{}"),
    ("energy_pct", "energy %", "{:.1f}"),
    ("met_pct", "met %", "{:.1f}"),
    ("violations", "violations", "{}"),
    ("worst_over_a", "worst over A", "{:.3f}"),
    ("pilots_0_6", "pilots (0,6) A", "{}"),
    ("peak_kw", "peak kW", "{:.1f}"),
    ("jain", "Jain", "{:.3f}"),
    ("changes_per_h", "changes/session-h", "{:.2f}"),
    ("dr_kwh_above_cap", "DR kWh above cap", "{:.1f}"),
    ("dr_peak_kw", "DR peak kW", "{:.1f}"),
    ("cost_per_kwh", "$/kWh", "{:.4f}"),
    ("demand_charge", "demand charge $", "{:.0f}"),
    ("wall_s", "wall s", "{:.1f}"),
]


def table(rows: Iterable[Mapping[str, Any]]) -> str:
    rows = list(rows)
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    head = "| " + " | ".join(c[1] for c in cols) + " |"
    rule = "|" + "|".join("---" if c[0] == "algorithm" else "--:" for c in cols) + "|"
    lines = [head, rule]
    for r in rows:
        lines.append("| " + " | ".join(c[2].format(r[c[0]]) if c[0] in r else "" for c in cols) + " |")
    return "\n".join(lines)


def parse_window(text: str) -> tuple[int, int]:
    a, b = text.split("-")
    ha, ma = (int(x) for x in a.split(":"))
    hb, mb = (int(x) for x in b.split(":"))
    return ha * 60 + ma, hb * 60 + mb


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="ACN-Data JSON export (read in place)")
    parser.add_argument("--start", default="2020-01-13", help="first local day (YYYY-MM-DD)")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--cap-kw", default="50", help="transformer cap in kW; a comma list runs each")
    parser.add_argument("--period-min", type=float, default=5.0)
    parser.add_argument("--battery-kw", type=float, default=32 * VOLTAGE / 1000, help="EV on-board charger limit")
    parser.add_argument("--dr-window", default=None, help="weekday local window with a lower cap, e.g. 17:00-19:00")
    parser.add_argument("--dr-factor", type=float, default=0.5)
    parser.add_argument("--price", action="store_true", help=f"add acnportal's {TARIFF} tariff: cost per kWh")
    parser.add_argument("--demand", action="store_true",
                        help="with --price: also plan under a running peak target (the demand charge)")
    parser.add_argument("--only", default="", help="comma list of algorithms to run (default all)")
    parser.add_argument("--bound", action="store_true", help="also solve the offline LP upper bound on energy")
    parser.add_argument("--bound-met", type=float, default=None, metavar="PCT",
                        help="also bound energy when at least PCT %% of sessions must be fully met (a MILP)")
    parser.add_argument("--bound-j1772", action="store_true",
                        help="also bound energy for pilots 0 or at least 6 A only (a MILP, up to 15 min)")
    parser.add_argument("--reference", action="store_true",
                        help="also run idealised online LP references (fractional, no 6 A minimum)")
    parser.add_argument("--j1772", action="store_true",
                        help="also run EDF and LLF with their pilots under 6 A sent as 0 A (what a car does with them)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)

    if not args.data.is_file():
        print(f"error: ACN-Data file not found: {args.data} (set --data)", file=sys.stderr)
        return 2
    day = date.fromisoformat(args.start)
    start = datetime(day.year, day.month, day.day, tzinfo=TZ)
    sessions, skipped = load_sessions(args.data, start, args.days, args.period_min)
    wanted = {x.strip() for x in args.only.split(",")} if args.only else None
    report: dict[str, Any] = {
        "data": "ACN-Data Caltech (Lee, Li, Low, e-Energy '19)",
        "start": args.start, "days": args.days, "period_min": args.period_min, "battery_kw": args.battery_kw,
        "sessions": len(sessions), "skipped": skipped, "dr_window": args.dr_window,
        "dr_factor": args.dr_factor if args.dr_window else None, "tariff": TARIFF if args.price else None,
        "runs": {},
    }
    for cap in (float(c) for c in args.cap_kw.split(",")):
        algorithms = algorithms_for(cap, args.price, args.demand)
        if wanted is not None:
            algorithms = {k: v for k, v in algorithms.items() if k in wanted}
        if args.reference:  # not filtered by --only: asking for them is the choice
            algorithms.update(references())
        if args.j1772:
            algorithms.update(j1772_cut())
        scenario = Scenario(start, args.days, args.period_min, cap, args.battery_kw, tuple(sessions),
                            parse_window(args.dr_window) if args.dr_window else None, args.dr_factor,
                            TARIFF if args.price else None, skipped)
        rows = [run(name, make, scenario) for name, make in algorithms.items()]
        report["runs"][f"{cap:g}"] = rows
        bound = offline_bound(scenario) if args.bound else None
        if bound is not None:
            report.setdefault("offline_energy_bound_pct", {})[f"{cap:g}"] = bound
        bound_met = offline_bound(scenario, args.bound_met / 100) if args.bound_met is not None else None
        if bound_met is not None:
            report.setdefault("offline_energy_bound_met_pct", {})[f"{cap:g}"] = {
                "min_met_pct": args.bound_met, "energy_pct": bound_met}
        j1772 = j1772_bound(scenario) if args.bound_j1772 else None
        if j1772 is not None:
            report.setdefault("offline_energy_bound_j1772_pct", {})[f"{cap:g}"] = {
                "bound": j1772[0], "schedule_found": j1772[1]}
        if not args.json:
            dr = f", DR {args.dr_window} x{args.dr_factor:g}" if args.dr_window else ""
            print(f"\n{args.start} + {args.days} d, cap {cap:g} kW, {len(sessions)} sessions, "
                  f"period {args.period_min:g} min{dr}" + (f", tariff {TARIFF}" if args.price else ""))
            if rows:
                print(table(rows), flush=True)
            if bound is not None:
                print(f"offline LP upper bound on energy: {bound:.1f} % of requested", flush=True)
            if bound_met is not None:
                text = "no schedule can" if math.isnan(bound_met) else f"{bound_met:.1f} % of requested"
                print(f"offline upper bound on energy with >= {args.bound_met:g} % of sessions met: {text}",
                      flush=True)
            if j1772 is not None:
                print(f"offline bound on energy with every pilot 0 or >= 6 A: {j1772[0]:.2f} % of requested "
                      f"(the best such schedule found: {j1772[1]:.2f} %)", flush=True)
    if args.json:
        print(json.dumps(report, indent=1))
    return 0


def algorithms_for(cap_kw: float, price: bool, demand: bool) -> dict[str, Callable[[], Any]]:
    """Ours (and with prices, ours with the planner) and the baselines, each made fresh per run."""
    out: dict[str, Callable[[], Any]] = {}
    if price:
        for name, peak in (("ours + planner", False), ("ours + planner, peak", True)):
            if peak and not demand:
                continue
            if find_planner(cap_kw, peak) is not None:
                out[name] = partial(_with_planner, cap_kw, peak)
    return {
        **out,
        "ours": GatewayAlgorithm,
        "ours (deadline order)": partial(GatewayAlgorithm, sharing=Sharing.DEADLINE),
        "ours (fair sharing)": partial(GatewayAlgorithm, sharing=Sharing.FAIR),
        **baselines(),
    }


def _with_planner(cap_kw: float, peak: bool) -> GatewayAlgorithm:
    # A fresh planner per run: with a peak target it remembers the highest peak it has planned.
    return GatewayAlgorithm(planner=find_planner(cap_kw, peak))


def offline_bound(scenario: Scenario, min_met: float | None = None) -> float:
    """The LP upper bound on energy delivered, in % of what the sessions asked for (with `min_met`, the
    MILP bound when at least that share of sessions must be fully met)."""
    from bench.acn_bound import energy_bound_kwh

    evs = _evs(scenario)
    network = caltech_acn(basic_evse=True, voltage=VOLTAGE, transformer_cap=scenario.cap_kw)
    sessions = [(ev.station_id, ev.arrival, ev.departure, ev.requested_energy) for ev in evs]
    car_a = scenario.battery_kw * 1000 / VOLTAGE
    requested = float(sum(ev.requested_energy for ev in evs))
    kwh = energy_bound_kwh(network, sessions, scenario.period_min, VOLTAGE, car_a, min_met=min_met)
    return round(100 * kwh / requested, 2)


def j1772_bound(scenario: Scenario) -> tuple[float, float]:
    """The offline bound for schedules keeping J1772's 6 A minimum, in % of what the sessions asked for:
    (proven within 15 min, the best such schedule found)."""
    from bench.acn_bound import j1772_bound_kwh

    evs = _evs(scenario)
    network = caltech_acn(basic_evse=True, voltage=VOLTAGE, transformer_cap=scenario.cap_kw)
    sessions = [(ev.station_id, ev.arrival, ev.departure, ev.requested_energy) for ev in evs]
    requested = float(sum(ev.requested_energy for ev in evs))
    bound, found = j1772_bound_kwh(network, sessions, scenario.period_min, VOLTAGE,
                                   scenario.battery_kw * 1000 / VOLTAGE)
    return round(100 * bound / requested, 2), round(100 * found / requested, 2)


def _evs(scenario: Scenario) -> list[Any]:
    offset = int(scenario.start.timestamp() / 60 / scenario.period_min)
    return [
        _convert_to_ev(doc, offset, scenario.period_min, VOLTAGE, scenario.battery_kw, force_feasible=True)
        for doc in scenario.sessions
    ]


def find_planner(cap_kw: float, demand: bool) -> Planner | None:
    """The price-aware planner (`gateway.planner`) for the `Planner` hook, or None where it is absent."""
    try:
        from gateway.planner import period_price_planner
    except ImportError:
        return None
    planner: Planner = period_price_planner(ev_capacity_kw=cap_kw, demand=demand)
    return planner


if __name__ == "__main__":
    raise SystemExit(main())
