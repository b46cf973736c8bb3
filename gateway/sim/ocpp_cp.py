"""Simulated OCPP charge points (1.6J and 2.0.1) built on the `ocpp` library, with a small EV model.

A `SimChargePoint` dials a central system over a real websocket, boots (saying what it is: its
`Nameplate`, vendor, model, firmware, serial), reports status, transactions and meter values, and keeps
the charging profiles it is sent under the spec's rules applied literally (`charging_profiles`: a profile
that breaks one is Rejected with the rule). Its EV draws min(limit in force, its own max), and 0 A when the
limit is under 6 A; with no profile at all it charges unlimited, as real chargers do. Everything that can
change what it draws (profiles, plugging, transactions) is kept with its time in `trace`, so a test can
work out its limit in force and its draw at any past instant (`limit_at`, `draw_at`, `breakpoints`).
`Quirks` make it misbehave the way real models are reported to; every CALL it receives is kept in
`requests` so a test can check what the central system asked.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import itertools
import json
import logging
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar, cast

import websockets
from ocpp import routing
from ocpp.exceptions import NotSupportedError
from ocpp.messages import Call
from ocpp.v16 import ChargePoint as Lib16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as Lib201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.clock import utc_now
from gateway.sim.charging_profiles import Abilities, Answer, Profile, ProfileStore, limit_a
from gateway.waking import within

log = logging.getLogger("gateway.sim.ocpp")
_WIRE = logging.getLogger("gateway.sim.ocpp.wire")
_WIRE.setLevel(logging.WARNING)
F = TypeVar("F", bound=Callable[..., Any])
SimVersion = Literal["1.6", "2.0.1"]


def on(action: str) -> Callable[[F], F]:
    return cast(Callable[[F], F], routing.on(action))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Quirks:
    """Ways real chargers are reported to misbehave."""

    reject_purposes: frozenset[str] = frozenset()  # answers Rejected to these profile purposes
    watts_only: bool = False  # claims "Current,Power" but rejects amps
    ack_delay_s: float = 0.0  # answers SetChargingProfile this late (blocks its own link meanwhile)
    boot_on_reconnect: bool = True  # False: comes back after a drop without a BootNotification
    ignores_limits: bool = False  # says Accepted, then draws what the EV wants anyway
    only_stack_level_0: bool = False  # rejects any profile above stack level 0 (yet reports 8: it lies)
    meter_silent: bool = False  # sends no periodic MeterValues (answers a TriggerMessage for them)
    call_error_purposes: frozenset[str] = frozenset()  # answers a CallError (NotSupported) to these purposes
    # holds every SetChargingProfile answer until the test sets it (a slow charger, without a clock)
    ack_gate: asyncio.Event | None = None
    # what it reports about itself instead of the defaults, and then enforces: 1.6 configuration keys
    # ("ChargingScheduleAllowedChargingRateUnit": "Power", "ChargeProfileMaxStackLevel": "0") or 2.0.1
    # SmartChargingCtrlr variables ("RateUnit": "W", "ProfileStackLevel": "0")
    reports: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Nameplate:
    """What the simulated charger says it is in its BootNotification (None: the field is left out).

    The meter fields exist only in 1.6 and are not sent by a 2.0.1 station. Keep within the schemas'
    lengths (1.6: vendor and model 20 characters, serial numbers and meter type 25)."""

    vendor: str = "Sim"
    model: str = "SimAC"
    firmware: str | None = "sim-1.0"
    serial: str | None = None
    meter_type: str | None = None
    meter_serial: str | None = None


@dataclass(frozen=True, slots=True)
class Moment:
    """What a simulated charger held and did from `at` on, until its next moment."""

    at: datetime
    profiles: tuple[Profile, ...]
    plugged: bool
    ev_max_a: float
    transaction_id: str | None
    tx_started: datetime | None


@dataclass
class Ev:
    max_a: float = 32.0
    plugged: bool = False
    departure: datetime | None = None
    energy_wh: int | None = None


class _Recording:
    """Mixin: every CALL from the central system is kept (action, camelCase payload) before it is handled."""

    owner: SimChargePoint

    async def _handle_call(self, msg: Call) -> Any:
        self.owner.requests.append((msg.action, msg.payload))
        return await super()._handle_call(msg)  # type: ignore[misc]


class _Sim16(_Recording, Lib16):  # type: ignore[misc]
    owner: SimChargePoint

    @on("SetChargingProfile")
    async def on_set_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any]) -> Any:
        answer = await self.owner.take_profile(Profile.from_wire(cs_charging_profiles, connector_id, "1.6"))
        return result16.SetChargingProfile(status=answer.status)

    @on("ClearChargingProfile")
    def on_clear(self, id: int | None = None, connector_id: int | None = None,
                 charging_profile_purpose: str | None = None, stack_level: int | None = None) -> Any:
        found = self.owner.clear_profiles(id, connector_id, charging_profile_purpose, stack_level)
        return result16.ClearChargingProfile(status="Accepted" if found else "Unknown")

    @on("GetConfiguration")
    def on_get_configuration(self, key: list[str] | None = None) -> Any:
        known = self.owner.configuration()
        keys = key or list(known)
        return result16.GetConfiguration(
            configuration_key=[{"key": k, "readonly": True, "value": known[k]} for k in keys if k in known],
            unknown_key=[k for k in keys if k not in known] or None,
        )

    @on("ChangeConfiguration")
    def on_change_configuration(self, key: str, value: str) -> Any:
        if key == "MeterValueSampleInterval":
            self.owner.set_meter_interval(float(value))
        return result16.ChangeConfiguration(status="Accepted")

    @on("TriggerMessage")
    def on_trigger(self, requested_message: str, connector_id: int | None = None) -> Any:
        if requested_message == "StatusNotification":
            self.owner.spawn(self.owner.send_status(force=True))
            return result16.TriggerMessage(status="Accepted")
        if requested_message == "MeterValues":
            self.owner.spawn(self.owner.send_meter_values())
            return result16.TriggerMessage(status="Accepted")
        return result16.TriggerMessage(status="NotImplemented")

    @on("GetCompositeSchedule")
    def on_composite(self, connector_id: int, duration: int, charging_rate_unit: str | None = None) -> Any:
        limit = self.owner.limit_a()
        if limit is None:
            return result16.GetCompositeSchedule(status="Rejected")
        now = utc_now()
        return result16.GetCompositeSchedule(
            status="Accepted", connector_id=connector_id, schedule_start=_iso(now),
            charging_schedule={"charging_rate_unit": "A", "duration": duration,
                               "charging_schedule_period": [{"start_period": 0, "limit": round(limit, 1)}]},
        )


class _Sim201(_Recording, Lib201):  # type: ignore[misc]
    owner: SimChargePoint

    @on("SetChargingProfile")
    async def on_set_profile(self, evse_id: int, charging_profile: dict[str, Any], **_: Any) -> Any:
        answer = await self.owner.take_profile(Profile.from_wire(charging_profile, evse_id, "2.0.1"))
        info = {"reason_code": answer.reason_code or "Unspecified", "additional_info": answer.reason[:512]}
        return result201.SetChargingProfile(status=answer.status,
                                            status_info=info if answer.status != "Accepted" else None)

    @on("ClearChargingProfile")
    def on_clear(self, charging_profile_id: int | None = None, charging_profile_criteria: dict[str, Any] | None = None,
                 **_: Any) -> Any:
        criteria = charging_profile_criteria or {}
        found = self.owner.clear_profiles(charging_profile_id, criteria.get("evse_id"),
                                          criteria.get("charging_profile_purpose"), criteria.get("stack_level"))
        return result201.ClearChargingProfile(status="Accepted" if found else "Unknown")

    @on("GetVariables")
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        known = self.owner.variables()
        results = []
        for item in get_variable_data:
            name = (item["component"]["name"], item["variable"]["name"])
            value = known.get(name)
            results.append({"attribute_status": "Accepted" if value is not None else "UnknownVariable",
                            "component": item["component"], "variable": item["variable"],
                            **({"attribute_value": value} if value is not None else {})})
        return result201.GetVariables(get_variable_result=results)

    @on("SetVariables")
    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        results = []
        for item in set_variable_data:
            if item["variable"]["name"] in ("TxUpdatedInterval", "Interval"):
                self.owner.set_meter_interval(float(item["attribute_value"]))
            results.append({"attribute_status": "Accepted", "component": item["component"],
                            "variable": item["variable"]})
        return result201.SetVariables(set_variable_result=results)

    @on("TriggerMessage")
    def on_trigger(self, requested_message: str, **_: Any) -> Any:
        if requested_message == "StatusNotification":
            self.owner.spawn(self.owner.send_status(force=True))
            return result201.TriggerMessage(status="Accepted")
        if requested_message == "TransactionEvent":
            if self.owner.transaction_id is None:
                return result201.TriggerMessage(status="Rejected")
            self.owner.spawn(self.owner.send_transaction_state("Trigger"))
            return result201.TriggerMessage(status="Accepted")
        if requested_message == "MeterValues":
            self.owner.spawn(self.owner.send_meter_values())
            return result201.TriggerMessage(status="Accepted")
        return result201.TriggerMessage(status="NotImplemented")

    @on("GetCompositeSchedule")
    def on_composite(self, duration: int, evse_id: int, **_: Any) -> Any:
        limit = self.owner.limit_a()
        if limit is None:
            return result201.GetCompositeSchedule(status="Rejected")
        return result201.GetCompositeSchedule(status="Accepted", schedule={
            "evse_id": evse_id, "duration": duration, "schedule_start": _iso(utc_now()), "charging_rate_unit": "A",
            "charging_schedule_period": [{"start_period": 0, "limit": round(limit, 1)}]})


T = TypeVar("T")
_TX_IDS = itertools.count(1)


class SimChargePoint:
    """One simulated charger with one connector/EVSE and one EV; `start()` connects, `stop()` leaves."""

    def __init__(
        self,
        base_url: str,
        cp_id: str,
        version: SimVersion = "1.6",
        password: str | None = None,
        ev: Ev | None = None,
        quirks: Quirks | None = None,
        phases: int = 3,
        volts: float = 230.0,
        max_a: float = 32.0,
        meter_interval_s: float = 60.0,
        ssl: Any = None,
        validate: bool = True,
        nameplate: Nameplate | None = None,
        clock_offset: timedelta = timedelta(0),
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/{cp_id}"
        self.cp_id, self.version, self.password = cp_id, version, password
        self.ev = ev or Ev()
        self.quirks = quirks or Quirks()
        self.phases, self.volts, self.max_a = phases, volts, max_a
        self.meter_interval_s = meter_interval_s
        self.ssl = ssl
        self.validate = validate  # False: skip JSON-schema checks on what arrives (benchmarks: a cheap peer)
        self.nameplate = nameplate or Nameplate()  # may be replaced before a reconnect (a firmware update)
        self.clock_offset = clock_offset  # its clock less the real time (a charger whose clock is off)
        self.book = ProfileStore(version)
        self.tx_started: datetime | None = None  # when the running transaction began
        self.trace: list[Moment] = []  # everything that may change its draw, in order (see draw_at)
        self._trace_at: list[datetime] = []
        self.rejections: list[tuple[str, str]] = []  # (purpose/unit, the rule it broke) of every Rejected
        self.accepted: list[tuple[datetime, Profile]] = []  # every profile it took, with when
        self.connected_at: list[datetime] = []  # when each websocket session began
        self.energy_wh = 0.0
        self.boots = 0
        self.connected = asyncio.Event()
        self.refused: int | None = None  # HTTP status of the last refused handshake
        self.transaction_id: str | None = None
        self.received: list[tuple[str, str]] = []  # (purpose/unit, status) of every SetChargingProfile
        # every CALL the central system made, in order (the latest few hundred: a demo runs for days)
        self.requests: deque[tuple[str, dict[str, Any]]] = deque(maxlen=500)
        self._cp: Any = None
        self._ws: ClientConnection | None = None
        self._status_sent: str | None = None
        self._state_sent: str | None = None  # 2.0.1 chargingState last sent (kept over a reconnect)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._seq = itertools.count()
        self._interval_changed = asyncio.Event()
        self._tx_known = asyncio.Event()  # clear while a StartTransaction awaits its id, as firmware reads in order
        self._tx_known.set()

    # ------------------------------------------------------------------------------------- the EV model

    def abilities(self) -> Abilities:
        """What it reports is what it enforces (a lying model is a quirk, not this)."""
        if self.version == "1.6":
            config = self.configuration()
            stack, units = config["ChargeProfileMaxStackLevel"], config["ChargingScheduleAllowedChargingRateUnit"]
            periods, entries = config["ChargingScheduleMaxPeriods"], config["MaxChargingProfilesInstalled"]
        else:
            known = {name: v for (_, name), v in self.variables().items()}
            stack, units = known["ProfileStackLevel"], known["RateUnit"]
            periods, entries = known["PeriodsPerSchedule"], known["Entries"]
        words = {w.strip().lower() for w in units.split(",")}
        return Abilities(
            max_stack_level=int(stack),
            units=tuple(u for u, names in (("A", {"a", "current"}), ("W", {"w", "power"})) if words & names),
            max_periods=int(periods), max_profiles=int(entries))

    def _transactions(self) -> dict[int, str]:
        return {1: self.transaction_id} if self.transaction_id is not None else {}

    def limit_a(self, now: datetime | None = None) -> float | None:
        """The limit in force now (amps per phase; None: no profile limits it)."""
        return limit_a(self.book.snapshot(), self.version, 1, (now or utc_now()) + self.clock_offset,
                       self.transaction_id, self.tx_started, self.volts, 1 if self.phases < 3 else 3)

    def local_now(self) -> datetime:
        """Its own clock, which may be off the real time by `clock_offset` (what it stamps its messages with
        and judges profiles by); the trace is kept in real time."""
        return utc_now() + self.clock_offset

    def _draw(self, limit: float | None, plugged: bool, ev_max: float) -> float:
        if not plugged:
            return 0.0
        if self.quirks.ignores_limits:
            limit = None
        allowed = self.max_a if limit is None else min(limit, self.max_a)
        return 0.0 if allowed < 6.0 else round(min(allowed, ev_max), 1)

    def draw_a(self, now: datetime | None = None) -> float:
        return self._draw(self.limit_a(now), self.ev.plugged, self.ev.max_a)

    def _moment(self, at: datetime) -> Moment | None:
        i = bisect.bisect_right(self._trace_at, at)
        return self.trace[i - 1] if i else None

    def limit_at(self, at: datetime) -> float | None:
        """The limit that was in force at a past instant, from the trace."""
        m = self._moment(at)
        if m is None:
            return None
        return limit_a(m.profiles, self.version, 1, at + self.clock_offset, m.transaction_id, m.tx_started,
                       self.volts, 1 if self.phases < 3 else 3)

    def draw_at(self, at: datetime) -> float:
        """What the EV drew at a past instant (amps on each conductor the charger uses), from the trace."""
        m = self._moment(at)
        return 0.0 if m is None else self._draw(self.limit_at(at), m.plugged, m.ev_max_a)

    def breakpoints(self, start: datetime, end: datetime) -> list[datetime]:
        """Every instant in [start, end] at which its draw may have changed: what it was told or did, and
        the moments its profiles begin, end or step by themselves."""
        out = {m.at for m in self.trace if start <= m.at <= end}
        for m in self.trace:
            for p in m.profiles:  # a profile's own times are in the charger's clock
                real = (t - self.clock_offset for t in p.boundaries(m.tx_started or m.at + self.clock_offset))
                out.update(t for t in real if start <= t <= end)
        return sorted(out | {start})

    def _record(self) -> None:
        at = utc_now()
        if self._trace_at and at < self._trace_at[-1]:
            at = self._trace_at[-1]
        self.trace.append(Moment(at, self.book.snapshot(), self.ev.plugged, self.ev.max_a, self.transaction_id,
                                 self.tx_started))
        self._trace_at.append(at)

    def status(self) -> str:
        if not self.ev.plugged:
            return "Available"
        if self.draw_a() > 0:
            return "Charging"
        return "SuspendedEVSE"

    async def take_profile(self, profile: Profile) -> Answer:
        if self.quirks.ack_delay_s:
            await asyncio.sleep(self.quirks.ack_delay_s)
        if self.quirks.ack_gate is not None:
            await self.quirks.ack_gate.wait()
        if profile.purpose == "TxProfile":
            with contextlib.suppress(TimeoutError):
                await within(self._tx_known.wait(), 5)
        label = f"{profile.purpose}/{profile.unit}"
        if profile.purpose in self.quirks.call_error_purposes:
            self.received.append((label, "CallError"))
            raise NotSupportedError(description=f"{profile.purpose} is not supported by this model")
        quirk = ("this model refuses the purpose" if profile.purpose in self.quirks.reject_purposes
                 else "this model takes watts only" if self.quirks.watts_only and profile.unit == "A"
                 else "this model takes stack level 0 only" if self.quirks.only_stack_level_0
                 and profile.stack_level > 0 else "")
        self.book.abilities = self.abilities()
        answer = Answer("Rejected", quirk) if quirk else self.book.install(profile, self._transactions())
        self.received.append((label, answer.status))
        if answer.status == "Accepted":
            self.accepted.append((utc_now(), profile))
            self.changed()
        else:
            self.rejections.append((label, answer.reason))
            log.info("sim %s rejected %s sl%d: %s", self.cp_id, label, profile.stack_level, answer.reason)
        return answer

    def clear_profiles(self, profile_id: int | None, connector: int | None, purpose: str | None,
                       stack_level: int | None) -> bool:
        found = self.book.clear(profile_id, connector, purpose, stack_level)
        self.changed()
        return found

    def changed(self) -> None:
        self._record()
        if self._cp is not None:
            self.spawn(self.send_status())

    def configuration(self) -> dict[str, str]:
        return {
            "ChargeProfileMaxStackLevel": "8",
            "ChargingScheduleAllowedChargingRateUnit": "Current,Power",
            "ChargingScheduleMaxPeriods": "24",
            "MaxChargingProfilesInstalled": "16",
            "SupportedFeatureProfiles": "Core,SmartCharging,RemoteTrigger",
            "MeterValueSampleInterval": str(int(self.meter_interval_s)),
            **self.quirks.reports,
        }

    def variables(self) -> dict[tuple[str, str], str]:
        known = {"Enabled": "true", "RateUnit": "A,W", "ProfileStackLevel": "8", "PeriodsPerSchedule": "24",
                 "Entries": "16", **self.quirks.reports}
        return {("SmartChargingCtrlr", name): value for name, value in known.items()}

    # ------------------------------------------------------------------------------------- lifecycle

    async def start(self, wait: bool = True, timeout_s: float = 5.0) -> None:
        self._runner = asyncio.create_task(self._run(), name=f"sim-{self.cp_id}")
        if wait:
            await within(self.connected.wait(), timeout_s)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if self._ws is not None:  # a clean close (1000), as a charger switched off politely would
            with contextlib.suppress(Exception):
                await within(self._ws.close(), 2)
        for task in [runner, *self._tasks]:
            if task is not None:
                task.cancel()
        for task in [runner, *self._tasks]:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def drop(self) -> None:
        """Lose the link (the run loop reconnects)."""
        if self._ws is not None:
            await self._ws.close()

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _headers(self) -> dict[str, str]:
        if self.password is None:
            return {}
        token = base64.b64encode(f"{self.cp_id}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                async with websockets.connect(
                    self.url, subprotocols=[f"ocpp{self.version}"],  # type: ignore[list-item]
                    additional_headers=self._headers(), open_timeout=5, ssl=self.ssl, compression=None,
                ) as ws:
                    backoff = 0.1
                    await self._session(ws, boot=self.boots == 0 or self.quirks.boot_on_reconnect)
            except InvalidStatus as exc:
                self.refused = exc.response.status_code
            except (OSError, ConnectionClosed, TimeoutError):
                pass
            self.connected.clear()
            self._cp = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _session(self, ws: ClientConnection, boot: bool) -> None:
        self._ws = ws
        self.connected_at.append(utc_now())
        cls = _Sim16 if self.version == "1.6" else _Sim201
        cp = cls(self.cp_id, ws, response_timeout=10, logger=_WIRE)
        cp.owner = self
        if not self.validate:
            for handlers in cp.route_map.values():
                handlers["_skip_schema_validation"] = True
        self._cp = cp
        reader = asyncio.create_task(cp.start())
        try:
            if boot:
                await self._boot()
            self._status_sent = None
            await self.send_status(force=True)
            self.connected.set()
            meter = self.spawn(self._meter_loop())
            try:
                await reader
            finally:
                meter.cancel()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await reader

    async def _boot(self) -> None:
        n = self.nameplate
        if self.version == "1.6":
            await self._cp.call(call16.BootNotification(
                charge_point_model=n.model, charge_point_vendor=n.vendor, firmware_version=n.firmware,
                charge_point_serial_number=n.serial, meter_type=n.meter_type, meter_serial_number=n.meter_serial))
        else:
            station = {"model": n.model, "vendor_name": n.vendor, "firmware_version": n.firmware,
                       "serial_number": n.serial}  # the library leaves the None ones out
            await self._cp.call(call201.BootNotification(charging_station=station, reason="PowerUp"))
        self.boots += 1

    # ------------------------------------------------------------------------------------- messages

    async def send_status(self, force: bool = False) -> None:
        status = self.status()
        if self._cp is None or (status == self._status_sent and not force):
            return
        self._status_sent = status
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            if self.version == "1.6":
                await self._cp.call(call16.StatusNotification(connector_id=1, error_code="NoError", status=status))
            else:
                connector = "Available" if status == "Available" else "Occupied"
                await self._cp.call(call201.StatusNotification(
                    timestamp=_iso(self.local_now()), connector_status=connector, evse_id=1, connector_id=1))
                if self.transaction_id is not None and self._charging_state() != self._state_sent:
                    await self._transaction_event("Updated", "ChargingStateChanged")

    def _charging_state(self) -> str:
        return {"Charging": "Charging", "SuspendedEVSE": "SuspendedEVSE"}.get(self.status(), "EVConnected")

    async def send_transaction_state(self, trigger: str) -> None:
        """A TransactionEvent Updated that carries the charging state (what a TriggerMessage asks for)."""
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            await self._transaction_event("Updated", trigger, with_state=True)

    async def _transaction_event(self, event_type: str, trigger: str, with_state: bool | None = None) -> None:
        """2.0.1: chargingState goes with the first event, a change of state and a triggered one; periodic
        updates carry meter values only, as the spec lets a station do."""
        state = self._charging_state()
        if with_state is None:
            with_state = event_type == "Started" or state != self._state_sent
        info: dict[str, Any] = {"transaction_id": self.transaction_id}
        if with_state:
            info["charging_state"] = self._state_sent = state
        await self._cp.call(call201.TransactionEvent(
            event_type=event_type, timestamp=_iso(self.local_now()), trigger_reason=trigger, seq_no=next(self._seq),
            transaction_info=info, evse={"id": 1, "connector_id": 1},
            id_token={"id_token": "SIMTAG", "type": "ISO14443"} if event_type == "Started" else None,
            meter_value=[self._meter_value()]))

    async def plug_in(self, ev: Ev | None = None) -> None:
        """The EV arrives and a session starts (1.6 StartTransaction, 2.0.1 TransactionEvent Started)."""
        if ev is not None:
            self.ev = ev
        self.ev.plugged = True
        self._record()
        if self.version == "1.6":
            await self._cp.call(call16.StatusNotification(connector_id=1, error_code="NoError", status="Preparing"))
            self._tx_known.clear()
            try:
                answer = await self._cp.call(call16.StartTransaction(
                    connector_id=1, id_tag="SIMTAG", meter_start=int(self.energy_wh), timestamp=_iso(self.local_now())))
                self.transaction_id = str(answer.transaction_id)
                self.tx_started = self.local_now()
                self._record()
            finally:
                self._tx_known.set()
        else:
            self.transaction_id = uuid.uuid4().hex[:16]
            self.tx_started = self.local_now()
            self._record()
            await self._transaction_event("Started", "CablePluggedIn")
            if self.ev.departure is not None or self.ev.energy_wh is not None:
                needs: dict[str, Any] = {"requested_energy_transfer": "AC_three_phase"}
                if self.ev.departure is not None:
                    needs["departure_time"] = _iso(self.ev.departure)
                needs["ac_charging_parameters"] = {"energy_amount": self.ev.energy_wh or 0, "ev_min_current": 6,
                                                   "ev_max_current": int(self.ev.max_a), "ev_max_voltage": 400}
                await self._cp.call(call201.NotifyEVChargingNeeds(charging_needs=needs, evse_id=1))
        await self.send_status(force=True)

    async def unplug(self) -> None:
        self.ev.plugged = False
        self._record()
        if self.transaction_id is not None:
            if self.version == "1.6":
                await self._cp.call(call16.StopTransaction(
                    meter_stop=int(self.energy_wh), timestamp=_iso(self.local_now()),
                    transaction_id=int(self.transaction_id)))
            else:
                await self._transaction_event("Ended", "EVCommunicationLost")
        self.book.end_transaction(self.transaction_id)
        self.transaction_id = self.tx_started = None
        self._record()
        await self.send_status(force=True)

    def _meter_value(self) -> dict[str, Any]:
        amps = self.draw_a()
        conductors = 3 if self.phases >= 3 else 1
        watts = amps * self.volts * conductors
        number: Callable[[float], Any] = (lambda v: f"{v:.1f}") if self.version == "1.6" else (lambda v: round(v, 1))

        def sv(value: float, measurand: str, unit: str, phase: str | None = None) -> dict[str, Any]:
            item: dict[str, Any] = {"value": number(value), "measurand": measurand, "context": "Sample.Periodic"}
            if self.version == "1.6":
                item["unit"] = unit
            else:
                item["unit_of_measure"] = {"unit": unit}
            if phase:
                item["phase"] = phase
            return item

        values = [sv(amps, "Current.Import", "A", f"L{i + 1}") for i in range(conductors)]
        values += [sv(watts, "Power.Active.Import", "W"), sv(self.energy_wh, "Energy.Active.Import.Register", "Wh")]
        return {"timestamp": _iso(self.local_now()), "sampled_value": values}

    async def send_meter_values(self) -> None:
        if self._cp is None:
            return
        if self.version == "1.6":
            tx = int(self.transaction_id) if self.transaction_id else None
            payload = call16.MeterValues(connector_id=1, meter_value=[self._meter_value()], transaction_id=tx)
            await self._cp.call(payload)
        elif self.transaction_id is not None:  # 2.0.1: in a transaction, samples ride on TransactionEvents
            await self._transaction_event("Updated", "MeterValuePeriodic")
        else:
            await self._cp.call(call201.MeterValues(evse_id=1, meter_value=[self._meter_value()]))

    def set_meter_interval(self, seconds: float) -> None:
        self.meter_interval_s = max(1.0, seconds)
        self._interval_changed.set()

    async def _meter_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = sent = loop.time()
        while True:
            self._interval_changed.clear()
            # wake at the next sample, or at once when the central system changes the interval
            due = max(0.0, sent + self.meter_interval_s - loop.time())
            with contextlib.suppress(TimeoutError):
                await within(self._interval_changed.wait(), due)
            now = loop.time()
            conductors = 3 if self.phases >= 3 else 1
            self.energy_wh += self.draw_a() * self.volts * conductors * (now - last) / 3600.0
            last = now
            if now - sent >= self.meter_interval_s and not self.quirks.meter_silent:
                sent = now
                with contextlib.suppress(ConnectionClosed, TimeoutError):
                    await self.send_meter_values()

    async def send_raw(self, frame: str, timeout_s: float = 5.0) -> list[Any] | None:
        """Send any text as a frame and return the central system's answer to it (None if none came): the
        answer carrying the frame's unique id, or "-1" (the id of an answer to a frame it could not read).
        The simulator's own calls share the queue the answers arrive in: an answer to one of them that
        comes meanwhile is left for it, not taken for the answer to this frame."""
        if self._ws is None or self._cp is None:
            raise RuntimeError("not connected")
        try:
            unique_id = str(json.loads(frame)[1])
        except (ValueError, TypeError, IndexError, KeyError):
            unique_id = "-1"
        queue = self._cp._response_queue
        others: list[Any] = []
        answer = None
        await self._ws.send(frame)
        try:
            async with asyncio.timeout(timeout_s):
                while answer is None:
                    got = await queue.get()
                    if got.unique_id in (unique_id, "-1"):
                        answer = got
                    else:
                        others.append(got)
        except TimeoutError:
            pass
        finally:
            for other in others:
                queue.put_nowait(other)
        return None if answer is None else cast(list[Any], json.loads(answer.to_json()))
