"""What one allocation decision is asked: the circuits, the chargers and the limits at one moment
(`Problem`), how a priority class shares what it may use (`Sharing`), limits beyond the circuit tree
(`LinearLimit`), each charger's step grid (`step_floor`, `step_ceil`, `usable_range`), and the refusal of
a problem with a number that is not one."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from gateway.domain import J1772_MIN_A, Circuit, EvseState, NonEvLoad, SiteLimits

EPS = 1e-9


class Sharing(StrEnum):
    """How the chargers of one priority class share what their class may use."""

    FAIR = "fair"  # max-min fair in amps; urgency only orders who is admitted when minimums do not all fit
    DEADLINE = "deadline"  # urgency tiers (`deadline_tier`), each served in turn, max-min fair inside a tier
    OPTIMISE = "optimise"  # most urgent energy with few pilot changes, solved per class (`gateway.allocate.milp`)


@dataclass(frozen=True, slots=True)
class LinearLimit:
    """A constraint `Σ coefs[charger id] · amps ≤ limit` that is not one conductor of the circuit tree.

    Coefficients must not be negative: then pausing a charger never breaks a limit, which the admission
    order, the rounding down and the rotation all rely on. A phase-cancelling effect is left out (a
    conservative reading of the limit), never subtracted.
    """

    id: str
    limit: float
    coefs: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Problem:
    """Everything one decision needs. `now` decides what is stale and who has waited how long."""

    circuits: Sequence[Circuit]
    evses: Sequence[EvseState]
    now: datetime
    non_ev: Sequence[NonEvLoad] = ()
    limits: SiteLimits = field(default_factory=SiteLimits)
    stale_after: timedelta = timedelta(seconds=10)
    min_on_time: timedelta = timedelta(0)
    linear: Sequence[LinearLimit] = ()
    sharing: Sharing = Sharing.FAIR
    critical_slack: timedelta = timedelta(hours=1)  # DEADLINE: less slack than this is served first
    deadline_step: timedelta = timedelta(minutes=5)  # DEADLINE: departures this close share a tier
    previous: Mapping[str, float] = field(default_factory=dict)  # OPTIMISE: each charger's current limit
    optimise_time_s: float = 0.5  # OPTIMISE: the solver's time per class; no answer by then: DEADLINE


class ProblemError(ValueError):
    """The problem is inconsistent (unknown circuit, a phase the circuit does not carry, …)."""


def step_floor(amps: float, step: float) -> float:
    """The largest multiple of `step` at or below `amps` (tolerant of float noise)."""
    return round(math.floor(amps / step + 1e-6) * step, 6)


def step_ceil(amps: float, step: float) -> float:
    return round(math.ceil(amps / step - 1e-6) * step, 6)


def usable_range(evse: EvseState) -> tuple[float, float]:
    """The lowest and highest non-zero limit this charger may be given, on its step grid."""
    low = step_ceil(max(J1772_MIN_A, evse.min_a), evse.step_a)
    high = evse.max_a if evse.want_a is None else min(evse.max_a, evse.want_a)
    return low, step_floor(high, evse.step_a)


def _refuse_non_finite(problem: Problem) -> None:
    """Raise `ProblemError` for a number that is not one: NaN compares false with every limit (it read as "no
    limit", and a NaN load kept the water level from ever settling). A limit may be +inf (no limit); loads
    and a charger's own values must be finite."""
    limits = problem.limits
    caps: list[tuple[str, float | None]] = [("site_kw", limits.site_kw), ("ev_kw", limits.ev_kw)]
    caps += [(f"group {g.id!r}: kw", g.kw) for g in limits.groups]
    caps += [(f"linear limit {lin.id!r}: limit", lin.limit) for lin in problem.linear]
    for c in problem.circuits:
        caps.append((f"circuit {c.id!r}: limit_a", c.limit_a))
        caps += [(f"circuit {c.id!r}: phase_limits_a[{p}]", a) for p, a in c.phase_limits_a.items()]
    for what, value in caps:
        if value is not None and not (math.isfinite(value) or value == math.inf):
            raise ProblemError(f"{what} is {value}: a limit must be a number (inf for none)")
    loads: list[tuple[str, float | None]] = [("non_ev_kw", limits.non_ev_kw)]
    for load in problem.non_ev:
        loads.append((f"non-EV load on {load.circuit}/{load.phase}: amps", load.amps))
        loads.append((f"non-EV load on {load.circuit}/{load.phase}: worst_a", load.worst_a))
    for what, value in loads:
        if value is not None and not math.isfinite(value):
            raise ProblemError(f"{what} is {value}: a load must be a finite number")
    for e in problem.evses:
        # One sum per charger is the fast test (a NaN or an infinity spoils it); only a failing sum is looked
        # at field by field, which also lets a sum that merely overflows through.
        total = e.voltage_v + e.max_a + e.min_a + e.step_a + e.power_factor
        total += (e.energy_needed_kwh or 0.0) + (e.held_a or 0.0) + (e.measured_a or 0.0)
        if not math.isfinite(total):
            fields = {
                "voltage_v": e.voltage_v, "max_a": e.max_a, "min_a": e.min_a, "step_a": e.step_a,
                "power_factor": e.power_factor, "energy_needed_kwh": e.energy_needed_kwh, "held_a": e.held_a,
                "measured_a": e.measured_a,
            }
            for name, value in fields.items():
                if value is not None and not math.isfinite(value):
                    raise ProblemError(f"charger {e.id!r}: {name} is {value}: it must be a finite number")
        if e.want_a is not None and not (math.isfinite(e.want_a) or e.want_a == math.inf):
            raise ProblemError(f"charger {e.id!r}: want_a is {e.want_a}: a plan's cap must be a number (inf for none)")
        if not e.step_a > 0:
            raise ProblemError(f"charger {e.id!r}: step_a is {e.step_a}: it must be positive")
