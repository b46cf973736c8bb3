"""A simulated Modbus TCP meter for any meter map, whose per-phase load a test sets, served by pymodbus.

`set_load(L1=…, L2=…)` sets the current on each phase in amps, negative for export (PV); the meter
reports currents as magnitudes like real meters, phase and total power with their sign, and integrates
import and export energy. `image.mute` makes it go silent, `image.fail_with` answer with an exception.

It can lie, like the faulty meters the gateway must not believe: `lie(L1=-50.0, …)` reports those
currents (and the power they make) whatever the load is, negative, zero, 1e9 or NaN alike; `freeze()`
keeps every register at its last value (a stuck meter or a Modbus gateway serving a stale cache) while
the load and energy go on underneath; `tell_truth()` ends both. `noise_a` makes an honest reading
jitter like a live meter's.
"""

from __future__ import annotations

import random
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
        noise_a: float = 0.0,
    ) -> None:
        self.map = load_map(model) if isinstance(model, str) else model
        # A live meter's reading jitters by a few mA (none at 0 A: meters read 0 below their starting
        # current); a lie or a frozen register does not.
        self.noise_a = noise_a
        self._random = random.Random(1)
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
        self.lie_a: dict[str, float] = {}  # phase → the current reported instead of the load's
        self.frozen = False

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

    def lie(self, **amps: float) -> None:
        """Report these currents (keys L1, L2, L3; signed like `set_load`) instead of the real load's."""
        for phase in amps:
            if phase not in self.load_a:
                raise ValueError(f"unknown phase {phase!r}")
        self.lie_a.update(amps)

    def freeze(self) -> None:
        """Keep every register at the value it has now, whatever happens to the load."""
        self._publish()
        self.frozen = True

    def tell_truth(self) -> None:
        self.lie_a.clear()
        self.frozen = False

    def reported_a(self, phase: str) -> float:
        if phase in self.lie_a:
            return self.lie_a[phase]
        amps = self.load_a[phase]
        if self.noise_a and abs(amps) > 0.05:
            amps += self._random.uniform(-self.noise_a, self.noise_a)
        return amps

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
        if self.frozen:
            return
        regs = self.map.registers
        v = self.image.values
        amps = {p: self.reported_a(p) for p in self.load_a}
        shown = {p: self.voltage_v * amps[p] * self.power_factor / 1000.0 for p in self.load_a}
        for key, phase in PHASES:
            for name, value in (
                (f"current_{key}", abs(amps[phase])),
                (f"voltage_{key}", self.voltage_v),
                (f"power_{key}", shown[phase]),
            ):
                if name in regs:
                    v[name] = value
        for name, value in (
            ("power", sum(shown.values())),
            ("import_energy", self.import_kwh),
            ("export_energy", self.export_kwh),
            ("frequency", self.frequency_hz),
        ):
            if name in regs:
                v[name] = value
