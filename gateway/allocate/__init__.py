"""Split the site's capacity among its chargers: the pure decision at the heart of the gateway.

Every phase conductor of every circuit, the site's kW limit, the EV kW limit and any group caps are linear
constraints `Σ coef·amps ≤ headroom`, where headroom is the limit less what the gateway cannot control
(non-EV load, stale readings taken at their worst, chargers whose limit is held). The conductor
constraints of a circuit tree are worked out once and kept while the tree stays the same. Chargers are
served one priority class at a time, most important first. Inside a class they are admitted at their
minimum in order of urgency (protected by a minimum on-time, then least laxity, then longest waiting):
this is what makes the paused ones take turns; a charger on constraints with room for the whole class
is admitted whatever the order. The admitted ones then rise together (max-min fair above their minimum) until
each meets its own maximum or a full constraint, are rounded down to their step, and whatever the rounding
freed is handed out again step by step, lowest first, so no capacity a charger could use is left idle.
Limits that are no conductor of the tree (a transformer winding several phase pairs feed, a phasor limit
cut into linear pieces) come in as `LinearLimit`s. With `Sharing.DEADLINE` a class is served in urgency
tiers instead (cars about to miss their departure first, earliest departure first), each tier as above.
With `Sharing.OPTIMISE` a class's currents come from a small mixed-integer program (`milp`:
urgency-weighted energy now, less a penalty per amp a pilot moves), checked against every constraint
again and topped up like the rest; without an answer in time the class is served as under DEADLINE.
Smoothing over time (deadband, ramps, rotation memory) is a separate step: `gateway.smoothing`.

The package, one job a module: `problem` (what a decision is asked; the step grid), `constraints` (the
rows and their headroom, the topology cache), `order` (who goes first), `fill` (admitting, raising,
rounding, topping up), `milp` (the optimiser), `decision` (`allocate` itself) and `fallbacks` (the
fallback each charger may keep beside the limits decided). Import from here.
"""

from __future__ import annotations

from gateway.allocate.decision import allocate, fell_back
from gateway.allocate.fallbacks import kept_fallbacks
from gateway.allocate.order import admission_key, deadline_tier
from gateway.allocate.problem import (
    EPS,
    LinearLimit,
    Problem,
    ProblemError,
    Sharing,
    step_ceil,
    step_floor,
    usable_range,
)

__all__ = [
    "EPS",
    "LinearLimit",
    "Problem",
    "ProblemError",
    "Sharing",
    "admission_key",
    "allocate",
    "deadline_tier",
    "fell_back",
    "kept_fallbacks",
    "step_ceil",
    "step_floor",
    "usable_range",
]
