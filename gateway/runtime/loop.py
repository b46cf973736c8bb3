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
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from gateway.assembly import plan_keeper_of, schedule_settings_of, site_of
from gateway.clock import utc_now
from gateway.domain import ChargerReading, Event, LimitAck, Measurement, OptState, Segment
from gateway.ports import (
    Curtailment,
    EvseDriver,
    HoldsFallbacks,
    Remembers,
)
from gateway.runtime import arrivals, clock_follow, inputs, status_view, wiring
from gateway.runtime.alarms import Alarms
from gateway.runtime.boundaries import Boundaries
from gateway.runtime.clock_jump import ClockState
from gateway.runtime.counters import Counters
from gateway.runtime.decide import Decision, Inputs, MeterReading, decide
from gateway.runtime.drivers import family
from gateway.runtime.logs import RecentLog
from gateway.runtime.meter_watch import MeterWatch
from gateway.runtime.operator import STORE_WAIT_S as OPERATOR_STORE_WAIT_S
from gateway.runtime.operator import OperatorControls
from gateway.runtime.plans import SitePowerLog
from gateway.runtime.recorder import Recorder
from gateway.runtime.site_state import SiteState
from gateway.runtime.surplus_watch import SolarWatch
from gateway.smoothing import ChargerMemory
from gateway.store.decisions import DecisionStore, rows_for
from gateway.store.health import WriteHealth
from gateway.store.sessions import SessionLedger
from gateway.store.telemetry import ChargerSample, Sample, SiteSample, Telemetry
from gateway.store.vtn import VenStore
from gateway.store.writer import StoreWriter

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.modbus.link import LinkPool
    from gateway.modbus.meter import ModbusMeter
    from gateway.ocpp.driver import OcppDriver
    from gateway.openadr.ven import Ven
    from gateway.openadr3.ven import Oadr3Ven

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
        self.config = config
        self.serve_status = serve_status
        self._status_runner: Any = None
        self.base = base
        self.clock = clock
        self.site = site_of(config)
        self.schedule_settings = schedule_settings_of(config)
        self.protocol_of = {c.id: family(c.protocol) for c in config.chargers}  # charger → driver family
        self.circuit_limit = {c.id: c for c in self.site.circuits}
        self.meter_circuit = {m.id: m.circuit for m in self.site.meters}
        self.state = SiteState(self.meter_circuit)  # what chargers and meters said last; the sessions
        self.events: dict[str, Event] = {}
        self.memory: dict[str, ChargerMemory] = {}
        self.plans = plan_keeper_of(config)
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
        self.solar = SolarWatch(config, self.site, self.alarms, self.trigger)  # PV surplus, charge modes, inverters
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
        self.ven: Ven | Oadr3Ven | None = None
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
            await wiring.open_parts(self)
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(t, name=n) for n, t in wiring.tasks_of(self)]
                self.started.set()
                await self._stop.wait()
                for task in tasks:
                    task.cancel()
        finally:
            await wiring.close_parts(self)

    def _path(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() or self.base is None else self.base / path

    # ------------------------------------------------------------------------------------ inputs

    def on_reading(self, reading: ChargerReading) -> None:
        return arrivals.on_reading(self, reading)

    def on_measurement(self, m: Measurement, *, at: float | None= None, values: tuple[float, ...] = ()) -> None:
        return arrivals.on_measurement(self, m, at=at, values=values)

    def meter_readings(self) -> dict[str, MeterReading]:
        return arrivals.meter_readings(self)

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
        return status_view.curtailment(self)

    # ------------------------------------------------------------------------------------ deciding

    # The operator's writes (the status app's `Operator`), kept by `self.operator`.

    def set_operator_cap(self, kw: float | None, until: datetime | None = None) -> None:
        """A site power cap from the operator (None: lift it), in force until `until` (None: until lifted)."""
        self.operator.set_cap(kw, until)

    def operator_cap(self, now: datetime) -> float | None:
        return self.operator.cap(now)

    async def operator_stored(self, timeout_s: float = OPERATOR_STORE_WAIT_S) -> str | None:
        return await self.operator.stored(timeout_s)

    def set_charge_mode(self, charger_id: str, mode: str | None, session: bool = True) -> bool:
        """A charger's mode (now, pv, minpv, plan; None: the config's), for this session or until changed;
        False when there is no such charger."""
        from gateway.surplus import Mode

        return self.solar.set_mode(charger_id, None if mode is None else Mode(mode), session=session)

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
        return inputs.inputs(self, now)

    def peak_target(self, schedule: Sequence[Segment], now: datetime) -> float | None:
        return inputs.peak_target(self, schedule, now)

    def watch_clock(self, mono: float | None = None) -> ClockState:
        return clock_follow.watch_clock(self, mono)

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
        return status_view.load_kw(self)

    def effective_limit_kw(self) -> float | None:
        return status_view.effective_limit_kw(self)

    def healthy(self) -> bool:
        return status_view.healthy(self)

    # ------------------------------------------------------------------------------------ for the status endpoint

    def status(self) -> dict[str, Any]:
        from gateway.runtime.snapshot import status_of

        status = status_of(self, self.clock())
        status["demand"] = self.demand_status()
        status["pv"] = self.solar.status()
        until = self.operator_cap_until
        status["operator"] = {"cap_kw": self.operator_cap_kw, "cap_until": until.isoformat() if until else None,
                              "paused": sorted(self.paused)}
        return status

    def events_detail(self) -> list[dict[str, Any]]:
        return status_view.events_detail(self)

    def log_since(self, seq: int = 0, at: datetime | None = None) -> list[dict[str, object]]:
        return status_view.log_since(self, seq, at)

    def demand_status(self) -> dict[str, float | None]:
        return status_view.demand_status(self)

    def history_points(self) -> list[tuple[datetime, float | None, float | None]]:
        return [(p.at, p.load_kw, p.limit_kw) for p in self.history]

    def day_points(self) -> list[tuple[datetime, float | None, float | None]]:
        """A point a minute over the last day (the highest load and the lowest limit of each)."""
        return self.watch.day_points()

    def plan_points(self) -> list[tuple[datetime, datetime, float]]:
        return status_view.plan_points(self)
