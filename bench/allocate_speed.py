"""Time and memory of one allocation for 10 … 10,000 chargers in a three-level tree with mixed phasing.

Run on purpose (`make bench` or `python bench/allocate_speed.py`), never as a test. The site: a 3-phase
service, one panel per 50 chargers, one branch circuit per 5 chargers; chargers on one, two or three
conductors, with random maxima, priorities, departures and some non-EV load, and a site kW limit that binds.

The constraints of a circuit tree are worked out at the first decision on that tree and kept (the runtime
decides on the same tree every tick): the median and p99 are those later decisions; "first ms" is one
decision on a tree the allocator has not seen. `--sharing` picks the mode (fair, deadline, optimise; a
comma list runs each); "x first size" is the median against the first size's in the same run, "budget"
the optimiser's time per decision (half of a 1 s tick, as the runtime gives it) and "fell back" how many
of the timed decisions had no optimum within it and were served in deadline order.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

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


def measure(n: int, runs: int, sharing: Sharing) -> tuple[float, float, float, float, int, int]:
    problem = site(n, sharing=sharing)
    first = first_decision(problem, max(3, runs // 10))
    allocate(problem)  # warm up
    times = []
    fell_back = 0
    for _ in range(runs):
        t0 = time.perf_counter()
        fell_back += fell_back_to_deadline(allocate(problem))
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    allocate(problem)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    times.sort()
    p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
    constraints = sum(len(c.phases) for c in problem.circuits) + 1
    return statistics.median(times) * 1000, p99 * 1000, first, peak / 1024, constraints, fell_back


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--sharing", default="fair", help="fair, deadline or optimise; a comma list runs each")
    parser.add_argument("--runs", type=int, default=None, help="timed decisions per size (default 200, 20 over 1,000)")
    args = parser.parse_args()
    for sharing in (Sharing(s.strip()) for s in args.sharing.split(",")):
        budget = f", budget {TICK_S / 2 * 1000:.0f} ms" if sharing is Sharing.OPTIMISE else ""
        print(f"\nsharing {sharing.value}{budget}")
        print(
            f"{'chargers':>9} {'constraints':>11} {'runs':>5} {'median ms':>10} {'p99 ms':>8} {'first ms':>9}"
            f" {'peak KiB':>9} {'x first size':>12} {'fell back':>9}"
        )
        base = None
        for n in (int(s) for s in args.sizes.split(",")):
            runs = args.runs or (200 if n <= 1000 else 20)
            median, p99, first, peak, constraints, fell_back = measure(n, runs, sharing)
            base = base or median
            print(f"{n:>9} {constraints:>11} {runs:>5} {median:>10.3f} {p99:>8.3f} {first:>9.3f} {peak:>9.0f}"
                  f" {median / base:>12.1f} {fell_back:>9}", flush=True)


if __name__ == "__main__":
    main()
