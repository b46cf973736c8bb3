"""Translate acnportal's view of a charging network into the gateway allocator's inputs, and back.

acnportal describes a site by a constraint matrix over phasor currents: each row is a sum of station
currents, each turned by its phase angle, and the magnitude of that phasor must stay under a limit. That
is not linear in the currents, so each row becomes linear pieces that lie inside it: where every station
of a row carries its current at one angle the row is exactly a weighted sum; otherwise the directions the
phasor can take are cut into narrow arcs, and for each arc the projection of the phasor on the arc's middle
must stay under the limit times cos(half the arc). A phasor inside every piece is inside the circle, so
any allocation that meets the pieces meets acnportal's own check. Negative projections (phase cancelling)
are dropped from the pieces: conservative again, and it keeps "pausing a charger is always safe" true.
Sessions become `EvseState`s with the energy they still need and their departure; nothing else is used.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.allocate import LinearLimit, step_ceil
from gateway.domain import Circuit, EvseState

SITE = "acn"  # one circuit with no limit of its own: every real limit is a LinearLimit
PHASE = "L1"  # the allocator's phase labels do not matter here: the phasor rows carry the phases
CONTINUOUS_STEP_A = 0.1  # OCPP 1.6 limits are multiples of 0.1 A


@dataclass(frozen=True, slots=True)
class Piece:
    """One linear piece of one acnportal constraint row."""

    row: str
    limit: float
    coefs: Mapping[str, float]


def _arc_cover(angles: Sequence[float]) -> tuple[float, float]:
    """The narrowest arc [start, start + width] (radians) holding every angle; width 2π if none is narrower."""
    if not angles:
        return 0.0, 0.0
    ordered = sorted(a % (2 * math.pi) for a in angles)
    best_gap, start = -1.0, ordered[0]
    for k, a in enumerate(ordered):
        nxt = ordered[(k + 1) % len(ordered)] + (2 * math.pi if k + 1 == len(ordered) else 0.0)
        if nxt - a > best_gap:
            best_gap, start = nxt - a, nxt % (2 * math.pi)
    width = 2 * math.pi - best_gap
    if width >= math.pi:  # the phasor can point anywhere: cover the whole circle
        return 0.0, 2 * math.pi
    return start, width


def pieces_of_row(
    row: str,
    coefficients: Mapping[str, float],
    angles_deg: Mapping[str, float],
    limit: float,
    arc_deg: float = 2.0,
) -> list[Piece]:
    """Linear pieces lying inside `|Σ coef·I·e^{jθ}| ≤ limit` for non-negative currents I."""
    weights = {sid: complex(c * math.cos(math.radians(angles_deg[sid])), c * math.sin(math.radians(angles_deg[sid])))
               for sid, c in coefficients.items() if c != 0}
    if not weights:
        return []
    start, width = _arc_cover([math.atan2(w.imag, w.real) for w in weights.values()])
    if width <= 1e-9:  # every station at one angle: the magnitude is exactly the weighted sum
        return [Piece(row, limit, {sid: abs(w) for sid, w in weights.items()})]
    count = max(1, math.ceil(width / math.radians(arc_deg)))
    half = width / count / 2
    out = []
    for k in range(count):
        middle = start + (2 * k + 1) * half
        ux, uy = math.cos(middle), math.sin(middle)
        coefs = {sid: w.real * ux + w.imag * uy for sid, w in weights.items()}
        kept = {sid: c for sid, c in coefs.items() if c > 1e-12}
        if kept:
            out.append(Piece(f"{row}#{k}", limit * math.cos(half), kept))
    return out


def linear_limits(infrastructure: Any, arc_deg: float = 2.0) -> list[LinearLimit]:
    """Every row of acnportal's `InfrastructureInfo` as linear pieces that lie inside it."""
    ids = list(infrastructure.station_ids)
    angles = {sid: float(infrastructure.phases[i]) for i, sid in enumerate(ids)}
    out: list[LinearLimit] = []
    for r, name in enumerate(infrastructure.constraint_ids):
        row = infrastructure.constraint_matrix[r]
        coefs = {ids[i]: float(row[i]) for i in range(len(ids)) if row[i] != 0}
        for piece in pieces_of_row(str(name), coefs, angles, float(infrastructure.constraint_limits[r]), arc_deg):
            out.append(LinearLimit(piece.row, piece.limit, piece.coefs))
    return out


def site_circuit() -> Circuit:
    return Circuit(SITE, None, math.inf, (PHASE,))


@dataclass(frozen=True, slots=True)
class Rates:
    """What a station accepts: 0, or min_a..max_a on a step (continuous EVSEs get the OCPP 0.1 A grid)."""

    min_a: float
    max_a: float
    step_a: float
    allowed: tuple[float, ...] | None  # the finite set when the EVSE is not continuous


def station_rates(infrastructure: Any, index: int, continuous_step_a: float = CONTINUOUS_STEP_A) -> Rates:
    max_a = float(infrastructure.max_pilot[index])
    if bool(infrastructure.is_continuous[index]):
        return Rates(float(infrastructure.min_pilot[index]), max_a, continuous_step_a, None)
    allowed = tuple(sorted(float(a) for a in infrastructure.allowable_pilots[index] if a > 0))
    if not allowed:
        return Rates(0.0, 0.0, 1.0, ())
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(allowed)}
    step = gaps.pop() if len(gaps) == 1 else 1.0
    return Rates(allowed[0], allowed[-1], step, allowed)


def snap_to_allowed(amps: float, rates: Rates) -> float:
    """The largest accepted rate at or below `amps` (lowering never breaks a limit: coefficients ≥ 0)."""
    if amps <= 0:
        return 0.0
    if rates.allowed is None:
        return min(amps, rates.max_a)
    below = [a for a in rates.allowed if a <= amps + 1e-9]
    return below[-1] if below else 0.0


def evse_state(
    station_id: str,
    rates: Rates,
    voltage_v: float,
    remaining_kwh: float,
    departure: datetime,
    period: timedelta,
) -> EvseState:
    """One active session as the allocator sees a plugged-in car.

    The cap for this period (`want_a`) is what would finish the session within the period, but never
    below the charger's minimum: a car a few Wh short still gets a pilot it can use.
    """
    kw_per_a = voltage_v / 1000.0
    finish_a = remaining_kwh / (kw_per_a * period.total_seconds() / 3600.0) if period > timedelta(0) else rates.max_a
    low = max(6.0, rates.min_a)
    want = max(step_ceil(finish_a, rates.step_a), low)
    return EvseState(
        id=station_id,
        circuit=SITE,
        phases=(PHASE,),
        voltage_v=voltage_v,
        max_a=rates.max_a,
        min_a=low,
        step_a=rates.step_a,
        connected=True,
        energy_needed_kwh=max(0.0, remaining_kwh),
        departure=departure,
        want_a=want if want < rates.max_a else None,
    )
