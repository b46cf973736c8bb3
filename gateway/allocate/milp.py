"""The optimising share of one priority class (the default): most urgent energy now, few pilot changes.

Used by `gateway.allocate` under `Sharing.OPTIMISE`. For the chargers of one class it solves, each
decision, the mixed-integer program

    maximise   Σ wᵢ·xᵢ + τ·Σ min(xᵢ, tᵢ) − λ·Σ |xᵢ − pᵢ|
    subject to Σ coef·xᵢ ≤ headroom       for every constraint (conductors, kW limits, groups, linear rows)
               xᵢ = 0  or  lowᵢ ≤ xᵢ ≤ highᵢ  (semi-continuous: never between 0 and the 6 A minimum)

where tᵢ is what the horizon plan (`plan`, below) gives the car now and τ (`TRACK`) outweighs every
urgency: the plan says who needs the room now, the program turns it into pilots that are 0 or at least
6 A, keeps the minimum on-time and trades the rest by urgency. pᵢ is the charger's previous current and
wᵢ its urgency (`urgency`): `1 + 1 / max(hours to
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

The plan is a second, smaller program over the hours ahead for the cars with a departure and an energy
need (`plan`): the most energy the cars present can still take before they leave, if the room each
constraint has now stays and nobody else arrives, with one more car met worth `PLAN_MET` kWh (counted
in proportion to the share of its need it gets, so the plan is a linear program: fast, and the same
answer on a busy machine as on an idle one). Its first block is tᵢ. The plan uses laxity to the minute
and pilots lose a little to steps and deadbands, so it plans each car `PLAN_PAD` kWh over what it still
needs (a car is met when it is within 0.1 kWh of its request: the pad finishes it a few minutes early),
and a car the plan meets in full with under `PLAN_SURE_H` of laxity left is given all it can take
(tᵢ = highᵢ). Where the room allows several orders that deliver as much (no arrivals are planned for, so
waiting costs the plan nothing), the plan keeps the laxity of the cars it can meet: each hour of laxity
a car keeps at each of the plan's first `PLAN_SLACK_EDGES` edges, up to `PLAN_SLACK_H`, is worth
`PLAN_SLACK` kWh. So the car with the least slack is served first, as LLF does, and a car arriving later
finds the others with slack to give instead of one that has none left.

HiGHS solves both, through scipy (a dependency): no hand-written solver. scipy is imported only when this
mode is used. Pure: no I/O, no clock; the caller checks the answer against every constraint again, weighs
it against the deadline order's, and falls back to that order when the program has no optimum in time (an
answer it had when its time ran out is not taken). The plan, a linear program, is solved to its optimum
well within its time for the up to `PLAN_MAX_CARS` cars it plans; a plan that still has none when its time
runs out is left out (the program then weighs urgency alone).
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


PLAN_EDGES_H = (0.0, 1 / 12, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # the plan's blocks: fine now, coarse later
PLAN_FRONT = 0.02  # energy in the plan's last block is worth this much less than energy now
PLAN_STEADY = 0.3  # share of its energy value an amp of the plan's first block loses by moving a pilot
PLAN_MET = 20.0  # kWh of energy the plan gives up to let one more car present leave with all it asked for
PLAN_SURE_H = 0.1  # a car the plan meets with less laxity than this is given its full current now
PLAN_PAD = 0.3  # kWh the plan gives each car over what it still needs: it finishes early, not short
PLAN_SLACK = 0.05  # kWh the plan gives up per hour of laxity a car it can meet keeps, at each early edge…
PLAN_SLACK_H = 2.0  # … while that laxity is under this: the car with the least slack goes first, as LLF
PLAN_SLACK_EDGES = 6  # the early edges counted: 5 min to 4 h ahead
PLAN_MAX_CARS = 300  # a class with more cars is optimised without the plan (following it would take the tick)
TRACK = 30.0  # urgency of an amp up to what the plan gives the car now


class OptimiseError(RuntimeError):
    """No answer: scipy missing, the solver failed, or it found no feasible point in its time."""


def require_scipy() -> None:
    """`OptimiseError` (one line, with the way out) when scipy, which this mode needs, cannot be imported."""
    try:
        import scipy.optimize  # noqa: F401
    except ImportError as exc:  # an optional dependency
        extra = "pip install scipy, or set control.sharing = \"deadline\""
        raise OptimiseError(f"sharing 'optimise' needs scipy ({exc}): {extra}") from exc


def urgency(laxity_s: float, left_s: float, waited_s: float = 0.0) -> float:
    """The weight of one amp to a car with this laxity (seconds of slack at full power), this long until it
    leaves (inf for both: no deadline) and, paused, waiting for this long."""
    weight = 1.0 + 1.0 / max(left_s / 3600.0, MIN_HOURS) + TURN_PER_HOUR * max(waited_s, 0.0) / 3600.0
    if 0.0 <= laxity_s / 3600.0 < CRITICAL_HOURS:
        weight += CRITICAL_BONUS
    return weight


def plan(
    kws: Sequence[float],
    highs: Sequence[float],
    needs_kwh: Sequence[float],
    left_h: Sequence[float],
    previous: Sequence[float],
    rows: Sequence[Sequence[tuple[int, float]]],
    headroom: Sequence[float],
    time_limit_s: float,
) -> tuple[list[float], list[bool]]:
    """The currents now of a plan that delivers the most energy before the cars present leave.

    A linear program over blocks (`PLAN_EDGES_H`, fine now and coarse later) assuming the room each
    constraint has now stays and nobody else arrives: each car at most its maximum while it is there and
    at most the energy it still needs, padded by `PLAN_PAD` (its need, below, is the padded one); energy
    slightly worth more sooner (`PLAN_FRONT`), and the first block's currents kept near the previous
    ones where that costs no energy (`PLAN_STEADY`). Its first block is what each car should get now so
    that what the cars present can still take later is not lost: a car leaving soon with little slack is
    served before one that can catch up after the peak. Where not every car can be met, meeting one more
    is worth `PLAN_MET` kWh, counted in proportion to the share of its need a car gets (yⱼ ≤ its energy
    / its need, 0 ≤ yⱼ ≤ 1): until it is met, each kWh to a car is worth 1 + `PLAN_MET` / its need, so
    the room goes to the cars it meets soonest and one car leaves with all it asked for rather than two
    each a little short. Counted whole (a binary per car) the plan was no better on the ACN weeks and
    ran into its time limit in one decision of six at the tightest cap, its answer then depending on the
    machine's load (docs/benchmarks.md). Among orders that deliver as much, the plan keeps the cars'
    laxity (zₖ ≤ the car's laxity at edge k, zₖ ≤ `PLAN_SLACK_H`, each zₖ worth `PLAN_SLACK`): the car
    with the least slack first. Both terms are only for a car whose padded need the plan can deliver
    before it leaves: one with less laxity than the pad is planned for its energy alone (capping its pad
    at what it can take, so that it counts as met at full current, lost sessions elsewhere on the ACN
    weeks: docs/benchmarks.md). Also returned: which cars the plan meets in full.
    """
    require_scipy()
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    n = len(kws)
    if n == 0:
        return [], []
    edges = PLAN_EDGES_H
    blocks = len(edges) - 1
    var: dict[tuple[int, int], int] = {}
    owns: list[list[tuple[int, float]]] = [[] for _ in range(n)]  # each car's (variable, block length)
    ub: list[float] = []
    cost: list[float] = []
    for j in range(n):
        for b in range(blocks):
            length = edges[b + 1] - edges[b]
            share = min(max((left_h[j] - edges[b]) / length, 0.0), 1.0)
            if share <= 0.0 or highs[j] <= 0.0:
                break
            var[j, b] = len(ub)
            owns[j].append((len(ub), length))
            ub.append(highs[j] * share)
            value = 1.0 - PLAN_FRONT * (edges[b] + edges[b + 1]) / 2 / edges[-1]
            cost.append(-kws[j] * length * value)
    if not var:
        return [0.0] * n, [False] * n
    used: dict[tuple[int, int], int] = {}  # (constraint, block) → its row
    r_idx: list[int] = []
    c_idx: list[int] = []
    vals: list[float] = []
    upper: list[float] = []
    for (j, b), v in var.items():
        for c, coef in rows[j]:
            r = used.get((c, b))
            if r is None:
                r = used[c, b] = len(upper)
                upper.append(max(headroom[c], 0.0))
            r_idx.append(r)
            c_idx.append(v)
            vals.append(coef)
    slack: list[int] = []  # the laxity variables: unbounded below
    mets: dict[int, int] = {}  # car j → its y_j (the share of its need counted as met, up to 1)
    for j in range(n):  # energy: at most what the car still needs
        own = owns[j]
        if not own:
            continue
        r = len(upper)
        need = max(needs_kwh[j], 0.0)
        need += PLAN_PAD if need > 0 else 0.0
        upper.append(need)
        for v, length in own:
            r_idx.append(r)
            c_idx.append(v)
            vals.append(kws[j] * length)
        reach = sum(ub[v] * kws[j] * length for v, length in own)
        if PLAN_MET > 0 and 0 < need <= reach:
            mets[j] = len(ub)
            r = len(upper)
            upper.append(0.0)
            r_idx.append(r)
            c_idx.append(len(ub))
            vals.append(need)
            for v, length in own:
                r_idx.append(r)
                c_idx.append(v)
                vals.append(-kws[j] * length)
            ub.append(1.0)
            cost.append(-PLAN_MET)
        if PLAN_SLACK > 0 and 0 < need <= reach:  # z ≤ its laxity at each early edge, z ≤ PLAN_SLACK_H
            full = kws[j] * highs[j]
            for k in range(1, min(PLAN_SLACK_EDGES, len(own)) + 1):
                if edges[k] >= left_h[j]:
                    break
                r = len(upper)  # z − (energy before the edge) / full ≤ hours left − need / full
                upper.append(left_h[j] - edges[k] - need / full)
                r_idx.append(r)
                c_idx.append(len(ub))
                vals.append(1.0)
                for v, length in own[:k]:
                    r_idx.append(r)
                    c_idx.append(v)
                    vals.append(-kws[j] * length / full)
                slack.append(len(ub))
                ub.append(PLAN_SLACK_H)
                cost.append(-PLAN_SLACK)
    # d_j ≥ |x_j0 − p_j| for the first block
    first = [(j, var[j, 0]) for j in range(n) if (j, 0) in var]
    nv = len(ub)
    for k, (j, v) in enumerate(first):
        d = nv + k
        p = min(max(previous[j], 0.0), ub[v])
        r_idx += [len(upper), len(upper), len(upper) + 1, len(upper) + 1]
        c_idx += [v, d, v, d]
        vals += [1.0, -1.0, -1.0, -1.0]
        upper += [p, -p]
        cost.append(PLAN_STEADY * kws[j] * edges[1])
        ub.append(math.inf)
    matrix = coo_matrix((vals, (r_idx, c_idx)), shape=(len(upper), len(ub))).tocsr()
    lower = np.zeros(len(ub))
    lower[slack] = -np.inf
    result = milp(  # no integrality: a linear program (HiGHS' simplex)
        c=np.array(cost),
        constraints=LinearConstraint(matrix, np.full(len(upper), -np.inf), np.array(upper)),
        bounds=Bounds(lower, np.array(ub)),
        options={"time_limit": max(time_limit_s, 1e-3)},
    )
    if result.status != 0 or result.x is None:
        raise OptimiseError(f"planner: no plan in {time_limit_s:g} s ({result.message})")
    now = [float(result.x[var[j, 0]]) if (j, 0) in var else 0.0 for j in range(n)]
    return now, [j in mets and result.x[mets[j]] > 1.0 - 1e-6 for j in range(n)]


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
    targets: Sequence[float] = (),
    track: Sequence[float] = (),
    budget_s: float | None = None,
) -> list[float]:
    """Currents for n chargers; `rows[j]` lists (constraint, coefficient) of charger j, `headroom[c]` the room.

    A constraint already over its limit gets no room at all (its chargers 0), never a negative one that
    would make even all-zero infeasible. A charger with `keep_on[j]` (inside its minimum on-time) is not
    paused: it gets at least its minimum, unless those kept on cannot all have theirs (a limit fell), when
    the program is solved again with nobody kept on. `change_penalty[j]` is λ for charger j (default
    `CHANGE_PENALTY` for all). Each amp up to `targets[j]` (the plan's current now) gains `track[j]` more.
    `budget_s` is the decision's whole budget, as the error names it (default: `time_limit_s`).
    """
    require_scipy()
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

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
    # Then s (n, at most x and at most the plan's target): the amps that follow the plan.
    for j in range(n):
        r_idx += [m + 2 * n + j, m + 2 * n + j]
        c_idx += [2 * n + j, j]
        vals += [1.0, -1.0]
    prev = [min(max(p, 0.0), h) for p, h in zip(previous, highs, strict=True)]
    upper = np.array(rhs + prev + [-p for p in prev] + [0.0] * n)
    matrix = coo_matrix((vals, (r_idx, c_idx)), shape=(m + 3 * n, 3 * n)).tocsr()
    low = np.array([lo if hi >= lo else 0.0 for lo, hi in zip(lows, highs, strict=True)] + [0.0] * (2 * n))
    high = np.array([hi if hi >= lo else 0.0 for lo, hi in zip(lows, highs, strict=True)] + [math.inf] * n
                    + ([max(t, 0.0) for t in targets] if targets else [0.0] * n))
    cost = np.array([-w for w in weights] + (list(change_penalty) if change_penalty else [CHANGE_PENALTY] * n)
                    + ([-t for t in track] if track else [0.0] * n))
    constraints = LinearConstraint(matrix, np.full(m + 3 * n, -np.inf), upper)
    # 2: semi-continuous (0 or within its bounds); 0: continuous within its bounds (kept on)
    kept = [bool(keep_on[j]) and high[j] > 0 for j in range(n)] if keep_on else [False] * n
    for attempt in ([2 * (not k) for k in kept], [2] * n):
        result = milp(
            c=cost,
            constraints=constraints,
            bounds=Bounds(low, high),
            integrality=np.array(attempt + [0] * (2 * n)),
            options={"time_limit": max(time_limit_s, 1e-3), "mip_rel_gap": MIP_GAP},
        )
        if result.status != 2 or not any(kept):  # 2: infeasible (those kept on do not all fit)
            break
    if result.status != 0 or result.x is None:  # a time limit's incumbent is not taken: deadline order instead
        said = time_limit_s if budget_s is None else budget_s
        raise OptimiseError(f"optimiser: no optimum in {said:g} s ({result.message})")
    return [float(v) for v in result.x[:n]]
