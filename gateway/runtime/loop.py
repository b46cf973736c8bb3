"""The running gateway: one `Runtime` composed of parts that each do one job, and run until stopped.

`Runtime.run()` opens everything the config names (`runtime.wiring`: the store, the charger drivers by
protocol family, the meters, the solar reader, the VEN, the status endpoint), runs them as supervised tasks
beside the control loop (`runtime.control`: decide every `control.tick_s` and at once on a trigger, push
decreases before increases, record), and at a stop releases the chargers to their fallbacks and closes the
links and the store. The parts it holds:

- `SiteState` (what chargers and meters said last, the sessions) fed by `runtime.arrivals`;
- `OperatorControls` (cap, pauses), `PlanKeeper` and `SitePowerLog` (the plan, the demand peak),
  `SolarWatch` (PV surplus and charge modes), `MeterWatch` (the meter check), `Boundaries` (a decision at
  each event interval's edge), `Recorder` (ledger, telemetry, limits sent, pruning), `Alarms`, `Counters`
  and `Watch` (the status document's alarms, ticked in the loop);
- `runtime.inputs` builds a decision's inputs, `runtime.clock_follow` follows a step of the wall clock, and
  `runtime.status_view` builds the status document.

The Runtime is also what the VEN delivers events to (`EventSink`) and reads telemetry from
(`TelemetrySource`), and what the status endpoint reads and writes (`StatusSource`, `Operator`): those are
one-line delegations to the parts.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from gateway.assembly import plan_keeper_of, schedule_settings_of, site_of
from gateway.clock import utc_now
from gateway.domain import ChargerReading, Event, LimitAck, Measurement, OptState, Segment
from gateway.ports import Curtailment, EvseDriver
from gateway.runtime import arrivals, clock_follow, control, inputs, status_view, supervise, wiring
from gateway.runtime.alarms import Alarms
from gateway.runtime.boundaries import Boundaries
from gateway.runtime.clock_jump import ClockState
from gateway.runtime.control import HISTORY_POINTS, HistoryPoint
from gateway.runtime.counters import Counters
from gateway.runtime.decide import Decision, Inputs, MeterReading
from gateway.runtime.drivers import family
from gateway.runtime.logs import RecentLog
from gateway.runtime.meter_watch import MeterWatch
from gateway.runtime.operator import STORE_WAIT_S as OPERATOR_STORE_WAIT_S
from gateway.runtime.operator import OperatorControls
from gateway.runtime.optimiser_watch import OptimiserWatch
from gateway.runtime.plans import SitePowerLog
from gateway.runtime.recorder import Recorder
from gateway.runtime.site_state import SiteState
from gateway.runtime.surplus_watch import SolarWatch
from gateway.smoothing import ChargerMemory
from gateway.store.decisions import DecisionStore
from gateway.store.health import WriteHealth
from gateway.store.sessions import SessionLedger
from gateway.store.telemetry import Telemetry
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
        self.optimiser = OptimiserWatch(self.alarms)  # the optimiser's fallbacks: said once, an alarm, a rest
        from gateway.runtime.watch import Watch

        self.watch = Watch(self)  # ticked in the loop: the alarms hold with or without the status endpoint
        self.meter_watch = MeterWatch(config, self.site, self.alarms, hold_s=self.non_ev_hold.total_seconds())
        self.solar = SolarWatch(config, self.site, self.alarms, self.trigger)  # PV surplus, charge modes, inverters
        self.solar.kept = self.operator.set_modes  # modes set by hand are kept over a restart
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
                await supervise.cancel_all(tasks)
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

    async def decide_once(self) -> Decision:
        return await control.decide_once(self)

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
