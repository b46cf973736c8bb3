"""The driver's book on one OCPP charger, and every profile push to it.

A `Control` knows the limit wanted, the one acknowledged and until when (the lease), which strategy works
for this charger, and what the charger may be drawing meanwhile (`applied_limit`). Its pushes are
serialised per charger by a lock, so pushes to different chargers run side by side and a slow one only
waits for itself. Every push is appended to the shared history and logged as one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from gateway.domain import LimitAck
from gateway.ocpp.link import Outcome, Station
from gateway.ocpp.profiles import (
    LIVE_PROFILE_ID,
    Abilities,
    Strategy,
    base_spec,
    floor_tenth,
    live_spec,
    number_phases,
    strategies,
)
from gateway.ocpp.settings import CentralSystemSettings, OcppChargerSettings
from gateway.ocpp.state import ChargerView, DrawWatch
from gateway.records import ChargerRecord
from gateway.waking import within

log = logging.getLogger("gateway.ocpp")
UNLEASED = timedelta(days=3650)  # a live limit without validTo stays until replaced
NO_SESSION = ""  # acked_tx of a limit held by the TxDefault base while no session runs


@dataclass(frozen=True, slots=True)
class LimitRecord:
    """One limit sent to one charger: the audit trail the runtime may store."""

    charger_id: str
    amps: float
    reason: str
    sent_at: datetime
    accepted: bool
    round_trip_s: float
    detail: str
    strategy: str


@dataclass(frozen=True, slots=True)
class Context:
    """What every Control shares: settings, the clock, the history, how to announce a change, and the
    store of what chargers hold (`write_ahead` before a raise, `dirty` for everything else)."""

    section: CentralSystemSettings
    clock: Callable[[], datetime]
    history: deque[LimitRecord]
    changed: Callable[[Control], None]
    write_ahead: Callable[[Control, ChargerRecord], Awaitable[bool]] | None = None
    dirty: Callable[[Control], None] | None = None

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.section.lease_s)


@dataclass(slots=True)
class Control:
    charger: OcppChargerSettings
    watts_per_amp: float  # how the charger turns a W limit back into amps: its volts per phase × phases
    ctx: Context
    view: ChargerView
    watch: DrawWatch
    station: Station | None = None
    strategies: list[Strategy] = field(default_factory=list)
    strategy: int = 0  # index of the one that last worked
    refused: set[str] = field(default_factory=set)  # strategies this charger refused: not tried again
    abilities: Abilities | None = None  # what it said it takes (from the store until asked again)
    ready_on: Station | None = None  # the connection on which abilities were read and the base checked
    base_purpose: str | None = None  # base profile installed (or found in place) on this connection
    base_known: str | None = None  # the base the charger holds as far as we know, on any connection
    base_amps: float = -1.0  # what that base holds (set from the fallback at start)
    base_wanted: float = -1.0  # what the base should hold: the fallback, lower where the room is not there
    base_set_at: datetime | None = None  # when this process last put a base in place
    desired_a: float | None = None
    reason: str = ""
    acked_a: float | None = None  # the live limit last acknowledged, in force until lease_until
    acked_on: Station | None = None  # the connection that acknowledged it
    acked_at: datetime | None = None
    acked_tx: str | None = None  # the transaction a TxProfile limit was acknowledged for (None: not a TxProfile)
    lease_until: datetime | None = None
    confirmed: bool = False  # a live limit was acknowledged by this process (the slot holds nothing older)
    unanswered_a: float | None = None  # the most sent without an answer since the last acknowledgement
    stored: ChargerRecord | None = None  # what the store holds for this charger (the previous process's too)
    over_draw_a: float | None = None  # measured above its acknowledged limit: counted at this, sent again
    resend_at: datetime | None = None
    in_flight: int = 0
    failed: bool = False
    next_try: datetime | None = None
    sample_at: datetime | None = None  # when the last meter sample arrived (our clock)
    meter_asked_at: datetime | None = None
    setup: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    told: set[str] = field(default_factory=set)  # strategies already logged as the one that works

    def __post_init__(self) -> None:
        if self.base_amps < 0:
            self.base_amps = self.charger.fallback_a
        if self.base_wanted < 0:
            self.base_wanted = self.charger.fallback_a

    # ------------------------------------------------------------------------------------------ what we know

    def restore(self, record: ChargerRecord) -> None:
        """What the previous process left in the store: the charger holds those profiles still."""
        self.stored = record
        self.base_known = record.base_purpose if record.fallback_a is not None else None
        if record.fallback_a is not None:  # a fallback lowered under a curtailment stays so until decided
            self.base_amps = self.base_wanted = min(record.fallback_a, self.charger.fallback_a)
        if record.units and record.max_stack_level is not None:
            self.abilities = Abilities(units=tuple(u for u in record.units if u in ("A", "W")),  # type: ignore[misc]
                                       max_stack_level=record.max_stack_level)
        self.view.restore(record.status, record.transactions, record.session_started)

    def in_force(self) -> float:
        """The most the charger may draw on what it holds as far as this process knows: its live limit
        while leased and meant for what runs now, or its base's fallback when that is more (the lease may
        run out, or the session end, at any instant: then the base holds); else its base's fallback, else
        (no base known) its maximum. An unleased live limit is in the base's own slot: it alone holds."""
        now = self.ctx.clock()
        base = self.base_amps if self.base_known is not None else self.charger.max_a
        if self.acked_a is not None and (self.lease_until is None or now < self.lease_until):
            if self.acked_tx is not None and self.acked_tx != self.view.transaction_id():
                return base  # a TxProfile ends with its session (NO_SESSION: none began): the base holds
            if self.strategies and not self.strategies[self.strategy].leased:
                return self.acked_a
            return max(self.acked_a, base)
        return base

    def want_base(self, amps: float) -> None:
        """What the base should hold from now on: `amps`, never above the configured fallback."""
        self.base_wanted = min(self.charger.fallback_a, floor_tenth(max(0.0, amps)))

    def base_lowerable(self) -> bool:
        """Its base holds more than it should, and is ours to lower on this connection now (beside a leased
        live limit: an unleased one is in the base's slot)."""
        if self.station is None or not self.strategies or self.base_amps <= self.base_wanted:
            return False
        held = self.strategies[self.strategy]
        return held.leased and self.base_purpose == held.base_purpose

    def applied_limit(self) -> float:
        """The most the charger may be drawing now: what it holds, or more while anything is unsure: a
        live profile of the previous process not yet replaced (its lease from the store, else the
        maximum), a limit sent but not answered, a draw measured above the limit."""
        if self.confirmed:
            may = self.in_force()
        else:  # the slot holds what the previous process left: the store knows what (else: anything)
            stored = self.stored
            may = stored.may_draw(self.ctx.clock(), self.charger.max_a) if stored else self.charger.max_a
        if self.unanswered_a is not None:
            may = max(may, self.unanswered_a)
        may = min(may, self.charger.max_a)
        if self.over_draw_a is not None:
            may = max(may, self.over_draw_a)
        return may

    def unchanged(self, amps: float, now: datetime) -> bool:
        return (
            self.desired_a == amps
            and self.acked_a == amps
            and not self.failed
            and self.over_draw_a is None
            and self.lease_until is not None
            and now < self.lease_until - self.ctx.lease / 2
            and not self.session_changed()
        )

    def session_changed(self) -> bool:
        """A session runs that the limit in force is not for (it went in as a TxProfile of another one, or
        while none ran, or as a station cap that holds only up to the fallback) while a TxProfile could
        carry it: send it again."""
        tx = self.view.transaction_id()
        if tx is None or self.acked_tx == tx or self.desired_a is None:
            return False
        held = self.strategies[self.strategy] if self.strategies else None
        if held is not None and not held.needs_session and not held.up_to_fallback and held.leased:
            return False  # a station or TxDefault limit holds whatever runs
        return any(s.needs_session and s.label not in self.refused for s in self.strategies)

    def renewal_due(self, now: datetime) -> bool:
        if self.station is None or self.desired_a is None or self.in_flight:
            return False
        if self.setup is not None and not self.setup.done():
            return False
        if self.over_draw_a is not None:
            return self.resend_at is None or now >= self.resend_at
        due = self.next_try if self.failed else (
            None if self.lease_until is None else self.lease_until - self.ctx.lease / 2)
        return due is None or now >= due

    def meter_silent(self, now: datetime) -> bool:
        """Charging, but no meter sample for three intervals: time to ask for one (at most once an interval).
        A missing reading is never taken as zero; this only tries to get a real one."""
        if self.station is None or not self.view.status().connected:
            return False
        if self.setup is None or not self.setup.done():
            return False
        interval = timedelta(seconds=self.ctx.section.meter_interval_s)
        if self.sample_at is not None and now - self.sample_at < 3 * interval:
            return False
        return self.meter_asked_at is None or now - self.meter_asked_at >= interval

    def record(self) -> ChargerRecord:
        """This charger as the store should keep it now: never less than what it may hold."""
        now = self.ctx.clock()
        stored = self.stored
        live: float | None = None
        until: datetime | None = None
        if self.acked_a is not None and (self.lease_until is None or now < self.lease_until):
            live, until = self.acked_a, self.lease_until
        if self.unanswered_a is not None:
            live = max(live or 0.0, self.unanswered_a)
            until = now + 2 * self.ctx.lease
        if not self.confirmed and stored is not None and stored.live_a is not None and (
                stored.live_until is None or now < stored.live_until):
            live = max(live or 0.0, stored.live_a)
            until = None if stored.live_until is None or until is None else max(until, stored.live_until)
        elif stored is not None and live is not None and until is not None and stored.live_until is not None \
                and stored.live_a is not None and stored.live_a >= live:
            until = max(until, stored.live_until)  # a written-ahead horizon stays until it runs out
        ab = self.abilities
        return ChargerRecord(
            charger_id=self.charger.id,
            strategy=self.strategies[self.strategy].label if self.strategies else (stored.strategy if stored else None),
            units=ab.units if ab else (), max_stack_level=ab.max_stack_level if ab else None,
            base_purpose=self.base_known, fallback_a=self.base_amps if self.base_known else None,
            live_a=live, live_until=until, live_tx=self.acked_tx,
            status=self.view.status().value if self.view.online else (stored.status if stored else None),
            transactions=dict(self.view.transactions), session_started=self.view.session_started,
        )

    def _needs_write_ahead(self, amps: float, valid_to: datetime | None) -> bool:
        """Would a process starting from the store now count this charger at less than this limit, or for
        less time than it is valid?"""
        stored = self.stored
        if stored is None or stored.live_a is None or amps > stored.live_a:
            return True
        if stored.live_until is None:
            return False
        return valid_to is None or valid_to > stored.live_until

    # ------------------------------------------------------------------------------------------ pushes

    async def push(self, reason: str) -> LimitAck:
        self.in_flight += 1
        try:
            async with self.lock:
                return await self._push_locked(reason)
        finally:
            self.in_flight -= 1
            self.ctx.changed(self)

    def _order(self) -> list[int]:
        """Most preferred first, leaving out what this charger refused."""
        return [i for i, s in enumerate(self.strategies) if s.label not in self.refused]

    async def _push_locked(self, reason: str) -> LimitAck:
        cid, amps, station = self.charger.id, self.desired_a, self.station
        sent_at = self.ctx.clock()
        if amps is None:
            return LimitAck(cid, 0.0, sent_at, False, 0.0, "nothing to send")
        if station is None:
            return LimitAck(cid, amps, sent_at, False, 0.0, "offline")
        outcome = Outcome(False, "no strategy left")
        label = ""
        if self.ready_on is not station:
            outcome = await self._prepare(station)
            if not outcome.answered:
                return self._finish(reason, amps, sent_at, outcome, label)
        fallback = self.base_amps
        for i in self._order():
            strategy = self.strategies[i]
            label = strategy.label
            if strategy.needs_session and self.view.transaction_id() is None:
                if self.base_purpose == strategy.base_purpose and amps >= fallback:
                    # nothing to put a TxProfile on: a car that arrives gets the TxDefault base's fallback,
                    # no more than wanted, until its TxProfile follows (session_changed)
                    outcome = Outcome(True, "no session: its base holds the fallback until one starts")
                    self._accepted(i, strategy, amps, station, self.ctx.clock(), NO_SESSION)
                    break
                outcome = Outcome(False, "TxProfile needs a running transaction")
                continue
            if not strategy.holds(amps, fallback):
                outcome = Outcome(False, f"{label} holds no more than the fallback")
                continue
            if self.base_purpose != strategy.base_purpose:
                base = await self.install_base(station, strategy)
                if not base.accepted:
                    outcome = base
                    if not base.answered:
                        break
                    self.refused.add(label)
                    continue
            now = self.ctx.clock()
            # in the charger's own time (its clock may be off ours); the lease's end is kept in ours
            spec = live_spec(strategy, amps, self.watts_per_amp, number_phases(len(self.charger.phases)),
                             now + self.view.clock_offset(), self.ctx.lease, self.view.transaction_id())
            valid_to = None if spec.valid_to is None else now + self.ctx.lease  # in our time
            if self.ctx.write_ahead is not None and self._needs_write_ahead(amps, valid_to):
                record = replace(self.record(), live_a=max(amps, self.record().live_a or 0.0),
                                 live_until=None if valid_to is None else valid_to + self.ctx.lease)
                if not await self.ctx.write_ahead(self, record):
                    outcome = Outcome(False, "not sent: the store cannot keep it (a restart could not count it)",
                                      answered=False)
                    break
                self.stored = record
            before = self.unanswered_a
            self.unanswered_a = max(before or 0.0, amps)
            outcome = await station.set_profile(spec)
            if outcome.accepted:
                self._accepted(i, strategy, amps, station, now, spec.transaction_id)
                break
            if not outcome.answered:
                break
            self.unanswered_a = before  # refused: it holds what it held
            if not strategy.needs_session or self.view.transaction_id() == spec.transaction_id:
                self.refused.add(label)  # (a TxProfile refused for a session that just ended is not the model's)
        return self._finish(reason, amps, sent_at, outcome, label)

    def _finish(self, reason: str, amps: float, sent_at: datetime, outcome: Outcome, label: str) -> LimitAck:
        cid = self.charger.id
        if not outcome.accepted:
            self.failed = True
            self.next_try = self.ctx.clock() + self.ctx.lease / 4
        if self.ctx.dirty is not None:
            self.ctx.dirty(self)
        record = LimitRecord(cid, amps, reason, sent_at, outcome.accepted, outcome.round_trip_s, outcome.detail, label)
        self.ctx.history.append(record)
        level = logging.INFO if (reason != "lease renewal" or not outcome.accepted) else logging.DEBUG
        log.log(level, "ocpp limit charger=%s amps=%.1f reason=%r accepted=%s rtt_ms=%.0f via=%s detail=%r",
                cid, amps, reason, outcome.accepted, outcome.round_trip_s * 1000, label, outcome.detail)
        return LimitAck(cid, amps, sent_at, outcome.accepted, outcome.round_trip_s, outcome.detail)

    def _accepted(self, i: int, strategy: Strategy, amps: float, station: Station, now: datetime,
                  transaction_id: str | None) -> None:
        if i != self.strategy and strategy.label not in self.told:  # said once per way, not at every switch
            self.told.add(strategy.label)
            log.info("ocpp charger=%s takes limits as %s", self.charger.id, strategy.label)
            if not strategy.leased:
                log.warning("ocpp charger=%s takes limits only in its base's slot: no lease, it keeps its last "
                            "limit (not its fallback) if the gateway goes away", self.charger.id)
        self.strategy = i
        self.acked_a, self.acked_on, self.acked_at = amps, station, now
        self.acked_tx = transaction_id
        self.lease_until = now + (self.ctx.lease if strategy.leased else UNLEASED)
        self.confirmed = True
        self.unanswered_a = None
        self.failed, self.next_try = False, None
        if self.over_draw_a is not None:
            self.resend_at = now + timedelta(seconds=2 * self.ctx.section.meter_interval_s)

    async def install_base(self, station: Station, strategy: Strategy) -> Outcome:
        amps = self.base_wanted
        spec = base_spec(strategy, amps, self.watts_per_amp, number_phases(len(self.charger.phases)),
                         self.ctx.clock() + self.view.clock_offset())
        outcome = await station.set_profile(spec)
        if outcome.accepted:
            self.base_purpose = self.base_known = strategy.base_purpose
            self.base_amps, self.base_set_at = amps, self.ctx.clock()
            if not strategy.leased:  # the base went into the slot the live limit uses: that is in force now
                self.acked_a, self.acked_tx, self.lease_until = amps, None, None
                self.confirmed = True
        return outcome

    async def _prepare(self, station: Station) -> Outcome:
        """Before any limit on a connection: ask what the charger takes, then make sure a base is in place.

        A base already in place (this process or the store knows the charger holds it, and it did not boot
        since) is not sent again when the live limit shares its slot: sending it would replace that limit."""
        abilities = await station.discover()
        if abilities is None:
            if self.abilities is None:
                return Outcome(False, "abilities unknown: no limit sent before they are", answered=False)
            abilities = self.abilities
        if not abilities.smart_charging:
            log.warning("ocpp charger=%s does not list SmartCharging: trying profiles anyway", self.charger.id)
        fresh = strategies(station.version, abilities)
        if abilities != self.abilities or [s.label for s in fresh] != [s.label for s in self.strategies]:
            remembered = self.stored.strategy if self.stored and not self.strategies else (
                self.strategies[self.strategy].label if self.strategies else None)
            self.strategies, self.abilities = fresh, abilities
            self.refused = {label for label in self.refused if label in {s.label for s in fresh}}
            self.strategy = next((i for i, s in enumerate(fresh) if s.label == remembered), 0)
        held = self.strategies[self.strategy]
        if not held.leased and self.base_known == held.base_purpose and self.acked_a is not None:
            self.base_purpose = held.base_purpose  # the slot holds our live limit: leave it
        else:
            outcome = Outcome(False, "no base profile accepted")
            for i in self._order():
                outcome = await self.install_base(station, self.strategies[i])
                if outcome.accepted:
                    self.strategy = i
                    break
                if not outcome.answered:
                    return outcome
                self.refused.add(self.strategies[i].label)
            else:
                log.error("ocpp charger=%s accepted no base profile: without the gateway it charges unlimited",
                          self.charger.id)
        self.ready_on = station
        if self.ctx.dirty is not None:
            self.ctx.dirty(self)
        return Outcome(True, "ready")

    def base_due(self) -> bool:
        """The base should hold another fallback (the room for it went or came back) and can be changed now.
        A raise waits half a lease after the last change: a fallback following every move of the room up
        and down (a non-EV load about the line) would be a message a second."""
        if self.station is None or self.in_flight or self.ready_on is not self.station or not self.strategies:
            return False
        if self.base_amps < self.base_wanted and self.base_set_at is not None \
                and self.ctx.clock() - self.base_set_at < self.ctx.lease / 2:
            return False
        held = self.strategies[self.strategy]
        return held.leased and self.base_purpose is not None and self.base_amps != self.base_wanted

    async def update_base(self) -> None:
        """Put the wanted fallback into the base profile (same id: it replaces the one in place)."""
        station = self.station
        if station is None:
            return
        self.in_flight += 1
        try:
            async with self.lock:
                held = self.strategies[self.strategy]
                if not held.leased or self.base_purpose != held.base_purpose:
                    return
                outcome = await self.install_base(station, held)
            log.info("ocpp base charger=%s fallback_a=%.1f accepted=%s detail=%r", self.charger.id,
                     self.base_wanted, outcome.accepted, outcome.detail)
        finally:
            self.in_flight -= 1
            if self.ctx.dirty is not None:
                self.ctx.dirty(self)
            self.ctx.changed(self)

    def rebooted(self) -> None:
        """A BootNotification: the charger may have lost every profile (a new unit, a reset)."""
        self.ready_on = None
        self.base_purpose = self.base_known = None
        self.acked_a = self.acked_on = self.acked_tx = self.lease_until = None
        self.confirmed = False
        self.stored = None

    async def run_setup(self, station: Station) -> None:
        """Per connection: learn abilities and check the base first, then metering, then the limit."""
        async with self.lock:
            if self.ready_on is not station:
                outcome = await self._prepare(station)
                if not outcome.answered:
                    return
        await station.configure(self.ctx.section.meter_interval_s)
        delivered = self.acked_a == self.desired_a and self.acked_on is station
        if self.desired_a is not None and not delivered and not self.in_flight:
            await self.push("reconnect: " + (self.reason or "limit"))
        elif self.desired_a is None and not self.confirmed and self.stored is None:
            await self._clear_unknown_live(station)
        self.ctx.changed(self)

    async def _clear_unknown_live(self, station: Station) -> None:
        """No limit to give yet and nothing known of what the live slot holds (no store record: a first
        start, or a store lost): empty it, so the charger is at its fallback when we count it there."""
        async with self.lock:
            if self.desired_a is not None or self.confirmed or self.station is not station:
                return  # a push got in first: the slot holds a limit we know
            outcome = await station.clear_profile(LIVE_PROFILE_ID)
            if outcome.accepted and self.station is station:
                self.acked_a = self.acked_tx = self.lease_until = None
                self.confirmed = True

    async def release(self) -> bool:
        """Put the charger on its fallback now (a clean stop); False when it did not say it did."""
        station = self.station
        if station is None:
            return False
        timeout = min(2.0, self.ctx.section.response_timeout_s)
        strategy = self.strategies[self.strategy] if self.strategies else None
        done = False
        with contextlib.suppress(TimeoutError):
            if strategy is not None and not strategy.leased:  # the live limit sits in the base's slot
                done = (await within(self.install_base(station, strategy), timeout)).accepted
            else:
                outcome = await within(station.clear_profile(LIVE_PROFILE_ID), timeout)
                if outcome.accepted:
                    self.acked_a, self.acked_tx, self.lease_until = None, None, None
                    self.confirmed, self.unanswered_a = True, None
                done = outcome.accepted
        if self.ctx.dirty is not None:
            self.ctx.dirty(self)
        return done

    # ------------------------------------------------------------------------------------------ the meter

    def check_draw(self) -> None:
        """Trust the meter over "Accepted": a charger drawing clearly above its acknowledged limit counts at
        its draw and is sent its limit again until it holds (said once when it starts and once when it
        ends); also feeds the hand-back watch."""
        sample = self.view.sample
        now = self.ctx.clock()
        self.sample_at = now
        if sample is None or not sample.current_a:
            return
        draw = max(sample.current_a.values())
        limit = self.in_force()
        self.watch.update(now, draw, limit)
        settle = timedelta(seconds=2 * self.ctx.section.meter_interval_s)
        settled = self.acked_at is not None and now - self.acked_at > settle
        if settled and not self.in_flight and draw > limit + 1.5:
            if self.over_draw_a is None:
                via = self.strategies[self.strategy].label if self.strategies else "?"
                log.warning("ocpp charger=%s draws %.1f A above its acknowledged %.1f A limit (via %s): counted "
                            "at its draw, its limit sent again until it holds", self.charger.id, draw, limit, via)
                self.resend_at = now
            self.over_draw_a = draw
        elif self.over_draw_a is not None and draw <= limit + 0.5:
            log.info("ocpp charger=%s keeps to its limit again (%.1f A of %.1f A)", self.charger.id, draw, limit)
            self.over_draw_a = self.resend_at = None
