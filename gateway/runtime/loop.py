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
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.domain import J1772_MIN_A, ChargerReading, ChargerStatus, Event, LimitAck, Measurement, OptState, Segment
from gateway.ports import Curtailment, EvseDriver
from gateway.runtime.alarms import Alarms
from gateway.runtime.boundaries import Boundaries
from gateway.runtime.decide import Decision, Inputs, MeterReading, Site, charger_states, decide
from gateway.runtime.logs import QuietLibraries, RecentLog
from gateway.runtime.plans import PlanKeeper, SitePowerLog
from gateway.runtime.supervise import supervised
from gateway.schedule import PriceChange, ScheduleSettings, build_schedule, price_changes, segment_at
from gateway.smoothing import ChargerMemory
from gateway.store.decisions import DecisionStore, rows_for
from gateway.store.operator import OperatorState, OperatorStore
from gateway.store.sessions import SessionLedger
from gateway.store.telemetry import ChargerSample, SiteSample, Telemetry
from gateway.store.vtn import VenStore
from gateway.tariff import Tariff, demand_charge_at, month_start

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.modbus.link import LinkPool
    from gateway.modbus.meter import ModbusMeter
    from gateway.ocpp.driver import OcppDriver
    from gateway.openadr.ven import Ven

log = logging.getLogger("gateway.runtime")
Clock = Callable[[], datetime]
RESEND_UNACKED_S = 5.0  # how often a limit a charger has not acknowledged is sent again
HISTORY_POINTS = 7200  # one point a second: the last two hours for the status page
PRUNE_EVERY = timedelta(hours=1)  # old rows of limits sent are deleted (and telemetry compacted) this often
TELEMETRY_EVERY = timedelta(seconds=1)  # telemetry and the session ledger are written at most this often


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    at: datetime
    load_kw: float | None
    limit_kw: float | None


class Runtime:
    """The gateway as one running program; also the VEN's event sink and telemetry source."""

    def __init__(self, config: GatewayConfig, *, base: Path | None = None, clock: Clock = utc_now,
                 serve_status: bool = True) -> None:
        from gateway.topology import ev_capacity_kw

        self.config = config
        self.serve_status = serve_status
        self._status_runner: Any = None
        self.base = base
        self.clock = clock
        self.site = Site.from_config(config)
        levels = {int(k): v for k, v in config.openadr.simple_levels.items()}
        self.schedule_settings = ScheduleSettings(ev_capacity_kw=ev_capacity_kw(config), simple_levels=levels)
        self.protocol_of = {c.id: ("ocpp" if c.protocol.startswith("ocpp") else "modbus") for c in config.chargers}
        self.circuit_limit = {c.id: c for c in self.site.circuits}
        self.meter_circuit = {m.id: m.circuit for m in self.site.meters}
        self.readings: dict[str, ChargerReading] = {}
        self.measurements: dict[str, Measurement] = {}
        self.events: dict[str, Event] = {}
        self.memory: dict[str, ChargerMemory] = {}
        self.plans = PlanKeeper.from_config(config)
        self.power_log = SitePowerLog()  # site power, for the month's demand peak
        self.demand_charge: float | None = None  # per kW, in force at the last decision (None: none)
        self.month_peak_kw: float | None = None  # the month's metered peak, while a demand charge is in force
        self.session_start_kwh: dict[str, tuple[str | None, float]] = {}  # charger → (session, meter at start)
        self._plan_failed = False
        # A drop in the non-EV estimate is believed once every charger has reported since (a rise at once):
        # until then the meter may see a car's new draw that its charger has not reported yet.
        ocpp_interval = config.ocpp.meter_interval_s if "ocpp" in self.protocol_of.values() else 0.0
        self.non_ev_hold = timedelta(seconds=max(2.0, ocpp_interval + config.control.tick_s))
        self.non_ev_window: deque[tuple[datetime, dict[tuple[str, str], float]]] = deque()
        self.unacked: dict[str, datetime] = {}  # charger → when its unacknowledged limit was last sent
        self.acks: dict[str, LimitAck] = {}
        self.operator_cap_kw: float | None = None
        self.operator_cap_until: datetime | None = None  # the cap lapses then (None: until lifted)
        self.paused: set[str] = set()  # chargers an operator paused: 0 A until resumed (kept over a restart)
        self.operator_store: OperatorStore | None = None
        self.recent_log = RecentLog()  # the last log lines, for /api/log
        self.alarms = Alarms()  # faults in force, for /api/status, /healthz and /metrics
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
        self.store: VenStore | None = None
        self.decision_store: DecisionStore | None = None
        self.ledger: SessionLedger | None = None  # charging sessions, from the readings (billing)
        self.telemetry_store: Telemetry | None = None
        self._ledger_pending: deque[ChargerReading] = deque(maxlen=10_000)  # readings not yet in the ledger
        self._recorded_at: datetime | None = None
        self._record_failed = False
        self.ocpp: OcppDriver | None = None
        self.modbus: EvseDriver | None = None
        self.meters: dict[str, ModbusMeter] = {}
        self.pool: LinkPool | None = None
        self.ven: Ven | None = None
        self.status_url: str | None = None

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
        self.store = VenStore.open(path)
        # A second connection: the VEN's transactions and ours must not interleave on one connection.
        self.decision_store = DecisionStore.open(path)
        # On the decision store's connection: all three are written by the decision task, one after another.
        self.ledger = SessionLedger(self.decision_store.db, self.decision_store.lock)
        self.telemetry_store = Telemetry(self.decision_store.db, self.decision_store.lock)
        self.operator_store = OperatorStore(self.decision_store.db, self.decision_store.lock)
        # A session that was charging when the gateway stopped goes on: what it has had counts from its start
        # as the ledger saw it, not from the first reading after the restart (else it would be owed it twice).
        for cid, session in (await asyncio.to_thread(self.ledger.open_sessions)).items():
            if session.meter_start_kwh is not None:
                self.session_start_kwh[cid] = (session.session_id, session.meter_start_kwh)
        self._restore_operator(await asyncio.to_thread(self.operator_store.load, self.clock(),
                                                       frozenset(self.protocol_of)))
        self.events = await asyncio.to_thread(self.store.events)
        self.boundaries.start()
        if any(p == "ocpp" for p in self.protocol_of.values()):
            from gateway.ocpp.driver import OcppDriver

            self.ocpp = OcppDriver.from_config(self.config, clock=self.clock)
            await self.ocpp.start()
        modbus_chargers = [c for c in self.config.chargers if c.protocol == "modbus"]
        if modbus_chargers or self.config.meters:
            from gateway.modbus.link import LinkPool

            self.pool = LinkPool()
        if modbus_chargers and self.pool is not None:
            from gateway.modbus.charger import ModbusChargers

            self.modbus = ModbusChargers.from_config(modbus_chargers, self.pool, self.base,
                                                     poll_s=min(1.0, self.config.control.tick_s))
        for section in self.config.meters:
            from gateway.modbus.meter import ModbusMeter

            assert self.pool is not None
            self.meters[section.id] = ModbusMeter.from_config(section, self.pool, self.base)
        if self.config.vtn is not None:
            from gateway.openadr.ven import Ven

            self.ven = Ven(self.config.vtn, self.config.openadr, self.store, sink=self, telemetry=self,
                           charger_ids=[c.id for c in self.config.chargers], clock=self.clock)
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
        if self.ocpp is not None:
            tasks.append(("ocpp", supervised("ocpp-readings", lambda: self._read(self.ocpp),
                                             restarts=self.restarts)))
        if self.modbus is not None:
            tasks.append(("modbus", supervised("modbus-chargers", lambda: self._read(self.modbus),
                                               restarts=self.restarts)))
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
        if self.ocpp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ocpp.stop(release=True), timeout=10.0)
            log.info("shutdown: OCPP live profiles cleared; chargers on their fallback")
        close = getattr(self.modbus, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await self.pool.close()
        if self.decision_store is not None:
            with contextlib.suppress(Exception):  # what the chargers said last is in the ledger
                await self._record(self.clock(), telemetry=False)
            self.decision_store.close()
        if self.store is not None:
            self.store.close()
        log.info("shutdown: store closed")

    # ------------------------------------------------------------------------------------ inputs

    async def _read(self, driver: EvseDriver | None) -> None:
        assert driver is not None
        async for reading in driver.readings():
            self.on_reading(reading)

    def on_reading(self, reading: ChargerReading) -> None:
        before = self.readings.get(reading.charger_id)
        if not reading.current_a and reading.power_kw is None and before is not None and reading.status.connected:
            # A status-only message (OCPP): keep the last measured current rather than forget it.
            reading = replace(reading, current_a=before.current_a, power_kw=before.power_kw)
        self.readings[reading.charger_id] = reading
        self._ledger_pending.append(reading)
        if reading.energy_kwh is not None and reading.status.connected:
            start = self.session_start_kwh.get(reading.charger_id)
            # Offline is not unplugged: a charger that drops its link (or has not dialled in since a
            # restart) and comes back with the same session goes on counting from that session's start.
            unplugged = (before is not None and not before.status.connected
                         and before.status is not ChargerStatus.OFFLINE)
            if start is None or start[0] != reading.session_id or reading.energy_kwh < start[1] or unplugged:
                self.session_start_kwh[reading.charger_id] = (reading.session_id, reading.energy_kwh)
        elif not reading.status.connected and reading.status is not ChargerStatus.OFFLINE:
            self.session_start_kwh.pop(reading.charger_id, None)
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
        async def read() -> None:
            async for m in meter.measurements():
                self.on_measurement(m)

        return read

    def on_measurement(self, m: Measurement) -> None:
        self.measurements[m.meter_id] = m
        circuit = self.circuit_limit.get(self.meter_circuit.get(m.meter_id, ""))
        if circuit is not None and any(a > circuit.limit_of(p) for p, a in m.current_a.items()):
            self.trigger(f"meter={m.meter_id} over the limit of {circuit.id}")

    def meter_readings(self) -> dict[str, MeterReading]:
        out = {}
        for meter_id, m in self.measurements.items():
            meter = self.meters.get(meter_id)
            # Over a minute (what the meter keeps), not only `stale_after_s`: at the moment a meter turns
            # stale its last `stale_after_s` hold no good poll, and the worst before it is what counts.
            worst = meter.worst_recent_a(window_s=max(60.0, meter.stale_after_s)) if meter is not None else {}
            out[meter_id] = MeterReading(meter_id, m.current_a, m.at, worst)
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
        service = [m for mid, m in self.measurements.items() if self.meter_circuit.get(mid) == self.site.service_id]
        return service[0].power_kw if service else None

    def site_energy_kwh(self) -> float | None:
        service = [m for mid, m in self.measurements.items() if self.meter_circuit.get(mid) == self.site.service_id]
        return service[0].import_kwh if service else None

    def charger_power_kw(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for evse in self.site.evses:
            r = self.readings.get(evse.id)
            if r is None or not r.status.connected:
                out[evse.id] = 0.0
            elif r.power_kw is not None:
                out[evse.id] = r.power_kw
            else:
                out[evse.id] = sum(r.current_a.get(p, 0.0) for p in evse.phases) / len(evse.phases) * evse.kw_per_a
        return out

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

    def set_operator_cap(self, kw: float | None, until: datetime | None = None) -> None:
        """A site power cap from the operator (None: lift it), in force until `until` (None: until lifted)."""
        self.operator_cap_kw = kw
        self.operator_cap_until = until if kw is not None else None
        self._save_operator()
        self.trigger(f"operator cap {kw}")

    def operator_cap(self, now: datetime) -> float | None:
        """The operator's cap in force at `now`; a cap past its expiry is lifted (and logged) here."""
        until = self.operator_cap_until
        if self.operator_cap_kw is not None and until is not None and now >= until:
            log.info("operator cap expired kw=%g until=%s", self.operator_cap_kw, until.isoformat())
            self.operator_cap_kw, self.operator_cap_until = None, None
        return self.operator_cap_kw

    def _save_operator(self) -> None:
        """Kept at once (a small transaction): a restart right after an operator's write must not lift it."""
        if self.operator_store is None:
            return
        state = OperatorState(self.operator_cap_kw, self.operator_cap_until, frozenset(self.paused))
        try:
            self.operator_store.save(state, self.clock())
        except Exception:  # the write still holds in memory; a full disk must not refuse it
            log.exception("operator state not stored: it holds until the gateway restarts")

    def _restore_operator(self, state: OperatorState) -> None:
        self.operator_cap_kw, self.operator_cap_until = state.cap_kw, state.cap_until
        self.paused = set(state.paused)
        if state.cap_kw is not None or state.paused:
            until = state.cap_until.isoformat() if state.cap_until else "lifted"
            log.info("operator state restored cap_kw=%s until=%s paused=%s", state.cap_kw, until,
                     ",".join(sorted(state.paused)) or "none")

    def set_paused(self, charger_id: str, paused: bool) -> bool:
        """Pause (0 A, "paused by operator") or resume one charger; False when there is no such charger."""
        if charger_id not in self.protocol_of:
            return False
        if paused:
            self.paused.add(charger_id)
        else:
            self.paused.discard(charger_id)
        self._save_operator()
        self.trigger(f"charger={charger_id} {'paused' if paused else 'resumed'} by operator")
        return True

    async def set_event_opt(self, event_id: str, choice: OptState | None, reason: str) -> Event | None:
        """The operator's opt in/out of one event (None: back to the rules), through the VEN, which stores
        it and tells the VTN; None when there is no such event. ValueError when no VTN is configured."""
        if self.ven is None:
            raise ValueError("no VTN is configured: there is no event to opt out of")
        return await self.ven.set_opt(event_id, choice, reason)

    def energy_needed(self) -> dict[str, float]:
        """What each session still asks for: the EV's request less what its meter counted since it began."""
        out: dict[str, float] = {}
        for cid, reading in self.readings.items():
            if reading.energy_requested_kwh is None or not reading.status.connected:
                continue
            start = self.session_start_kwh.get(cid)
            delivered = 0.0
            if start is not None and reading.energy_kwh is not None:
                delivered = max(0.0, reading.energy_kwh - start[1])
            out[cid] = max(0.0, reading.energy_requested_kwh - delivered)
        return out

    def inputs(self, now: datetime) -> Inputs:
        schedule = build_schedule(self.events.values(), now, self.schedule_settings)
        self.boundaries.follow(schedule, now)
        inputs = Inputs(
            now=now,
            segment=segment_at(schedule, now),
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
        if self.ocpp is None:
            return {}
        caps = {cid: self.ocpp.unused_cap(cid) for cid, protocol in self.protocol_of.items() if protocol == "ocpp"}
        return {cid: cap for cid, cap in caps.items() if cap is not None}

    def target_floor(self, target: float | None, inputs: Inputs) -> float | None:
        """The peak target the decision holds the site under: the plan's, but never so low that a car which
        gave no departure cannot take its minimum. Such a car never raises the plan's target, so at the
        start of a month (or after a restart, the metered peak being kept in memory) a target at the house
        load would hold it at 0 A for good, the metered peak never growing; with room for one minimum the
        allocator's rotation serves them in turn and the month's peak grows only by that much."""
        if target is None:
            return None
        states, _ = charger_states(self.site, inputs)
        unplanned = [e for e in states if e.connected and e.max_a > 0
                     and (e.departure is None or e.departure <= inputs.now)]
        if not unplanned:
            return target
        non_ev_kw = self.last.non_ev_kw if self.last is not None else 0.0
        least = max(max(J1772_MIN_A, e.min_a) * e.kw_per_a for e in unplanned)
        return max(target, non_ev_kw + least)

    def peak_target(self, schedule: Sequence[Segment], now: datetime) -> float | None:
        """The site power target to plan under while a demand charge is in force (None: none is).

        The month's metered peak is paid for already, so the plan may use all of it; the previous plan's
        target counts too when higher (made this month), so a target the planner had to raise stays raised.
        """
        tariff = self.plans.tariff or Tariff(timezone=self.config.site.timezone)
        self.demand_charge = demand_charge_at(tariff, schedule, now)
        if self.demand_charge is None:
            self.month_peak_kw = None
            return None
        since = month_start(tariff, now)
        self.month_peak_kw = self.power_log.peak_kw(since)
        plan = self.plans.plan
        previous = plan.peak_kw if plan is not None and plan.peak_kw is not None and plan.now >= since else 0.0
        return max(self.month_peak_kw, previous)

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

    async def _decide_forever(self) -> None:
        tick = self.config.control.tick_s
        pruned_at: datetime | None = None
        while True:
            # Cleared before deciding, not after: a trigger that arrives while a decision is being made or
            # pushed (an event, a plug-in) wakes the next one at once instead of being lost for a tick.
            self._trigger.clear()
            try:
                if self.deciding:
                    await self.decide_once()
            except Exception:  # a bug in one decision must not stop the site being decided
                log.exception("decision failed")
            now = self.clock()
            if self.decision_store is not None and (pruned_at is None or now - pruned_at > PRUNE_EVERY):
                pruned_at = now
                keep = timedelta(days=self.config.store.telemetry_days)
                with contextlib.suppress(Exception):  # a full disk must not stop the deciding
                    await asyncio.to_thread(self.decision_store.prune, now - keep)
                    if self.telemetry_store is not None:
                        await asyncio.to_thread(self.telemetry_store.compact, now, keep)
            # A tenth of slack: with a 1 s tick, a tick that wakes a little early must not skip a sample.
            if self._recorded_at is None or now - self._recorded_at >= TELEMETRY_EVERY * 0.9:
                self._recorded_at = now
                try:
                    await self._record(now)
                    self._record_failed = False
                except Exception:  # a full disk must not stop the deciding; the readings wait
                    if not self._record_failed:
                        log.exception("writing telemetry and sessions failed (logged once until it works)")
                    self._record_failed = True
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancellation of stop() when a
            # trigger fires at the same moment, and the loop would go on deciding.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    await self._trigger.wait()

    async def decide_once(self) -> Decision:
        now = self.clock()
        decision = decide(self.site, self.inputs(now))
        self.memory = dict(decision.memory)
        self.non_ev_window.append((now, {(n.circuit, n.phase): n.amps for n in decision.non_ev_raw}))
        self.last = decision
        self.decisions += 1
        for change in decision.changes:
            log.info("%s", change.log_line())
        # Decreases first and acknowledged (or timed out) before any increase uses the room they free.
        acks = await self._push(decision.decreases, decision)
        acks += await self._push(decision.increases, decision)
        resend = {cid: decision.limits[cid] for cid, at in self.unacked.items()
                  if cid in decision.limits and (now - at).total_seconds() >= RESEND_UNACKED_S
                  and cid not in {a.charger_id for a in acks}}
        acks += await self._push(resend, decision, "resend: not acknowledged")
        for ack in acks:
            self.acks[ack.charger_id] = ack
            if ack.accepted:
                self.unacked.pop(ack.charger_id, None)
            else:
                self.unacked[ack.charger_id] = now
                log.warning("limit charger=%s amps=%g not acknowledged: %s", ack.charger_id, ack.amps, ack.detail)
        if decision.changes and self.decision_store is not None:
            changes = [(c.evse_id, c.old_a, c.new_a, c.reason) for c in decision.changes]
            await asyncio.to_thread(self.decision_store.record, rows_for(now, changes, acks))
        self._note(decision)
        return decision

    async def _push(self, limits: dict[str, float], decision: Decision, why: str | None = None) -> list[LimitAck]:
        if not limits:
            return []
        calls = []
        for driver, protocol in ((self.ocpp, "ocpp"), (self.modbus, "modbus")):
            mine = {cid: a for cid, a in limits.items() if self.protocol_of.get(cid) == protocol}
            if driver is None or not mine:
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

    async def _record(self, now: datetime, *, telemetry: bool = True) -> None:
        """The readings since the last call into the session ledger, then one telemetry sample."""
        if self.ledger is not None and self._ledger_pending:
            batch = list(self._ledger_pending)
            await asyncio.to_thread(self.ledger.observe, batch)
            for _ in batch:  # readings that came in meanwhile stay for the next call
                self._ledger_pending.popleft()
        if not telemetry or self.telemetry_store is None or self.last is None:
            return
        power = self.charger_power_kw()
        chargers: dict[str, ChargerSample] = {}
        for evse in self.site.evses:
            r = self.readings.get(evse.id)
            amps = max(r.current_a.values(), default=0.0) if r is not None and r.status.connected else None
            chargers[evse.id] = ChargerSample(amps, power.get(evse.id), self.last.limits.get(evse.id))
        site = SiteSample(self.load_kw(), sum(power.values()), self.effective_limit_kw())
        await asyncio.to_thread(self.telemetry_store.write, now, TELEMETRY_EVERY.total_seconds(), site, chargers)

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
        service_kw = sum(service.limit_of(p) for p in service.phases) * site.ln_v * site.power_factor / 1000.0
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

    def plan_points(self) -> list[tuple[datetime, datetime, float]]:
        """The current plan's site power per slot (EV plus the non-EV load it was made with)."""
        from gateway.planner import site_profile

        plan = self.plans.plan
        if plan is None:
            return []
        return [(start, end, site_kw) for start, end, _, site_kw, _ in site_profile(plan)]
