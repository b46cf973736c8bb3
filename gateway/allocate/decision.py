"""One allocation: checks the problem, builds its constraints, and serves the priority classes most
important first, each by its sharing mode (fair, deadline tiers, or the optimiser's answer checked again
and topped up)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta

from gateway.allocate import milp
from gateway.allocate.constraints import _blocking, _build, _Row
from gateway.allocate.fill import _admit, _fill, _fits, _Scratch, _take, _top_up
from gateway.allocate.milp import OptimiseError, solve, urgency
from gateway.allocate.order import _laxity_s, _why_idle, admission_key, deadline_tier
from gateway.allocate.problem import EPS, Problem, Sharing, _refuse_non_finite, step_floor, usable_range
from gateway.domain import Allocation, EvseState

FELL_BACK = "served in deadline order"  # how a note ends when a class had no optimum in its budget


def fell_back(allocation: Allocation) -> bool:
    """Whether a class of this allocation was served in deadline order because the optimiser had no answer
    (a class optimised without its horizon plan is not: the program still answered)."""
    return any(note.endswith(FELL_BACK) for note in allocation.notes)


def allocate(problem: Problem) -> Allocation:
    _refuse_non_finite(problem)
    cons, members, kws, overloaded = _build(problem)
    head = cons.headroom
    evses = problem.evses
    now = problem.now
    amps = [0.0] * len(evses)
    binding: dict[str, str] = {}
    candidates: list[int] = []
    # Chargers of one model share their grid: work each range out once, with where its top snaps to (most
    # chargers end a fill at their ceiling).
    on_grid: dict[tuple[float, float, float | None, float], tuple[float, float, float]] = {}
    grids = []
    lows: list[float] = []
    highs: list[float] = []
    for i, evse in enumerate(evses):
        grid = (evse.min_a, evse.max_a, evse.want_a, evse.step_a)
        known = on_grid.get(grid)
        if known is None:
            low, high = usable_range(evse)
            known = on_grid[grid] = low, high, step_floor(high, evse.step_a)
        grids.append(known)
        low, high, _ = known
        lows.append(low)
        highs.append(high)
        reason = _why_idle(evse, low, high)
        if reason is None:
            candidates.append(i)
        else:
            binding[evse.id] = reason
            amps[i] = evse.held_a if evse.held_a is not None else 0.0

    by_class: dict[int, list[int]] = {}
    for i in candidates:
        by_class.setdefault(evses[i].priority, []).append(i)

    def admission_order(order: list[int]) -> list[int]:
        return sorted(order, key=lambda i: admission_key(evses[i], now, problem.min_on_time, kws[i]))

    notes: list[str] = []
    scratch = _Scratch(len(head))

    def in_tiers(order: list[int], amps: list[float], head: list[float], fair: bool) -> None:
        """Serve one class in urgency tiers (one tier: max-min fair), each admitted, filled, rounded, topped up."""
        tiers: dict[tuple[int, float], list[int]] = {}
        if not fair:
            for i in order:
                tier = deadline_tier(evses[i], now, problem.critical_slack, problem.deadline_step)
                tiers.setdefault(tier, []).append(i)
        else:
            tiers[(0, 0.0)] = order
        for tier in sorted(tiers, reverse=True):
            admitted, contested, rising, weight, users = _admit(
                tiers[tier], lows, highs, amps, members, head, admission_order, scratch
            )
            _fill(rising, amps, members, head, highs, weight, users, scratch)
            scratch.clear(users)
            for i in admitted:
                snapped = grids[i][2] if amps[i] == highs[i] else step_floor(amps[i], evses[i].step_a)
                extra = snapped - amps[i]
                if extra != 0.0:
                    for c, coef in members[i]:
                        head[c] -= coef * extra
                amps[i] = snapped
            for i in contested:  # what rounding freed may now admit someone who did not fit
                if amps[i] == 0.0 and _fits(members[i], head, lows[i]):
                    _take(i, lows[i], amps, members[i], head)
                    admitted.append(i)
            _top_up(admitted, evses, amps, highs, members, head)

    for priority in sorted(by_class, reverse=True):
        order = by_class[priority]
        if problem.sharing is not Sharing.OPTIMISE or all(evses[i].departure is None for i in order):
            # Without a single departure urgency is flat: the program has nothing to weigh, and the
            # deadline order's answer (then max-min fair, with its turns) is the one to give.
            in_tiers(order, amps, head, fair=problem.sharing is Sharing.FAIR)
            continue
        # The optimiser's answer is kept only where it is better by its own measure than the deadline
        # order's, which is fair inside a tier and deterministic: a tie (cars no one is told the departure
        # of, equal weights) is served as under DEADLINE, not at whichever vertex the solver stops. A
        # deadline answer that pauses a charger the optimiser keeps on for its minimum on-time is no tie.
        in_order_amps, in_order_head = amps.copy(), head.copy()
        in_tiers(order, in_order_amps, in_order_head, fair=False)
        try:
            value = _optimise(order, problem, lows, highs, kws, members, head, amps, admission_order,
                              problem.optimise_time_s / len(by_class), notes, priority)
        except OptimiseError as exc:
            notes.append(f"priority {priority}: {exc}; {FELL_BACK}")
            value = None
        if value is None or value(in_order_amps) >= value(amps) - 1e-6:
            amps[:], head[:] = in_order_amps, in_order_head

    for i in candidates:
        evse = evses[i]
        low, high, _ = grids[i]
        if amps[i] >= high - EPS:
            binding[evse.id] = "max" if evse.want_a is None or evse.want_a >= evse.max_a else "plan"
            continue
        binding[evse.id] = _blocking(members[i], head, evse.step_a if amps[i] > 0 else low, cons.names)
    return Allocation(
        amps={e.id: amps[i] for i, e in enumerate(evses)},
        binding=binding,
        overloaded=tuple(overloaded),
        notes=tuple(notes),
    )


def _left_s(evse: EvseState, now: datetime) -> float:
    return math.inf if evse.departure is None else (evse.departure - now).total_seconds()


def _on_for(evse: EvseState, now: datetime) -> timedelta:
    return timedelta.max if evse.on_since is None else now - evse.on_since


def _waited_s(evse: EvseState, now: datetime) -> float:
    """How long a paused car with no departure has waited (its turn); one with a departure is brought in by
    its urgency as the departure nears, and a turn of its own would only make cars swap places."""
    if evse.waiting_since is None or evse.departure is not None:
        return 0.0
    return (now - evse.waiting_since).total_seconds()


def _optimise(
    order: list[int],
    problem: Problem,
    lows: list[float],
    highs: list[float],
    kws: list[float],
    members: list[_Row],
    head: list[float],
    amps: list[float],
    admission_order: Callable[[list[int]], list[int]],
    time_s: float,
    notes: list[str],
    priority: int,
) -> Callable[[list[float]], float]:
    """Serve one priority class from the optimiser's answer (`milp.solve`, following the horizon plan
    `milp.plan` where the cars give departures and energy needs); return its objective, to weigh this
    answer against another. Half the time is the plan's, half the program's; where the plan finds no plan
    at all in its time it is left out (the notes say so) and the program weighs urgency alone.

    The answer is floored to each charger's step grid and taken most urgent first, each charger checked
    against every constraint again (a solver's tolerance never becomes an overload, and a current under
    the minimum becomes 0). Then, as in the other modes, a paused charger whose minimum fits is admitted
    and whatever is left is handed out step by step: no usable capacity stays idle.
    """
    evses, now = problem.evses, problem.now
    weights = [urgency(_laxity_s(evses[i], now, kws[i]), _left_s(evses[i], now), _waited_s(evses[i], now))
               for i in order]
    previous = [problem.previous.get(evses[i].id, 0.0) for i in order]
    # The change penalty only where a departure gives the car an urgency to weigh a move against (milp).
    # Both terms count an amp at its power: an amp of a three-phase charger is three conductor-amps of room
    # and three times the energy of a one-phase one, so the program weighs energy, not amps.
    penalty = [0.0 if evses[i].departure is None else milp.CHANGE_PENALTY * kws[i] for i in order]
    gains = [w * kws[i] for w, i in zip(weights, order, strict=True)]
    keep_on = [p > 0 and _on_for(evses[i], now) < problem.min_on_time for i, p in zip(order, previous, strict=True)]
    milp.require_scipy()  # no scipy: no optimiser at all (the caller's note), not a class without its plan
    unplanned = None
    try:
        targets, track = _planned(order, problem, highs, kws, members, head, previous, time_s / 2)
    except OptimiseError as exc:
        unplanned = f"priority {priority}: {exc}; served without the plan"
        targets, track = [], []
    solved = solve(
        gains,
        [lows[i] for i in order],
        [highs[i] for i in order],
        previous,
        [members[i] for i in order],
        head,
        time_s / 2,
        keep_on,
        penalty,
        targets,
        track,
        budget_s=time_s,
    )
    if unplanned is not None:  # said only when the program answered: otherwise the caller's note says it all
        notes.append(unplanned)
    admitted = []
    for j in sorted(range(len(order)), key=lambda j: -weights[j]):
        i = order[j]
        entries, step = members[i], evses[i].step_a
        room = min((head[c] / coef for c, coef in entries if coef > 0), default=math.inf)
        # The solver's tolerance (31.99999 for 32) is not a step down: rounded first, then checked (room).
        target = step_floor(min(round(solved[j], 4), highs[i], room), step) if room > 0 else 0.0
        if target >= lows[i] - EPS:
            _take(i, target, amps, entries, head)
            admitted.append(i)
    for i in admission_order([i for i in order if amps[i] == 0.0]):
        if _fits(members[i], head, lows[i]):
            _take(i, lows[i], amps, members[i], head)
            admitted.append(i)
    _top_up(admitted, evses, amps, highs, members, head)

    kept = [i for i, keep in zip(order, keep_on, strict=True) if keep and amps[i] > 0.0]

    def value(answer: list[float]) -> float:
        """The program's objective; no value at all for an answer that pauses a charger this one keeps on
        inside its minimum on-time (the deadline order's tiers come before its minimum on-time)."""
        if any(answer[i] == 0.0 for i in kept):
            return -math.inf
        total = 0.0
        for j, i in enumerate(order):
            total += gains[j] * answer[i] - penalty[j] * abs(answer[i] - previous[j])
            if targets:
                total += track[j] * min(answer[i], targets[j])
        return total

    return value


def _planned(
    order: list[int],
    problem: Problem,
    highs: list[float],
    kws: list[float],
    members: list[_Row],
    head: list[float],
    previous: list[float],
    time_s: float,
) -> tuple[list[float], list[float]]:
    """What the horizon plan (`milp.plan`) gives each car with a departure and an energy need now, and the
    weight of following it; nothing (two empty lists) when no car has both, or more than `PLAN_MAX_CARS`
    do (the program then weighs urgency alone). `OptimiseError`: no plan."""
    evses, now = problem.evses, problem.now
    known = [j for j, i in enumerate(order)
             if evses[i].departure is not None and evses[i].energy_needed_kwh is not None]
    if not known or len(known) > milp.PLAN_MAX_CARS:
        return [], []
    planned, met = milp.plan(
        [kws[order[j]] for j in known],
        [step_floor(evses[order[j]].max_a, evses[order[j]].step_a) for j in known],  # later: no plan cap
        [evses[order[j]].energy_needed_kwh or 0.0 for j in known],
        [_left_s(evses[order[j]], now) / 3600.0 for j in known],
        [previous[j] for j in known],
        [members[order[j]] for j in known],
        head,
        time_s,
    )
    targets = [0.0] * len(order)
    track = [0.0] * len(order)
    for j, amps, meets in zip(known, planned, met, strict=True):
        # The plan meets a car to the last minute of its laxity; the pilots that follow it lose a little
        # (a step, a deadband), so a car it meets with little laxity left is given all it can take now.
        i = order[j]
        laxity_h = _laxity_s(evses[i], now, kws[i]) / 3600.0
        targets[j] = highs[i] if meets and 0.0 <= laxity_h < milp.PLAN_SURE_H else amps
        track[j] = milp.TRACK * kws[i]
    return targets, track
