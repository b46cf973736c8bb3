"""One owner per Modbus TCP link: a lock, a timeout on every call, reconnects with bounded backoff.

Every charger or meter behind one host:port shares one `ModbusLink` (via `LinkPool`), so calls to one
device never overlap (many devices allow one or two masters and mix up interleaved requests). A call
that times out drops the connection: a late answer must not be taken for the next request's. While the
link is down, calls fail at once until the backoff delay has passed, so a dead device costs nothing.
Problems are logged once when they start and once when they end (`Trouble`); everything in between is
at DEBUG, so a charger that is off for a night does not flood the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException

from gateway.modbus.maps import Table
from gateway.waking import within

log = logging.getLogger(__name__)

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}

# pymodbus logs every failed connect and timeout itself; our links report each problem once instead.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class LinkError(Exception):
    """A Modbus call failed. `kind`: offline, timeout or exception (the device answered with a code)."""

    def __init__(self, kind: str, detail: str, code: int | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.code = code


class Trouble:
    """Logs a problem once when it starts and once when it clears, per key; the rest at DEBUG."""

    def __init__(self, logger: logging.Logger, subject: str) -> None:
        self._log = logger
        self._subject = subject
        self._open: dict[str, bool] = {}  # failing key → whether its start was logged here

    def fail(self, key: str, detail: str, *, reported: bool = False) -> None:
        """`reported`: the link already logged this problem (and will log its end); only track it."""
        if key in self._open or reported:
            self._log.debug("%s %s still failing: %s", self._subject, key, detail)
            self._open.setdefault(key, False)
        else:
            self._log.error("%s %s failed: %s", self._subject, key, detail)
            self._open[key] = True

    def ok(self, key: str) -> None:
        if self._open.pop(key, False):
            self._log.info("%s %s recovered", self._subject, key)

    def failing(self, key: str) -> bool:
        return key in self._open


class ModbusLink:
    """A TCP connection to one Modbus server (a device or a gateway in front of several units)."""

    def __init__(
        self,
        host: str,
        port: int = 502,
        *,
        timeout_s: float = 2.0,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._backoff_min = backoff_s
        self._backoff_max = backoff_max_s
        self._backoff = backoff_s
        self._next_try = 0.0
        self._clock = clock
        self._lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | None = None
        self.trouble = Trouble(log, f"modbus link={host}:{port}")
        self.errors = 0  # failed calls (no connection, timeouts, exception answers), for /metrics

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def online(self) -> bool:
        return self._client is not None and self._client.connected

    @property
    def connection(self) -> object:
        """The current connection (a new object after each reconnect), or None."""
        return self._client if self.online else None

    async def read(self, table: Table, address: int, count: int, unit: int) -> list[int]:
        async with self._lock:
            client = await self._connected()
            op = client.read_holding_registers if table is Table.HOLDING else client.read_input_registers
            response = await self._call(op(address, count=count, device_id=unit), f"read {table.value} {address}")
            registers: list[int] = list(response.registers)
            if len(registers) < count:
                raise LinkError("exception", f"read {table.value} {address}: {len(registers)} of {count} registers")
            return registers[:count]

    async def write(self, address: int, values: list[int], unit: int, *, single_fc6: bool = True) -> None:
        """One request: FC16 for a multi-register value (never split: Alfen and ABB require that), FC6 for
        one register unless the device only takes FC16 (`single_fc6=False`)."""
        async with self._lock:
            client = await self._connected()
            if single_fc6 and len(values) == 1:
                pending = client.write_register(address, values[0], device_id=unit)
            else:
                pending = client.write_registers(address, values, device_id=unit)
            await self._call(pending, f"write {address}")

    async def close(self) -> None:
        async with self._lock:
            self._drop()

    async def _connected(self) -> AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        now = self._clock()
        if now < self._next_try:
            raise LinkError("offline", f"{self.name} unreachable; next try in {self._next_try - now:.1f} s")
        self._drop()
        client = AsyncModbusTcpClient(
            self.host, port=self.port, timeout=self.timeout_s, retries=0, reconnect_delay=0, reconnect_delay_max=0
        )
        try:
            ok = await within(client.connect(), self.timeout_s)
        except (TimeoutError, OSError, ModbusException):
            ok = False
        if not ok:
            client.close()
            self._failed(f"cannot connect to {self.name}")
            raise LinkError("offline", f"cannot connect to {self.name}")
        self._client = client
        return client

    async def _call(self, pending: object, what: str) -> _Response:
        assert asyncio.iscoroutine(pending)
        try:
            response = await within(pending, self.timeout_s)
        except (TimeoutError, ModbusException) as exc:
            # A timeout or a connection drop: the link is no longer trustworthy (late answers).
            self._drop()
            kind = "offline" if isinstance(exc, ConnectionException) else "timeout"
            detail = f"{what}: no answer within {self.timeout_s:g} s" if kind == "timeout" else f"{what}: {exc}"
            self._failed(detail)
            raise LinkError(kind, detail) from None
        except OSError as exc:
            self._drop()
            self._failed(f"{what}: {exc}")
            raise LinkError("offline", f"{what}: {exc}") from None
        self._recovered()
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            self.errors += 1
            raise LinkError("exception", f"{what}: exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})", code)
        result: _Response = response
        return result

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _failed(self, detail: str) -> None:
        self._next_try = self._clock() + self._backoff
        self._backoff = min(self._backoff * 2, self._backoff_max)
        self.errors += 1
        self.trouble.fail("link", detail)

    def _recovered(self) -> None:
        self._backoff = self._backoff_min
        self._next_try = 0.0
        self.trouble.ok("link")


class _Response(Protocol):  # the part of a pymodbus response PDU the link uses
    registers: list[int]

    def isError(self) -> bool: ...


class LinkPool:
    """Hands out one link per host:port, so devices behind one address share its lock."""

    def __init__(self, *, backoff_s: float = 0.5, backoff_max_s: float = 30.0) -> None:
        self._links: dict[tuple[str, int], ModbusLink] = {}
        self._backoff = (backoff_s, backoff_max_s)

    def get(self, host: str, port: int, timeout_s: float) -> ModbusLink:
        key = (host, port)
        link = self._links.get(key)
        if link is None:
            link = ModbusLink(host, port, timeout_s=timeout_s, backoff_s=self._backoff[0],
                              backoff_max_s=self._backoff[1])
            self._links[key] = link
        return link

    def links(self) -> list[ModbusLink]:
        return list(self._links.values())

    async def close(self) -> None:
        for link in self._links.values():
            await link.close()
