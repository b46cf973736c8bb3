"""An offline upper bound on the energy any scheduler could deliver on an ACN benchmark scenario.

A linear program over every session's current in every period it is plugged in: at most the charger's
maximum (and the car's own limit), at most the energy the session asked for, and every acnportal
constraint row relaxed from its phasor magnitude to its projections on directions spread over the arc the
phasor can take (a necessary condition, so the bound is valid; directions 2° apart make it tight to
1/cos(1°)). It knows every arrival, departure and demand in advance and ignores the 6 A minimum, so no
online scheduler can beat it. Solved with scipy's HiGHS. Used by `bench/acn.py --bound`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import linprog  # type: ignore[import-untyped]
from scipy.sparse import coo_matrix  # type: ignore[import-untyped]


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
) -> float:
    """Most kWh deliverable. `sessions`: (station id, arrival period, departure period, kWh requested)."""
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
