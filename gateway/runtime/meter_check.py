"""Whether a meter's readings can be believed, pure: one poll at a time against what the chargers report.

A meter that lies is worse than a silent one: a silent meter goes stale and is counted at its worst, a
lying one looks fresh. So every poll of a meter is judged against what can be true at its circuit:

- **absurd**: a value no meter on this circuit can read (NaN, 1e9 A; the poller refuses those, or more than
  `absurd_over` times the circuit's limit). A fault at once: nothing explains it.
- **implausible**: a phase reads less than the managed chargers behind it report drawing (when the meter
  sees them), less the export the site can make (PV, `export_a`; 0: none, so any negative current is a
  lie) and a tolerance. The chargers report late (the meter sees a car stop before its charger says so),
  so a poll like that is only *suspect*; the fault is confirmed when it lasts `confirm_s`.
- **frozen**: bit-identical readings while the chargers behind the meter report their draws moving by
  `frozen_change_a` or more (a live meter would have moved with them), or, with current flowing,
  identical readings for `frozen_after_s` (a live meter's values and energy counters never stand still).

While a poll is suspect, the reading is not believed: the non-EV load is held at the highest it was
believed to be over the last `confirm_s` (so a lie raises no charger), and nothing new is learnt from it.
While a fault is in force the non-EV load counts at `fault_non_ev_a` per phase (default: the circuit's
whole limit, which leaves nothing for the chargers below it), and never below what was held. A fault
ends when readings have been plausible for `clear_s` and one of them showed the meter live (it sees the
chargers draw, or its currents moved since it was caught). A meter stuck at 0 A reads plausibly once the
chargers it was caught under have stopped: without a sign of life it stays suspect (then a fault) rather
than be believed at 0 A. Another kind of trouble while one is in force does not start a second alarm.

No I/O and no clock: `at` is the caller's monotonic time in seconds. `step` returns the new state; the
runtime raises or clears the alarm on the transitions (`started`, `ended`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from gateway.domain import Phase

Kind = Literal["absurd", "implausible", "frozen"]
HOLD_POINTS = 64  # believed non-EV estimates kept for holding (a bound, not a window: the window is confirm_s)


@dataclass(frozen=True, slots=True)
class CheckSettings:
    """How one meter is judged; built from its config and its circuit."""

    limit_a: Mapping[Phase, float]  # the circuit's usable limit per phase (its conductors)
    includes_evs: bool = True  # the meter sees the managed chargers' current
    export_a: float = 0.0  # the most current per phase that can flow out through it (PV); 0: none can
    tolerance_a: float = 2.0  # meter and charger accuracy, in amps …
    tolerance_share: float = 0.05  # … plus this share of what the chargers report
    confirm_s: float = 5.0  # a suspect reading that lasts this long is a fault
    clear_s: float = 5.0  # plausible readings for this long end a fault
    frozen_change_a: float = 3.0  # a move in the chargers' draws a live meter must show
    frozen_settle_s: float = 2.0  # how long after such a move the reading may still be the same
    frozen_after_s: float = 10.0  # identical readings with current flowing this long: frozen (0: never)
    absurd_over: float = 10.0  # a reading above this many times the circuit's limit is absurd
    fault_non_ev_a: float | None = None  # non-EV load counted while a fault is in force (None: the limit)

    @property
    def phases(self) -> tuple[Phase, ...]:
        return tuple(self.limit_a)


@dataclass(frozen=True, slots=True)
class Poll:
    """One poll of the meter, with what the chargers behind it reported drawing at that moment."""

    at: float  # monotonic seconds
    current_a: Mapping[Phase, float] = field(default_factory=dict)  # signed: negative is export
    ev_a: Mapping[Phase, float] = field(default_factory=dict)  # the managed chargers' reported draw per phase
    values: tuple[float, ...] = ()  # every number the meter gave (currents, powers, voltages, energy)
    rejected: str | None = None  # the poller refused the values (NaN, out of any range): why


@dataclass(frozen=True, slots=True)
class Fault:
    kind: Kind
    why: str  # one line, with the figures
    since: float  # monotonic seconds


@dataclass(frozen=True, slots=True)
class Frozen:
    """The run of identical readings the meter is in."""

    values: tuple[float, ...]
    since: float
    ev_first: Mapping[Phase, float]  # what the chargers reported when the run began
    moved_at: float | None = None  # when their draws had moved by frozen_change_a (None: not yet)
    moved_why: str = ""


@dataclass(frozen=True, slots=True)
class MeterState:
    fault: Fault | None = None  # confirmed: the alarm is in force
    suspect: Fault | None = None  # what the polls say now, since when (not yet confirmed, or still going)
    plausible_since: float | None = None  # while a fault is in force: good polls since
    plausible_alive: bool = False  # … and whether one of them showed the meter live
    odd_a: Mapping[Phase, float] = field(default_factory=dict)  # the currents of the last poll not believed
    run: Frozen | None = None
    held: tuple[tuple[float, tuple[tuple[Phase, float], ...]], ...] = ()  # believed non-EV estimates
    started: Fault | None = None  # the fault that started at this step (the caller raises the alarm)
    ended: Fault | None = None  # the fault that ended at this step (the caller clears it)

    @property
    def believed(self) -> bool:
        """The last poll's reading may be used as a measurement."""
        return self.fault is None and self.suspect is None


def tolerance(s: CheckSettings, ev: float) -> float:
    return s.tolerance_a + s.tolerance_share * max(0.0, ev)


def judge(poll: Poll, s: CheckSettings) -> tuple[Kind, str] | None:
    """What is wrong with this one poll on its own (None: nothing)."""
    if poll.rejected is not None:
        return "absurd", poll.rejected
    for phase, limit in s.limit_a.items():
        amps = poll.current_a.get(phase)
        if amps is None:
            continue
        if not math.isfinite(amps) or abs(amps) > s.absurd_over * limit:
            return "absurd", f"{phase} reads {amps:g} A on a circuit of {limit:g} A"
        ev = max(0.0, poll.ev_a.get(phase, 0.0)) if s.includes_evs else 0.0
        floor = ev - s.export_a - tolerance(s, ev)
        if amps < floor:
            if ev > tolerance(s, 0.0):
                why = f"{phase} reads {amps:.1f} A, less than the {ev:.1f} A the chargers behind it report drawing"
                if s.export_a > 0:
                    why += f" less the {s.export_a:.1f} A its PV can export"
            elif s.export_a > 0:
                why = f"{phase} reads {amps:.1f} A: more export than the {s.export_a:.1f} A its PV can make"
            else:
                why = f"{phase} reads {amps:.1f} A: export, and nothing here can export (no PV configured)"
            return "implausible", why
    return None


def _moved(first: Mapping[Phase, float], now: Mapping[Phase, float], s: CheckSettings) -> str | None:
    for phase in s.phases:
        a, b = first.get(phase, 0.0), now.get(phase, 0.0)
        if abs(b - a) >= s.frozen_change_a:
            return f"{phase} reads the same while the chargers behind it went from {a:.1f} A to {b:.1f} A"
    return None


def _frozen(run: Frozen | None, poll: Poll, s: CheckSettings) -> tuple[Frozen | None, str | None]:
    """The run of identical readings after this poll, and why it is frozen (None: not, or not yet)."""
    if not poll.values or poll.rejected is not None:
        return run, None
    if run is None or run.values != poll.values:
        return Frozen(poll.values, poll.at, dict(poll.ev_a)), None
    if s.includes_evs and run.moved_at is None and (why := _moved(run.ev_first, poll.ev_a, s)):
        run = replace(run, moved_at=poll.at, moved_why=why)
    if run.moved_at is not None and poll.at - run.moved_at >= s.frozen_settle_s:
        return run, run.moved_why
    flowing = any(abs(a) > tolerance(s, 0.0) for a in poll.current_a.values())
    if s.frozen_after_s > 0 and flowing and poll.at - run.since >= s.frozen_after_s:
        return run, f"identical readings for {poll.at - run.since:.0f} s with current flowing"
    return run, None


def non_ev_estimate(poll: Poll, s: CheckSettings) -> dict[Phase, float]:
    """What is not a managed charger, per phase, from a reading believed (export is never credited)."""
    out: dict[Phase, float] = {}
    for phase in s.phases:
        amps = poll.current_a.get(phase)
        if amps is None:
            continue
        ev = poll.ev_a.get(phase, 0.0) if s.includes_evs else 0.0
        out[phase] = max(0.0, amps - ev)
    return out


def alive(poll: Poll, odd_a: Mapping[Phase, float], s: CheckSettings) -> bool:
    """A plausible poll that shows the meter live: it sees chargers drawing, or its currents moved since
    the last poll that was not believed (a stuck meter's stand still, whatever the chargers do)."""
    if poll.rejected is not None or not poll.current_a:
        return False
    if s.includes_evs and any(poll.ev_a.get(p, 0.0) > s.tolerance_a for p in s.phases):
        return True
    return not odd_a or any(poll.current_a.get(p) != odd_a.get(p) for p in s.phases)


def step(state: MeterState, poll: Poll, s: CheckSettings) -> MeterState:
    """The state after one more poll."""
    run, frozen_why = _frozen(state.run, poll, s)
    verdict = judge(poll, s)
    if verdict is None and frozen_why is not None:
        verdict = ("frozen", frozen_why)
    suspect, odd_a = state.suspect, state.odd_a
    if verdict is None and suspect is not None and suspect.kind == "implausible" and not alive(poll, odd_a, s):
        # Plausible only because the chargers it was caught under have stopped (a stuck 0 A reads right once
        # they draw nothing): still suspect until the meter shows it is live.
        verdict = (suspect.kind, suspect.why)
    elif verdict is not None:
        odd_a = dict(poll.current_a)
    if verdict is None:
        suspect = None
    elif suspect is None or suspect.kind != verdict[0]:
        suspect = Fault(verdict[0], verdict[1], poll.at)
    else:
        suspect = replace(suspect, why=verdict[1])  # the same trouble, figures updated
    fault, started, ended = state.fault, None, None
    plausible_since, lively = state.plausible_since, state.plausible_alive
    if suspect is not None:
        plausible_since, lively = None, False
        confirmed = suspect.kind != "implausible" or poll.at - suspect.since >= s.confirm_s
        if confirmed and fault is None:
            fault = started = suspect
        elif fault is not None and fault.kind == suspect.kind:
            fault = replace(fault, why=suspect.why)
        # Another kind while one is in force (a stuck zero is implausible, then frozen once the chargers
        # stop): the fault in force goes on, one alarm from its start to its end.
    elif fault is not None:
        # The fault ends on plausible readings for clear_s, one of which at least shows the meter live: a
        # meter stuck at a value its chargers' stopping made consistent is not believed again.
        plausible_since = poll.at if plausible_since is None else plausible_since
        lively = lively or alive(poll, odd_a, s)
        if poll.at - plausible_since >= s.clear_s and lively:
            fault, ended, plausible_since, lively = None, fault, None, False
    if fault is None and suspect is None:
        odd_a = {}
    held = state.held
    if suspect is None and fault is None:
        held = (*held, (poll.at, tuple(non_ev_estimate(poll, s).items())))[-HOLD_POINTS:]
    held = tuple(h for h in held if poll.at - h[0] <= s.confirm_s + s.clear_s or h is held[-1])
    return MeterState(fault, suspect, plausible_since, lively, odd_a, run, held, started, ended)


def held_non_ev(state: MeterState, s: CheckSettings) -> dict[Phase, float]:
    """The highest non-EV load per phase believed recently (none believed: the circuit's limit)."""
    out: dict[Phase, float] = {}
    for _, estimate in state.held:
        for phase, amps in estimate:
            out[phase] = max(amps, out.get(phase, amps))
    return {p: out.get(p, limit) for p, limit in s.limit_a.items()}


def counted_non_ev(state: MeterState, s: CheckSettings) -> dict[Phase, float] | None:
    """The non-EV load to count per phase instead of the reading (None: the reading is believed)."""
    if state.believed:
        return None
    held = held_non_ev(state, s)
    if state.fault is None:
        return held  # suspect only: nothing new is learnt, nothing is raised
    fault = {p: limit if s.fault_non_ev_a is None else min(limit, s.fault_non_ev_a) for p, limit in s.limit_a.items()}
    return {p: max(fault[p], held[p]) for p in s.phases}
