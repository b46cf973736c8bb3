"""The fallback each charger may keep beside the limits just decided: what it falls back to by itself
when a lease runs out or the gateway goes (its base profile), on top of its limit wherever that is lower.

A charger's lease and the others' leases end at different instants, so the site must stay within every
limit under any mix of chargers on their limits and on their fallbacks: a charger counts at the larger of
the two. Its configured fallback is kept where every limit it loads still has room for it, chargers with a
car first (then by priority); elsewhere its fallback goes down to its limit. An operator's pause keeps
nothing: a paused charger falls back to 0 A.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from gateway.allocate.constraints import _build
from gateway.allocate.problem import EPS, Problem


def kept_fallbacks(problem: Problem, amps: Mapping[str, float], off: Collection[str] = ()) -> dict[str, float]:
    """Per charger not held: the most its own fallback may hold beside `amps` (the limits decided, held
    chargers already counted at what they may draw), never above its configured `fallback_a`."""
    cons, members, _, _ = _build(problem)
    head = cons.headroom
    free: list[int] = []
    for i, evse in enumerate(problem.evses):
        if evse.held_a is not None:
            continue
        free.append(i)
        limit = amps.get(evse.id, 0.0)
        for c, coef in members[i]:
            head[c] -= coef * limit
    free.sort(key=lambda i: (not problem.evses[i].connected, -problem.evses[i].priority, problem.evses[i].id))
    out: dict[str, float] = {}
    for i in free:
        evse = problem.evses[i]
        limit = amps.get(evse.id, 0.0)
        fallback = 0.0 if evse.id in off else evse.fallback_a
        extra = fallback - limit
        if extra <= EPS:
            out[evse.id] = fallback
        elif all(head[c] - coef * extra >= -EPS for c, coef in members[i]):
            for c, coef in members[i]:
                head[c] -= coef * extra
            out[evse.id] = fallback
        else:
            out[evse.id] = limit
    return out
