"""One control decision, pure: what the site knows now → the limits to have in force and the changes to send.

No I/O and no clock (`now` is a parameter), so every safety rule here is unit-tested. From the circuits
and chargers of the config (`Site`), the schedule segment in force, an operator cap and the plan's demand
peak target (all three are site power limits; the lowest binds), the latest
charger readings, the meters and the smoothing memory, it builds an allocation `Problem`, runs `allocate`
and `smooth`, and returns the limits, the changes with their reasons (one key=value log line each) and
the new memory. Pessimism lives here: a charger never heard from, offline, silent with a car plugged in
for longer than `charger_stale_s` or with an unacknowledged limit is counted at its maximum and not
re-allocated; a stale meter counts at the worst it read recently; a meter never read leaves nothing
for the chargers below it. The non-EV load of a circuit is its meter's reading less the managed
chargers' measured currents when the meter sees them. A charger an operator paused gets 0 A with the
reason "paused by operator" until it is resumed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from gateway.allocate import Problem, Sharing, allocate, kept_fallbacks
from gateway.domain import (
    J1772_MIN_A,
    Allocation,
    ChargerReading,
    ChargerStatus,
    Circuit,
    EvseState,
    GroupLimit,
    NonEvLoad,
    Phase,
    Segment,
    SiteLimits,
)
from gateway.smoothing import ChargerMemory, SmoothingSettings, remembered, smooth

PAUSED = "paused by operator"  # the reason a charger an operator paused is given 0 A
UNUSED = "ev draws less: the rest handed to others"  # the reason a charger is held by what its EV draws
SOLAR = "pv surplus"  # the reason a charger is held by the surplus its mode lets it take


@dataclass(frozen=True, slots=True)
class MeterSpec:
    id: str
    circuit: str
    includes_evs: bool
    stale_after: timedelta


@dataclass(frozen=True, slots=True)
class Site:
    """What the decision needs from the config; built once at start."""

    circuits: tuple[Circuit, ...]
    evses: tuple[EvseState, ...]
    meters: tuple[MeterSpec, ...]
    service_id: str
    ln_v: float
    power_factor: float
    smoothing: SmoothingSettings = field(default_factory=SmoothingSettings)
    min_on_time: timedelta = timedelta(0)
    charger_stale: timedelta = timedelta(seconds=60)
    resources: Mapping[str, frozenset[str]] = field(default_factory=dict)  # OpenADR resource → charger ids
    sharing: Sharing = Sharing.OPTIMISE  # `control.sharing`: how a priority class shares what it may use
    optimise_time_s: float = 0.5  # the optimiser's budget per decision; no answer by then: deadline order

    def below(self, circuit_id: str) -> set[str]:
        """`circuit_id` and every circuit under it."""
        parents = {c.id: c.parent for c in self.circuits}
        out: set[str] = set()
        for cid in parents:
            node: str | None = cid
            hops = 0
            while node is not None and hops <= len(parents):
                if node == circuit_id:
                    out.add(cid)
                    break
                node, hops = parents.get(node), hops + 1
        return out


@dataclass(frozen=True, slots=True)
class MeterReading:
    """The latest good reading of one meter, with the worst current per phase it read recently.

    `distrusted` says why the reading is not to be believed (implausible, frozen, absurd; see
    `gateway.runtime.meter_check`); then `non_ev_a` is the non-EV load to count per phase instead."""

    meter_id: str
    current_a: Mapping[Phase, float]
    measured_at: datetime
    worst_a: Mapping[Phase, float] = field(default_factory=dict)
    distrusted: str | None = None
    non_ev_a: Mapping[Phase, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Inputs:
    now: datetime
    segment: Segment | None = None
    operator_cap_kw: float | None = None
    readings: Mapping[str, ChargerReading] = field(default_factory=dict)
    meters: Mapping[str, MeterReading] = field(default_factory=dict)
    want_a: Mapping[str, float | None] = field(default_factory=dict)  # the plan's targets
    # A cap for a charger whose EV has drawn well under its limit for a while (its driver's hand-back):
    # the allocator gives the rest to the others. Never below the charger's minimum, so it cannot pause it.
    unused_a: Mapping[str, float] = field(default_factory=dict)
    energy_needed_kwh: Mapping[str, float] = field(default_factory=dict)  # what each session still asks for
    # The plan's site power target while a demand charge is in force: the site is kept under it like under
    # a site limit, so the month's peak (and its charge) grows only when the plan needs it to.
    peak_kw: float | None = None
    # The highest non-EV estimate per (circuit, phase) over the last few seconds: a drop in the estimate
    # is often only the meter seeing a limit change before the charger reports it, so drops are believed
    # slowly and rises at once (the caller keeps the window; see `Decision.non_ev_raw`).
    non_ev_recent: Mapping[tuple[str, Phase], float] = field(default_factory=dict)
    unacked: frozenset[str] = frozenset()  # last limit not acknowledged: assumed at its maximum
    memory: Mapping[str, ChargerMemory] = field(default_factory=dict)
    paused: frozenset[str] = frozenset()  # chargers an operator paused: 0 A until resumed
    # Solar first (`gateway.surplus`): per `pv`/`minpv` charger the most the PV surplus lets it take (0 pauses
    # it), and the EV power that keeps the grid import under its cap. Caps only: every other limit still binds.
    surplus_a: Mapping[str, float] = field(default_factory=dict)
    import_cap_ev_kw: float | None = None


@dataclass(frozen=True, slots=True)
class LimitChange:
    evse_id: str
    old_a: float
    new_a: float
    reason: str
    first: bool = False  # nothing was decided for it before (since start)

    def log_line(self) -> str:
        old = "none" if self.first else f"{self.old_a:g}"
        return f"limit charger={self.evse_id} old_a={old} new_a={self.new_a:g} reason={self.reason!r}"


@dataclass(frozen=True, slots=True)
class Decision:
    now: datetime
    limits: Mapping[str, float]  # in force after this decision (held chargers keep their old one)
    changes: tuple[LimitChange, ...]
    memory: Mapping[str, ChargerMemory]
    allocation: Allocation
    evses: tuple[EvseState, ...]
    reasons: Mapping[str, str]  # per charger: why its limit is what it is
    site_limit_kw: float | None
    ev_limit_kw: float | None
    non_ev: tuple[NonEvLoad, ...]  # what the allocation used
    non_ev_kw: float
    non_ev_raw: tuple[NonEvLoad, ...] = ()  # this decision's own estimate from fresh readings only
    peak_kw: float | None = None  # the demand peak target the site was kept under (None: no demand charge)
    # per charger, the most it may be drawing now as its driver knows it (its limit in force, a lease the
    # previous process left, a raise not yet answered; its maximum when unknown): what a change is
    # compared with to know whether it lowers the charger
    in_force: Mapping[str, float] = field(default_factory=dict)
    # per charger not held: the most its own fallback (its base) may hold beside these limits
    # (`gateway.allocate.fallbacks`): lowering one gives room up, so it goes out with the decreases
    fallbacks: Mapping[str, float] = field(default_factory=dict)
    problem: Problem | None = None  # what the allocation was asked (what a clean stop's fallbacks are worked out on)

    def lowers(self, change: LimitChange) -> bool:
        return change.new_a < max(change.old_a, self.in_force.get(change.evse_id, change.old_a))

    @property
    def decreases(self) -> dict[str, float]:
        """Changes that lower what a charger may draw: they go out first and must all be acknowledged
        before any increase uses the room they free."""
        return {c.evse_id: c.new_a for c in self.changes if self.lowers(c)}

    @property
    def increases(self) -> dict[str, float]:
        return {c.evse_id: c.new_a for c in self.changes if not self.lowers(c)}


def measured_a(evse: EvseState, reading: ChargerReading) -> float | None:
    """The charger's highest phase current, or its power turned into amps when it reports no currents."""
    currents = [reading.current_a[p] for p in evse.phases if p in reading.current_a]
    if currents:
        return max(currents)
    if reading.power_kw is not None and evse.kw_per_a > 0:
        return reading.power_kw / evse.kw_per_a
    return None


def may_draw(evse: EvseState, reading: ChargerReading | None) -> float:
    """The most a charger may be drawing now: its driver's word (`applied_limit_a`) or its maximum when
    the driver has none, and never less than the draw last measured (a charger over its limit counts at
    what it draws)."""
    may = evse.max_a if reading is None or reading.applied_limit_a is None else reading.applied_limit_a
    measured = measured_a(evse, reading) if reading is not None and reading.status.connected else None
    return max(may, measured or 0.0)


def _want(evse: EvseState, inputs: Inputs) -> float | None:
    """The plan's target, the hand-back cap and the surplus cap together: the lowest wins (None: none caps it)."""
    planned = inputs.want_a.get(evse.id)
    unused = inputs.unused_a.get(evse.id)
    if unused is not None:
        unused = max(unused, evse.min_a, J1772_MIN_A)
    return _min(planned, unused, inputs.surplus_a.get(evse.id))


def charger_states(site: Site, inputs: Inputs) -> tuple[list[EvseState], set[str]]:
    """Each charger as the allocator sees it now, and the ids of those held at their maximum."""
    out: list[EvseState] = []
    held: set[str] = set()
    for evse in site.evses:
        reading = inputs.readings.get(evse.id)
        # An idle charger may rightly say nothing for long (OCPP reports on change); one with a car
        # plugged in must keep reporting, or it is counted at its maximum.
        silent = (
            reading is None
            or reading.status is ChargerStatus.OFFLINE
            or (reading.status.connected and inputs.now - reading.at > site.charger_stale)
        )
        state = replace(evse, want_a=_want(evse, inputs),
                        energy_needed_kwh=inputs.energy_needed_kwh.get(evse.id))
        if reading is not None:
            state = replace(
                state,
                connected=reading.status.connected,
                measured_a=measured_a(evse, reading),
                departure=reading.departure,
            )
        if evse.id in inputs.paused:
            # Paused by an operator: it wants nothing now, so the allocator gives it 0 A and the plan skips it.
            state = replace(state, connected=False)
        if silent or evse.id in inputs.unacked:
            # Not re-allocated: counted at the most it may draw, as its driver knows it (a lease it holds,
            # a limit sent but not answered; its maximum when nothing is known), or at what it was last
            # measured drawing when that is more.
            state = replace(state, held_a=may_draw(evse, reading))
            held.add(evse.id)
        out.append(state)
    return out, held


def non_ev_loads(
    site: Site, inputs: Inputs, evses: Sequence[EvseState], held: set[str]
) -> tuple[list[NonEvLoad], set[tuple[str, Phase]]]:
    """Per metered circuit and phase: what is not a managed charger, pessimistic when the meter is stale;
    and which of those come from a fresh reading (the others are stand-ins, not measurements)."""
    circuits = {c.id: c for c in site.circuits}
    loads: dict[tuple[str, Phase], float] = {}
    fresh: set[tuple[str, Phase]] = set()
    for spec in site.meters:
        circuit = circuits.get(spec.circuit)
        if circuit is None:
            continue
        reading = inputs.meters.get(spec.id)
        below = site.below(spec.circuit)
        for phase in circuit.phases:
            stale = reading is not None and inputs.now - reading.measured_at > spec.stale_after
            if reading is None:
                amps = circuit.limit_of(phase)  # never read: nothing is known to be left for EVs
            elif stale or reading.distrusted is not None:
                amps = 0.0
                if stale:
                    # Stale: the worst it read recently, EVs included (double counting is the safe side).
                    amps = max(reading.worst_a.get(phase, 0.0), reading.current_a.get(phase, 0.0))
                    if not reading.worst_a:  # silent for longer than it remembers: nothing is known
                        amps = circuit.limit_of(phase)
                if reading.distrusted is not None:
                    # Not believed (it lies): what the meter check counts instead, nothing learnt from it.
                    amps = max(amps, reading.non_ev_a.get(phase, circuit.limit_of(phase)))
            else:
                fresh.add((spec.circuit, phase))
                amps = reading.current_a.get(phase, 0.0)
                if spec.includes_evs:
                    # Held chargers are counted at their max anyway; subtracting nothing for them is safe.
                    amps -= sum(
                        e.measured_a or 0.0
                        for e in evses
                        if e.id not in held and e.circuit in below and phase in e.phases
                    )
                # Export (PV) and measurement skew are not credited to the chargers: never below zero.
                amps = max(0.0, amps)
            key = (spec.circuit, phase)
            loads[key] = max(loads.get(key, amps), amps)
    return [NonEvLoad(c, p, a, inputs.now) for (c, p), a in loads.items()], fresh


def _min(*values: float | None) -> float | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def notes_to_say(decision: Decision, said: frozenset[str]) -> tuple[list[str], frozenset[str]]:
    """The allocation's notes (how it was made where not the configured way: the optimiser had no answer in
    time, so the deadline order served) not already said at the decision before, and what is said now:
    the caller logs each once while it lasts, and again if it comes back after a decision without it."""
    notes = decision.allocation.notes
    return [n for n in notes if n not in said], frozenset(notes)


def decide(site: Site, inputs: Inputs) -> Decision:
    now = inputs.now
    evses, held = charger_states(site, inputs)
    evses = remembered(evses, inputs.memory)
    estimated, fresh = non_ev_loads(site, inputs, evses, held)
    non_ev = [
        replace(load, amps=max(load.amps, inputs.non_ev_recent.get((load.circuit, load.phase), load.amps)))
        for load in estimated
    ]
    non_ev_raw = [load for load in estimated if (load.circuit, load.phase) in fresh]
    # Non-EV power at the service, for the site kW limit (per-phase amps × line-to-neutral volts), at PF 1
    # like the chargers' side: a PF below 1 would under-count it and let the site go over its kW limit.
    service_amps = sum(load.amps for load in non_ev if load.circuit == site.service_id)
    non_ev_kw = service_amps * site.ln_v / 1000.0
    segment = inputs.segment
    dr_site_kw = _min(segment.site_kw if segment else None, inputs.operator_cap_kw)
    site_kw = _min(dr_site_kw, inputs.peak_kw)
    ev_kw = segment.ev_kw if segment else None
    group_kw = segment.group_kw if segment else {}
    groups = tuple(GroupLimit(rid, site.resources.get(rid, frozenset()), kw) for rid, kw in group_kw.items())
    # A segment's reasons name every signal in force; a limit is explained by the limiting ones only
    # (reasons read "<event>:<signal>:<type>=<value>", so prices and demand charges are told by name).
    limiting = [r for r in (segment.reasons if segment else ()) if not any(
        f":{name}:" in r for name in ("ELECTRICITY_PRICE", "ENERGY_PRICE", "DEMAND_CHARGE"))]
    why_limit = "; ".join(limiting)
    if inputs.operator_cap_kw is not None and site_kw == inputs.operator_cap_kw:
        why_limit = f"operator cap {inputs.operator_cap_kw:g} kW"
    if inputs.peak_kw is not None and (dr_site_kw is None or inputs.peak_kw < dr_site_kw):
        why_limit = f"demand peak target {inputs.peak_kw:.1f} kW"
    problem = Problem(
        circuits=site.circuits,
        evses=evses,
        now=now,
        non_ev=non_ev,
        limits=SiteLimits(site_kw=site_kw, ev_kw=_min(ev_kw, inputs.import_cap_ev_kw), non_ev_kw=non_ev_kw,
                          groups=groups, reason=why_limit),
        min_on_time=site.min_on_time,
        sharing=site.sharing,
        # The limits in force, so that the optimiser's change penalty counts against what each charger has.
        previous={cid: mem.limit_a for cid, mem in inputs.memory.items()},
        optimise_time_s=site.optimise_time_s,
    )
    raw = allocate(problem)
    free = [e for e in evses if e.id not in held]
    limits, new_memory, changes = smooth(raw, free, inputs.memory, now, site.smoothing)
    reasons: dict[str, str] = {}
    out_changes: list[LimitChange] = []

    def explained(reason: str, evse_id: str) -> str:
        if evse_id in inputs.paused and reason == "not connected":
            return PAUSED
        cap = inputs.import_cap_ev_kw
        if reason == "ev" and cap is not None and (ev_kw is None or cap < ev_kw):
            return f"ev (grid import cap: {cap:.1f} kW for EVs)"
        solar = inputs.surplus_a.get(evse_id)
        others = [v for v in (inputs.want_a.get(evse_id), inputs.unused_a.get(evse_id)) if v is not None]
        if reason == "plan" and solar is not None and all(solar <= v for v in others):
            return SOLAR
        if why_limit and (reason in ("site", "ev") or reason.startswith("group:")):
            return f"{reason} ({why_limit})"
        planned, unused = inputs.want_a.get(evse_id), inputs.unused_a.get(evse_id)
        if reason == "plan" and unused is not None and (planned is None or unused <= planned):
            return UNUSED
        return reason

    for change in changes:
        reason = explained(change.reason, change.evse_id)
        first = change.evse_id not in inputs.memory
        out_changes.append(LimitChange(change.evse_id, change.old_a, change.new_a, reason, first))
    for evse in evses:
        binding = raw.binding.get(evse.id, "")
        if evse.id in held:
            mem = inputs.memory.get(evse.id)
            limits[evse.id] = mem.limit_a if mem is not None else 0.0
            if mem is not None:
                new_memory[evse.id] = mem
            why = "unacknowledged" if evse.id in inputs.unacked else "silent"
            reasons[evse.id] = f"{why}: counted at max"
            if evse.id in inputs.paused:
                # Still counted at its maximum for the others, but what it is to be sent is 0 A.
                limits[evse.id] = 0.0
                reasons[evse.id] = f"{PAUSED} ({why}: counted at max)"
        else:
            reasons[evse.id] = explained(binding, evse.id)
    for sent in out_changes:
        reasons[sent.evse_id] = sent.reason
    return Decision(
        now=now,
        limits=limits,
        changes=tuple(out_changes),
        memory=new_memory,
        allocation=raw,
        evses=tuple(evses),
        reasons=reasons,
        site_limit_kw=dr_site_kw,
        ev_limit_kw=ev_kw,
        non_ev=tuple(non_ev),
        non_ev_kw=non_ev_kw,
        non_ev_raw=tuple(non_ev_raw),
        peak_kw=inputs.peak_kw,
        in_force={e.id: may_draw(e, inputs.readings.get(e.id)) for e in site.evses},
        fallbacks=kept_fallbacks(problem, limits, off=inputs.paused),
        problem=problem,
    )
