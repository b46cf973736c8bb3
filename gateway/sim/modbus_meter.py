"""A simulated Modbus TCP meter for any meter map, whose per-phase load a test sets, served by pymodbus.

`set_load(L1=…, L2=…)` sets the current on each phase in amps, negative for export (PV); the meter
reports currents as magnitudes like real meters, phase and total power with their sign, and integrates
import and export energy. `image.mute` makes it go silent, `image.fail_with` answer with an exception.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.modbus.image import ImageServer, RegisterImage
from gateway.modbus.maps import RegisterMap, load_map

PHASES = (("l1", "L1"), ("l2", "L2"), ("l3", "L3"))


class SimMeter:
    def __init__(
        self,
        model: str | RegisterMap,
        *,
        unit: int | None = None,
        voltage_v: float = 230.0,
        power_factor: float = 1.0,
        frequency_hz: float = 50.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.map = load_map(model) if isinstance(model, str) else model
        self.image = RegisterImage(self.map, unit)
        self.image.before_read = self._publish
        self.server = ImageServer(self.image)
        self.voltage_v = voltage_v
        self.power_factor = power_factor
        self.frequency_hz = frequency_hz
        self.load_a: dict[str, float] = {"L1": 0.0, "L2": 0.0, "L3": 0.0}
        self.import_kwh = 0.0
        self.export_kwh = 0.0
        self._clock = clock
        self._at = clock()

    async def start(self, port: int = 0) -> int:
        self.server.port = port
        return await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    @property
    def port(self) -> int:
        return self.server.port

    def set_load(self, **amps: float) -> None:
        """Amps per phase (keys L1, L2, L3); negative is export."""
        self._integrate()
        for phase, value in amps.items():
            if phase not in self.load_a:
                raise ValueError(f"unknown phase {phase!r}")
            self.load_a[phase] = value

    def phase_kw(self, phase: str) -> float:
        return self.voltage_v * self.load_a[phase] * self.power_factor / 1000.0

    @property
    def total_kw(self) -> float:
        return sum(self.phase_kw(p) for p in self.load_a)

    def _integrate(self) -> None:
        now = self._clock()
        kwh = self.total_kw * (now - self._at) / 3600.0
        if kwh >= 0:
            self.import_kwh += kwh
        else:
            self.export_kwh -= kwh
        self._at = now

    def _publish(self) -> None:
        self._integrate()
        regs = self.map.registers
        v = self.image.values
        for key, phase in PHASES:
            for name, value in (
                (f"current_{key}", abs(self.load_a[phase])),
                (f"voltage_{key}", self.voltage_v),
                (f"power_{key}", self.phase_kw(phase)),
            ):
                if name in regs:
                    v[name] = value
        for name, value in (
            ("power", self.total_kw),
            ("import_energy", self.import_kwh),
            ("export_energy", self.export_kwh),
            ("frequency", self.frequency_hz),
        ):
            if name in regs:
                v[name] = value
