"""The OCPP `EvseDriver`: pushes the allocator's limits to OCPP chargers and streams what they report.

Per charger it keeps the limit wanted, the limit acknowledged, the lease (the live profile's validTo) and
the strategy that works for that charger. Pushes go out concurrently, only when a limit changed or its
lease is at half-life; `apply_limits` waits at most `ack_wait_s` and reports late answers as readings
(`applied_limit_a`), so one slow charger never holds up the control loop or the others. Until a charger
acknowledges, it is assumed to draw its maximum. Every push is recorded (when, why, answer, round trip).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from gateway.config.ocpp import OcppSection
from gateway.config.site import ChargerSection
from gateway.domain import ChargerReading, LimitAck
from gateway.ocpp.cp16 import Cp16
from gateway.ocpp.cp201 import Cp201
from gateway.ocpp.link import Outcome, Station, validate_inline
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
from gateway.ocpp.server import OcppServer
from gateway.ocpp.state import ChargerView, DrawWatch

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

log = logging.getLogger("gateway.ocpp")
Clock = Callable[[], datetime]
T = TypeVar("T")
UNLEASED = timedelta(days=3650)
SILENT_SETUP_S = 5.0  # a live limit without validTo stays until replaced


def utc_now() -> datetime:
    return datetime.now(UTC)


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


@dataclass(slots=True)
class Control:
    """The driver's book on one charger."""

    charger: ChargerSection
    watts_per_amp: float
    view: ChargerView
    station: Station | None = None
    strategies: list[Strategy] = field(default_factory=list)
    strategy: int = 0  # index of the one that last worked: remembered across reconnects
    base_purpose: str | None = None  # base profile installed on this connection
    base_ever: bool = False  # some base profile was accepted at some time: the charger falls back to it
    desired_a: float | None = None
    reason: str = ""
    acked_a: float | None = None
    acked_on: Station | None = None  # the connection that acknowledged acked_a
    acked_at: datetime | None = None
    over_limit_logged: bool = False
    watch: DrawWatch = field(default_factory=DrawWatch)
    lease_until: datetime | None = None
    in_flight: int = 0
    failed: bool = False
    next_try: datetime | None = None
    setup: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class OcppDriver:
    """Central system + EvseDriver for every OCPP charger of the site."""

    def __init__(
        self,
        section: OcppSection,
        chargers: Sequence[ChargerSection],
        watts_per_amp: Mapping[str, float] | None = None,
        clock: Clock = utc_now,
    ) -> None:
        ocpp = [c for c in chargers if c.protocol.startswith("ocpp")]
        self.section = section
        self.clock = clock
        self.lease = timedelta(seconds=section.lease_s)
        self.controls: dict[str, Control] = {}
        for c in ocpp:
            # without site voltage info assume 230 V per phase conductor; the runtime passes the real figure
            wpa = (watts_per_amp or {}).get(c.id, 230.0 * len(c.phases))
            self.controls[c.id] = Control(charger=c, watts_per_amp=wpa, view=ChargerView(c.id, c.phases),
                                          watch=DrawWatch(window_s=section.hand_back_after_s))
        self.server = OcppServer(section, ocpp, self._serve_station)
        self.history: deque[LimitRecord] = deque(maxlen=10_000)
        self._subscribers: list[asyncio.Queue[ChargerReading]] = []
        self._tasks: set[asyncio.Task[object]] = set()
        self._renewer: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, config: GatewayConfig, clock: Clock = utc_now) -> OcppDriver:
        from gateway.topology import static_evse

        wpa = {c.id: static_evse(config, c).kw_per_a * 1000.0 for c in config.chargers}
        return cls(config.ocpp, config.chargers, wpa, clock)

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        validate_inline()
        await self.server.start()
        self._renewer = asyncio.create_task(self._renew_leases(), name="ocpp-lease-renewal")

    async def stop(self, release: bool = True) -> None:
        """Stop serving. With `release`, clear live profiles first so chargers drop to their fallback now
        rather than when the lease runs out."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if release:
            online = [c for c in self.controls.values() if c.station is not None]
            await asyncio.gather(*(self._release(c) for c in online))
        for task in list(self._tasks):
            task.cancel()
        await self.server.stop()

    async def __aenter__(self) -> OcppDriver:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _release(self, ctl: Control) -> None:
        station = ctl.station
        if station is None:
            return
        timeout = min(2.0, self.section.response_timeout_s)
        strategy = ctl.strategies[ctl.strategy] if ctl.strategies else None
        with contextlib.suppress(TimeoutError):
            if strategy is not None and not strategy.leased:  # the live limit sits in the base's slot
                await asyncio.wait_for(self._install_base(ctl, station, strategy), timeout)
            else:
                await asyncio.wait_for(station.clear_profile(LIVE_PROFILE_ID), timeout)

    # ------------------------------------------------------------------------------------------ EvseDriver

    async def apply_limits(self, limits: dict[str, float], reason: str) -> list[LimitAck]:
        now = self.clock()
        acks: list[LimitAck] = []
        pushes: dict[asyncio.Task[LimitAck], tuple[str, float]] = {}
        for cid, wanted in limits.items():
            ctl = self.controls.get(cid)
            if ctl is None:
                acks.append(LimitAck(cid, wanted, now, False, 0.0, "not an OCPP charger of this site"))
                continue
            amps = floor_tenth(max(0.0, min(wanted, ctl.charger.max_a)))
            if self._unchanged(ctl, amps, now):
                acks.append(LimitAck(cid, amps, now, True, 0.0, "unchanged"))
                continue
            ctl.desired_a, ctl.reason = amps, reason
            if ctl.station is None:
                acks.append(LimitAck(cid, amps, now, False, 0.0,
                                     f"offline: holds its own fallback of {ctl.charger.fallback_a:g} A"))
                continue
            task = self._spawn(self._push(ctl, reason))
            pushes[task] = (cid, amps)
        if pushes:
            done, _ = await asyncio.wait(pushes, timeout=self.section.ack_wait_s)
            for task, (cid, amps) in pushes.items():
                if task in done:
                    acks.append(task.result())
                else:
                    acks.append(LimitAck(cid, amps, now, False, self.section.ack_wait_s,
                                         "no answer yet: assumed at its maximum until it acknowledges"))
        return acks

    async def readings(self) -> AsyncIterator[ChargerReading]:
        queue: asyncio.Queue[ChargerReading] = asyncio.Queue(maxsize=10_000)
        self._subscribers.append(queue)
        try:
            for ctl in self.controls.values():
                queue.put_nowait(ctl.view.reading(self.clock(), self.applied_limit(ctl)))
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)

    # ------------------------------------------------------------------------------------------ limits

    def applied_limit(self, ctl: Control) -> float:
        """The most the charger may draw as far as we know: its maximum while anything is unconfirmed."""
        now = self.clock()
        if ctl.in_flight or ctl.failed:
            return ctl.charger.max_a
        if ctl.acked_a is not None and ctl.lease_until is not None and now < ctl.lease_until:
            return ctl.acked_a
        return ctl.charger.fallback_a if ctl.base_ever else ctl.charger.max_a

    def _unchanged(self, ctl: Control, amps: float, now: datetime) -> bool:
        return (
            ctl.desired_a == amps
            and ctl.acked_a == amps
            and not ctl.failed
            and ctl.lease_until is not None
            and now < ctl.lease_until - self.lease / 2
        )

    async def _push(self, ctl: Control, reason: str) -> LimitAck:
        ctl.in_flight += 1
        try:
            async with ctl.lock:
                return await self._push_locked(ctl, reason)
        finally:
            ctl.in_flight -= 1
            self._publish(ctl, measured=False)

    async def _push_locked(self, ctl: Control, reason: str) -> LimitAck:
        cid, amps, station = ctl.charger.id, ctl.desired_a, ctl.station
        sent_at = self.clock()
        if amps is None:
            return LimitAck(cid, 0.0, sent_at, False, 0.0, "nothing to send")
        if station is None:
            return LimitAck(cid, amps, sent_at, False, 0.0, "offline")
        if not ctl.strategies:
            ctl.strategies = strategies(station.version, Abilities())
        outcome = Outcome(False, "no strategy left")
        label = ""
        for i in self._order(ctl):
            strategy = ctl.strategies[i]
            label = strategy.label
            if ctl.base_purpose != strategy.base_purpose:
                base = await self._install_base(ctl, station, strategy)
                if not base.accepted:
                    outcome = base
                    if not base.answered:
                        break
                    continue
            now = self.clock()
            spec = live_spec(strategy, amps, ctl.watts_per_amp, number_phases(len(ctl.charger.phases)), now,
                             self.lease, ctl.view.transaction_id())
            if strategy.purpose == "TxProfile" and spec.transaction_id is None:
                outcome = Outcome(False, "TxProfile needs a running transaction")
                continue
            outcome = await station.set_profile(spec)
            if outcome.accepted:
                if i != ctl.strategy:
                    log.info("ocpp charger=%s takes limits as %s (remembered)", cid, strategy.label)
                if not strategy.leased and i != ctl.strategy:
                    log.warning("ocpp charger=%s takes limits only at stack level 0: no lease, it keeps its last "
                                "limit (not its fallback) if the gateway goes away", cid)
                ctl.strategy = i
                lease_until = now + self.lease if strategy.leased else now + UNLEASED
                ctl.acked_a, ctl.acked_on, ctl.lease_until, ctl.acked_at = amps, station, lease_until, now
                ctl.failed, ctl.next_try = False, None
                break
            if not outcome.answered:
                break
        if not outcome.accepted:
            ctl.failed = True
            ctl.next_try = self.clock() + self.lease / 4
        record = LimitRecord(cid, amps, reason, sent_at, outcome.accepted, outcome.round_trip_s, outcome.detail, label)
        self.history.append(record)
        level = logging.INFO if (reason != "lease renewal" or not outcome.accepted) else logging.DEBUG
        log.log(level, "ocpp limit charger=%s amps=%.1f reason=%r accepted=%s rtt_ms=%.0f via=%s detail=%r",
                cid, amps, reason, outcome.accepted, outcome.round_trip_s * 1000, label, outcome.detail)
        return LimitAck(cid, amps, sent_at, outcome.accepted, outcome.round_trip_s, outcome.detail)

    def _order(self, ctl: Control) -> list[int]:
        n = len(ctl.strategies)
        return [(ctl.strategy + k) % n for k in range(n)]

    async def _install_base(self, ctl: Control, station: Station, strategy: Strategy) -> Outcome:
        spec = base_spec(strategy, ctl.charger.fallback_a, ctl.watts_per_amp,
                         number_phases(len(ctl.charger.phases)), self.clock())
        outcome = await station.set_profile(spec)
        if outcome.accepted:
            ctl.base_purpose, ctl.base_ever = strategy.base_purpose, True
            # a new base purpose means the old live profile may sit under a different purpose: re-send
            ctl.acked_a = None
        return outcome

    async def _setup(self, ctl: Control, station: Station) -> None:
        """Per connection: learn abilities, install the base profile first, then metering, then the limit."""
        abilities = await station.discover()
        fresh = strategies(station.version, abilities)
        remembered = ctl.strategies[ctl.strategy].label if ctl.strategies else None
        ctl.strategies = fresh
        ctl.strategy = next((i for i, s in enumerate(fresh) if s.label == remembered), 0)
        if not abilities.smart_charging:
            log.warning("ocpp charger=%s does not list SmartCharging: trying profiles anyway", ctl.charger.id)
        async with ctl.lock:
            for i in self._order(ctl):
                outcome = await self._install_base(ctl, station, fresh[i])
                if outcome.accepted:
                    ctl.strategy = i
                    break
                if not outcome.answered:
                    return
            else:
                log.error("ocpp charger=%s accepted no base profile: without the gateway it charges unlimited",
                          ctl.charger.id)
        await station.configure(self.section.meter_interval_s)
        delivered = ctl.acked_a == ctl.desired_a and ctl.acked_on is station
        if ctl.desired_a is not None and not delivered and not ctl.in_flight:
            await self._push(ctl, "reconnect: " + (ctl.reason or "limit"))

    async def _renew_leases(self) -> None:
        tick = min(1.0, self.section.lease_s / 8)
        while True:
            await asyncio.sleep(tick)
            now = self.clock()
            for ctl in self.controls.values():
                if ctl.station is None or ctl.desired_a is None or ctl.in_flight:
                    continue
                if ctl.setup is not None and not ctl.setup.done():
                    continue
                due = ctl.next_try if ctl.failed else (
                    None if ctl.lease_until is None else ctl.lease_until - self.lease / 2)
                if due is None or now >= due:
                    self._spawn(self._push(ctl, "lease renewal"))

    # ------------------------------------------------------------------------------------------ sessions

    async def _serve_station(self, charger: ChargerSection, ws: ServerConnection) -> None:
        ctl = self.controls[charger.id]
        cls = Cp16 if ws.subprotocol == "ocpp1.6" else Cp201
        station = cls(charger.id, ws, ctl.view, self, self.section.response_timeout_s, self.section.heartbeat_s)
        old = ctl.station
        if old is not None:
            log.warning("ocpp charger=%s connected again: dropping its previous connection", charger.id)
            await old.close()
        ctl.station, ctl.base_purpose, ctl.setup = station, None, None
        ctl.view.online = True
        log.info("ocpp charger=%s connected version=%s", charger.id, station.version)
        self._publish(ctl, measured=False)
        self._spawn(self._setup_if_silent(ctl, station))
        try:
            await station.start()
        except ConnectionClosed as exc:
            log.info("ocpp charger=%s disconnected code=%s", charger.id, exc.rcvd.code if exc.rcvd else "none")
        finally:
            if ctl.station is station:
                ctl.station = None
                ctl.view.online = False
                if ctl.setup is not None:
                    ctl.setup.cancel()
                self._publish(ctl, measured=False)

    async def _setup_if_silent(self, ctl: Control, station: Station) -> None:
        # a charger that reconnects and says nothing (no boot, no status) still gets its profiles checked
        await asyncio.sleep(SILENT_SETUP_S)
        if ctl.station is station and ctl.setup is None:
            ctl.setup = self._spawn(self._setup(ctl, station))

    def _control_of(self, station: Station) -> Control | None:
        ctl = self.controls.get(station.charger_id)
        return ctl if ctl is not None and ctl.station is station else None

    # Hooks, called by the version handlers

    def booted(self, station: Station) -> None:
        ctl = self._control_of(station)
        if ctl is None:
            return
        if ctl.setup is not None:
            ctl.setup.cancel()
        ctl.base_purpose = None
        ctl.setup = self._spawn(self._setup(ctl, station))

    def seen(self, station: Station) -> None:
        # a charger that reconnects without a BootNotification still needs its profiles checked
        ctl = self._control_of(station)
        if ctl is not None and ctl.setup is None:
            ctl.setup = self._spawn(self._setup(ctl, station))

    def updated(self, charger_id: str, measured: bool) -> None:
        ctl = self.controls.get(charger_id)
        if ctl is None:
            return
        if measured:
            self._check_draw(ctl)
        if ctl.view.transaction_id() is None:
            ctl.watch.reset()
        self._publish(ctl, measured)

    def _check_draw(self, ctl: Control) -> None:
        """Trust the meter over "Accepted": say once when a charger draws clearly above its acknowledged limit."""
        sample = ctl.view.sample
        if sample is None or not sample.current_a:
            return
        now = self.clock()
        draw = max(sample.current_a.values())
        limit = self.applied_limit(ctl)
        ctl.watch.update(now, draw, limit)
        settled = ctl.acked_at is not None and now - ctl.acked_at > timedelta(seconds=2 * self.section.meter_interval_s)
        if settled and not ctl.in_flight and draw > limit + 1.5:
            if not ctl.over_limit_logged:
                log.warning("ocpp charger=%s draws %.1f A above its acknowledged %.1f A limit (via %s): "
                            "the model may ignore this kind of profile", ctl.charger.id, draw, limit,
                            ctl.strategies[ctl.strategy].label if ctl.strategies else "?")
                ctl.over_limit_logged = True
        elif draw <= limit + 0.5 and ctl.over_limit_logged:
            log.info("ocpp charger=%s keeps to its limit again", ctl.charger.id)
            ctl.over_limit_logged = False

    def unused_cap(self, charger_id: str) -> float | None:
        """A cap for a charger whose EV has drawn well under its limit for a while (None: none).

        The runtime may put it into `EvseState.want_a` so the allocator gives the rest to others; it is
        withdrawn when the EV draws close to it again."""
        ctl = self.controls.get(charger_id)
        return None if ctl is None else ctl.watch.capped_a

    def authorize(self, token: str) -> bool:
        allowed = self.section.local_auth_list
        return allowed is None or token in allowed

    # ------------------------------------------------------------------------------------------ plumbing

    def _publish(self, ctl: Control, measured: bool) -> None:
        reading = ctl.view.reading(self.clock(), self.applied_limit(ctl), measured)
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()  # a stalled consumer loses the oldest reading, not the newest
            queue.put_nowait(reading)

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
