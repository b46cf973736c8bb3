"""The OCPP `EvseDriver`: pushes the allocator's limits to OCPP chargers and streams what they report.

It owns the websocket server and one `Control` per charger (the limit wanted and acknowledged, the lease,
the strategy that works; see `control`). Pushes go out concurrently, only when a limit changed or its
lease is at half-life; `apply_limits` waits at most `ack_wait_s` and reports late answers as readings
(`applied_limit_a`), so one slow charger never holds up the control loop or the others. Until a charger
acknowledges, it is assumed to draw its maximum. Every push is recorded (when, why, answer, round trip).
What each charger said it is at boot is kept and read with `identity(charger_id)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from gateway.clock import utc_now
from gateway.domain import ChargerReading, LimitAck
from gateway.ocpp.control import Context, Control, LimitRecord
from gateway.ocpp.cp16 import Cp16
from gateway.ocpp.cp201 import Cp201
from gateway.ocpp.link import Station, validate_inline
from gateway.ocpp.profiles import floor_tenth, number_phases
from gateway.ocpp.server import OcppServer
from gateway.ocpp.settings import CentralSystemSettings, OcppChargerSettings
from gateway.ocpp.state import ChargerIdentity, ChargerView, DrawWatch, to_conductors
from gateway.ports import ChargerRecords, FailsafeReport, Nameplate
from gateway.records import ChargerRecord
from gateway.waking import within

log = logging.getLogger("gateway.ocpp")
Clock = Callable[[], datetime]
T = TypeVar("T")
SILENT_SETUP_S = 5.0
STORE_WAIT_S = 2.0  # a raise waits at most this long for the store; then it is not sent
STORE_FLUSH_S = 0.5  # what changed is written this often (off the control path)


class OcppDriver:
    """Central system + EvseDriver for every OCPP charger of the site."""

    def __init__(
        self,
        section: CentralSystemSettings,
        chargers: Sequence[OcppChargerSettings],
        watts_per_amp: Mapping[str, float] | None = None,
        clock: Clock = utc_now,
        book: ChargerRecords | None = None,
        owns_book: bool = False,
    ) -> None:
        ocpp = [c for c in chargers if c.protocol.startswith("ocpp")]
        self.section = section
        self.clock = clock
        self.book = book
        self._owns_book = owns_book  # closed at stop()
        self.history: deque[LimitRecord] = deque(maxlen=10_000)
        ctx = Context(section, clock, self.history, lambda ctl: self._publish(ctl, measured=False),
                      write_ahead=self._write_ahead if book is not None else None,
                      dirty=self._dirty if book is not None else None)
        self.controls: dict[str, Control] = {}
        guessed: list[str] = []
        for c in ocpp:
            wpa = (watts_per_amp or {}).get(c.id)
            if wpa is None:  # the runtime passes the real figure (gateway.assembly); this guess is for tests
                wpa = 230.0 * number_phases(len(c.phases))
                guessed.append(c.id)
            self.controls[c.id] = Control(c, wpa, ctx, ChargerView(c.id, tuple(c.phases), clock=clock),
                                          DrawWatch(window_s=section.hand_back_after_s))
        if guessed:
            log.warning("ocpp: no site voltage given for %d charger(s) (%s): W limits assume 230 V per phase",
                        len(guessed), ", ".join(guessed[:5]) + (", ..." if len(guessed) > 5 else ""))
        self._dirty_ids: set[str] = set()
        self._store_failed = False
        if book is not None:
            for cid, record in book.load().items():
                ctl = self.controls.get(cid)
                if ctl is not None:
                    ctl.restore(record)
            restored = [c for c in self.controls.values() if c.stored is not None]
            if restored:
                log.info("ocpp: %d charger(s) restored from the store (what they may still draw on their "
                         "leases counts until each acknowledges a new limit)", len(restored))
        self.server = OcppServer(section, ocpp, self._serve_station)
        self._subscribers: list[asyncio.Queue[ChargerReading]] = []
        self._tasks: set[asyncio.Task[object]] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._stopping = False  # a stop began: no limit goes out any more (a release must stay released)
        self._flusher: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        validate_inline()
        await self.server.start()
        self._renewer = asyncio.create_task(self._renew_leases(), name="ocpp-lease-renewal")
        if self.book is not None:
            self._flusher = asyncio.create_task(self._flush_forever(), name="ocpp-store")

    async def stop(self, release: bool = True, at_rest: Mapping[str, float] | None = None) -> list[str]:
        """Stop serving. With `release`, clear live profiles first so chargers drop to their fallback now
        rather than when the lease runs out; then, every one having confirmed it, put back the fallbacks
        that were lowered beside the limits, up to `at_rest` (worked out with every limit at 0 A). Returns
        the chargers online that did not confirm going to their fallback (they fall back by themselves
        when their lease ends)."""
        kept: list[str] = []
        self._stopping = True
        for job in (self._renewer, self._flusher):
            if job is not None:
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job
        if release:
            online = [c for c in self.controls.values() if c.station is not None]
            released = await asyncio.gather(*(c.release() for c in online))
            kept = [c.charger.id for c, done in zip(online, released, strict=True) if not done]
            # nothing live left anywhere (an offline charger's lease may still run): room for the fallbacks at rest
            if not kept and at_rest and all(c.station is not None or c.applied_limit() <= at_rest.get(cid, 0.0)
                                            for cid, c in self.controls.items()):
                await self._raise_bases(at_rest)
        await self._flush()
        # a charger's message under way (a 2.0.1 TransactionEvent) gets its answer before the link closes
        await self._quiesce(timeout_s=2.0)
        pending = list(self._tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2.0)
        await self.server.stop()
        if self._owns_book and self.book is not None:
            self.book.close()
        return kept

    async def _raise_bases(self, at_rest: Mapping[str, float]) -> None:
        raising = []
        for cid, amps in at_rest.items():
            ctl = self.controls.get(cid)
            if ctl is None or ctl.station is None:
                continue
            ctl.want_base(amps)
            if ctl.base_amps < ctl.base_wanted:
                raising.append(ctl)
        if raising:
            await asyncio.wait([self._spawn(ctl.update_base()) for ctl in raising],
                               timeout=min(2.0, self.section.response_timeout_s))

    async def __aenter__(self) -> OcppDriver:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

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
            if ctl.unchanged(amps, now):
                acks.append(LimitAck(cid, amps, now, True, 0.0, "unchanged"))
                continue
            if self._stopping:
                acks.append(LimitAck(cid, amps, now, False, 0.0, "the gateway is stopping"))
                continue
            ctl.desired_a, ctl.reason = amps, reason
            if ctl.station is None:
                acks.append(LimitAck(cid, amps, now, False, 0.0,
                                     f"offline: holds its own fallback of {ctl.charger.fallback_a:g} A"))
                continue
            task = self._spawn(ctl.push(reason))
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

    async def hold_fallbacks(self, wanted: Mapping[str, float], keep: Iterable[str] = ()) -> list[str]:
        """What each charger named should fall back to from now on (never above its configured fallback;
        those not named or in `keep`: left as they are). A base to lower is sent now and its answer awaited
        (up to `ack_wait_s`): until the charger takes it, a lease that runs out puts it back on more, so the
        chargers whose lowering is not confirmed are returned. A raise goes out from the renewal task."""
        kept = set(keep)
        lowering: list[Control] = []
        setting_up: list[Control] = []  # connected, its base not yet checked: the setup puts in the wanted one
        for cid, amps in wanted.items():
            ctl = self.controls.get(cid)
            if ctl is None or cid in kept:
                continue
            ctl.want_base(amps)
            if ctl.base_lowerable():
                lowering.append(ctl)
            elif ctl.station is not None and ctl.ready_on is not ctl.station and ctl.base_amps > ctl.base_wanted:
                setting_up.append(ctl)
            elif ctl.base_due():
                self._spawn(ctl.update_base())
        waits: list[asyncio.Future[Any]] = [self._spawn(ctl.update_base()) for ctl in lowering]
        waits += [ctl.setup for ctl in setting_up if ctl.setup is not None and not ctl.setup.done()]
        if waits:
            await asyncio.wait(waits, timeout=self.section.ack_wait_s)
        elif setting_up:  # its setup not begun yet: paced, not asked again at once
            await asyncio.sleep(min(0.25, self.section.ack_wait_s))
        return [ctl.charger.id for ctl in lowering + setting_up if ctl.base_amps > ctl.base_wanted]

    async def readings(self) -> AsyncIterator[ChargerReading]:
        queue: asyncio.Queue[ChargerReading] = asyncio.Queue(maxsize=10_000)
        self._subscribers.append(queue)
        try:
            for reading in self.snapshot():
                queue.put_nowait(reading)
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)

    def snapshot(self) -> list[ChargerReading]:
        """A reading per charger now (offline ones too): what each may draw as far as the driver knows."""
        now = self.clock()
        return [ctl.view.reading(now, ctl.applied_limit()) for ctl in self.controls.values()]

    def applied_limit(self, ctl: Control) -> float:
        return ctl.applied_limit()

    async def _renew_leases(self) -> None:
        tick = min(1.0, self.section.lease_s / 8)
        while True:
            await asyncio.sleep(tick)
            now = self.clock()
            for ctl in self.controls.values():
                if ctl.renewal_due(now):
                    self._spawn(ctl.push("lease renewal"))
                elif ctl.base_due():
                    self._spawn(ctl.update_base())
                if ctl.meter_silent(now) and ctl.station is not None:
                    ctl.meter_asked_at = now
                    self._spawn(ctl.station.trigger_meter_values())

    # ------------------------------------------------------------------------------------------ sessions

    async def _serve_station(self, charger: OcppChargerSettings, ws: ServerConnection) -> None:
        ctl = self.controls[charger.id]
        cls = Cp16 if ws.subprotocol == "ocpp1.6" else Cp201
        station = cls(charger.id, ws, ctl.view, self, self.section.response_timeout_s, self.section.heartbeat_s)
        old = ctl.station
        if old is not None:
            log.warning("ocpp charger=%s connected again: dropping its previous connection", charger.id)
            await old.close()
        ctl.station, ctl.base_purpose, ctl.setup, ctl.ready_on = station, None, None, None
        ctl.view.online = True
        log.info("ocpp charger=%s connected version=%s", charger.id, station.version)
        self._publish(ctl, measured=False)
        self._spawn(self._setup_if_silent(ctl, station))
        try:
            await station.start()
        except ConnectionClosed as exc:
            ours = exc.rcvd_then_sent is False or exc.rcvd is None
            frame, side = (exc.sent, "gateway") if ours else (exc.rcvd, "charger")
            code = f"{frame.code} {frame.reason}".strip() if frame else "none (link lost)"
            log.info("ocpp charger=%s disconnected, closed by %s code=%s", charger.id, side, code)
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
        if ctl.station is station and ctl.setup is None and not self._stopping:
            ctl.setup = self._spawn(ctl.run_setup(station))

    def _control_of(self, station: Station) -> Control | None:
        ctl = self.controls.get(station.charger_id)
        return ctl if ctl is not None and ctl.station is station else None

    # Hooks, called by the version handlers

    def booted(self, station: Station) -> None:
        ctl = self._control_of(station)
        if ctl is None:
            return
        ident = ctl.view.identity
        if ident is not None:
            log.info("ocpp charger=%s booted vendor=%r model=%r firmware=%r serial=%r", station.charger_id,
                     ident.vendor, ident.model, ident.firmware, ident.serial)
        if ctl.setup is not None:
            ctl.setup.cancel()
        ctl.rebooted()
        self._dirty(ctl)
        if not self._stopping:
            ctl.setup = self._spawn(ctl.run_setup(station))

    def seen(self, station: Station) -> None:
        # a charger that reconnects without a BootNotification still needs its profiles checked
        ctl = self._control_of(station)
        if ctl is not None and ctl.setup is None and not self._stopping:
            ctl.setup = self._spawn(ctl.run_setup(station))

    def updated(self, charger_id: str, measured: bool) -> None:
        ctl = self.controls.get(charger_id)
        if ctl is None:
            return
        if measured:
            ctl.check_draw()
        if ctl.view.transaction_id() is None:
            ctl.watch.reset()
        self._dirty(ctl)
        if ctl.session_changed() and ctl.station is not None and not ctl.in_flight and not self._stopping:
            self._spawn(ctl.push("new session: " + (ctl.reason or "limit")))
        self._publish(ctl, measured)

    def unused_cap(self, charger_id: str) -> float | None:
        """A cap for a charger whose EV has drawn well under its limit for a while (None: none).

        The runtime may put it into `EvseState.want_a` so the allocator gives the rest to others; it is
        withdrawn when the EV draws close to it again."""
        ctl = self.controls.get(charger_id)
        return None if ctl is None else ctl.watch.capped_a

    def identity(self, charger_id: str) -> ChargerIdentity | None:
        """What the charger said it is (vendor, model, firmware, serial) in the last BootNotification this
        process received from it; None before any, or for an id that is not an OCPP charger of this site.
        A reconnect without a BootNotification keeps it; the next BootNotification replaces it."""
        ctl = self.controls.get(charger_id)
        return None if ctl is None else ctl.view.identity

    # ------------------------------------------------------------------ commissioning (`ports.Commissions`)

    def url_of(self, charger_id: str) -> str:
        """Where the charger is to connect (`ports.Listens`)."""
        return self.server.url_of(charger_id)

    def ready(self, charger_id: str) -> bool | None:
        """Connected, and its setup (abilities, base profile) done."""
        ctl = self.controls.get(charger_id)
        if ctl is None:
            return None
        return ctl.station is not None and ctl.setup is not None and ctl.setup.done()

    def own_sample(self, charger_id: str) -> tuple[object, dict[str, float]] | None:
        """Its latest MeterValues, in the site's conductors."""
        ctl = self.controls.get(charger_id)
        if ctl is None or ctl.view.sample is None:
            return None
        return ctl.view.sample, to_conductors(ctl.view.sample.current_a, ctl.view.conductors)

    def own_status(self, charger_id: str) -> str | None:
        ctl = self.controls.get(charger_id)
        return None if ctl is None else ctl.view.status().value

    def nameplate(self, charger_id: str) -> Nameplate | None:
        said = self.identity(charger_id)
        return None if said is None else Nameplate(said.vendor, said.model, said.firmware, said.serial)

    async def failsafe_report(self, charger_id: str, fallback_a: float) -> FailsafeReport:
        """The base profile it accepted (what it falls back to) and whether its live limits are leased."""
        ctl = self.controls[charger_id]
        lease = self.section.lease_s
        strategy = ctl.strategies[ctl.strategy] if ctl.strategies else None
        rows = [("fail-safe current (config)", f"{fallback_a:g} A")]
        if strategy is None or ctl.base_known is None:
            rows.append(("base profile", "not accepted"))
            return FailsafeReport(tuple(rows), False, "the charger accepted no base profile: without the "
                                  "gateway it would charge unlimited")
        rows += [
            ("base profile", f"{strategy.base_purpose}, stack level {strategy.base_level}, "
                             f"{fallback_a:g} A, no end: accepted"),
            ("live profile", f"{strategy.purpose} in {strategy.unit}, stack level {strategy.live_level}"),
        ]
        if not strategy.leased:
            rows.append(("lease", "none: the charger takes limits only in the base profile's slot"))
            return FailsafeReport(tuple(rows), False, "the charger takes limits only at stack level 0, so a "
                                  "limit cannot expire: it keeps its last limit, not its fail-safe current, if "
                                  "the gateway stops")
        rows.append(("lease", f"validTo {lease:g} s ahead, renewed at half"))
        return FailsafeReport(tuple(rows), True, f"base profile at {fallback_a:g} A accepted; falls back to it "
                              f"within {lease:g} s of losing the gateway")

    def authorize(self, token: str) -> bool:
        allowed = self.section.local_auth_list
        return allowed is None or token in allowed

    # ------------------------------------------------------------------------------------------ the store

    def _dirty(self, ctl: Control) -> None:
        if self.book is not None:
            self._dirty_ids.add(ctl.charger.id)

    async def _write_ahead(self, ctl: Control, record: ChargerRecord) -> bool:
        """Keep a raise before it is sent; False (and nothing sent) when the store cannot."""
        return await self._save([record])

    async def _save(self, records: list[ChargerRecord]) -> bool:
        book = self.book
        if book is None or not records:
            return True
        try:
            await within(asyncio.to_thread(book.save, records, self.clock()), STORE_WAIT_S)
        except (TimeoutError, sqlite3.Error, OSError) as exc:
            if not self._store_failed:
                log.error("ocpp: what chargers hold cannot be stored (%s): no limit is raised until it can, "
                          "decreases still go out", str(exc) or type(exc).__name__)
            self._store_failed = True
            return False
        if self._store_failed:
            log.info("ocpp: what chargers hold is stored again")
        self._store_failed = False
        for record in records:
            ctl = self.controls.get(record.charger_id)
            if ctl is not None:
                ctl.stored = record
        return True

    async def _flush(self) -> None:
        ids, self._dirty_ids = self._dirty_ids, set()
        records = [self.controls[cid].record() for cid in sorted(ids) if cid in self.controls]
        if not await self._save(records):
            self._dirty_ids |= ids

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(STORE_FLUSH_S)
            await self._flush()

    async def _quiesce(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline and any(
                getattr(c.station, "busy", 0) for c in self.controls.values() if c.station is not None):
            await asyncio.sleep(0.02)

    def clock_stepped(self, step_s: float) -> None:
        """Our wall clock stepped by `step_s` (the runtime saw it against the monotonic one): the leases'
        ends we keep move with it, and the chargers' clocks are that much nearer or further from ours.
        Profiles sent from now on go out right in each charger's own time at once."""
        step = timedelta(seconds=step_s)
        for ctl in self.controls.values():
            if ctl.lease_until is not None:
                ctl.lease_until += step
            if ctl.acked_at is not None:
                ctl.acked_at += step
            ctl.view.skews = deque((skew - step_s for skew in ctl.view.skews), maxlen=ctl.view.skews.maxlen)
            if ctl.desired_a is not None:
                ctl.failed, ctl.next_try = True, self.clock()  # renewed at once, in the chargers' time

    def store_failing(self) -> bool:
        return self._store_failed

    # ------------------------------------------------------------------------------------------ plumbing

    def _publish(self, ctl: Control, measured: bool) -> None:
        reading = ctl.view.reading(self.clock(), ctl.applied_limit(), measured)
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()  # a stalled consumer loses the oldest reading, not the newest
            queue.put_nowait(reading)

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
