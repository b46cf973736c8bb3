"""A register map served over Modbus TCP by pymodbus: the datastore behind the simulators.

`RegisterImage` keeps the value of every register in a map (in the gateway's units) and serves them
through pymodbus's `SimDevice` action hook: before a read it asks its owner for fresh values, on a write
it decodes the registers and hands each value to its owner, who may refuse it with a Modbus exception
code. Like the device, it refuses a read of more than the map's `max_read` registers. Knobs let a test
make the device misbehave: stop answering (`mute`) or answer every request with
an exception code (`fail_with`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.modbus.codec import CodecError, Value, decode, encode
from gateway.modbus.maps import RegisterMap, RegType, Table

log = logging.getLogger(__name__)

WriteHook = Callable[[str, Value], ExcCodes | None]
_TABLE_OF = {3: Table.HOLDING, 6: Table.HOLDING, 16: Table.HOLDING, 23: Table.HOLDING, 4: Table.INPUT}
MUTE_BOUND_S = 60.0  # a muted device still answers eventually, so no task outlives a test by much


class Muting:
    """A simulated device's silence: while `mute`, each request waits (at most `MUTE_BOUND_S`) before it
    is answered, as a device that stopped answering; `hold()` is that wait."""

    def __init__(self) -> None:
        self._unmuted = asyncio.Event()
        self._unmuted.set()

    @property
    def mute(self) -> bool:
        return not self._unmuted.is_set()

    @mute.setter
    def mute(self, value: bool) -> None:
        if value:
            self._unmuted.clear()
        else:
            self._unmuted.set()

    async def hold(self) -> None:
        if self.mute:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(MUTE_BOUND_S):
                    await self._unmuted.wait()


class RegisterImage(Muting):
    def __init__(self, m: RegisterMap, unit: int | None = None) -> None:
        self.map = m
        self.unit = m.unit if unit is None else unit
        self.values: dict[str, Value] = {n: ("" if r.type is RegType.STRING else 0.0) for n, r in m.registers.items()}
        self.before_read: Callable[[], None] = lambda: None
        self.on_write: WriteHook = lambda name, value: None
        self.fail_with: ExcCodes | None = None
        super().__init__()
        self.requests = 0
        self.write_requests: list[tuple[int, int]] = []  # (function code, address) of each write

    def device(self) -> SimDevice:
        blocks: dict[Table, list[SimData]] = {}
        for table in Table:
            regs = [r for r in self.map.registers.values() if r.table is table]
            if not regs:
                blocks[table] = [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)]
                continue
            lo = min(r.address for r in regs)
            hi = max(r.address + r.width for r in regs)
            # one span per table, so reads that bridge unused registers (max_gap) are served like devices do
            blocks[table] = [SimData(lo, count=hi - lo, values=0, datatype=DataType.REGISTERS)]
        bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
        return SimDevice(
            self.unit,
            simdata=(bits, list(bits), blocks[Table.HOLDING], blocks[Table.INPUT]),
            action=self._action,
        )

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.requests += 1
        await self.hold()
        if self.fail_with is not None:
            return self.fail_with
        table = _TABLE_OF.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if set_values is None:
            if count > self.map.max_read:
                return ExcCodes.ILLEGAL_VALUE  # as devices that cap a read below the protocol's 125 answer
            self.before_read()
            self._fill(table, start_address, address, count, registers)
            return None
        self.write_requests.append((function_code, address))
        return self._write(address, [int(v) for v in set_values])

    def _fill(self, table: Table, start: int, address: int, count: int, registers: list[int]) -> None:
        for name, r in self.map.registers.items():
            if r.table is not table or r.address + r.width <= address or r.address >= address + count:
                continue
            value = self.values[name]
            if r.type is RegType.STRING:
                regs = _string_registers(str(value), r.width)
            else:
                try:
                    regs = encode(self.map, r, float(value))
                except CodecError:
                    regs = [0xFFFF] * r.width
            registers[r.address - start : r.address - start + r.width] = regs

    def _write(self, address: int, values: list[int]) -> ExcCodes | None:
        end = address + len(values)
        hit = False
        for name, r in self.map.registers.items():
            if r.table is not Table.HOLDING or r.address + r.width <= address or r.address >= end:
                continue
            if r.address < address or r.address + r.width > end or not r.writable:
                return ExcCodes.ILLEGAL_ADDRESS  # a read-only register, or half of a multi-register value
            value = decode(self.map, r, values[r.address - address : r.address - address + r.width])
            refused = self.on_write(name, value)
            if refused is not None:
                return refused
            self.values[name] = value
            hit = True
        return None if hit else ExcCodes.ILLEGAL_ADDRESS


def _string_registers(text: str, width: int) -> list[int]:
    data = text.encode("ascii", "replace")[: 2 * width].ljust(2 * width, b"\x00")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, 2 * width, 2)]


async def _no_such_unit(
    function_code: int, start_address: int, address: int, count: int, registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    return ExcCodes.GATEWAY_NO_RESPONSE


class ImageServer:
    """A pymodbus TCP server for one or more images (units) on 127.0.0.1; the OS picks the port unless given."""

    def __init__(self, images: RegisterImage | list[RegisterImage], host: str = "127.0.0.1", port: int = 0) -> None:
        self.images = images if isinstance(images, list) else [images]
        units = [i.unit for i in self.images]
        if len(set(units)) != len(units):
            raise ValueError(f"two images with one unit id: {units}")
        self.host = host
        self.port = port
        self._server: ModbusTcpServer | None = None

    async def start(self) -> int:
        devices = [image.device() for image in self.images]
        if all(image.unit != 0 for image in self.images):
            # any other unit id gets what a TCP gateway answers for a device that is not on its bus
            regs = [r for image in self.images for r in image.map.registers.values()]
            lo, hi = min(r.address for r in regs), max(r.address + r.width for r in regs)
            devices.append(SimDevice(0, simdata=[SimData(lo, count=hi - lo, values=0, datatype=DataType.REGISTERS)],
                                     action=_no_such_unit))
        server = ModbusTcpServer(devices, address=(self.host, self.port))
        await server.serve_forever(background=True)
        self._server = server
        listener = server.transport
        assert isinstance(listener, asyncio.Server)
        self.port = int(listener.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            for image in self.images:
                image.mute = False  # let a parked request finish so nothing is left pending
            shutdown: Callable[[], Awaitable[None]] = self._server.shutdown
            await shutdown()
            self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None
