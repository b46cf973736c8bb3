"""The control loop: wires the adapters of the config together and decides the site's limits, forever.

`Runtime.run()` starts the store, the OCPP central system and the Modbus links, then runs one supervising
asyncio TaskGroup: a reader per charger driver and per meter, the VEN when `[vtn]` is configured, the status
endpoint, and the decision loop. A decision happens every `control.tick_s` and at once when a charger plugs
in or out, a meter reads above its circuit's limit, the VTN changes the events or an event interval starts
or ends (apscheduler jobs at the schedule's boundaries, `runtime.boundaries`). Each decision rebuilds the
schedule from the stored events, runs the pure `decide`, pushes decreases first and increases after, and
stores what was sent with its acknowledgement. While a demand charge is in force (the tariff's or an OpenADR
DEMAND_CHARGE) the plan gets a peak target (the month's metered peak so far, or the previous plan's target
when higher) and the decision keeps the site's power under the plan's target, which the planner raises only
when a departure would otherwise be missed. An adapter that crashes is logged and restarted with bounded
backoff; the loop keeps deciding meanwhile, counting its chargers at their maximum. Stopping (`stop()`,
SIGTERM, Ctrl-C) clears the OCPP live profiles so the chargers drop to their fallback at once, closes the
Modbus links (the chargers' watchdogs take over) and closes the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from gateway.clock import utc_now
from gateway.domain import ChargerReading, ChargerStatus, Event, LimitAck, Measurement, OptState, Segment
from gateway.ports import (
    Closes,
    Curtailment,
    EvseDriver,
    FollowsClock,
    HandsBack,
    HoldsFallbacks,
    Releases,
    Remembers,
    Snapshots,
    Starts,
)
from gateway.runtime import demand
from gateway.runtime.alarms import Alarms
from gateway.runtime.boundaries import Boundaries
from gateway.runtime.clock_jump import ClockState, nows, strictest
from gateway.runtime.counters import Counters
from gateway.runtime.decide import Decision, Inputs, MeterReading, Site, charger_states, decide
from gateway.runtime.drivers import BUILDERS, DriverContext, family, needs_pool
from gateway.runtime.logs import QuietLibraries, RecentLog
from gateway.runtime.meter_watch import MeterWatch
from gateway.runtime.operator import STORE_WAIT_S as OPERATOR_STORE_WAIT_S
from gateway.runtime.operator import OperatorControls
from gateway.runtime.plans import PlanKeeper, SitePowerLog
from gateway.runtime.recorder import Recorder
from gateway.runtime.site_state import SiteState
from gateway.runtime.supervise import supervised
from gateway.schedule import PriceChange, ScheduleSettings, build_schedule, price_changes, segment_at
from gateway.smoothing import ChargerMemory
from gateway.store.decisions import DecisionStore, rows_for
from gateway.store.health import WriteHealth
from gateway.store.sessions import SessionLedger
from gateway.store.telemetry import ChargerSample, Sample, SiteSample, Telemetry
from gateway.store.vtn import VenStore
from gateway.store.writer import StoreWriter
from gateway.tariff import Tariff

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.config.site import ChargerSection
    from gateway.modbus.link import LinkPool
    from gateway.modbus.meter import ModbusMeter
    from gateway.ocpp.driver import OcppDriver
    from gateway.openadr.ven import Ven

log = logging.getLogger("gateway.runtime")
Clock = Callable[[], datetime]
RESEND_UNACKED_S = 5.0  # how often a limit a charger has not acknowledged is sent again
HISTORY_POINTS = 7200  # one point a second: the last two hours for the status page
TELEMETRY_EVERY = timedelta(seconds=1)  # telemetry and the session ledger are written at most this often



@dataclass(frozen=True, slots=True)
class HistoryPoint:
    at: datetime
    load_kw: float | None
    limit_kw: float | None


class Runtime:
    """The gateway as one running program; also the VEN's event sink and telemetry source."""

    def __init__(self, config: GatewayConfig, *, base: Path | None = None, clock: Clock = utc_now,
                 serve_status: bool = True) -> None:
        from gateway.assembly import ev_capacity_kw

        self.config = config
        self.serve_status = serve_status
        self._status_runner: Any = None
        self.base = base
        self.clock = clock
        self.site = Site.from_config(config)
        levels = {int(k): v for k, v in config.openadr.simple_levels.items()}
        self.schedule_settings = ScheduleSettings(ev_capacity_kw=ev_capacity_kw(config), simple_levels=levels)
        self.protocol_of = {c.id: family(c.protocol) for c in config.chargers}  # charger → driver family
        self.circuit_limit = {c.id: c for c in self.site.circuits}
        self.meter_circuit = {m.id: m.circuit for m in self.site.meters}
        self.state = SiteState(self.meter_circuit)  # what chargers and meters said last; the sessions
        self.events: dict[str, Event] = {}
        self.memory: dict[str, ChargerMemory] = {}
        self.plans = PlanKeeper.from_config(config)
        self.power_log = SitePowerLog()  # site power, for the month's demand peak
        self.demand_charge: float | None = None  # per kW, in force at the last decision (None: none)
        self.month_peak_kw: float | None = None  # the month's metered peak, while a demand charge is in force
        self._plan_failed = False
        # A drop in the non-EV estimate is believed once every charger has reported since (a rise at once):
        # until then the meter may see a car's new draw that its charger has not reported yet.
        ocpp_interval = config.ocpp.meter_interval_s if "ocpp" in self.protocol_of.values() else 0.0
        self.non_ev_hold = timedelta(seconds=max(2.0, ocpp_interval + config.control.tick_s))
        self.non_ev_window: deque[tuple[datetime, dict[tuple[str, str], float]]] = deque()
        self.unacked: dict[str, datetime] = {}  # charger → when its unacknowledged limit was last sent
        self._unacked_said: dict[str, tuple[float, str]] = {}  # the refusal last logged per charger
        self.acks: dict[str, LimitAck] = {}
        # the operator's cap and paused chargers (kept over a restart)
        self.operator = OperatorControls(frozenset(self.protocol_of), self.trigger, clock)
        self.recent_log = RecentLog()  # the last log lines, for /api/log
        self.alarms = Alarms()  # faults in force, for /api/status, /healthz and /metrics
        self.counters = Counters()  # decisions and pushes, for /metrics
        from gateway.runtime.watch import Watch

        self.watch = Watch(self)  # ticked in the loop: the alarms hold with or without the status endpoint
        self.meter_watch = MeterWatch(config, self.site, self.alarms, hold_s=self.non_ev_hold.total_seconds())
        self.clock_state = ClockState()  # the wall clock's steps against the monotonic clock
        self.last: Decision | None = None
        self.decisions = 0
        self.deciding = True  # False: the loop makes no decisions (commissioning steps chargers itself)
        self.history: deque[HistoryPoint] = deque(maxlen=HISTORY_POINTS)
        self.restarts: dict[str, int] = {}
        self.vtn_last_poll: datetime | None = None
        self._ven_polls = 0
        self._trigger = asyncio.Event()
        self.boundaries = Boundaries(self.trigger)  # a decision at each start or end of a segment
        self._stop = asyncio.Event()
        self.started = asyncio.Event()
        # What is kept in the store (ledger, telemetry, limits sent, the VTN adapter's), off the control path.
        self.recorder = Recorder(self._path(config.store.path), config.store.telemetry_days, self.alarms, clock)
        self._recorded_at: datetime | None = None
        self.drivers: dict[str, EvseDriver] = {}  # one per protocol family, built by `runtime.drivers`
        self.meters: dict[str, ModbusMeter] = {}
        self.pool: LinkPool | None = None
        self.ven: Ven | None = None
        self.status_url: str | None = None

    @property
    def ocpp(self) -> OcppDriver | None:
        """The OCPP central system, when the site has OCPP chargers (for the demo and commissioning)."""
        return cast("OcppDriver | None", self.drivers.get("ocpp"))

    @property
    def modbus(self) -> EvseDriver | None:
        return self.drivers.get("modbus")

    # ------------------------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        self._stop.set()

    def trigger(self, why: str) -> None:
        log.debug("decision now: %s", why)
        self._trigger.set()

    async def run(self) -> None:
        """Until `stop()` (or cancellation): start everything, decide, then shut down cleanly."""
        try:
            await self._open()
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(t, name=n) for n, t in self._tasks()]
                self.started.set()
                await self._stop.wait()
                for task in tasks:
                    task.cancel()
        finally:
            await self._close()

    async def _open(self) -> None:
        path = self._path(self.config.store.path)
        recorder = self.recorder
        await recorder.open()  # a damaged file is refused (StoreDamaged), not half-used
        assert recorder.ledger is not None and recorder.operator is not None and recorder.vtn is not None
        self.operator.attach(recorder.operator, recorder.writer, recorder.health)
        # A session that was charging when the gateway stopped goes on: what it has had counts from its start
        # as the ledger saw it, not from the first reading after the restart (else it would be owed it twice).
        for cid, session in (await asyncio.to_thread(recorder.ledger.open_sessions)).items():
            if session.meter_start_kwh is not None:
                self.session_start_kwh[cid] = (session.session_id, session.meter_start_kwh)
        self.operator.restore(await asyncio.to_thread(recorder.operator.load, self.clock(),
                                                      frozenset(self.protocol_of)))
        self.events = await asyncio.to_thread(recorder.vtn.events)
        self.boundaries.start()
        if needs_pool(self.config):
            from gateway.modbus.link import LinkPool

            self.pool = LinkPool()
        context = DriverContext(self.config, self.clock, self.base, path, self.pool)
        families: dict[str, list[ChargerSection]] = {}
        for charger in self.config.chargers:
            families.setdefault(family(charger.protocol), []).append(charger)
        for name, chargers in families.items():
            driver = BUILDERS[name](context, chargers)
            self.drivers[name] = driver
            if isinstance(driver, Snapshots):
                # Known before the first decision: what each charger may still draw on what it holds (its
                # lease from the store), not "never heard from" while its reader task has yet to start.
                for reading in driver.snapshot():
                    self.readings[reading.charger_id] = reading
            if isinstance(driver, Starts):
                await driver.start()
        for section in self.config.meters:
            from gateway.modbus.meter import ModbusMeter

            assert self.pool is not None
            self.meters[section.id] = ModbusMeter.from_config(section, self.pool, self.base)
        if self.config.vtn is not None:
            from gateway.openadr.ven import Ven

            self.ven = Ven(self.config.vtn, self.config.openadr, recorder.vtn, sink=self, telemetry=self,
                           charger_ids=[c.id for c in self.config.chargers], clock=self.clock,
                           # a configured tariff's currency: a VTN price in another one is refused, not mixed
                           currency=self.plans.tariff.currency if self.plans.tariff is not None else None)
        if self.serve_status:
            from gateway.status.app import serve

            status = self.config.status
            self.recent_log.addFilter(QuietLibraries(logging.WARNING))
            logging.getLogger().addHandler(self.recent_log)
            self._status_runner, port = await serve(self, status.bind, status.port, token=status.token,
                                                    operator=self)
            host = f"[{status.bind}]" if ":" in status.bind else status.bind
            self.status_url = f"http://{host}:{port}/"
            log.info("status endpoint url=%s", self.status_url)

    def _path(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() or self.base is None else self.base / path

    def _tasks(self) -> list[tuple[str, Any]]:
        tasks: list[tuple[str, Any]] = [("decide", self._decide_forever())]
        for name, driver in self.drivers.items():
            tasks.append((name, supervised(f"{name}-chargers" if name != "ocpp" else "ocpp-readings",
                                           functools.partial(self._read, driver), restarts=self.restarts)))
        for meter_id, meter in self.meters.items():
            tasks.append((f"meter-{meter_id}", supervised(f"meter-{meter_id}", self._meter_reader(meter),
                                                          restarts=self.restarts)))
        ven = self.ven
        if ven is not None:
            tasks.append(("ven", supervised("openadr-ven", ven.run, restarts=self.restarts)))
        return tasks

    async def _close(self) -> None:
        self.boundaries.stop()
        if self._status_runner is not None:
            with contextlib.suppress(Exception):
                await self._status_runner.cleanup()
        logging.getLogger().removeHandler(self.recent_log)
        for releasing in [d for d in self.drivers.values() if isinstance(d, Releases)]:
            try:
                kept = await asyncio.wait_for(releasing.stop(release=True), timeout=10.0)
            except Exception as exc:  # a shutdown goes on; what it could not do is said
                log.warning("shutdown: chargers not released (%s): they fall back by themselves when their "
                            "leases end", str(exc) or type(exc).__name__)
            else:
                if kept:
                    log.warning("shutdown: %d charger(s) did not confirm going to their fallback (%s): they fall "
                                "back by themselves when their leases end", len(kept), ", ".join(kept[:10]))
                else:
                    log.info("shutdown: live limits cleared; chargers on their fallback")
        for closing in [d for d in self.drivers.values() if isinstance(d, Closes)]:
            with contextlib.suppress(Exception):  # their watchdogs take over
                await closing.close()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await self.pool.close()
        await self.recorder.close()

    # ------------------------------------------------------------------------------------ inputs

    async def _read(self, driver: EvseDriver | None) -> None:
        assert driver is not None
        async for reading in driver.readings():
            self.on_reading(reading)

    def on_reading(self, reading: ChargerReading) -> None:
        reading, before = self.state.observe(reading)
        self.recorder.observe(reading)
        if reading.charger_id in self.unacked and reading.applied_limit_a is not None:
            mem = self.memory.get(reading.charger_id)
            if mem is not None and reading.applied_limit_a <= mem.limit_a + 0.5:
                del self.unacked[reading.charger_id]
        came_online = (before is None or before.status is ChargerStatus.OFFLINE) and (
            reading.status is not ChargerStatus.OFFLINE)
        if came_online and reading.charger_id in self.unacked:
            # It refused the limit only because it was away: send it again now, not at the next resend.
            self.unacked[reading.charger_id] = datetime.min.replace(tzinfo=UTC)
            self.trigger(f"charger={reading.charger_id} online")
        if before is None or before.status.connected != reading.status.connected:
            self.trigger(f"charger={reading.charger_id} status={reading.status.value}")

    def _meter_reader(self, meter: ModbusMeter) -> Callable[[], Any]:
        from gateway.runtime.meter_check import Poll

        meter.report_values = False  # refused values are the meter check's alarm: one line, not two

        async def read() -> None:
            async for poll in meter.polls():
                if poll.measurement is not None:
                    self.on_measurement(poll.measurement, at=poll.at, values=poll.values)
                elif poll.rejected is not None:  # NaN, 1e9 A: a fault at once, not a last good reading aging
                    now = self.clock()
                    ev = self.meter_watch.ev_draw(meter.id, self.readings, now)
                    state = self.meter_watch.observe(meter.id, Poll(poll.at, {}, ev, poll.values, poll.rejected), now)
                    if state.started is not None:
                        self.trigger(f"meter={meter.id} {state.started.kind}")

        return read

    def on_measurement(self, m: Measurement, *, at: float | None = None, values: tuple[float, ...] = ()) -> None:
        """A good reading of a meter; `at` the monotonic time of its poll, `values` every number it read
        (for the frozen check). It is judged against what the chargers behind it report drawing."""
        from gateway.runtime.meter_check import Poll

        self.measurements[m.meter_id] = m
        now = self.clock()
        ev = self.meter_watch.ev_draw(m.meter_id, self.readings, now)
        poll = Poll(time.monotonic() if at is None else at, m.current_a, ev, values)
        state = self.meter_watch.observe(m.meter_id, poll, now)
        if state.started is not None:
            self.trigger(f"meter={m.meter_id} {state.started.kind}")
        circuit = self.circuit_limit.get(self.meter_circuit.get(m.meter_id, ""))
        if circuit is not None and any(a > circuit.limit_of(p) for p, a in m.current_a.items()):
            self.trigger(f"meter={m.meter_id} over the limit of {circuit.id}")

    def meter_readings(self) -> dict[str, MeterReading]:
        out = {}
        now = self.clock()
        for meter_id, m in self.measurements.items():
            meter = self.meters.get(meter_id)
            # Over a minute (what the meter keeps), not only `stale_after_s`: at the moment a meter turns
            # stale its last `stale_after_s` hold no good poll, and the worst before it is what counts.
            worst = meter.worst_recent_a(window_s=max(60.0, meter.stale_after_s)) if meter is not None else {}
            measured_at = m.at
            age = meter.age_s() if meter is not None else None
            if age is not None:
                # Its age by the monotonic clock: a step of the wall clock must not make an old reading
                # look fresh (backwards) nor a fresh one stale-but-believed (forwards).
                measured_at = now - timedelta(seconds=max(0.0, age))
            out[meter_id] = self.meter_watch.reading(MeterReading(meter_id, m.current_a, measured_at, worst))
        return out

    # ------------------------------------------------------------------------------------ EventSink

    def events_changed(self, events: Sequence[Event], now: datetime) -> None:
        self.events = {e.event_id: e for e in events}
        self.trigger("events changed")

    def opt_of(self, event_id: str) -> OptState:
        event = self.events.get(event_id)
        return event.opt if event is not None else OptState.NONE

    # ------------------------------------------------------------------------------------ TelemetrySource

    def site_power_kw(self) -> float | None:
        return self.state.site_power_kw(self.site)

    def site_energy_kwh(self) -> float | None:
        return self.state.site_energy_kwh(self.site)

    def charger_power_kw(self) -> dict[str, float]:
        return self.state.charger_power_kw(self.site)

    def ev_power_kw(self) -> float | None:
        return sum(self.charger_power_kw().values())

    def limit_kw(self) -> float | None:
        return self.curtailment().limit_kw

    def online(self) -> bool:
        return self.last is not None

    def curtailment(self) -> Curtailment:
        """The caps the last decision was held under (a SIMPLE level, LOAD_CONTROL, a delta or an operator cap,
        not only a site limit), with the segment's per-resource caps and level."""
        import math
        import re

        last = self.last
        if last is None:
            return Curtailment()
        segment = segment_at(build_schedule(self.events.values(), last.now, self.schedule_settings), last.now)
        levels = [round(float(r.rsplit("=", 1)[1])) for r in (segment.reasons if segment else ())
                  if re.search(r":(level|x-loadControlLevelOffset)=-?[\d.]+$", r)]
        ev_kw = last.ev_limit_kw if last.ev_limit_kw is not None and math.isfinite(last.ev_limit_kw) else None
        normal = self.schedule_settings.ev_capacity_kw
        return Curtailment(
            site_kw=last.site_limit_kw,
            ev_kw=ev_kw,
            group_kw=dict(segment.group_kw) if segment else {},
            normal_ev_kw=normal if normal > 0 else None,
            non_ev_kw=last.non_ev_kw,
            level=max(levels) if levels else None,
            manual_override=self.operator_cap_kw is not None or bool(self.paused),
        )

    # ------------------------------------------------------------------------------------ deciding

    # The operator's writes (the status app's `Operator`), kept by `self.operator`.

    def set_operator_cap(self, kw: float | None, until: datetime | None = None) -> None:
        """A site power cap from the operator (None: lift it), in force until `until` (None: until lifted)."""
        self.operator.set_cap(kw, until)

    def operator_cap(self, now: datetime) -> float | None:
        return self.operator.cap(now)

    async def operator_stored(self, timeout_s: float = OPERATOR_STORE_WAIT_S) -> str | None:
        return await self.operator.stored(timeout_s)

    def set_paused(self, charger_id: str, paused: bool) -> bool:
        """Pause (0 A, "paused by operator") or resume one charger; False when there is no such charger."""
        return self.operator.set_paused(charger_id, paused)

    @property
    def operator_cap_kw(self) -> float | None:
        return self.operator.cap_kw

    @property
    def operator_cap_until(self) -> datetime | None:
        return self.operator.cap_until

    @property
    def paused(self) -> set[str]:
        return self.operator.paused

    async def set_event_opt(self, event_id: str, choice: OptState | None, reason: str) -> Event | None:
        """The operator's opt in/out of one event (None: back to the rules), through the VEN, which stores
        it and tells the VTN; None when there is no such event. ValueError when no VTN is configured."""
        if self.ven is None:
            raise ValueError("no VTN is configured: there is no event to opt out of")
        return await self.ven.set_opt(event_id, choice, reason)

    def energy_needed(self) -> dict[str, float]:
        return self.state.energy_needed()

    # What the chargers and meters said last (kept by `self.state`).

    @property
    def readings(self) -> dict[str, ChargerReading]:
        return self.state.readings

    @readings.setter
    def readings(self, value: dict[str, ChargerReading]) -> None:
        self.state.readings = value

    @property
    def measurements(self) -> dict[str, Measurement]:
        return self.state.measurements

    @property
    def session_start_kwh(self) -> dict[str, tuple[str | None, float]]:
        return self.state.session_start_kwh

    def inputs(self, now: datetime) -> Inputs:
        # While the wall clock is stepped (a bad NTP step), it may be either moment: the schedule is built
        # from the earlier and the strictest limits of both are in force, so no step ends a DR event early.
        moments = nows(now, self.clock_state)
        schedule = build_schedule(self.events.values(), min(moments), self.schedule_settings)
        self.boundaries.follow(schedule, now)
        inputs = Inputs(
            now=now,
            segment=strictest(segment_at(schedule, t) for t in moments),
            operator_cap_kw=self.operator_cap(now),
            readings=dict(self.readings),
            meters=self.meter_readings(),
            unacked=frozenset(self.unacked),
            memory=dict(self.memory),
            non_ev_recent=self.recent_non_ev(now),
            energy_needed_kwh=self.energy_needed(),
            paused=frozenset(self.paused),
        )
        peak_kw = self.peak_target(schedule, now)
        changes = price_changes(self.events.values(), now, self.schedule_settings)
        wants = self.wants(inputs, schedule, peak_kw, changes)
        # Without a plan (it failed) there is no target: the site is held only by its real limits.
        target = self.plans.plan.peak_kw if peak_kw is not None and wants is not None and self.plans.plan else None
        return replace(inputs, want_a=wants or {}, unused_a=self.unused_caps(),
                       peak_kw=self.target_floor(target, inputs))

    def unused_caps(self) -> dict[str, float]:
        """The OCPP driver's hand-back: chargers whose EV has drawn well under its limit for a while."""
        caps: dict[str, float] = {}
        for name, driver in self.drivers.items():
            if isinstance(driver, HandsBack):
                for cid, fam in self.protocol_of.items():
                    cap = driver.unused_cap(cid) if fam == name else None
                    if cap is not None:
                        caps[cid] = cap
        return caps

    def target_floor(self, target: float | None, inputs: Inputs) -> float | None:
        """The plan's peak target, never so low that a car which gave no departure cannot take its minimum
        (`demand.floor`)."""
        states, _ = charger_states(self.site, inputs)
        return demand.floor(target, states, inputs.now, self.last.non_ev_kw if self.last is not None else 0.0)

    def peak_target(self, schedule: Sequence[Segment], now: datetime) -> float | None:
        """The site power target to plan under while a demand charge is in force (None: none is); see
        `demand.demand_at`. What it found is kept for the status (`demand_status`)."""
        tariff = self.plans.tariff or Tariff(timezone=self.config.site.timezone)
        found = demand.demand_at(tariff, schedule, now, self.power_log.peak_kw, self.plans.plan)
        self.demand_charge, self.month_peak_kw = found.charge_per_kw, found.month_peak_kw
        return found.target_kw

    def wants(self, inputs: Inputs, schedule: Sequence[Segment], peak_kw: float | None = None,
              changes: Sequence[PriceChange] = ()) -> dict[str, float | None] | None:
        """The plan's caps for the sessions that gave a departure; the others share what is left by the
        allocator's own fairness (an as-soon-as-possible plan would cap them in an arbitrary order).
        None when the plan failed."""
        states, _ = charger_states(self.site, inputs)
        non_ev_kw = self.last.non_ev_kw if self.last is not None else 0.0
        try:
            wants = self.plans.wants(states, schedule, inputs.now, non_ev_kw, peak_kw, changes)
        except Exception:  # the plan is an optimisation: without it the site is still safe, only dearer
            if not self._plan_failed:
                log.exception("charging plan failed; chargers are not capped by a plan until it works")
            self._plan_failed = True
            return None
        self._plan_failed = False
        flexible = {e.id for e in states if e.connected and e.departure is not None and e.departure > inputs.now}
        return {cid: amps for cid, amps in wants.items() if cid in flexible}

    def recent_non_ev(self, now: datetime) -> dict[tuple[str, str], float]:
        while self.non_ev_window and now - self.non_ev_window[0][0] > self.non_ev_hold:
            self.non_ev_window.popleft()
        highest: dict[tuple[str, str], float] = {}
        for _, loads in self.non_ev_window:
            for key, amps in loads.items():
                highest[key] = max(amps, highest.get(key, amps))
        return highest

    def watch_clock(self, mono: float | None = None) -> ClockState:
        """Look for a step of the wall clock (a bad NTP step, someone's `date`) against the monotonic one.

        On a step: one alarm ("clock.jump", with its size) while the clock is away from where it would be
        without its steps, cleared if it steps back; the runtime's own wall-clock stamps (when readings came
        in, when a limit was last sent unacknowledged, the last telemetry write, the non-EV window, the
        chargers' on/waiting times) move with it, so no elapsed time is read as an hour or as negative: a
        reading keeps its true age, a resend or a write is not put off for an hour. A decision follows."""
        from gateway.runtime.clock_jump import look, rebased, stepped

        now = self.clock()
        state = look(self.clock_state, now, time.monotonic() if mono is None else mono)
        self.clock_state = state
        if not state.step_s:
            return state

        def moved(at: datetime) -> datetime:
            return rebased(at, state)

        self.readings = {cid: replace(r, at=moved(r.at)) for cid, r in self.readings.items()}
        self.unacked = {cid: moved(at) for cid, at in self.unacked.items()}
        if self._recorded_at is not None:
            self._recorded_at = moved(self._recorded_at)
        self.recorder.moved(moved)
        self.non_ev_window = deque(((moved(at), loads) for at, loads in self.non_ev_window))
        self.memory = {cid: replace(m, decided_at=moved(m.decided_at),
                                    on_since=moved(m.on_since) if m.on_since is not None else None,
                                    waiting_since=moved(m.waiting_since) if m.waiting_since is not None else None)
                       for cid, m in self.memory.items()}
        for following in [d for d in self.drivers.values() if isinstance(d, FollowsClock)]:
            following.clock_stepped(state.step_s)  # leases and the chargers' clock skews move with it
        hours = state.step_s / 3600.0
        if stepped(state):
            started = self.alarms.raise_(
                "clock.jump",
                f"the wall clock stepped {state.step_s:+.0f} s ({hours:+.2f} h) against the monotonic clock, "
                f"{state.skew_s:+.0f} s in all since start: event times and the chargers' clocks may be off by "
                "that much", now, severity="critical",
                action="check NTP on the gateway; once its clock is right, restart it (docs/operations.md: "
                       "Clock jumps)")
            if not started:  # a further step while the first is in force: its own line
                log.warning("wall clock stepped again step_s=%+.1f skew_s=%+.1f", state.step_s, state.skew_s)
        else:
            self.alarms.clear("clock.jump", now, f"the wall clock stepped back by {state.step_s:+.0f} s")
        self.trigger("wall clock stepped")
        return state

    async def _decide_forever(self) -> None:
        tick = self.config.control.tick_s
        while True:
            self.watch_clock()
            # Cleared before deciding, not after: a trigger that arrives while a decision is being made or
            # pushed (an event, a plug-in) wakes the next one at once instead of being lost for a tick.
            self._trigger.clear()
            try:
                if self.deciding:
                    await self.decide_once()
            except Exception:  # a bug in one decision must not stop the site being decided
                log.exception("decision failed")
            now = self.clock()
            # Handed to the store's writer, never awaited: a locked store or a full disk must not stop the
            # deciding (what waits is held in memory and written when the store takes writes again).
            # A tenth of slack: with a 1 s tick, a tick that wakes a little early must not skip a sample.
            if self._recorded_at is None or now - self._recorded_at >= TELEMETRY_EVERY * 0.9:
                self._recorded_at = now
                self.recorder.record(self.telemetry_sample(now))
            self.recorder.watch(now)
            try:  # the component states and their alarms (VTN unreachable, meter stale, charger over its limit)
                self.watch.tick(now)
            except Exception:  # the watch is for people: a bug in it must not stop the deciding
                log.exception("status watch failed")
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancellation of stop() when a
            # trigger fires at the same moment, and the loop would go on deciding.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    await self._trigger.wait()

    async def decide_once(self) -> Decision:
        now = self.clock()
        started = time.perf_counter()
        inputs = self.inputs(now)
        decision = decide(self.site, inputs)
        self.counters.decided(time.perf_counter() - started)
        self.memory = dict(decision.memory)
        self.non_ev_window.append((now, {(n.circuit, n.phase): n.amps for n in decision.non_ev_raw}))
        self.last = decision
        self.decisions += 1
        for change in decision.changes:
            log.info("%s", change.log_line())
        # Decreases (against what each charger may draw now, not what was last decided) go out first, and
        # every one must be acknowledged before any increase uses the room they free: a charger that has
        # not confirmed giving room up is still drawing on it. Held back, the increases are decided again
        # at once with the unconfirmed chargers counted at what they may draw.
        acks = await self._push(decision.decreases, decision)
        refused = [a for a in acks if not a.accepted]
        if refused:
            held_back = decision.increases
            for cid in held_back:
                if cid in inputs.memory:
                    self.memory[cid] = inputs.memory[cid]
                else:
                    self.memory.pop(cid, None)
            if held_back:
                log.info("increases held back charger_count=%d: %d decrease(s) not acknowledged (%s)",
                         len(held_back), len(refused), ", ".join(sorted(a.charger_id for a in refused)[:5]))
                self.trigger("increases held back")
        else:
            acks += await self._push(decision.increases, decision)
        resend: dict[str, float] = {}
        for cid, at in list(self.unacked.items()):
            if cid not in decision.limits or (now - at).total_seconds() < RESEND_UNACKED_S \
                    or cid in {a.charger_id for a in acks}:
                continue
            if decision.limits[cid] > decision.in_force.get(cid, 0.0) + 1e-9:
                # more than it is counted at now: not sent blind; allocated afresh at the next decision
                del self.unacked[cid]
                self.memory.pop(cid, None)
                self.trigger(f"charger={cid} re-allocated")
                continue
            resend[cid] = decision.limits[cid]
        acks += await self._push(resend, decision, "resend: not acknowledged")
        # While the site is curtailed, no charger's fallback stays above its limit: whatever mix of leases
        # and fallbacks the chargers are on if the gateway dies, the curtailment holds too.
        curtailed = any(v is not None for v in (decision.site_limit_kw, decision.ev_limit_kw, decision.peak_kw))
        held = [e.id for e in decision.evses if e.held_a is not None]  # not decided now: left as they are
        for holding in [d for d in self.drivers.values() if isinstance(d, HoldsFallbacks)]:
            holding.set_fallbacks(dict(decision.limits) if curtailed else {}, keep=held if curtailed else ())
        if any(r.store_failing() for r in [d for d in self.drivers.values() if isinstance(d, Remembers)]):
            self.alarms.raise_("store.ocpp", "what the chargers hold cannot be stored: no limit is raised "
                               "until it can (decreases still go out)", now, severity="critical",
                               action="free disk space or end what locks the store (docs/store.md)")
        else:
            self.alarms.clear("store.ocpp", now)
        for ack in acks:
            self.acks[ack.charger_id] = ack
            if ack.accepted:
                self.unacked.pop(ack.charger_id, None)
                self._unacked_said.pop(ack.charger_id, None)
            else:
                self.unacked[ack.charger_id] = now
                said = (ack.amps, ack.detail)
                if self._unacked_said.get(ack.charger_id) != said:  # once, then again only when it changes
                    self._unacked_said[ack.charger_id] = said
                    log.warning("limit charger=%s amps=%g not acknowledged: %s", ack.charger_id, ack.amps,
                                ack.detail)
        if decision.changes and self.recorder.decisions is not None:
            changes = [(c.evse_id, c.old_a, c.new_a, c.reason) for c in decision.changes]
            self.recorder.limits_sent(rows_for(now, changes, acks))
        self._note(decision)
        return decision

    async def _push(self, limits: dict[str, float], decision: Decision, why: str | None = None) -> list[LimitAck]:
        if not limits:
            return []
        calls = []
        for protocol, driver in self.drivers.items():
            mine = {cid: a for cid, a in limits.items() if self.protocol_of.get(cid) == protocol}
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
            self.counters.pushed(self.protocol_of.get(ack.charger_id, "unknown"), ack.accepted, ack.round_trip_s)
        answered = {a.charger_id for a in acks}
        for cid, amps in limits.items():
            if cid not in answered:
                acks.append(LimitAck(cid, amps, decision.now, False, 0.0, "driver failed"))
        return acks

    def _note(self, decision: Decision) -> None:
        if self.ven is not None and self.ven.polls != self._ven_polls:
            self._ven_polls = self.ven.polls
            self.vtn_last_poll = decision.now
        load = self.load_kw()
        if load is not None:
            self.power_log.record(decision.now, load)
        if not self.history or decision.now - self.history[-1].at >= timedelta(seconds=1):
            self.history.append(HistoryPoint(decision.now, load, self.effective_limit_kw()))

    def telemetry_sample(self, now: datetime) -> Sample | None:
        """This tick's telemetry: site load and limit, and each charger's current, power and limit."""
        if self.last is None:
            return None
        power = self.charger_power_kw()
        chargers: dict[str, ChargerSample] = {}
        for evse in self.site.evses:
            r = self.readings.get(evse.id)
            amps = max(r.current_a.values(), default=0.0) if r is not None and r.status.connected else None
            chargers[evse.id] = ChargerSample(amps, power.get(evse.id), self.last.limits.get(evse.id))
        site = SiteSample(self.load_kw(), sum(power.values()), self.effective_limit_kw())
        return Sample(now, TELEMETRY_EVERY.total_seconds(), site, chargers)

    # What the store is, for the status, the export and tests (kept by `self.recorder`).

    @property
    def store(self) -> VenStore | None:
        return self.recorder.vtn

    @property
    def decision_store(self) -> DecisionStore | None:
        return self.recorder.decisions

    @property
    def ledger(self) -> SessionLedger | None:
        return self.recorder.ledger

    @property
    def telemetry_store(self) -> Telemetry | None:
        return self.recorder.telemetry

    @property
    def store_health(self) -> WriteHealth:
        return self.recorder.health

    @property
    def writer(self) -> StoreWriter:
        return self.recorder.writer

    def load_kw(self) -> float | None:
        """Site power: the service meter, or the chargers' own power plus the non-EV estimate."""
        measured = self.site_power_kw()
        if measured is not None:
            return measured
        ev = self.ev_power_kw() or 0.0
        return ev + (self.last.non_ev_kw if self.last is not None else 0.0)

    def effective_limit_kw(self) -> float | None:
        """The site power the last decision allowed: the lowest of the service's own capacity, the site
        limit in force, the EV limit plus the non-EV load and the demand peak target (what the status chart
        draws as "limit")."""
        last = self.last
        if last is None:
            return None
        site = self.config.site
        service = self.circuit_limit[self.site.service_id]
        # at PF 1, like the meter's kW and the allocator: load and limit on one basis
        service_kw = sum(service.limit_of(p) for p in service.phases) * site.ln_v / 1000.0
        candidates = [service_kw]
        if last.site_limit_kw is not None:
            candidates.append(last.site_limit_kw)
        if last.ev_limit_kw is not None:
            candidates.append(last.ev_limit_kw + last.non_ev_kw)
        if last.peak_kw is not None:
            candidates.append(last.peak_kw)
        return min(candidates)

    def healthy(self) -> bool:
        """True while the loop decided within the last three ticks (plus the time a push may wait for
        chargers' answers: decreases and increases each wait up to the OCPP `ack_wait_s`)."""
        if self.last is None:
            return False
        age = (self.clock() - self.last.now).total_seconds()
        pushing = 2 * self.config.ocpp.ack_wait_s if self.ocpp is not None else 0.0
        return age <= 3 * self.config.control.tick_s + pushing

    # ------------------------------------------------------------------------------------ for the status endpoint

    def status(self) -> dict[str, Any]:
        from gateway.runtime.snapshot import status_of

        status = status_of(self, self.clock())
        status["demand"] = self.demand_status()
        until = self.operator_cap_until
        status["operator"] = {"cap_kw": self.operator_cap_kw, "cap_until": until.isoformat() if until else None,
                              "paused": sorted(self.paused)}
        return status

    def events_detail(self) -> list[dict[str, Any]]:
        """Every stored event in full (for /api/events), ended and cancelled ones too."""
        from gateway.status.events import events_json

        return events_json(self.events.values(), self.clock())

    def log_since(self, seq: int = 0, at: datetime | None = None) -> list[dict[str, object]]:
        return [e.as_json() for e in self.recent_log.since(seq, at)]

    def demand_status(self) -> dict[str, float | None]:
        """The demand charge as of the last decision: the month's metered peak, the target the site is
        held under and the charge per kW (all None while no demand charge is in force)."""
        last = self.last
        if last is None or self.demand_charge is None:
            return {"month_peak_kw": None, "peak_target_kw": None, "charge_per_kw": None}
        peak = self.month_peak_kw
        return {
            "month_peak_kw": round(peak, 2) if peak is not None else None,
            "peak_target_kw": round(last.peak_kw, 2) if last.peak_kw is not None else None,
            "charge_per_kw": self.demand_charge,
        }

    def history_points(self) -> list[tuple[datetime, float | None, float | None]]:
        return [(p.at, p.load_kw, p.limit_kw) for p in self.history]

    def day_points(self) -> list[tuple[datetime, float | None, float | None]]:
        """A point a minute over the last day (the highest load and the lowest limit of each)."""
        return self.watch.day_points()

    def plan_points(self) -> list[tuple[datetime, datetime, float]]:
        """The current plan's site power per slot (EV plus the non-EV load it was made with)."""
        from gateway.planner import site_profile

        plan = self.plans.plan
        if plan is None:
            return []
        return [(start, end, site_kw) for start, end, _, site_kw, _ in site_profile(plan)]
