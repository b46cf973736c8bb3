"""A simulated Modbus TCP charger for any charger map, with a small EV model, served by pymodbus.

The charger keeps the setpoint the gateway writes (clamped to its own rating, as real chargers do), and
when neither the setpoint nor the watchdog has been written within its failsafe timeout it falls back to
its failsafe current until the next write. A plugged-in EV draws min(limit, its own maximum) on every
phase it has, and nothing below 6 A; plugging in and out changes the status register. Energy integrates
the power drawn. Tests reach into `image` to make the device mute or answer with exception codes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pymodbus.constants import ExcCodes

from gateway.domain import J1772_MIN_A, ChargerStatus
from gateway.modbus.codec import Value
from gateway.modbus.image import ImageServer, RegisterImage
from gateway.modbus.maps import RegisterMap, load_map

_FALLBACK_STATUS = {
    ChargerStatus.SUSPENDED_EVSE: (ChargerStatus.SUSPENDED_EVSE, ChargerStatus.PREPARING),
    ChargerStatus.SUSPENDED_EV: (ChargerStatus.SUSPENDED_EV, ChargerStatus.PREPARING),
}


class SimCharger:
    def __init__(
        self,
        model: str | RegisterMap,
        *,
        unit: int | None = None,
        rating_a: float = 32.0,
        failsafe_a: float = J1772_MIN_A,
        failsafe_timeout_s: float | None = None,
        voltage_v: float = 230.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.map = load_map(model) if isinstance(model, str) else model
        self.image = RegisterImage(self.map, unit)
        self.image.before_read = self._publish
        self.image.on_write = self._written
        self.server = ImageServer(self.image)
        self.rating_a = rating_a
        self.voltage_v = voltage_v
        self.failsafe_a = failsafe_a
        self.failsafe_timeout_s = failsafe_timeout_s or self.map.failsafe_timeout_s or 60.0
        self._clock = clock
        self.setpoint_a: float | None = None  # None: never written; the charger runs at its rating
        self.last_refresh: float = clock()
        self.setpoint_changed_at: float | None = None  # clock time the last new setpoint arrived
        self.enabled = True
        self.ev_max_a = 0.0
        self.ev_phases = 0
        self.energy_kwh = 0.0
        self._energy_at = clock()
        self.writes: list[tuple[str, Value]] = []

    # --------------------------------------------------------------- the world

    async def start(self, port: int = 0) -> int:
        self.server.port = port
        return await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    @property
    def port(self) -> int:
        return self.server.port

    def plug_in(self, ev_max_a: float = 16.0, phases: int = 3) -> None:
        self._integrate()
        self.ev_max_a = ev_max_a
        self.ev_phases = phases

    def unplug(self) -> None:
        self._integrate()
        self.ev_max_a = 0.0
        self.ev_phases = 0

    @property
    def plugged(self) -> bool:
        return self.ev_phases > 0

    @property
    def in_failsafe(self) -> bool:
        return self.setpoint_a is not None and self._clock() - self.last_refresh > self.failsafe_timeout_s

    @property
    def limit_a(self) -> float:
        """The current the charger offers now (pilot duty cycle)."""
        if self.in_failsafe:
            return min(self.failsafe_a, self.rating_a)
        if not self.enabled:
            return 0.0
        return self.rating_a if self.setpoint_a is None else self.setpoint_a

    @property
    def drawing_a(self) -> float:
        if not self.plugged or self.limit_a < J1772_MIN_A:
            return 0.0
        return min(self.limit_a, self.ev_max_a)

    @property
    def status(self) -> ChargerStatus:
        if not self.plugged:
            return ChargerStatus.AVAILABLE
        if self.drawing_a > 0:
            return ChargerStatus.CHARGING
        if self.limit_a < J1772_MIN_A:
            return ChargerStatus.SUSPENDED_EVSE
        return ChargerStatus.SUSPENDED_EV

    # --------------------------------------------------------------- registers

    def _integrate(self) -> None:
        now = self._clock()
        self.energy_kwh += self._power_kw() * (now - self._energy_at) / 3600.0
        self._energy_at = now

    def _power_kw(self) -> float:
        return self.drawing_a * self.voltage_v * self.ev_phases / 1000.0

    def _raw_status(self) -> Value:
        wanted = _FALLBACK_STATUS.get(self.status, (self.status,))
        for status in wanted:
            for raw, s in self.map.status.items():
                if s is status:
                    return raw if self.map.registers["status"].type.value == "string" else float(raw)
        return 0.0

    def _publish(self) -> None:
        self._integrate()
        v = self.image.values
        amps = self.drawing_a
        for i, phase in enumerate(("l1", "l2", "l3")):
            v[f"current_{phase}"] = amps if i < self.ev_phases else 0.0
            v[f"voltage_{phase}"] = self.voltage_v
        v["power"] = self._power_kw()
        v["energy"] = self.energy_kwh
        v["applied_limit"] = self.limit_a
        if "status" in self.map.registers:
            v["status"] = self._raw_status()
        if self.setpoint_a is not None:
            v["setpoint"] = self.setpoint_a
        # what the charger would fall back to, as a commissioning read-back sees it
        v["failsafe_current"] = self.failsafe_a
        v["failsafe_timeout"] = self.failsafe_timeout_s
        for name in list(v):
            if name not in self.map.registers:
                del v[name]

    def _written(self, name: str, value: Value) -> ExcCodes | None:
        if isinstance(value, str):
            return ExcCodes.ILLEGAL_VALUE
        self.writes.append((name, value))
        if name == "setpoint":
            if value < 0 or ("enable" in self.map.registers and value < J1772_MIN_A):
                return ExcCodes.ILLEGAL_VALUE  # chargers that pause by an enable register refuse 0 A
            self._integrate()
            # like real chargers: a request above the rating is clamped, and below 6 A means pause
            new = min(float(value), self.rating_a)
            if new != self.setpoint_a:
                self.setpoint_changed_at = self._clock()
            self.setpoint_a = new
            self.image.values["setpoint"] = self.setpoint_a
            self.last_refresh = self._clock()
        elif name == "watchdog":
            self.last_refresh = self._clock()
        elif name == "enable":
            self._integrate()
            self.enabled = value != 0
        elif name == "failsafe_current":
            self.failsafe_a = float(value)
        elif name == "failsafe_timeout":
            if value <= 0:
                return ExcCodes.ILLEGAL_VALUE
            self.failsafe_timeout_s = float(value)
            if self.map.refresh_failsafe_timeout:  # a device whose failsafe timer this write resets (KEBA)
                self.last_refresh = self._clock()
        return None


async def serve_station(sockets: list[SimCharger], port: int = 0) -> ImageServer:
    """Serve several simulated sockets (distinct unit ids) on one address, like a two-socket station."""
    server = ImageServer([s.image for s in sockets], port=port)
    for s in sockets:
        s.server = server
    await server.start()
    return server
