"""A PV inverter read over Modbus TCP by its SunSpec models: AC power, DC (PV) power, a battery, a meter.

At the first poll (and again after the device answers a read with an exception) the SunSpec map is
discovered: the "SunS" marker at 40000, 0 or 50000 (or the configured base), then the chain of model
headers (ID, length) up to the end marker. Each poll reads the models it knows over our own `ModbusLink`
(one owner per link, a timeout on every call, bounded backoff, problems logged once) and decodes them with
the model definitions pysunspec2 ships (`sunspec2.device.Model`: point types, "not implemented" values,
scale factors); no model table is written here. pysunspec2's own Modbus client is synchronous and owns its
socket, so it is not used.

Read: the inverter's AC power (model 101/102/103, or 701), DC power (the inverter model's DCW, or the PV
ports of 714, or the modules of 160), a battery's power (802, or the storage ports of 714; positive when
it discharges) and a SunSpec meter's total power where present (201–204, the sign as the meter gives it).
A reading with values no inverter can produce (beyond `max_kw`) is refused like a silent poll: the last
good reading ages and `stale()` says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sunspec2 import device as sunspec

from gateway.clock import utc_now
from gateway.modbus.link import LinkError, ModbusLink, Trouble
from gateway.modbus.maps import Table
from gateway.surplus import PvReading

log = logging.getLogger(__name__)

MARKER = [0x5375, 0x6E53]  # "SunS"
BASES = (40000, 0, 50000)
END_ID = 0xFFFF
MAX_MODELS = 64  # a chain longer than this is a device that does not end its map
MAX_READ = 120  # registers per request (the protocol allows 125)
MIN_POLL_S = 0.5
INVERTER_MODELS = (101, 102, 103, 701)
METER_MODELS = (201, 202, 203, 204)
BATTERY_MODEL = 802
DC_MODELS = (714, 160)
WANTED = (1, *INVERTER_MODELS, *METER_MODELS, BATTERY_MODEL, *DC_MODELS)
PORT_PV, PORT_ESS = 0, 1  # 714 port types
DISCHARGING, CHARGING = 3, 4  # 802 ChaSt


@dataclass(frozen=True, slots=True)
class SunSpecSettings:
    """One inverter (or a hybrid's Modbus interface) behind host:port, unit."""

    id: str
    host: str
    port: int = 502
    unit: int = 1
    base_address: int | None = None  # None: look at 40000, 0 and 50000
    poll_s: float = 2.0
    stale_after_s: float = 15.0
    timeout_s: float = 2.0
    max_kw: float = 1000.0  # a value beyond this is not a reading


@dataclass(frozen=True, slots=True)
class ModelAt:
    """A model found in the map: its id, the address of its ID register, its length (registers after L)."""

    model_id: int
    address: int
    length: int


class SunSpecInverter:
    """The `gateway.ports.Inverter` for one SunSpec device."""

    def __init__(self, settings: SunSpecSettings, link: ModbusLink, *,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], datetime] = utc_now) -> None:
        self.settings = settings
        self.id = settings.id
        self.link = link
        self.poll_s = max(settings.poll_s, MIN_POLL_S)
        self.stale_after_s = settings.stale_after_s
        self._clock = clock
        self._wall = wall
        self.models: list[ModelAt] | None = None  # None: not discovered (yet, or again)
        self.identity: dict[str, str] = {}  # from the common model: manufacturer, model, serial, version
        self.last: PvReading | None = None
        self.last_ok_at: float | None = None
        self.polls_ok = 0
        self.polls_failed = 0
        self.trouble = Trouble(log, f"sunspec inverter={settings.id}")

    def stale(self, now: float | None = None) -> bool:
        if self.last_ok_at is None:
            return True
        return (self._clock() if now is None else now) - self.last_ok_at > self.stale_after_s

    def age_s(self) -> float | None:
        return None if self.last_ok_at is None else self._clock() - self.last_ok_at

    async def _read(self, address: int, count: int) -> list[int]:
        out: list[int] = []
        while count > 0:
            n = min(count, MAX_READ)
            out += await self.link.read(Table.HOLDING, address, n, self.settings.unit)
            address += n
            count -= n
        return out

    async def discover(self) -> list[ModelAt]:
        """The models in the device's SunSpec map; LinkError when there is no map or no answer."""
        bases = (self.settings.base_address,) if self.settings.base_address is not None else BASES
        base = None
        for candidate in bases:
            try:
                if await self._read(candidate, 2) == MARKER:
                    base = candidate
                    break
            except LinkError as exc:
                if exc.kind != "exception":
                    raise
        if base is None:
            where = ", ".join(str(b) for b in bases)
            raise LinkError("exception", f"no SunSpec map (no 'SunS' marker at {where}): is SunSpec over Modbus "
                                         f"TCP enabled on the device, and is unit {self.settings.unit} right?")
        models: list[ModelAt] = []
        address = base + 2
        for _ in range(MAX_MODELS):
            model_id, length = await self._read(address, 2)
            if model_id == END_ID or length == 0:
                break
            models.append(ModelAt(model_id, address, length))
            address += 2 + length
        else:
            raise LinkError("exception", f"SunSpec map at {base} does not end within {MAX_MODELS} models")
        common = next((m for m in models if m.model_id == 1), None)
        if common is not None:
            decoded = await self._model(common)
            self.identity = {k: str(decoded.points[p].value or "").strip("\x00 ")
                             for k, p in (("manufacturer", "Mn"), ("model", "Md"), ("serial", "SN"),
                                          ("version", "Vr"))}
        found = [m.model_id for m in models]
        if not any(m in found for m in INVERTER_MODELS):
            log.warning("sunspec inverter=%s models=%s: no inverter model (101/102/103/701); AC power unknown",
                        self.id, ",".join(map(str, found)))
        log.info("sunspec inverter=%s base=%d models=%s manufacturer=%r model=%r serial=%r", self.id, base,
                 ",".join(map(str, found)), self.identity.get("manufacturer", ""), self.identity.get("model", ""),
                 self.identity.get("serial", ""))
        return models

    async def _model(self, at: ModelAt) -> Any:
        regs = await self._read(at.address, at.length + 2)
        data = b"".join(r.to_bytes(2, "big") for r in regs)
        return sunspec.Model(model_id=at.model_id, data=data, model_len=at.length)

    async def poll(self) -> PvReading | None:
        """One poll; None when the device did not answer or answered nonsense (logged once)."""
        at = self._wall()
        try:
            if self.models is None:
                self.models = await self.discover()
            decoded = {m.model_id: await self._model(m) for m in self.models if m.model_id in WANTED[1:]}
        except LinkError as exc:
            self.polls_failed += 1
            if exc.kind == "exception":
                self.models = None  # the map may have changed (a firmware update): look again next time
            self.trouble.fail("poll", exc.detail, reported=exc.kind != "exception")
            return None
        self.trouble.ok("poll")
        reading: PvReading | None = None
        try:
            reading = _reading(at, decoded)
        except (ValueError, TypeError, ArithmeticError) as exc:
            why: str | None = f"values cannot be decoded ({exc})"
        else:
            why = _implausible(reading, self.settings.max_kw)
        if reading is None or why is not None:
            self.polls_failed += 1
            self.trouble.fail("values", why or "no values")
            return None
        self.trouble.ok("values")
        self.polls_ok += 1
        self.last = reading
        self.last_ok_at = self._clock()
        return reading

    async def readings(self) -> AsyncIterator[PvReading]:
        """The good readings, polled at a fixed rate; missed slots are skipped, not caught up."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            reading = await self.poll()
            if reading is not None:
                yield reading
            next_at += self.poll_s
            delay = next_at - loop.time()
            if delay < 0:
                next_at, delay = loop.time(), 0.0
            await asyncio.sleep(delay)


def _kw(model: Any, point: str) -> float | None:
    p = model.points.get(point) if model is not None else None
    value = p.cvalue if p is not None else None
    return None if value is None else float(value) / 1000.0


def _reading(at: datetime, models: dict[int, Any]) -> PvReading:
    inverter = next((models[m] for m in INVERTER_MODELS if m in models), None)
    ac_kw = _kw(inverter, "W")
    dc_kw = _kw(inverter, "DCW") if inverter is not None and inverter.model_id != 701 else None
    battery_kw: float | None = None
    ports = models.get(714)
    if ports is not None:
        pv = [g for g in ports.groups.get("Prt", []) if g.PrtTyp.value == PORT_PV]
        ess = [g for g in ports.groups.get("Prt", []) if g.PrtTyp.value == PORT_ESS]
        pv_kw = [k for k in (_kw(g, "DCW") for g in pv) if k is not None]
        ess_kw = [k for k in (_kw(g, "DCW") for g in ess) if k is not None]
        if pv_kw and dc_kw is None:
            dc_kw = sum(pv_kw)
        if ess_kw:
            battery_kw = sum(ess_kw)  # injected (discharge) is positive
    mppt = models.get(160)
    if mppt is not None and dc_kw is None:
        modules = [k for k in (_kw(g, "DCW") for g in mppt.groups.get("module", [])) if k is not None]
        dc_kw = sum(modules) if modules else None
    battery = models.get(BATTERY_MODEL)
    if battery is not None:
        power = _kw(battery, "W")
        state = battery.points["ChaSt"].value
        if power is not None:
            # The sign of 802's W is not fixed by the model; its charge status says which way it flows.
            if state == CHARGING:
                power = -abs(power)
            elif state == DISCHARGING:
                power = abs(power)
            battery_kw = power
    meter = next((models[m] for m in METER_MODELS if m in models), None)
    return PvReading(at=at, ac_kw=ac_kw, dc_kw=dc_kw, battery_kw=battery_kw, meter_kw=_kw(meter, "W"))


def _implausible(reading: PvReading, max_kw: float) -> str | None:
    for name in ("ac_kw", "dc_kw", "battery_kw", "meter_kw"):
        value = getattr(reading, name)
        if value is not None and not abs(value) <= max_kw:
            return f"{name}={value:g} is beyond {max_kw:g} kW (a wrong scale factor?)"
    if reading.ac_kw is None and reading.dc_kw is None and reading.battery_kw is None and reading.meter_kw is None:
        return "no power point implemented in any model read"
    return None
