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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gateway.config.ocpp import OcppSection
from gateway.config.site import ChargerSection
from gateway.domain import LimitAck
from gateway.ocpp.link import Outcome, Station
from gateway.ocpp.profiles import (
    LIVE_PROFILE_ID,
    Abilities,
    Strategy,
    base_spec,
    live_spec,
    number_phases,
    strategies,
)
from gateway.ocpp.state import ChargerView, DrawWatch

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
    """What every Control shares: settings, the clock, the history and how to announce a change."""

    section: OcppSection
    clock: Callable[[], datetime]
    history: deque[LimitRecord]
    changed: Callable[[Control], None]

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.section.lease_s)


@dataclass(slots=True)
class Control:
    charger: ChargerSection
    watts_per_amp: float
    ctx: Context
    view: ChargerView
    watch: DrawWatch
    station: Station | None = None
    strategies: list[Strategy] = field(default_factory=list)
    strategy: int = 0  # index of the one that last worked: remembered across reconnects
    base_purpose: str | None = None  # base profile installed on this connection
    base_ever: bool = False  # some base profile was accepted at some time: the charger falls back to it
    desired_a: float | None = None
    reason: str = ""
    acked_a: float | None = None  # the live limit last acknowledged, in force until lease_until
    acked_on: Station | None = None  # the connection that acknowledged it
    acked_at: datetime | None = None
    acked_tx: str | None = None  # the transaction a TxProfile limit was acknowledged for (None: not a TxProfile)
    tx_label: str | None = None  # the TxProfile strategy that worked: what a session starts with
    live_known_on: Station | None = None  # the connection on which we set or cleared the live slot
    lease_until: datetime | None = None
    in_flight: int = 0
    failed: bool = False
    next_try: datetime | None = None
    over_limit_logged: bool = False
    sample_at: datetime | None = None  # when the last meter sample arrived (our clock)
    meter_asked_at: datetime | None = None
    setup: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    told: set[str] = field(default_factory=set)  # strategies already logged as the one that works

    # ------------------------------------------------------------------------------------------ what we know

    def applied_limit(self) -> float:
        """The most the charger may draw as far as we know: its maximum while anything is unconfirmed
        (a push in flight or refused, or a connection whose base profile is not in yet or whose live slot
        may still hold a profile from before: after a gateway restart, say)."""
        now = self.ctx.clock()
        if self.in_flight or self.failed:
            return self.charger.max_a
        if self.station is not None and (self.base_purpose is None or self.live_known_on is not self.station):
            return self.charger.max_a
        if self.acked_a is not None and self.lease_until is not None and now < self.lease_until:
            if self.acked_tx is not None and self.acked_tx != self.view.transaction_id():
                return self.charger.fallback_a  # a TxProfile ends with its session: the base holds the next one
            return self.acked_a
        return self.charger.fallback_a if self.base_ever else self.charger.max_a

    def unchanged(self, amps: float, now: datetime) -> bool:
        return (
            self.desired_a == amps
            and self.acked_a == amps
            and not self.failed
            and self.lease_until is not None
            and now < self.lease_until - self.ctx.lease / 2
            and not self.session_changed()
        )

    def session_changed(self) -> bool:
        """A session runs that the limit in force is not for (it went in as a TxProfile of another one, or
        while none ran) on a charger limited by TxProfiles in sessions: send it again."""
        tx = self.view.transaction_id()
        return self.tx_label is not None and tx is not None and self.acked_tx != tx

    def renewal_due(self, now: datetime) -> bool:
        if self.station is None or self.desired_a is None or self.in_flight:
            return False
        if self.setup is not None and not self.setup.done():
            return False
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
        n = len(self.strategies)
        start = self.strategy
        if self.tx_label is not None and self.view.transaction_id() is not None:
            start = next((i for i, s in enumerate(self.strategies) if s.label == self.tx_label), start)
        return [(start + k) % n for k in range(n)]

    async def _push_locked(self, reason: str) -> LimitAck:
        cid, amps, station = self.charger.id, self.desired_a, self.station
        sent_at = self.ctx.clock()
        if amps is None:
            return LimitAck(cid, 0.0, sent_at, False, 0.0, "nothing to send")
        if station is None:
            return LimitAck(cid, amps, sent_at, False, 0.0, "offline")
        if not self.strategies:
            self.strategies = strategies(station.version, Abilities())
        outcome = Outcome(False, "no strategy left")
        label = ""
        for i in self._order():
            strategy = self.strategies[i]
            label = strategy.label
            if strategy.purpose == "TxProfile" and self.view.transaction_id() is None:
                if (label == self.tx_label and self.base_purpose == strategy.base_purpose
                        and amps >= self.charger.fallback_a):
                    # nothing to put a TxProfile on: a car that arrives gets the TxDefault base's fallback,
                    # no more than wanted, until its TxProfile follows (session_changed)
                    outcome = Outcome(True, "no session: its base holds the fallback until one starts")
                    self._accepted(i, strategy, amps, station, self.ctx.clock(), NO_SESSION)
                    break
                outcome = Outcome(False, "TxProfile needs a running transaction")
                continue
            if self.base_purpose != strategy.base_purpose:
                base = await self.install_base(station, strategy)
                if not base.accepted:
                    outcome = base
                    if not base.answered:
                        break
                    continue
            now = self.ctx.clock()
            spec = live_spec(strategy, amps, self.watts_per_amp, number_phases(len(self.charger.phases)), now,
                             self.ctx.lease, self.view.transaction_id())
            outcome = await station.set_profile(spec)
            if outcome.accepted:
                self._accepted(i, strategy, amps, station, now, spec.transaction_id)
                break
            if not outcome.answered:
                break
        if not outcome.accepted:
            self.failed = True
            self.next_try = self.ctx.clock() + self.ctx.lease / 4
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
            log.info("ocpp charger=%s takes limits as %s (remembered)", self.charger.id, strategy.label)
            if not strategy.leased:
                log.warning("ocpp charger=%s takes limits only at stack level 0: no lease, it keeps its last "
                            "limit (not its fallback) if the gateway goes away", self.charger.id)
        self.strategy = i
        self.acked_a, self.acked_on, self.acked_at, self.live_known_on = amps, station, now, station
        self.acked_tx = transaction_id
        if strategy.purpose == "TxProfile":
            self.tx_label = strategy.label
        self.lease_until = now + (self.ctx.lease if strategy.leased else UNLEASED)
        self.failed, self.next_try = False, None

    async def install_base(self, station: Station, strategy: Strategy) -> Outcome:
        spec = base_spec(strategy, self.charger.fallback_a, self.watts_per_amp,
                         number_phases(len(self.charger.phases)), self.ctx.clock())
        outcome = await station.set_profile(spec)
        if outcome.accepted:
            self.base_purpose, self.base_ever = strategy.base_purpose, True
        return outcome

    async def run_setup(self, station: Station) -> None:
        """Per connection: learn abilities, install the base profile first, then metering, then the limit."""
        abilities = await station.discover()
        if not abilities.smart_charging:
            log.warning("ocpp charger=%s does not list SmartCharging: trying profiles anyway", self.charger.id)
        async with self.lock:  # a push walks the strategy list under this lock: change it only here
            fresh = strategies(station.version, abilities)
            remembered = self.strategies[self.strategy].label if self.strategies else None
            self.strategies = fresh
            self.strategy = next((i for i, s in enumerate(fresh) if s.label == remembered), 0)
            for i in self._order():
                outcome = await self.install_base(station, fresh[i])
                if outcome.accepted:
                    self.strategy = i
                    break
                if not outcome.answered:
                    return
            else:
                log.error("ocpp charger=%s accepted no base profile: without the gateway it charges unlimited",
                          self.charger.id)
        await station.configure(self.ctx.section.meter_interval_s)
        delivered = self.acked_a == self.desired_a and self.acked_on is station
        if self.desired_a is not None and not delivered and not self.in_flight:
            await self.push("reconnect: " + (self.reason or "limit"))
        elif self.desired_a is None and self.live_known_on is not station:
            await self._clear_stale_live(station)
        self.ctx.changed(self)

    async def _clear_stale_live(self, station: Station) -> None:
        """No limit to give yet (a fresh start): empty the live slot, which may hold a leased profile from a
        gateway that died, so the charger is really at its fallback when we say it is."""
        strategy = self.strategies[self.strategy] if self.strategies else None
        if strategy is not None and not strategy.leased:
            self.live_known_on = station  # the base just went into the shared slot
            return
        async with self.lock:
            if self.desired_a is not None or self.live_known_on is station:
                return  # a push got in first: the slot holds a limit we know
            outcome = await station.clear_profile(LIVE_PROFILE_ID)
        if outcome.accepted and self.station is station:
            self.live_known_on = station
            self.acked_a = None

    async def release(self) -> None:
        """Put the charger on its fallback now (a clean stop)."""
        station = self.station
        if station is None:
            return
        timeout = min(2.0, self.ctx.section.response_timeout_s)
        strategy = self.strategies[self.strategy] if self.strategies else None
        with contextlib.suppress(TimeoutError):
            if strategy is not None and not strategy.leased:  # the live limit sits in the base's slot
                await asyncio.wait_for(self.install_base(station, strategy), timeout)
            else:
                await asyncio.wait_for(station.clear_profile(LIVE_PROFILE_ID), timeout)

    # ------------------------------------------------------------------------------------------ the meter

    def check_draw(self) -> None:
        """Trust the meter over "Accepted": say once when the charger draws clearly above its limit, and
        feed the hand-back watch."""
        sample = self.view.sample
        now = self.ctx.clock()
        self.sample_at = now
        if sample is None or not sample.current_a:
            return
        draw = max(sample.current_a.values())
        limit = self.applied_limit()
        self.watch.update(now, draw, limit)
        settle = timedelta(seconds=2 * self.ctx.section.meter_interval_s)
        settled = self.acked_at is not None and now - self.acked_at > settle
        if settled and not self.in_flight and draw > limit + 1.5:
            if not self.over_limit_logged:
                via = self.strategies[self.strategy].label if self.strategies else "?"
                log.warning("ocpp charger=%s draws %.1f A above its acknowledged %.1f A limit (via %s): "
                            "the model may ignore this kind of profile", self.charger.id, draw, limit, via)
                self.over_limit_logged = True
        elif draw <= limit + 0.5 and self.over_limit_logged:
            log.info("ocpp charger=%s keeps to its limit again", self.charger.id)
            self.over_limit_logged = False
