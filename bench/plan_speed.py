"""Time to recompute the charging plan for 100 … 1,000 (or more) sessions over a 48 h TOU horizon.

Run on purpose (`python bench/plan_speed.py`), never as a test. Each session has a random charger size,
energy request and departure (a few without); the site's EV capacity binds in the evening, the tariff
is a two-period TOU with a price spike event, and cases with and without a demand-charge peak target are
timed, the latter also "warm" (the raised target passed back in, as the control loop does). Reports the
median and worst of a few recomputations, the slot count, the energy left unmet (the site is overloaded
on purpose: some requests cannot be met by any plan), and the planned cost per kWh against charging as
fast as possible (which also delivers less: it fills early capacity with cars that could have waited).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from gateway.domain import EvseState, Segment
from gateway.planner import PlanSettings, apply_targets, asap_plan, build_slots, make_plan
from gateway.tariff import Tariff, TouPeriod, price_timeline

NOW = datetime(2026, 11, 25, 16, 0, tzinfo=UTC)
ALL_DAYS = frozenset(range(7))
TOU = Tariff(
    periods=(
        TouPeriod("off-peak", 0.10, ALL_DAYS, 0, 16 * 60),
        TouPeriod("on-peak", 0.40, ALL_DAYS, 16 * 60, 21 * 60),
        TouPeriod("off-peak-late", 0.10, ALL_DAYS, 21 * 60, 24 * 60),
    )
)


def sessions(n: int, seed: int) -> list[EvseState]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        max_a = rng.choice([16.0, 24.0, 32.0, 40.0, 48.0])
        departure = NOW + timedelta(minutes=rng.randint(45, 20 * 60)) if rng.random() > 0.05 else None
        energy = round(rng.uniform(2.0, 40.0), 1) if rng.random() > 0.05 else None
        out.append(EvseState(f"cp-{i:05d}", "main", ("L1", "L2"), 208.0, max_a, connected=True,
                             energy_needed_kwh=energy, departure=departure))
    return out


def run(n: int, repeats: int, peak: float | None, seed: int, kw_each: float = 4.0) -> dict[str, float]:
    evses = sessions(n, seed)
    settings = PlanSettings(ev_capacity_kw=kw_each * n)  # 4 kW: about half of what the chargers could draw
    spike = Segment(NOW + timedelta(hours=8), NOW + timedelta(hours=9), price=1.5, reasons=("spike",))
    times = []
    warm = []
    plan = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        prices = price_timeline(TOU, NOW, NOW + settings.horizon, (spike,))
        slots = build_slots(NOW, settings, schedule=(spike,), prices=prices, non_ev_kw=0.0)
        plan = make_plan(evses, slots, NOW, settings, peak_kw=None if peak is None else peak * n)
        apply_targets(evses, plan)
        times.append(time.perf_counter() - t0)
        # What the control loop pays from then on: the raised target passed back in is not searched again.
        t0 = time.perf_counter()
        again = make_plan(evses, slots, NOW, settings, peak_kw=plan.peak_kw)
        apply_targets(evses, again)
        warm.append(time.perf_counter() - t0)
    assert plan is not None
    # Cost and energy of the sessions that said what they need (the others take whatever is left).
    fast = asap_plan(evses, plan.slots, NOW, settings)
    known = [ident for ident, p in plan.sessions.items() if p.energy_known]
    planned_kwh = sum(plan.sessions[i].planned_kwh for i in known)
    fast_kwh = sum(fast.sessions[i].planned_kwh for i in known)
    plan_cost = sum(plan.session_cost(i) for i in known)
    fast_cost = sum(fast.session_cost(i) for i in known)
    unmet = sum(p.unmet_kwh for p in plan.sessions.values())
    asked = sum(p.requested_kwh for p in plan.sessions.values() if p.energy_known)
    return {
        "sessions": n, "slots": len(plan.slots), "median_ms": statistics.median(times) * 1000,
        "max_ms": max(times) * 1000, "warm_median_ms": statistics.median(warm) * 1000,
        "unmet_kwh": round(unmet, 2), "asked_kwh": round(asked, 1),
        "plan_per_kwh": plan_cost / planned_kwh if planned_kwh else 0.0, "planned_kwh": round(planned_kwh, 1),
        "asap_per_kwh": fast_cost / fast_kwh if fast_kwh else 0.0, "asap_kwh": round(fast_kwh, 1),
        "peak_target_kw": round(plan.peak_kw, 1) if plan.peak_kw is not None else -1.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,300,1000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kw-each", type=float, default=4.0, help="site EV capacity per session, kW")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        for peak in (None, 2.0):
            row = run(n, args.repeats, peak, args.seed, args.kw_each)
            row["peak_per_session_kw"] = peak if peak is not None else 0.0
            rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'sessions':>8} {'slots':>5} {'peak target':>12} {'median ms':>10} {'max ms':>8} {'warm ms':>8} "
          f"{'unmet kWh':>10} {'of kWh':>8} {'plan kWh':>9} {'plan $/kWh':>10} {'asap kWh':>9} {'asap $/kWh':>10}")
    for r in rows:
        target = f"{r['peak_target_kw']:.0f} kW" if r["peak_target_kw"] >= 0 else "none"
        print(f"{r['sessions']:>8} {r['slots']:>5} {target:>12} {r['median_ms']:>10.1f} {r['max_ms']:>8.1f} "
              f"{r['warm_median_ms']:>8.1f} {r['unmet_kwh']:>10.1f} {r['asked_kwh']:>8.0f} "
              f"{r['planned_kwh']:>9.0f} {r['plan_per_kwh']:>10.4f} {r['asap_kwh']:>9.0f} {r['asap_per_kwh']:>10.4f}")


if __name__ == "__main__":
    main()
