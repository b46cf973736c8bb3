"""The optimising share of one priority class (the default): most urgent energy now, few pilot changes.

Used by `gateway.allocate` under `Sharing.OPTIMISE`. For the chargers of one class it solves, each
decision, the mixed-integer program

    maximise   Σ wᵢ·xᵢ − λ·Σ |xᵢ − pᵢ|
    subject to Σ coef·xᵢ ≤ headroom       for every constraint (conductors, kW limits, groups, linear rows)
               xᵢ = 0  or  lowᵢ ≤ xᵢ ≤ highᵢ  (semi-continuous: never between 0 and the 6 A minimum)

where pᵢ is the charger's previous current and wᵢ its urgency (`urgency`): `1 + 1 / max(hours to
departure, 5 min)` (earliest departure first, as EDF), plus `CRITICAL_BONUS` while the car can still
leave with what it asked for but has under `CRITICAL_HOURS` of laxity to spare. The bonus dwarfs the rest:
first every car that can still be met and is about to be lost, then energy to the earliest departures. A
car that cannot be met even at full power gets no bonus (its energy still counts, not ahead of a car it
could save). A paused car that gave no departure earns `TURN_PER_HOUR` per hour waited, so that beside
cars that gave one it still gets its turn (a car with a departure is brought in by its urgency as the
departure nears; a class in which no car gave one is not optimised at all: urgency is flat, and the caller
serves it in deadline order, max-min fair). Each term counts an amp at its power (kW per amp). Moving an
amp from one car to another has to gain more than 2λ of urgency: the penalty is what keeps pilots from
churning. It is charged only for cars with a departure: one
with none has no urgency of its own to weigh a move against, so among such cars the fair answer of the
deadline order stands (the caller keeps it on a tie) and a car plugging in gets its share at once. A
charger inside its minimum on-time is kept on (`keep_on`) while all such fit. A greedy order cannot trade
an amp on a heavily loaded phase pair for two on a light one; this program does (the phasor rows of a
three-phase transformer are where it shows).

HiGHS solves it, through scipy (a dependency): no hand-written solver. scipy is imported only when this
mode is used. Pure: no I/O, no clock; the caller checks the answer against every constraint again, weighs
it against the deadline order's, and falls back to that order when there is no optimum in time (an answer
the solver had when its time ran out is not taken).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

CRITICAL_BONUS = 10.0  # added to the urgency of a car that can still be met with little laxity to spare
CRITICAL_HOURS = 1.5  # "little": under this much laxity
CHANGE_PENALTY = 1.0  # λ: urgency lost per amp a pilot moves
TURN_PER_HOUR = 1.0  # added per hour waited to the urgency of a paused car with no departure: its turn
MIP_GAP = 5e-3  # an answer proven within this share of the optimum is the answer (HiGHS: 1e-4)
MIN_HOURS = 1.0 / 12.0  # a departure closer than 5 min counts as 5 min away (the urgency stays finite)


class OptimiseError(RuntimeError):
    """No answer: scipy missing, the solver failed, or it found no feasible point in its time."""


def urgency(laxity_s: float, left_s: float, waited_s: float = 0.0) -> float:
    """The weight of one amp to a car with this laxity (seconds of slack at full power), this long until it
    leaves (inf for both: no deadline) and, paused, waiting for this long."""
    weight = 1.0 + 1.0 / max(left_s / 3600.0, MIN_HOURS) + TURN_PER_HOUR * max(waited_s, 0.0) / 3600.0
    if 0.0 <= laxity_s / 3600.0 < CRITICAL_HOURS:
        weight += CRITICAL_BONUS
    return weight


def solve(
    weights: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    previous: Sequence[float],
    rows: Sequence[Sequence[tuple[int, float]]],
    headroom: Sequence[float],
    time_limit_s: float,
    keep_on: Sequence[bool] = (),
    change_penalty: Sequence[float] = (),
) -> list[float]:
    """Currents for n chargers; `rows[j]` lists (constraint, coefficient) of charger j, `headroom[c]` the room.

    A constraint already over its limit gets no room at all (its chargers 0), never a negative one that
    would make even all-zero infeasible. A charger with `keep_on[j]` (inside its minimum on-time) is not
    paused: it gets at least its minimum, unless those kept on cannot all have theirs (a limit fell), when
    the program is solved again with nobody kept on. `change_penalty[j]` is λ for charger j (default
    `CHANGE_PENALTY` for all).
    """
    try:
        import numpy as np
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import coo_matrix
    except ImportError as exc:  # an optional dependency
        extra = "pip install scipy, or set control.sharing = \"deadline\""
        raise OptimiseError(f"sharing 'optimise' needs scipy ({exc}): {extra}") from exc
    n = len(weights)
    if n == 0:
        return []
    used: dict[int, int] = {}  # constraint → its row in the program
    r_idx: list[int] = []
    c_idx: list[int] = []
    vals: list[float] = []
    for j, row in enumerate(rows):
        for c, coef in row:
            r = used.setdefault(c, len(used))
            r_idx.append(r)
            c_idx.append(j)
            vals.append(coef)
    m = len(used)
    rhs = [0.0] * m
    for c, r in used.items():
        rhs[r] = max(headroom[c], 0.0)
    # Variables: x (n currents), then d (n, at least |x - p|).
    for j in range(n):
        r_idx += [m + j, m + j, m + n + j, m + n + j]
        c_idx += [j, n + j, j, n + j]
        vals += [1.0, -1.0, -1.0, -1.0]
    prev = [min(max(p, 0.0), h) for p, h in zip(previous, highs, strict=True)]
    upper = np.array(rhs + prev + [-p for p in prev])
    matrix = coo_matrix((vals, (r_idx, c_idx)), shape=(m + 2 * n, 2 * n)).tocsr()
    low = np.array([lo if hi >= lo else 0.0 for lo, hi in zip(lows, highs, strict=True)] + [0.0] * n)
    high = np.array([hi if hi >= lo else 0.0 for lo, hi in zip(lows, highs, strict=True)] + [math.inf] * n)
    cost = np.array([-w for w in weights] + (list(change_penalty) if change_penalty else [CHANGE_PENALTY] * n))
    constraints = LinearConstraint(matrix, np.full(m + 2 * n, -np.inf), upper)
    # 2: semi-continuous (0 or within its bounds); 0: continuous within its bounds (kept on)
    kept = [bool(keep_on[j]) and high[j] > 0 for j in range(n)] if keep_on else [False] * n
    for attempt in ([2 * (not k) for k in kept], [2] * n):
        result = milp(
            c=cost,
            constraints=constraints,
            bounds=Bounds(low, high),
            integrality=np.array(attempt + [0] * n),
            options={"time_limit": max(time_limit_s, 1e-3), "mip_rel_gap": MIP_GAP},
        )
        if result.status != 2 or not any(kept):  # 2: infeasible (those kept on do not all fit)
            break
    if result.status != 0 or result.x is None:  # a time limit's incumbent is not taken: deadline order instead
        raise OptimiseError(f"optimiser: no optimum in {time_limit_s:g} s ({result.message})")
    return [float(v) for v in result.x[:n]]
