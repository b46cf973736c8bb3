"""An offline upper bound on the energy any scheduler could deliver on an ACN benchmark scenario.

A linear program over every session's current in every period it is plugged in: at most the charger's
maximum (and the car's own limit), at most the energy the session asked for, and every acnportal
constraint row relaxed from its phasor magnitude to its projections on directions spread over the arc the
phasor can take (a necessary condition, so the bound is valid; directions 2° apart make it tight to
1/cos(1°)). It knows every arrival, departure and demand in advance and ignores the 6 A minimum, so no
online scheduler can beat it. With `min_met` it becomes a mixed-integer program (one binary per session:
fully met or not, acnportal's 0.1 kWh threshold) giving the most energy any schedule can deliver while
also meeting at least that share of sessions; when the solver stops at its time limit the reported
figure is its proven dual bound, still an upper bound. `j1772_bound_kwh` keeps the 6 A minimum instead
(each current 0 or at least 6 A): its proven bound, and the best such schedule found. Solved with scipy's
HiGHS. Used by `bench/acn.py --bound` (and `--bound-met`, `--bound-j1772`). `weighted_period_lp` is the
one-period weighted-throughput LP behind the online reference schedulers of `bench/acn.py --reference`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import coo_matrix, hstack, vstack

MET_THRESHOLD_KWH = 0.1  # acnportal's proportion_of_demands_met: finished when less than this remains


def _directions(weights: np.ndarray, step_deg: float) -> list[float]:
    """Directions (radians) spread over the narrowest arc holding the non-zero phasor weights."""
    angles = sorted(float(np.angle(w)) % (2 * math.pi) for w in weights if abs(w) > 1e-12)
    if not angles:
        return []
    gaps = [(angles[(k + 1) % len(angles)] + (2 * math.pi if k + 1 == len(angles) else 0) - a, k)
            for k, a in enumerate(angles)]
    gap, k = max(gaps)
    start = angles[(k + 1) % len(angles)]
    width = 2 * math.pi - gap if gap > math.pi else 2 * math.pi
    count = max(1, math.ceil(width / math.radians(step_deg)) + 1)
    return [start + width * j / max(1, count - 1) for j in range(count)]


def energy_bound_kwh(
    network: Any,
    sessions: list[tuple[str, int, int, float]],
    period_min: float,
    voltage_v: float,
    car_max_a: float,
    step_deg: float = 2.0,
    min_met: float | None = None,
    time_limit_s: float = 600.0,
) -> float:
    """Most kWh deliverable. `sessions`: (station id, arrival period, departure period, kWh requested).

    With `min_met` (a share in [0, 1]), the most kWh deliverable while at least that share of sessions is
    fully met; `nan` if no schedule can meet that many.
    """
    a_ub, rhs, upper, var_of, kwh_per_amp_period = _program(network, sessions, period_min, voltage_v, car_max_a,
                                                            step_deg)
    n = len(var_of)
    if min_met is not None:
        return _bound_with_met(a_ub, np.asarray(rhs), upper, var_of, sessions, kwh_per_amp_period, min_met,
                               time_limit_s)
    result = linprog(
        c=-np.full(n, kwh_per_amp_period),
        A_ub=a_ub,
        b_ub=np.asarray(rhs),
        bounds=list(zip([0.0] * n, upper, strict=True)),
        method="highs",
    )
    if not result.success:
        raise RuntimeError(f"upper-bound LP failed: {result.message}")
    return float(-result.fun)


def j1772_bound_kwh(
    network: Any,
    sessions: list[tuple[str, int, int, float]],
    period_min: float,
    voltage_v: float,
    car_max_a: float,
    minimum_a: float = 6.0,
    step_deg: float = 2.0,
    time_limit_s: float = 900.0,
) -> tuple[float, float]:
    """The same bound with every current 0 or at least `minimum_a` (J1772's 6 A; a mixed-integer program,
    each current semi-continuous): (the most kWh any such schedule can deliver, as proven by the solver
    within `time_limit_s`; the kWh of the best such schedule it found). The first is an upper bound for
    any scheduler that keeps the 6 A minimum, the second shows what one offline schedule reaches."""
    a_ub, rhs, upper, _, kwh_per_amp_period = _program(network, sessions, period_min, voltage_v, car_max_a,
                                                        step_deg)
    high = np.asarray(upper)
    semi = high >= minimum_a
    result = milp(
        c=np.full(len(high), -kwh_per_amp_period),
        constraints=LinearConstraint(a_ub, -np.inf, np.asarray(rhs)),
        bounds=Bounds(np.where(semi, minimum_a, 0.0), np.where(semi, high, 0.0)),
        integrality=np.where(semi, 2, 0),
        options={"time_limit": time_limit_s, "mip_rel_gap": 1e-4},
    )
    dual = getattr(result, "mip_dual_bound", None)
    if result.x is None or dual is None or not math.isfinite(dual):
        raise RuntimeError(f"J1772 bound: no schedule in {time_limit_s:g} s ({result.message})")
    return float(-dual), float(-result.fun)


def _program(
    network: Any,
    sessions: list[tuple[str, int, int, float]],
    period_min: float,
    voltage_v: float,
    car_max_a: float,
    step_deg: float,
) -> tuple[Any, list[float], list[float], list[tuple[int, int]], float]:
    """The bound's rows (every constraint's projections and each session's request), its right-hand sides,
    each current's maximum, which (session, period) each current is, and the kWh of an amp for a period."""
    ids = list(network.station_ids)
    index = {s: i for i, s in enumerate(ids)}
    phases = np.deg2rad(np.asarray(network._phase_angles, dtype=float))
    matrix = np.asarray(network.constraint_matrix, dtype=float)
    limits = np.asarray(network.magnitudes, dtype=float)
    max_pilot = np.asarray(network.max_pilot_signals, dtype=float)
    kwh_per_amp_period = voltage_v * period_min / 60 / 1000

    var_of: list[tuple[int, int]] = []  # (session, period)
    upper: list[float] = []
    for k, (sid, arrive, leave, _) in enumerate(sessions):
        cap = min(car_max_a, float(max_pilot[index[sid]]))
        for t in range(arrive, leave):
            var_of.append((k, t))
            upper.append(cap)
    n = len(var_of)
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    rhs: list[float] = []
    for v, (k, _) in enumerate(var_of):  # each session's energy at most its request
        rows.append(k)
        cols.append(v)
        vals.append(kwh_per_amp_period)
    rhs.extend(s[3] for s in sessions)
    next_row = len(sessions)

    by_period: dict[int, list[int]] = {}
    for v, (_, t) in enumerate(var_of):
        by_period.setdefault(t, []).append(v)
    projections = []
    for r in range(matrix.shape[0]):
        weights = matrix[r] * np.exp(1j * phases)
        for phi in _directions(weights, step_deg):
            projections.append((np.real(weights * np.exp(-1j * phi)), limits[r]))
    for vs in by_period.values():
        stations = [index[sessions[var_of[v][0]][0]] for v in vs]
        for coef, limit in projections:
            used = False
            for v, s in zip(vs, stations, strict=True):
                if abs(coef[s]) > 1e-12:
                    rows.append(next_row)
                    cols.append(v)
                    vals.append(float(coef[s]))
                    used = True
            if used:
                rhs.append(float(limit))
                next_row += 1
    a_ub = coo_matrix((vals, (rows, cols)), shape=(next_row, n)).tocsr()
    return a_ub, rhs, upper, var_of, kwh_per_amp_period


def _bound_with_met(
    a_ub: Any,
    rhs: np.ndarray,
    upper: list[float],
    var_of: list[tuple[int, int]],
    sessions: list[tuple[str, int, int, float]],
    kwh_per_amp_period: float,
    min_met: float,
    time_limit_s: float,
) -> float:
    """The energy LP with one binary per session (met or not) and at least `min_met` of them met."""
    n, k = len(var_of), len(sessions)
    # (request - threshold) · met_k - Σ_t energy_kt ≤ 0: a session counts as met only if it got its energy.
    energy = coo_matrix(([-kwh_per_amp_period] * n, ([s for s, _ in var_of], list(range(n)))), shape=(k, n))
    wanted = coo_matrix(([max(0.0, s[3] - MET_THRESHOLD_KWH) for s in sessions], (range(k), range(k))),
                        shape=(k, k))
    count = coo_matrix(([-1.0] * k, ([0] * k, range(k))), shape=(1, k))
    matrix = vstack([
        hstack([a_ub, coo_matrix((a_ub.shape[0], k))]),
        hstack([energy, wanted]),
        hstack([coo_matrix((1, n)), count]),
    ]).tocsr()
    need = math.ceil(min_met * k - 1e-9)
    upper_b = np.concatenate([rhs, np.zeros(k), [-float(need)]])
    result = milp(
        c=np.concatenate([np.full(n, -kwh_per_amp_period), np.zeros(k)]),
        constraints=LinearConstraint(matrix, -np.inf, upper_b),
        bounds=Bounds(np.zeros(n + k), np.concatenate([upper, np.ones(k)])),
        integrality=np.concatenate([np.zeros(n), np.ones(k)]),
        options={"time_limit": time_limit_s, "mip_rel_gap": 1e-4},
    )
    if result.status == 2:  # infeasible: no schedule meets that many sessions
        return math.nan
    dual = getattr(result, "mip_dual_bound", None)
    if dual is None or not math.isfinite(dual):
        if not result.success:
            raise RuntimeError(f"upper-bound MILP failed: {result.message}")
        dual = result.fun
    return float(-dual)


def weighted_period_lp(
    weights: list[float], upper: list[float], ids: list[str], linear: list[Any], minimum_a: float = 0.0
) -> list[float]:
    """Currents maximising `Σ weight·I` for one period, each in [0, upper], under the linear pieces.

    Fractional; with `minimum_a` each current is 0 or at least that (semi-continuous, a small MILP),
    otherwise without the 6 A minimum: an idealised reference either way.
    """
    if not ids:
        return []
    index = {s: i for i, s in enumerate(ids)}
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    rhs: list[float] = []
    for lin in linear:
        used = [(index[s], c) for s, c in lin.coefs.items() if s in index and c > 0]
        if used:
            for i, c in used:
                rows.append(len(rhs))
                cols.append(i)
                vals.append(float(c))
            rhs.append(float(lin.limit))
    a_ub = coo_matrix((vals, (rows, cols)), shape=(len(rhs), len(ids))).tocsr() if rhs else None
    if minimum_a > 0:
        low = np.array([minimum_a if u >= minimum_a else 0.0 for u in upper])
        high = np.array([u if u >= minimum_a else 0.0 for u in upper])
        semi = LinearConstraint(a_ub, -np.inf, np.asarray(rhs)) if rhs else ()
        mixed = milp(c=-np.asarray(weights, dtype=float), constraints=semi, bounds=Bounds(low, high),
                     integrality=np.full(len(ids), 2), options={"time_limit": 10.0})
        if mixed.x is None:
            raise RuntimeError(f"period MILP failed: {mixed.message}")
        return [float(x) for x in mixed.x]
    result = linprog(c=-np.asarray(weights, dtype=float), A_ub=a_ub, b_ub=np.asarray(rhs) if rhs else None,
                     bounds=[(0.0, u) for u in upper], method="highs")
    if not result.success:
        raise RuntimeError(f"period LP failed: {result.message}")
    return [float(x) for x in result.x]
