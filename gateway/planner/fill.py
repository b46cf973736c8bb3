"""Placing energy in slots: cheapest slots first, each filled as far as the sessions can use it, earlier
choices rerouted along augmenting paths when that lets more energy in (the greedy algorithm on the
polymatroid of deliverable energy), the ASAP baseline, and the least raise of a demand peak target that
keeps every departure."""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence

from gateway.planner.sessions import _Session
from gateway.planner.slots import EPS, Slot


def _delivered(x: list[dict[int, float]]) -> float:
    return sum(v for flows in x for v in flows.values())


def _per_slot(x: list[dict[int, float]], count: int) -> list[float]:
    used = [0.0] * count
    for flows in x:
        for k, kwh in flows.items():
            used[k] += kwh
    return used


def _under(caps: list[float], slots: Sequence[Slot], site_kw: float) -> list[float]:
    """Each slot's EV energy limit with the site's power (EV plus non-EV) also kept under `site_kw`."""
    return [min(c, max(0.0, site_kw - s.non_ev_kw) * s.hours) for c, s in zip(caps, slots, strict=True)]


def _raise_peak(sessions: list[_Session], slots: Sequence[Slot], caps: list[float], peak_kw: float,
                capped: float, free: list[dict[int, float]]) -> tuple[float, list[dict[int, float]]]:
    """The lowest site power target (≥ peak_kw, to 0.5 % or 0.1 kW) under which the plan delivers all it can.

    `capped` is what the plan delivers under `peak_kw`, `free` the plan without a target (its own peak is
    where the search starts from above). The energy deliverable under a target is a concave, piecewise
    linear function of the target (a parametric max-flow), so the chord between a target too low and one
    high enough crosses the goal at a target that is high enough: false position, with a bisection step
    whenever the chord makes little progress, needs a few plans where bisection needs ten.
    """
    goal = _delivered(free) - 1e-6
    used = _per_slot(free, len(slots))
    high = max((u / s.hours + s.non_ev_kw for u, s in zip(used, slots, strict=True) if s.hours > 0),
               default=peak_kw)
    high = max(high, peak_kw)
    low, low_energy, high_energy, best = peak_kw, capped, goal + 1e-6, free
    while high - low > max(0.1, 0.005 * high):
        chord = low + (high - low) * (goal - low_energy) / max(high_energy - low_energy, 1e-12)
        guess = chord if low < chord < high - 0.25 * (high - low) else (low + high) / 2
        x = _fill(sessions, slots, _under(caps, slots, guess))
        energy = _delivered(x)
        if energy >= goal:
            high, high_energy, best = guess, energy, x
        else:
            low, low_energy = guess, energy
    return high, best


def _asap(sessions: list[_Session], caps: list[float]) -> list[dict[int, float]]:
    """Earliest slots first; inside a slot, earliest departure first."""
    x: list[dict[int, float]] = [{} for _ in sessions]
    left = [s.demand for s in sessions]
    order = sorted(range(len(sessions)), key=lambda i: (sessions[i].departure, sessions[i].evse.id))
    for k, cap in enumerate(caps):
        room = cap
        for i in order:
            if room <= EPS:
                break
            give = min(left[i], sessions[i].caps[k], room)
            if give > EPS:
                x[i][k] = give
                left[i] -= give
                room -= give
    return x


def _fill(sessions: list[_Session], slots: Sequence[Slot], caps: list[float]) -> list[dict[int, float]]:
    """Polymatroid greedy: each slot in price order gets as much energy as can be routed into it."""
    n = len(sessions)
    x: list[dict[int, float]] = [{} for _ in range(n)]
    if n == 0:
        return x
    residual = [s.demand for s in sessions]
    unmet = sum(residual)
    order = sorted(range(len(slots)), key=lambda k: (slots[k].price, k))
    # Earliest departure first: a session that leaves later has more slots to fall back on.
    by_departure = sorted(range(n), key=lambda i: (sessions[i].last, sessions[i].evse.id))
    lasts = [sessions[i].last for i in by_departure]
    room = list(caps)
    # Open slot → sessions that still need energy and had room left there when its capacity ran out. A
    # session that needs energy never gives any up (only satisfied ones are rerouted), so entries only
    # ever go stale, and are dropped when looked at.
    takers: dict[int, list[int]] = {}
    taker_slots: dict[int, set[int]] = {}  # the same, by session: where it may still take more
    for k in order:
        if unmet <= EPS:
            break
        if room[k] <= EPS:
            continue
        waiting: list[int] = []
        for i in by_departure[bisect.bisect_left(lasts, k):]:
            if residual[i] <= EPS:
                continue
            if room[k] <= EPS:
                if sessions[i].caps[k] > EPS:
                    waiting.append(i)
                continue
            give = min(residual[i], sessions[i].caps[k], room[k])
            if give > EPS:
                x[i][k] = x[i].get(k, 0.0) + give
                residual[i] -= give
                room[k] -= give
                unmet -= give
                if residual[i] > EPS and x[i][k] < sessions[i].caps[k] - EPS:
                    waiting.append(i)
        if room[k] <= EPS:
            if waiting:
                takers[k] = waiting
                for i in waiting:
                    taker_slots.setdefault(i, set()).add(k)
            continue
        if unmet <= EPS:
            continue
        # Any path into k ends in an open slot where a session that still needs energy has room to take
        # more; without one (the usual case once the sessions that leave early are as full as they can be)
        # there is nothing to search for.
        for i in [i for i, where in taker_slots.items() if residual[i] <= EPS or not where]:
            del taker_slots[i]
        if not taker_slots:
            continue
        unmet -= _swap(sessions, x, residual, room, k, by_departure, lasts, takers, taker_slots)
        while room[k] > EPS and unmet > EPS:
            pushed = _augment(sessions, x, residual, room, k, by_departure, lasts, taker_slots)
            if pushed <= EPS:
                break
            unmet -= pushed
    return x


def _swap(sessions: list[_Session], x: list[dict[int, float]], residual: list[float], room: list[float],
          target: int, by_departure: list[int], lasts: list[int], takers: dict[int, list[int]],
          taker_slots: dict[int, set[int]]) -> float:
    """The short augmenting paths in bulk: a session moves energy from slot b to `target`, one in need takes b.

    These are nearly all the paths a busy site needs, and finding them directly is far cheaper than a
    search per path; `_augment` then finds any longer path that is left.
    """
    moved = 0.0
    for j in by_departure[bisect.bisect_left(lasts, target):]:
        if room[target] <= EPS:
            break
        if residual[j] > EPS:
            continue  # it would have taken the room in target itself
        x_j, caps_j = x[j], sessions[j].caps
        for b in [b for b in x_j if b in takers]:
            waiting = takers[b]
            while waiting and b in x_j and room[target] > EPS and x_j.get(target, 0.0) < caps_j[target] - EPS:
                u = waiting[-1]
                u_room = sessions[u].caps[b] - x[u].get(b, 0.0)
                if residual[u] <= EPS or u_room <= EPS:
                    waiting.pop()  # satisfied or full there: it will not take b again
                    taker_slots.get(u, set()).discard(b)
                    continue
                take = min(room[target], caps_j[target] - x_j.get(target, 0.0), x_j[b], residual[u], u_room)
                x_j[target] = x_j.get(target, 0.0) + take
                x_j[b] -= take
                if x_j[b] <= EPS:
                    del x_j[b]
                x[u][b] = x[u].get(b, 0.0) + take
                residual[u] -= take
                room[target] -= take
                moved += take
            if not waiting:
                del takers[b]
        if not takers:
            break
    return moved


def _augment(sessions: list[_Session], x: list[dict[int, float]], residual: list[float], room: list[float],
             target: int, by_departure: list[int], lasts: list[int], taker_slots: dict[int, set[int]]) -> float:
    """Augmenting paths into slot `target`: sessions with unmet demand take slots others give up.

    Breadth-first from `target`: a session present there with room to take more either still needs energy
    (a path ends) or gives up energy in another open slot, where another session may take it over, and so
    on. One search finds many paths; each is then pushed as far as what is left along it allows (a later
    path may share a step an earlier one used up, and then carries less or nothing). Returns the energy
    pushed (0 when no path exists).
    """
    came_to: dict[int, int] = {}  # session → slot where it takes more
    came_slot: dict[int, int] = {target: -1}  # slot → session that gives it up
    queue = deque([target])
    found: list[int] = []
    wanted = 0.0
    n = len(by_departure)
    # Sessions are visited once; `skip` jumps over visited positions of `by_departure` (path halving), so
    # each slot's scan costs what it visits plus the sessions already full there, not the whole site.
    skip = list(range(n + 1))

    def unvisited(p: int) -> int:
        while skip[p] != p:
            skip[p] = skip[skip[p]]
            p = skip[p]
        return p

    while queue and wanted < room[target]:
        b = queue.popleft()
        p = unvisited(bisect.bisect_left(lasts, b))
        while p < n:
            j = by_departure[p]
            if x[j].get(b, 0.0) >= sessions[j].caps[b] - EPS:
                p = unvisited(p + 1)
                continue
            skip[p] = p + 1
            came_to[j] = b
            if residual[j] > EPS:
                found.append(j)  # it takes more and gives nothing up: the end of a path
                wanted += residual[j]
            else:
                for c, amount in x[j].items():
                    if amount > EPS and c not in came_slot:
                        came_slot[c] = j
                        queue.append(c)
            p = unvisited(p + 1)
    pushed = 0.0
    for end in found:
        if room[target] <= EPS:
            break
        pushed += _push(sessions, x, residual, room, target, end, came_to, came_slot, taker_slots)
    return pushed


def _push(sessions: list[_Session], x: list[dict[int, float]], residual: list[float], room: list[float],
          target: int, end: int, came_to: dict[int, int], came_slot: dict[int, int],
          taker_slots: dict[int, set[int]]) -> float:
    """Push what is left along the search tree's path from `end` back to `target`; the energy pushed."""
    path: list[tuple[int, int]] = []  # (session, slot it takes more in)
    j = end
    while True:
        b = came_to[j]
        path.append((j, b))
        giver = came_slot[b]
        if giver < 0:
            break
        j = giver
    # Each session further along the path gives up, in the slot the one before it takes more in, what it
    # takes more of in its own slot.
    gives = [(later, slot) for (later, _), (_, slot) in zip(path[1:], path[:-1], strict=True)]
    delta = min(room[target], residual[end])
    for j, b in path:
        delta = min(delta, sessions[j].caps[b] - x[j].get(b, 0.0))
    for j, c in gives:
        delta = min(delta, x[j].get(c, 0.0))
    if delta <= EPS:
        return 0.0
    for j, b in path:
        x[j][b] = x[j].get(b, 0.0) + delta
        if x[j][b] >= sessions[j].caps[b] - EPS:
            taker_slots.get(j, set()).discard(b)
    for j, c in gives:
        x[j][c] -= delta
        if x[j][c] <= EPS:
            del x[j][c]
    residual[end] -= delta
    room[target] -= delta
    return delta
