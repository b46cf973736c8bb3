"""Whether the optimiser earns its budget: the fallback said once, shown as an alarm, and a rest when it
keeps failing.

With `control.sharing = "optimise"` a decision whose program has no optimum within its budget (half a tick)
is served in deadline order, and its allocation says so in its notes (as it says a class optimised without
its horizon plan, which is logged the same way but is no fallback). Each such note is logged once while
it lasts (again if it comes back after a decision without it), and the `allocate.fallback` warning is in
force while the decisions fall back. A site where the optimiser keeps failing (thousands of chargers on a
busy machine) would spend half of every tick on it for nothing: after `FALLBACKS_TO_REST` fallbacks in a
row the decisions are made in deadline order for `REST_S`, then the optimiser is tried again. Pure but for
the alarms it raises; `now` is the caller's.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta

from gateway.allocate import Sharing, fell_back
from gateway.runtime.alarms import Alarms
from gateway.runtime.decide import Decision, Site, notes_to_say

log = logging.getLogger("gateway.runtime")
FALLBACKS_TO_REST = 3  # fallbacks in a row before the optimiser rests
REST_S = 300.0  # how long it rests: decisions in deadline order meanwhile
ALARM = "allocate.fallback"


class OptimiserWatch:
    def __init__(self, alarms: Alarms) -> None:
        self.alarms = alarms
        self.said: frozenset[str] = frozenset()
        self.in_a_row = 0
        self.rest_until: datetime | None = None

    def site_for(self, site: Site, now: datetime) -> Site:
        """The site to decide on now: in deadline order while the optimiser rests."""
        if site.sharing is Sharing.OPTIMISE and self.rest_until is not None and now < self.rest_until:
            return dataclasses.replace(site, sharing=Sharing.DEADLINE)
        return site

    def after(self, site: Site, decision: Decision, now: datetime) -> None:
        """What the decision made on `site_for(site, now)` says about the optimiser."""
        if site.sharing is not Sharing.OPTIMISE:
            return
        resting = self.rest_until is not None and now < self.rest_until
        if resting:
            return
        if self.rest_until is not None:  # the rest is over: this decision was the optimiser's again
            self.rest_until = None
            log.info("optimiser tried again after its rest")
        said, self.said = notes_to_say(decision, self.said)
        for note in said:
            log.warning("allocation %s", note)
        # A class optimised without its horizon plan ("served without the plan") is said, but it is no
        # fallback: the program still answered.
        if not fell_back(decision.allocation):
            self.in_a_row = 0
            self.alarms.clear(ALARM, now, "the optimiser answers within its budget again")
            return
        self.in_a_row += 1
        self.alarms.raise_(ALARM, "the optimiser found no answer within its budget: limits are decided in "
                           "deadline order (safe, only less optimised)", now,
                           action='if it persists, set [control] sharing = "deadline" or a longer tick_s '
                                  "(docs/allocation.md)")
        if self.in_a_row >= FALLBACKS_TO_REST:
            self.rest_until = now + timedelta(seconds=REST_S)
            self.in_a_row = 0
            log.warning("optimiser resting for %g s after %d fallbacks in a row: deadline order meanwhile",
                        REST_S, FALLBACKS_TO_REST)
