"""Time and memory of one allocation for 10 … 10,000 chargers in a three-level tree with mixed phasing.

Run on purpose (`make bench` or `python bench/allocate_speed.py`), never as a test. The site: a 3-phase
service, one panel per 50 chargers, one branch circuit per 5 chargers; chargers on one, two or three
conductors, with random maxima, priorities, departures and some non-EV load, and a site kW limit that binds.

The constraints of a circuit tree are worked out at the first decision on that tree and kept (the runtime
decides on the same tree every tick): the median and p99 are those later decisions; "first ms" is one
decision on a tree the allocator has not seen. The sizes are timed in rounds, each round a few decisions of
every size (about as many chargers' worth each), so that a change in the machine's load during the run
falls on every size alike and "x first size", the median against the first size's, compares like with
like (timed one size after the other, the 10,000/1,000 ratio moved from 8.5 to 13.8 between runs).
`--sharing` picks the mode (fair, deadline, optimise; a comma list runs each); "budget" is the optimiser's
time per decision (half of a 1 s tick, as the runtime gives it) and "fell back" how many of the timed
decisions had no optimum within it and were served in deadline order.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import tracemalloc
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import gateway.allocate.constraints
from gateway.allocate import Problem, Sharing, allocate
from gateway.allocate import fell_back as fell_back_to_deadline
from gateway.domain import Circuit, EvseState, NonEvLoad, SiteLimits

NOW = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
PHASINGS = [("L1",), ("L2",), ("L3",), ("L1", "L2"), ("L2", "L3"), ("L1", "L3"), ("L1", "L2", "L3")]


TICK_S = 1.0  # the runtime's default tick; the optimiser gets half of it


def site(n: int, seed: int = 1, sharing: Sharing = Sharing.FAIR) -> Problem:
    rng = random.Random(seed)
    three = ("L1", "L2", "L3")
    panels = max(1, n // 50)
    branches = max(1, n // 5)
    circuits = [Circuit("main", None, 0.8 * max(200.0, 12.0 * n), three)]
    circuits += [Circuit(f"panel-{p}", "main", 0.8 * max(100.0, 12.0 * n / panels), three) for p in range(panels)]
    circuits += [Circuit(f"branch-{b}", f"panel-{b % panels}", 0.8 * 100.0, three) for b in range(branches)]
    evses = []
    for i in range(n):
        phases = rng.choice(PHASINGS)
        evses.append(
            EvseState(
                id=f"cp-{i:05d}",
                circuit=f"branch-{i % branches}",
                phases=phases,
                voltage_v=120.0 if len(phases) == 1 else 208.0,
                max_a=rng.choice([16.0, 32.0, 40.0, 48.0]),
                step_a=rng.choice([1.0, 0.1]),
                priority=rng.choice([0, 0, 0, 1]),
                connected=rng.random() < 0.85,
                energy_needed_kwh=rng.uniform(2, 40),
                departure=NOW + timedelta(hours=rng.uniform(1, 10)),
                waiting_since=NOW - timedelta(minutes=rng.randint(0, 120)),
                power_factor=0.99,
            )
        )
    non_ev = [NonEvLoad("main", p, rng.uniform(5, 30), NOW) for p in three]
    non_ev += [NonEvLoad(f"panel-{p}", "L1", rng.uniform(0, 20), NOW) for p in range(panels)]
    limits = SiteLimits(site_kw=3.5 * n, non_ev_kw=20.0)
    return Problem(circuits, evses, NOW, non_ev, limits, min_on_time=timedelta(minutes=5), sharing=sharing,
                   optimise_time_s=TICK_S / 2)


def first_decision(problem: Problem, runs: int) -> float:
    """Median time of a decision on a tree not seen before (its constraints worked out anew)."""
    times = []
    for _ in range(runs):
        gateway.allocate.constraints._last_topology = None
        t0 = time.perf_counter()
        allocate(problem)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


@dataclass
class Timed:
    """One size's problem, its kept tree and what its decisions took."""

    problem: Problem
    runs: int
    first_ms: float
    topology: Any = None
    times: list[float] = field(default_factory=list)
    fell_back: int = 0


def prepare(n: int, runs: int, sharing: Sharing) -> Timed:
    problem = site(n, sharing=sharing)
    timed = Timed(problem, runs, first_decision(problem, max(3, runs // 10)))
    allocate(problem)  # warm up; the tree it works out is this size's from now on
    timed.topology = gateway.allocate.constraints._last_topology
    return timed


def time_in_rounds(sized: list[Timed], rounds: int = 20) -> None:
    """Each round, `runs / rounds` decisions of every size in turn, each on its own kept tree."""
    for r in range(rounds):
        for timed in sized:
            for _ in range(timed.runs * (r + 1) // rounds - timed.runs * r // rounds):
                gateway.allocate.constraints._last_topology = timed.topology
                t0 = time.perf_counter()
                timed.fell_back += fell_back_to_deadline(allocate(timed.problem))
                timed.times.append(time.perf_counter() - t0)


def report(timed: Timed) -> tuple[float, float, float, int]:
    """Median ms, p99 ms, peak KiB of one more decision, and the number of constraints."""
    gateway.allocate.constraints._last_topology = timed.topology
    tracemalloc.start()
    allocate(timed.problem)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    times = sorted(timed.times)
    p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
    constraints = sum(len(c.phases) for c in timed.problem.circuits) + 1
    return statistics.median(times) * 1000, p99 * 1000, peak / 1024, constraints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--sharing", default="fair", help="fair, deadline or optimise; a comma list runs each")
    parser.add_argument("--runs", type=int, default=None, help="timed decisions per size (default 200, 20 over 1,000)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    for sharing in (Sharing(s.strip()) for s in args.sharing.split(",")):
        budget = f", budget {TICK_S / 2 * 1000:.0f} ms" if sharing is Sharing.OPTIMISE else ""
        print(f"\nsharing {sharing.value}{budget}")
        print(
            f"{'chargers':>9} {'constraints':>11} {'runs':>5} {'median ms':>10} {'p99 ms':>8} {'first ms':>9}"
            f" {'peak KiB':>9} {'x first size':>12} {'fell back':>9}"
        )
        sized = [prepare(n, args.runs or (200 if n <= 1000 else 20), sharing) for n in sizes]
        time_in_rounds(sized)
        base = None
        for n, timed in zip(sizes, sized, strict=True):
            median, p99, peak, constraints = report(timed)
            base = base or median
            print(f"{n:>9} {constraints:>11} {timed.runs:>5} {median:>10.3f} {p99:>8.3f} {timed.first_ms:>9.3f}"
                  f" {peak:>9.0f} {median / base:>12.1f} {timed.fell_back:>9}", flush=True)


if __name__ == "__main__":
    main()
