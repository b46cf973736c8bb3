"""A simulated SunSpec PV inverter over Modbus TCP (pymodbus), its registers built from pysunspec2's models.

The map at 40000 holds "SunS", the common model (1), an inverter model (101 single-phase or 103
three-phase), optionally a battery (802) and a SunSpec meter (203), and the end marker; every register
is encoded from the same model definitions the gateway decodes with, so scale factors and "not
implemented" values are the real ones. A test sets what the sun gives (`pv_kw`), what a battery
discharges (`battery_kw`, negative while it charges) and what the meter shows (`meter_kw`); the AC output
is the PV plus the battery. `mute` makes it stop answering, `fail_with` answer every request with an
exception code. `w_sf` is the power scale factor (10^w_sf W per count). `MeterBehindPv` is a grid meter
with such an inverter behind it (for the demo).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from sunspec2 import device as sunspec

from gateway.modbus.image import Muting
from gateway.sim.modbus_meter import SimMeter

BASE = 40000

class SimInverter(Muting):
    def __init__(self, *, unit: int = 1, phases: int = 3, battery: bool = False, meter: bool = False,
                 w_sf: int = 0, base: int = BASE, serial: str = "SIM-0001") -> None:
        self.unit = unit
        self.base = base
        self.inverter_model = 103 if phases == 3 else 101
        self.battery = battery
        self.meter = meter
        self.w_sf = w_sf
        self.serial = serial
        self.pv_kw = 0.0
        self.battery_kw = 0.0  # positive: discharging
        self.meter_kw = 0.0
        self.fail_with: ExcCodes | None = None
        self.requests = 0
        super().__init__()
        self._server: ModbusTcpServer | None = None
        self.port = 0
        self._length = len(self.registers())

    def set(self, *, pv_kw: float | None = None, battery_kw: float | None = None,
            meter_kw: float | None = None) -> None:
        if pv_kw is not None:
            self.pv_kw = pv_kw
        if battery_kw is not None:
            self.battery_kw = battery_kw
        if meter_kw is not None:
            self.meter_kw = meter_kw

    def _w(self, kw: float) -> int:
        return round(kw * 1000.0 / 10.0**self.w_sf)

    def models(self) -> list[dict[str, Any]]:
        """Each model's points, as pysunspec2 takes them."""
        ac_kw = self.pv_kw + self.battery_kw
        out: list[dict[str, Any]] = [
            {"ID": 1, "Mn": "Gateway Sim", "Md": f"SunSpec {self.inverter_model}", "Vr": "1.0", "SN": self.serial,
             "DA": self.unit},
            {"ID": self.inverter_model, "W": self._w(ac_kw), "W_SF": self.w_sf, "DCW": self._w(self.pv_kw),
             "DCW_SF": self.w_sf, "Hz": 5000, "Hz_SF": -2, "St": 4 if ac_kw > 0 else 2},
        ]
        if self.battery:
            state = 3 if self.battery_kw > 0 else 4 if self.battery_kw < 0 else 6
            out.append({"ID": 802, "W": self._w(abs(self.battery_kw)), "W_SF": self.w_sf, "ChaSt": state,
                        "SoC": 50, "SoC_SF": 0})
        if self.meter:
            out.append({"ID": 203, "W": self._w(self.meter_kw), "W_SF": self.w_sf})
        return out

    def registers(self) -> list[int]:
        data = bytearray(b"SunS")
        for points in self.models():
            data += sunspec.Model(model_id=points["ID"], data=points).get_mb()
        data += b"\xff\xff\x00\x00"
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]

    async def _action(self, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        self.requests += 1
        await self.hold()
        if self.fail_with is not None:
            return self.fail_with
        if function_code != 3 or set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION
        if address < self.base or address + count > self.base + self._length:
            return ExcCodes.ILLEGAL_ADDRESS
        registers[: self._length] = self.registers()
        return None

    async def start(self, port: int = 0) -> int:
        device = SimDevice(self.unit, simdata=(
            [SimData(0, count=16, values=False, datatype=DataType.BITS)],
            [SimData(0, count=16, values=False, datatype=DataType.BITS)],
            [SimData(self.base, count=self._length, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)],
        ), action=self._action)
        server = ModbusTcpServer([device], address=("127.0.0.1", port))
        await server.serve_forever(background=True)
        self._server = server
        listener = server.transport
        assert isinstance(listener, asyncio.Server)
        self.port = int(listener.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self.mute = False
            shutdown: Callable[[], Awaitable[None]] = self._server.shutdown
            await shutdown()
            self._server = None


class MeterBehindPv(SimMeter):
    """A grid meter with an inverter behind it: the load it is given, less what the inverter puts out
    (spread over the phases it is given), so PV shows as export like at a real grid connection point."""

    def __init__(self, model: str, inverter: SimInverter, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.inverter = inverter

    def set_load(self, **amps: float) -> None:
        out_a = (self.inverter.pv_kw + self.inverter.battery_kw) * 1000.0 / self.voltage_v / max(1, len(amps))
        super().set_load(**{phase: a - out_a for phase, a in amps.items()})
