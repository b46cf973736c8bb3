"""Simulated OCPP charge points (1.6J and 2.0.1) built on the `ocpp` library, with a small EV model.

A `SimChargePoint` dials a central system over a real websocket, boots (saying what it is: its
`Nameplate`, vendor, model, firmware, serial), reports status, transactions and meter values, and keeps
the charging profiles it is sent. Its EV draws min(limit in force, its own max), and 0 A when the limit
is under 6 A; the limit in force follows OCPP: per purpose the valid profile (validFrom/validTo) with the
highest stack level, TxProfile over TxDefaultProfile (a TxProfile ends with its transaction), capped by
the station maximum, watts converted at the charger's voltage. With no profile at all it charges
unlimited, as real chargers do. `Quirks` make it misbehave the way real models are reported to; every
CALL it receives is kept in `requests` so a test can check what the central system asked.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
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

log = logging.getLogger("gateway.sim.ocpp")
_WIRE = logging.getLogger("gateway.sim.ocpp.wire")
_WIRE.setLevel(logging.WARNING)
F = TypeVar("F", bound=Callable[..., Any])
SimVersion = Literal["1.6", "2.0.1"]
STATION_MAX = ("ChargePointMaxProfile", "ChargingStationMaxProfile")


def on(action: str) -> Callable[[F], F]:
    return cast(Callable[[F], F], routing.on(action))


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Quirks:
    """Ways real chargers are reported to misbehave."""

    reject_purposes: frozenset[str] = frozenset()  # answers Rejected to these profile purposes
    watts_only: bool = False  # claims "Current,Power" but rejects amps
    ack_delay_s: float = 0.0  # answers SetChargingProfile this late (blocks its own link meanwhile)
    boot_on_reconnect: bool = True  # False: comes back after a drop without a BootNotification
    ignores_limits: bool = False  # says Accepted, then draws what the EV wants anyway
    only_stack_level_0: bool = False  # rejects any profile above stack level 0 (yet reports 8)
    meter_silent: bool = False  # sends no periodic MeterValues (answers a TriggerMessage for them)
    call_error_purposes: frozenset[str] = frozenset()  # answers a CallError (NotSupported) to these purposes
    # holds every SetChargingProfile answer until the test sets it (a slow charger, without a clock)
    ack_gate: asyncio.Event | None = None
    # what it reports about itself instead of the defaults: 1.6 configuration keys
    # ("ChargingScheduleAllowedChargingRateUnit": "Power") or 2.0.1 SmartChargingCtrlr variables ("RateUnit": "W")
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


@dataclass
class Ev:
    max_a: float = 32.0
    plugged: bool = False
    departure: datetime | None = None
    energy_wh: int | None = None


@dataclass
class HeldProfile:
    profile_id: int
    purpose: str
    stack_level: int
    unit: str
    start: datetime | None
    periods: list[tuple[int, float, int | None]]
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    transaction_id: str | None = None


@dataclass
class ProfileBook:
    """The charging profiles a charger holds and the limit they put in force at a moment."""

    profiles: dict[int, HeldProfile] = field(default_factory=dict)

    def add(self, p: HeldProfile) -> None:
        for pid, old in list(self.profiles.items()):  # same id, or same purpose and level: replaced
            if pid == p.profile_id or (old.purpose == p.purpose and old.stack_level == p.stack_level):
                del self.profiles[pid]
        self.profiles[p.profile_id] = p

    def clear(self, profile_id: int | None = None) -> bool:
        if profile_id is None:
            found = bool(self.profiles)
            self.profiles.clear()
            return found
        return self.profiles.pop(profile_id, None) is not None

    def end_session(self) -> None:
        """A TxProfile lives only as long as its transaction."""
        for pid, p in list(self.profiles.items()):
            if p.purpose == "TxProfile":
                del self.profiles[pid]

    def _limit_of(self, p: HeldProfile, now: datetime, volts: float, phases: int) -> float | None:
        if (p.valid_from and now < p.valid_from) or (p.valid_to and now >= p.valid_to):
            return None
        elapsed = (now - p.start).total_seconds() if p.start else 0.0
        if elapsed < 0:
            return None
        value: float | None = None
        n_phases = phases
        for start, limit, np in sorted(p.periods):
            if start <= elapsed:
                value, n_phases = limit, np or phases
        if value is None:
            return None
        return value if p.unit == "A" else value / (volts * n_phases)

    def _top(self, purposes: tuple[str, ...], now: datetime, volts: float, phases: int) -> float | None:
        valid = [(p.stack_level, self._limit_of(p, now, volts, phases)) for p in self.profiles.values()
                 if p.purpose in purposes]
        valid = [v for v in valid if v[1] is not None]
        return max(valid)[1] if valid else None

    def limit_a(self, now: datetime, volts: float, phases: int) -> float | None:
        station = self._top(STATION_MAX, now, volts, phases)
        tx = self._top(("TxProfile",), now, volts, phases)
        if tx is None:
            tx = self._top(("TxDefaultProfile",), now, volts, phases)
        limits = [v for v in (station, tx) if v is not None]
        return min(limits) if limits else None


def _held(profile: dict[str, Any], schedule: dict[str, Any], profile_id: int) -> HeldProfile:
    return HeldProfile(
        profile_id=profile_id,
        purpose=profile["charging_profile_purpose"],
        stack_level=int(profile["stack_level"]),
        unit=schedule["charging_rate_unit"],
        start=_parse(schedule.get("start_schedule")),
        periods=[(int(p["start_period"]), float(p["limit"]), p.get("number_phases"))
                 for p in schedule["charging_schedule_period"]],
        valid_from=_parse(profile.get("valid_from")),
        valid_to=_parse(profile.get("valid_to")),
        transaction_id=None if profile.get("transaction_id") is None else str(profile["transaction_id"]),
    )


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
        p = cs_charging_profiles
        status = await self.owner.take_profile(_held(p, p["charging_schedule"], int(p["charging_profile_id"])))
        return result16.SetChargingProfile(status=status)

    @on("ClearChargingProfile")
    def on_clear(self, id: int | None = None, **_: Any) -> Any:
        found = self.owner.book.clear(id)
        self.owner.changed()
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
        now = _now()
        return result16.GetCompositeSchedule(
            status="Accepted", connector_id=connector_id, schedule_start=_iso(now),
            charging_schedule={"charging_rate_unit": "A", "duration": duration,
                               "charging_schedule_period": [{"start_period": 0, "limit": round(limit, 1)}]},
        )


class _Sim201(_Recording, Lib201):  # type: ignore[misc]
    owner: SimChargePoint

    @on("SetChargingProfile")
    async def on_set_profile(self, evse_id: int, charging_profile: dict[str, Any], **_: Any) -> Any:
        p = charging_profile
        status = await self.owner.take_profile(_held(p, p["charging_schedule"][0], int(p["id"])))
        return result201.SetChargingProfile(status=status)

    @on("ClearChargingProfile")
    def on_clear(self, charging_profile_id: int | None = None, **_: Any) -> Any:
        found = self.owner.book.clear(charging_profile_id)
        self.owner.changed()
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
            "evse_id": evse_id, "duration": duration, "schedule_start": _iso(_now()), "charging_rate_unit": "A",
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
        self.book = ProfileBook()
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
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._seq = itertools.count()
        self._interval_changed = asyncio.Event()
        self._tx_known = asyncio.Event()  # clear while a StartTransaction awaits its id, as firmware reads in order
        self._tx_known.set()

    # ------------------------------------------------------------------------------------- the EV model

    def limit_a(self, now: datetime | None = None) -> float | None:
        return self.book.limit_a(now or _now(), self.volts, 3 if self.phases >= 3 else 1)

    def draw_a(self, now: datetime | None = None) -> float:
        if not self.ev.plugged:
            return 0.0
        limit = None if self.quirks.ignores_limits else self.limit_a(now)
        allowed = self.max_a if limit is None else min(limit, self.max_a)
        return 0.0 if allowed < 6.0 else round(min(allowed, self.ev.max_a), 1)

    def status(self) -> str:
        if not self.ev.plugged:
            return "Available"
        if self.draw_a() > 0:
            return "Charging"
        return "SuspendedEVSE"

    async def take_profile(self, profile: HeldProfile) -> str:
        if self.quirks.ack_delay_s:
            await asyncio.sleep(self.quirks.ack_delay_s)
        if self.quirks.ack_gate is not None:
            await self.quirks.ack_gate.wait()
        if profile.purpose == "TxProfile":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tx_known.wait(), 5)
        if profile.purpose in self.quirks.call_error_purposes:
            self.received.append((f"{profile.purpose}/{profile.unit}", "CallError"))
            raise NotSupportedError(description=f"{profile.purpose} is not supported by this model")
        refused = (
            profile.purpose in self.quirks.reject_purposes
            or (self.quirks.watts_only and profile.unit == "A")
            or (profile.purpose == "TxProfile" and (self.transaction_id is None
                                                    or profile.transaction_id != self.transaction_id))
            or (self.quirks.only_stack_level_0 and profile.stack_level > 0)
        )
        status = "Rejected" if refused else "Accepted"
        self.received.append((f"{profile.purpose}/{profile.unit}", status))
        if status == "Accepted":
            self.book.add(profile)
            self.changed()
        return status

    def changed(self) -> None:
        if self._cp is not None:
            self.spawn(self.send_status())

    def configuration(self) -> dict[str, str]:
        return {
            "ChargeProfileMaxStackLevel": "8",
            "ChargingScheduleAllowedChargingRateUnit": "Current,Power",
            "SupportedFeatureProfiles": "Core,SmartCharging,RemoteTrigger",
            "MeterValueSampleInterval": str(int(self.meter_interval_s)),
            **self.quirks.reports,
        }

    def variables(self) -> dict[tuple[str, str], str]:
        known = {"Enabled": "true", "RateUnit": "A,W", "ProfileStackLevel": "8", **self.quirks.reports}
        return {("SmartChargingCtrlr", name): value for name, value in known.items()}

    # ------------------------------------------------------------------------------------- lifecycle

    async def start(self, wait: bool = True, timeout_s: float = 5.0) -> None:
        self._runner = asyncio.create_task(self._run(), name=f"sim-{self.cp_id}")
        if wait:
            await asyncio.wait_for(self.connected.wait(), timeout_s)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if self._ws is not None:  # a clean close (1000), as a charger switched off politely would
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 2)
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
                    timestamp=_iso(_now()), connector_status=connector, evse_id=1, connector_id=1))
                if self.transaction_id is not None:
                    await self._transaction_event("Updated", "ChargingStateChanged")

    def _charging_state(self) -> str:
        return {"Charging": "Charging", "SuspendedEVSE": "SuspendedEVSE"}.get(self.status(), "Idle")

    async def _transaction_event(self, event_type: str, trigger: str) -> None:
        info: dict[str, Any] = {"transaction_id": self.transaction_id, "charging_state": self._charging_state()}
        await self._cp.call(call201.TransactionEvent(
            event_type=event_type, timestamp=_iso(_now()), trigger_reason=trigger, seq_no=next(self._seq),
            transaction_info=info, evse={"id": 1, "connector_id": 1},
            id_token={"id_token": "SIMTAG", "type": "ISO14443"} if event_type == "Started" else None,
            meter_value=[self._meter_value()]))

    async def plug_in(self, ev: Ev | None = None) -> None:
        """The EV arrives and a session starts (1.6 StartTransaction, 2.0.1 TransactionEvent Started)."""
        if ev is not None:
            self.ev = ev
        self.ev.plugged = True
        if self.version == "1.6":
            await self._cp.call(call16.StatusNotification(connector_id=1, error_code="NoError", status="Preparing"))
            self._tx_known.clear()
            try:
                answer = await self._cp.call(call16.StartTransaction(
                    connector_id=1, id_tag="SIMTAG", meter_start=int(self.energy_wh), timestamp=_iso(_now())))
                self.transaction_id = str(answer.transaction_id)
            finally:
                self._tx_known.set()
        else:
            self.transaction_id = uuid.uuid4().hex[:16]
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
        if self.transaction_id is not None:
            if self.version == "1.6":
                await self._cp.call(call16.StopTransaction(
                    meter_stop=int(self.energy_wh), timestamp=_iso(_now()), transaction_id=int(self.transaction_id)))
            else:
                await self._transaction_event("Ended", "EVCommunicationLost")
        self.transaction_id = None
        self.book.end_session()
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
        return {"timestamp": _iso(_now()), "sampled_value": values}

    async def send_meter_values(self) -> None:
        if self._cp is None:
            return
        if self.version == "1.6":
            tx = int(self.transaction_id) if self.transaction_id else None
            payload = call16.MeterValues(connector_id=1, meter_value=[self._meter_value()], transaction_id=tx)
            await self._cp.call(payload)
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
                await asyncio.wait_for(self._interval_changed.wait(), due)
            now = loop.time()
            conductors = 3 if self.phases >= 3 else 1
            self.energy_wh += self.draw_a() * self.volts * conductors * (now - last) / 3600.0
            last = now
            if now - sent >= self.meter_interval_s and not self.quirks.meter_silent:
                sent = now
                with contextlib.suppress(ConnectionClosed, TimeoutError):
                    await self.send_meter_values()

    async def send_raw(self, frame: str, timeout_s: float = 5.0) -> list[Any] | None:
        """Send any text as a frame and return the central system's answer to it (None if none came)."""
        if self._ws is None or self._cp is None:
            raise RuntimeError("not connected")
        await self._ws.send(frame)
        try:
            answer = await asyncio.wait_for(self._cp._response_queue.get(), timeout_s)
        except TimeoutError:
            return None
        return cast(list[Any], json.loads(answer.to_json()))
