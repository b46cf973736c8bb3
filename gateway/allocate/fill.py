"""Filling the constraints' room: admitting chargers at their minimum in order, raising the admitted ones
together (max-min fair above their minimum) until each meets its maximum or a full constraint, rounding
down to each step, and handing what the rounding freed out again, lowest first."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Sequence

from gateway.allocate.constraints import _Row
from gateway.allocate.problem import EPS
from gateway.domain import EvseState


class _Scratch:
    """Per-constraint work lists for the tiers of one decision, made once: a tier sets the entries of the
    constraints it loads and `clear` puts them back, so hundreds of small tiers cost their own memberships,
    not hundreds of lists the size of the site."""

    def __init__(self, n_cons: int) -> None:
        self.extra = [0.0] * n_cons
        self.peak = [0.0] * n_cons
        self.weight = [0.0] * n_cons
        self.demand = [0.0] * n_cons
        self.roomy = [True] * n_cons
        self.version = [0] * n_cons
        self.exact = [0] * n_cons
        self.since = [0.0] * n_cons

    def clear(self, used: Iterable[int]) -> None:
        extra, peak, weight, demand, roomy = self.extra, self.peak, self.weight, self.demand, self.roomy
        version, exact = self.version, self.exact
        for c in used:
            extra[c] = peak[c] = weight[c] = demand[c] = 0.0
            roomy[c] = True
            version[c] = exact[c] = 0


def _admit(
    order: list[int],
    lows: list[float],
    highs: list[float],
    amps: list[float],
    members: list[_Row],
    head: list[float],
    urgency: Callable[[list[int]], list[int]],
    scratch: _Scratch,
) -> tuple[list[int], list[int], list[int], list[float], dict[int, list[int]]]:
    """Admit a tier at the minimum; return the admitted, the contested, who rises, their weights and users.

    A constraint with room for the whole tier at their minimum turns nobody away, so a charger loading only
    such constraints fits in every order and is admitted at once. Only the others (the contested: they load
    a constraint short of room) are admitted one by one, most urgent first, while they fit. A constraint
    with room for the whole tier at their ceilings stops nobody rising: a charger loading only such ones
    goes straight to its ceiling. The rest rise in the water fill, which gets from here the weight each
    constraint carries (what its rising chargers add per amp) and who loads it (`users`, whose keys are
    the constraints the tier loads): one pass for all of it. Only those constraints are visited, so a
    small tier (deadline sharing makes hundreds) costs its own memberships, not the whole site's.
    """
    extra = scratch.extra  # the minimums' load beyond `common` each
    peak = scratch.peak
    weight = scratch.weight
    users: dict[int, list[int]] = {}
    common = lows[order[0]] if order else 0.0  # most chargers share one minimum (6 A)
    for i in order:
        high = highs[i]
        entries = members[i]
        for c, coef in entries:
            peak[c] += coef * high
            weight[c] += coef
            who = users.get(c)
            if who is None:
                users[c] = [i]
            else:
                who.append(i)
        above = lows[i] - common
        if above != 0.0:
            for c, coef in entries:
                extra[c] += coef * above
    demand = scratch.demand  # the whole tier at its minimum
    roomy = scratch.roomy
    contested_ids: set[int] = set()
    for c in users:
        demand[c] = need = common * weight[c] + extra[c]
        roomy[c] = head[c] - peak[c] >= 0.0
        if head[c] - need < -EPS:
            contested_ids.update(users[c])
    contested: list[int] = []
    admitted = list(order)
    if contested_ids:
        contested = urgency([i for i in order if i in contested_ids])
        admitted = [i for i in order if i not in contested_ids]
        for i in contested:  # out of the sums: they are admitted one by one below
            low = lows[i]
            for c, coef in members[i]:
                demand[c] -= coef * low
                weight[c] -= coef
    for c in users:
        head[c] -= demand[c]
    for i in admitted:
        amps[i] += lows[i]
    for i in contested:  # (inlined `_fits`/`_take`: the hot path)
        low, entries = lows[i], members[i]
        for c, coef in entries:
            if head[c] - coef * low < -EPS:
                break
        else:
            amps[i] += low
            for c, coef in entries:
                head[c] -= coef * low
                weight[c] += coef
            admitted.append(i)
    rising = []
    for i in admitted:
        entries = members[i]
        for c, _ in entries:
            if not roomy[c]:
                rising.append(i)
                break
        else:
            rise = highs[i] - amps[i]
            for c, coef in entries:
                head[c] -= coef * rise
                weight[c] -= coef
            amps[i] = highs[i]
    return admitted, contested, rising, weight, users


def _fits(entries: list[tuple[int, float]], head: list[float], extra: float) -> bool:
    """Whether `extra` more amps on a charger with these (constraint, coefficient) entries breaks nothing."""
    for c, coef in entries:  # noqa: SIM110 (a plain loop: this is the hot path)
        if head[c] - coef * extra < -EPS:
            return False
    return True


def _take(i: int, extra: float, amps: list[float], entries: list[tuple[int, float]], head: list[float]) -> None:
    amps[i] += extra
    for c, coef in entries:
        head[c] -= coef * extra


def _fill(
    rising: list[int],
    amps: list[float],
    members: list[_Row],
    head: list[float],
    ceiling: list[float],
    weight: list[float],
    users: dict[int, list[int]],
    scratch: _Scratch,
) -> None:
    """Raise a common water level under the `rising` chargers until each meets its ceiling or a full constraint.

    Max-min fair in amps: a charger above the lowest (a higher minimum) joins when the level reaches it.
    `weight[c]` comes in as what all of `rising` add to constraint c per amp of level, and `users[c]` lists
    (at least) who of them loads c, for every constraint any of them loads (the only ones visited). Events
    (a constraint filling, a charger reaching its ceiling, a charger joining) come off heaps in level order.
    A constraint's headroom is brought up to date only when its weight changes. A charger joining makes its
    constraints fill sooner, so they get a new heap entry at once; one leaving only makes them fill later,
    so their entry stays as a lower bound and is worked out again only if it comes to the top (`_settle`).
    Cost O(memberships + events · log), not a scan of every constraint per event. Hot loops are inlined and
    the state is in plain lists (`scratch`, no closures): this is the allocator's innermost loop.
    """
    if not rising:
        return
    level = min([amps[i] for i in rising])
    state = dict.fromkeys(rising, _WAITING)  # (others that load a full constraint read as waiting)
    joining = []
    for i in rising:
        if amps[i] <= level + EPS:
            state[i] = _RISING
        else:  # joins later, at its own minimum
            joining.append((amps[i], i))
            for c, coef in members[i]:
                weight[c] -= coef
    joining.sort(reverse=True)  # pop() takes the lowest
    n_rising = len(rising) - len(joining)
    reach = [(ceiling[i], i) for i in rising if state[i] == _RISING]
    heapq.heapify(reach)
    version = scratch.version  # bumped at each change of weight; an entry of an older version is a lower bound
    exact = scratch.exact  # the version of c's latest exact entry in `fills`
    since = scratch.since  # level at which head[c] was last brought up to date
    for c in users:
        since[c] = level
    # (level at which c is full, version, c)
    fills = [(level + max(head[c], 0.0) / weight[c], 0, c) for c in users if weight[c] > EPS]
    heapq.heapify(fills)
    dirty: set[int] = set()
    mark = dirty.add
    push, pop = heapq.heappush, heapq.heappop

    while n_rising or joining:
        while joining and (state[joining[-1][1]] == _DONE or joining[-1][0] <= level + EPS):
            _, i = joining.pop()
            if state[i] == _DONE:
                continue
            state[i] = _RISING
            n_rising += 1
            push(reach, (ceiling[i], i))
            for c, coef in members[i]:
                if since[c] != level:
                    head[c] -= weight[c] * (level - since[c])
                    since[c] = level
                weight[c] += coef
                mark(c)
        for c in dirty:  # weights that rose: each constraint's new (sooner) fill level
            version[c] += 1
            if weight[c] > EPS:
                push(fills, (level + max(head[c], 0.0) / weight[c], version[c], c))
                exact[c] = version[c]
        dirty.clear()
        _settle(fills, version, exact, weight, head, since, level)
        while reach and state[reach[0][1]] != _RISING:
            pop(reach)
        nxt = min(
            fills[0][0] if fills else math.inf,
            reach[0][0] if reach else math.inf,
            joining[-1][0] if joining else math.inf,
        )
        if nxt == math.inf:
            break
        if nxt > level:
            level = nxt
        # Freeze, in this order, the chargers at their ceiling, then the users of each constraint now full.
        capped = []
        while reach and reach[0][0] <= level + EPS:
            capped.append(pop(reach)[1])
        who: list[int] | None = capped
        while who is not None:
            for i in who:
                was = state.get(i, _WAITING)
                if was == _DONE:
                    continue
                state[i] = _DONE
                if was == _RISING:
                    n_rising -= 1
                    if amps[i] < level:
                        amps[i] = level
                    for c, coef in members[i]:
                        if since[c] != level:
                            head[c] -= weight[c] * (level - since[c])
                            since[c] = level
                        weight[c] -= coef
                        mark(c)
            who = None
            _settle(fills, version, exact, weight, head, since, level)
            if fills and fills[0][0] <= level + EPS:
                who = users[pop(fills)[2]]
        for c in dirty:  # weights that fell: their entries stay, as lower bounds
            version[c] += 1
        dirty.clear()
    for c in users:  # bring every headroom up to date for the steps that follow
        if since[c] != level:
            head[c] -= weight[c] * (level - since[c])


_WAITING, _RISING, _DONE = 0, 1, 2  # a charger's state while the water level rises


def _settle(
    fills: list[tuple[float, int, int]],
    version: list[int],
    exact: list[int],
    weight: list[float],
    head: list[float],
    since: list[float],
    level: float,
) -> None:
    """Work out the top of `fills` until it is exact: the next constraint to fill, and when."""
    while fills:
        _, ver, c = fills[0]
        w = weight[c]
        if ver == version[c] and w > EPS:
            return
        heapq.heappop(fills)
        if w <= EPS or exact[c] == version[c]:
            continue  # nobody rises on it any more, or its exact entry is further down
        if since[c] != level:
            head[c] -= w * (level - since[c])
            since[c] = level
        heapq.heappush(fills, (level + max(head[c], 0.0) / w, version[c], c))
        exact[c] = version[c]


def _top_up(
    admitted: list[int],
    evses: Sequence[EvseState],
    amps: list[float],
    highs: list[float],
    members: list[list[tuple[int, float]]],
    head: list[float],
) -> None:
    """Hand out what is left one step at a time, lowest charger first, until nobody can take a step."""
    # A charger that cannot take a step now never can (amps only rise, headrooms only fall): leave it off.
    queue = [
        (amps[i], evses[i].id, i)
        for i in admitted
        if amps[i] + evses[i].step_a <= highs[i] + EPS and _fits(members[i], head, evses[i].step_a)
    ]
    heapq.heapify(queue)
    push, pop = heapq.heappush, heapq.heappop
    while queue:
        _, ident, i = pop(queue)
        step = evses[i].step_a
        if amps[i] + step > highs[i] + EPS:
            continue
        entries = members[i]
        for c, coef in entries:  # (inlined `_fits`/`_take`: the hot path)
            if head[c] - coef * step < -EPS:
                break
        else:
            for c, coef in entries:
                head[c] -= coef * step
            amps[i] = round(amps[i] + step, 6)
            push(queue, (amps[i], ident, i))
