"""The control loop itself: every tick (and at once on a trigger) decide the site's limits from the
inputs, push decreases first and increases only once every decrease is acknowledged, resend what a
charger has not acknowledged, lower the chargers' own fallbacks while the site is curtailed, and record
what was sent, the telemetry and the history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from gateway.domain import LimitAck
from gateway.ports import HoldsFallbacks, Remembers
from gateway.runtime.decide import Decision, decide
from gateway.store.decisions import rows_for
from gateway.store.telemetry import ChargerSample, Sample, SiteSample

if TYPE_CHECKING:
    from gateway.runtime.loop import Runtime

log = logging.getLogger("gateway.runtime")
RESEND_UNACKED_S = 5.0  # how often a limit a charger has not acknowledged is sent again
HISTORY_POINTS = 7200  # one point a second: the last two hours for the status page
TELEMETRY_EVERY = timedelta(seconds=1)  # telemetry and the session ledger are written at most this often


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    at: datetime
    load_kw: float | None
    limit_kw: float | None


async def decide_forever(rt: Runtime) -> None:
    tick = rt.config.control.tick_s
    while True:
        rt.watch_clock()
        # Cleared before deciding, not after: a trigger that arrives while a decision is being made or
        # pushed (an event, a plug-in) wakes the next one at once instead of being lost for a tick.
        rt._trigger.clear()
        try:
            if rt.deciding:
                await rt.decide_once()
        except Exception:  # a bug in one decision must not stop the site being decided
            log.exception("decision failed")
        now = rt.clock()
        # Handed to the store's writer, never awaited: a locked store or a full disk must not stop the
        # deciding (what waits is held in memory and written when the store takes writes again).
        # A tenth of slack: with a 1 s tick, a tick that wakes a little early must not skip a sample.
        if rt._recorded_at is None or now - rt._recorded_at >= TELEMETRY_EVERY * 0.9:
            rt._recorded_at = now
            rt.recorder.record(telemetry_sample(rt, now))
        rt.recorder.watch(now)
        try:  # the component states and their alarms (VTN unreachable, meter stale, charger over its limit)
            rt.watch.tick(now)
        except Exception:  # the watch is for people: a bug in it must not stop the deciding
            log.exception("status watch failed")
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancellation of stop() when a
        # trigger fires at the same moment, and the loop would go on deciding.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(tick):
                await rt._trigger.wait()


async def decide_once(rt: Runtime) -> Decision:
    now = rt.clock()
    started = time.perf_counter()
    inputs = rt.inputs(now)
    decision = decide(rt.optimiser.site_for(rt.site, now), inputs)
    rt.counters.decided(time.perf_counter() - started)
    rt.optimiser.after(rt.site, decision, now)  # a fallback said once, as an alarm; a rest when it keeps failing
    rt.memory = dict(decision.memory)
    rt.non_ev_window.append((now, {(n.circuit, n.phase): n.amps for n in decision.non_ev_raw}))
    rt.last = decision
    rt.decisions += 1
    for change in decision.changes:
        log.info("%s", change.log_line())
    # Decreases (against what each charger may draw now, not what was last decided) go out first, and
    # every one must be acknowledged before any increase uses the room they free: a charger that has
    # not confirmed giving room up is still drawing on it. Held back, the increases are decided again
    # at once with the unconfirmed chargers counted at what they may draw.
    acks = await push(rt, decision.decreases, decision)
    # The chargers' own fallbacks stay within every limit beside the limits decided (a lease runs out, or
    # the gateway dies, at a different instant for each charger): one lowered gives room up like a decrease,
    # and is acknowledged before any increase; raised, it goes out later (never above the charger's limit
    # where the room is not there).
    held = [e.id for e in decision.evses if e.held_a is not None]  # not decided now: left as they are
    unlowered: list[str] = []
    for holding in [d for d in rt.drivers.values() if isinstance(d, HoldsFallbacks)]:
        unlowered += await holding.hold_fallbacks(dict(decision.fallbacks), keep=held)
    refused = [a for a in acks if not a.accepted]
    if refused or unlowered:
        held_back = decision.increases
        for cid in held_back:
            if cid in inputs.memory:
                rt.memory[cid] = inputs.memory[cid]
            else:
                rt.memory.pop(cid, None)
        if held_back:
            log.info("increases held back charger_count=%d: %d decrease(s) or lowered fallback(s) not "
                     "acknowledged (%s)",
                     len(held_back), len(refused) + len(unlowered),
                     ", ".join(sorted({a.charger_id for a in refused} | set(unlowered))[:5]))
            rt.trigger("increases held back")
    else:
        acks += await push(rt, decision.increases, decision)
    resend: dict[str, float] = {}
    for cid, at in list(rt.unacked.items()):
        if cid not in decision.limits or (now - at).total_seconds() < RESEND_UNACKED_S \
                or cid in {a.charger_id for a in acks}:
            continue
        if decision.limits[cid] > decision.in_force.get(cid, 0.0) + 1e-9:
            # more than it is counted at now: not sent blind; allocated afresh at the next decision
            del rt.unacked[cid]
            rt.memory.pop(cid, None)
            rt.trigger(f"charger={cid} re-allocated")
            continue
        resend[cid] = decision.limits[cid]
    acks += await push(rt, resend, decision, "resend: not acknowledged")
    if any(r.store_failing() for r in [d for d in rt.drivers.values() if isinstance(d, Remembers)]):
        rt.alarms.raise_("store.ocpp", "what the chargers hold cannot be stored: no limit is raised "
                           "until it can (decreases still go out)", now, severity="critical",
                           action="free disk space or end what locks the store (docs/store.md)")
    else:
        rt.alarms.clear("store.ocpp", now)
    for ack in acks:
        rt.acks[ack.charger_id] = ack
        if ack.accepted:
            rt.unacked.pop(ack.charger_id, None)
            rt._unacked_said.pop(ack.charger_id, None)
        else:
            rt.unacked[ack.charger_id] = now
            said = (ack.amps, ack.detail)
            if rt._unacked_said.get(ack.charger_id) != said:  # once, then again only when it changes
                rt._unacked_said[ack.charger_id] = said
                log.warning("limit charger=%s amps=%g not acknowledged: %s", ack.charger_id, ack.amps,
                            ack.detail)
    if decision.changes and rt.recorder.decisions is not None:
        changes = [(c.evse_id, c.old_a, c.new_a, c.reason) for c in decision.changes]
        rt.recorder.limits_sent(rows_for(now, changes, acks))
    note(rt, decision)
    return decision


async def push(rt: Runtime, limits: dict[str, float], decision: Decision, why: str | None = None) -> list[LimitAck]:
    if not limits:
        return []
    calls = []
    for protocol, driver in rt.drivers.items():
        mine = {cid: a for cid, a in limits.items() if rt.protocol_of.get(cid) == protocol}
        if not mine:
            continue
        reason = why or "; ".join(sorted({decision.reasons.get(cid, "") for cid in mine}))
        calls.append(driver.apply_limits(mine, reason))
    results = await asyncio.gather(*calls, return_exceptions=True)
    acks: list[LimitAck] = []
    for result in results:
        if isinstance(result, BaseException):
            log.error("pushing limits failed: %r", result)  # counted as unacknowledged below
            continue
        acks.extend(result)
    for ack in acks:
        rt.counters.pushed(rt.protocol_of.get(ack.charger_id, "unknown"), ack.accepted, ack.round_trip_s)
    answered = {a.charger_id for a in acks}
    for cid, amps in limits.items():
        if cid not in answered:
            acks.append(LimitAck(cid, amps, decision.now, False, 0.0, "driver failed"))
    return acks


def note(rt: Runtime, decision: Decision) -> None:
    if rt.ven is not None and rt.ven.polls != rt._ven_polls:
        rt._ven_polls = rt.ven.polls
        rt.vtn_last_poll = decision.now
    load = rt.load_kw()
    if load is not None:
        rt.power_log.record(decision.now, load)
    if not rt.history or decision.now - rt.history[-1].at >= timedelta(seconds=1):
        rt.history.append(HistoryPoint(decision.now, load, rt.effective_limit_kw()))


def telemetry_sample(rt: Runtime, now: datetime) -> Sample | None:
    """This tick's telemetry: site load and limit, and each charger's current, power and limit."""
    if rt.last is None:
        return None
    power = rt.charger_power_kw()
    chargers: dict[str, ChargerSample] = {}
    for evse in rt.site.evses:
        r = rt.readings.get(evse.id)
        amps = max(r.current_a.values(), default=0.0) if r is not None and r.status.connected else None
        chargers[evse.id] = ChargerSample(amps, power.get(evse.id), rt.last.limits.get(evse.id))
    site = SiteSample(rt.load_kw(), sum(power.values()), rt.effective_limit_kw())
    return Sample(now, TELEMETRY_EVERY.total_seconds(), site, chargers)
