"""The Modbus charger driver: pushes limits to chargers by their register maps, streams what they report.

Per charger: the failsafe current and timeout are programmed whenever a connection is (re)made, a limit
is written only when it changes or when the charger's failsafe timeout is half gone (the refresh keeps the
charger from falling back while the gateway is alive, and lets it fall back by itself when the gateway
is not), and every write is read back (the setpoint register if readable, else the applied limit) so a
charger that disagrees is reported as not accepting the limit. The refresh rides on the readings loop:
if the runtime stops consuming `readings()`, the chargers fall back on their own, which is the point.
`ModbusChargers` implements `gateway.ports.EvseDriver` over any number of chargers sharing links.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from gateway.clock import utc_now
from gateway.domain import J1772_MIN_A, ChargerReading, ChargerStatus, LimitAck
from gateway.modbus.codec import CodecError, Value, decode_block, encode, implausible, read_plan
from gateway.modbus.link import LinkError, LinkPool, ModbusLink, Trouble
from gateway.modbus.maps import Register, RegisterMap, RegType, Table, load_map
from gateway.modbus.settings import ModbusChargerSettings
from gateway.ports import FailsafeReport, Nameplate

RAISE_WAIT_S = 5.0  # a failsafe current is raised no sooner than this (or a refresh period) after its last change
log = logging.getLogger(__name__)

Clock = Callable[[], float]
Wall = Callable[[], datetime]
PHASE_OF = {"current_l1": "L1", "current_l2": "L2", "current_l3": "L3"}


class ModbusCharger:
    """One charger (one socket) behind a Modbus link."""

    def __init__(
        self,
        charger_id: str,
        m: RegisterMap,
        link: ModbusLink,
        *,
        unit: int | None = None,
        max_a: float = 32.0,
        min_a: float = J1772_MIN_A,
        fallback_a: float = J1772_MIN_A,
        failsafe_timeout_s: float | None = None,
        clock: Clock = time.monotonic,
        wall: Wall = utc_now,
    ) -> None:
        if m.kind != "charger":
            raise ValueError(f"charger {charger_id}: map {m.name!r} is a {m.kind} map, not a charger map")
        self.id = charger_id
        self.map = m
        self.link = link
        self.unit = m.unit if unit is None else unit
        self.max_a = max_a
        self.min_a = max(min_a, J1772_MIN_A)
        self.fallback_a = fallback_a
        # what its failsafe current should hold: the fallback, lower beside a limit where the room is not
        # there for it (the runtime's `hold_fallbacks`)
        self.base_wanted = fallback_a
        asked = timeout = failsafe_timeout_s or m.failsafe_timeout_s
        fs_timeout = m.reg("failsafe_timeout")
        if timeout is not None and fs_timeout is not None:
            # what the register can hold, rounded down (falling back sooner is the safe side); never 0,
            # which many chargers read as "failsafe off"
            timeout = _floor_to(fs_timeout, timeout)
            if timeout <= 0:
                raise ValueError(f"charger {charger_id}: failsafe timeout {asked:g} s is below what "
                                 f"registers.failsafe_timeout of map {m.name} can hold")
        self.failsafe_timeout_s = timeout
        refresh = m.refresh_every_s
        if failsafe_timeout_s is not None or (timeout and refresh and refresh > timeout / 2):
            refresh = timeout / 2 if timeout else None
        self.refresh_s = refresh
        self._clock = clock
        self._wall = wall
        self._target: float | None = None  # the last limit the runtime asked for
        self._last: tuple[bool, str] = (False, "never written")  # how the charger took the last write
        self._written_at: float | None = None  # when the setpoint last reached the charger
        self._programmed_client: object = None  # the connection the failsafe was programmed on
        self._programmed_a = fallback_a  # the failsafe current programmed on it
        self._programmed_at = -math.inf  # when (our monotonic clock)
        self._lock = asyncio.Lock()  # one push or refresh at a time per charger
        self.trouble = Trouble(log, f"modbus charger={charger_id}")
        self._plan = read_plan(m)
        self._readback = "setpoint" if m.registers["setpoint"].readable else (
            "applied_limit" if "applied_limit" in m.registers else None)

    # ------------------------------------------------------------------ limits

    def wire_amps(self, amps: float) -> float:
        """What goes to the register: 0 (pause) below the charger's minimum, at most its maximum, rounded
        down to what the register can hold (10.7 A to a whole-amp register is 10 A, never 11 A)."""
        if amps < self.min_a:
            return 0.0
        return max(self.min_a, _floor_to(self.map.registers["setpoint"], min(amps, self.max_a)))

    def refresh_due(self) -> bool:
        if self._target is None or self.refresh_s is None:
            return False
        return self._written_at is None or self._clock() - self._written_at >= self.refresh_s

    async def apply(self, amps: float) -> LimitAck:
        """Write a limit if it changed (or is due for a refresh), read it back, say whether it holds."""
        sent_at = self._wall()
        start = self._clock()
        wire = self.wire_amps(amps)
        async with self._lock:
            if wire == self._target and not self.refresh_due() and self._written_at is not None:
                # not written again, but a charger that disagreed last time still disagrees
                ok, detail = self._last
                return LimitAck(self.id, amps, sent_at, ok, 0.0, "unchanged" if ok else f"unchanged; {detail}")
            self._target = wire
            ok, detail = await self._push(wire)
        return LimitAck(self.id, amps, sent_at, ok, self._clock() - start, detail)

    async def refresh(self) -> None:
        """Rewrite the setpoint (and the watchdog) before the charger's failsafe timeout runs out."""
        async with self._lock:
            if self._target is not None and self.refresh_due():
                await self._push(self._target)

    async def _push(self, wire: float) -> tuple[bool, str]:
        self._last = await self._push_once(wire)
        return self._last

    async def _push_once(self, wire: float) -> tuple[bool, str]:
        m = self.map
        try:
            failsafe_ok = await self._ensure_failsafe()
            setpoint = m.registers["setpoint"]
            enable = m.reg("enable")
            # A charger with an enable register pauses by it (its setpoint register may refuse 0); the
            # setpoint still goes out, at the minimum, because writing it is what resets its failsafe timer.
            paused_by_enable = enable is not None and wire == 0
            amps = self.min_a if paused_by_enable else wire
            await self._write(setpoint.address, encode(m, setpoint, amps))
            if enable is not None:
                await self._write(enable.address, encode(m, enable, 0.0 if paused_by_enable else 1.0))
            self._written_at = self._clock()
            watchdog = m.reg("watchdog")
            if watchdog is not None and watchdog.write_value is not None:
                await self._write(watchdog.address, [watchdog.write_value] + [0] * (watchdog.width - 1))
            fs_timeout = m.reg("failsafe_timeout")
            if m.refresh_failsafe_timeout and fs_timeout is not None and self.failsafe_timeout_s is not None:
                await self._write(fs_timeout.address, encode(m, fs_timeout, self.failsafe_timeout_s))
            back = None if paused_by_enable else await self._read_back()
        except LinkError as exc:
            self._written_at = None
            self.trouble.fail("write", exc.detail, reported=exc.kind != "exception")
            return False, exc.detail
        except CodecError as exc:
            self.trouble.fail("write", str(exc))
            return False, str(exc)
        self.trouble.ok("write")
        note = "" if failsafe_ok else "; failsafe not programmed"
        if back is None:
            return True, ("paused (disabled)" if paused_by_enable else "written; no register to read it back") + note
        tolerance = max(0.1, abs(m.registers[self._readback or "setpoint"].scale))
        if abs(back - wire) > tolerance:
            detail = f"charger reports {back:g} A after {wire:g} A was written"
            self.trouble.fail("read-back", detail)
            return False, detail
        self.trouble.ok("read-back")
        return True, f"written {wire:g} A{note}"

    async def _write(self, address: int, registers: list[int]) -> None:
        await self.link.write(address, registers, self.unit, single_fc6=self.map.single_write == "fc6")

    async def _read_back(self) -> float | None:
        if self._readback is None:
            return None
        r = self.map.registers[self._readback]
        regs = await self.link.read(r.table, r.address, r.width, self.unit)
        values = decode_block(self.map, read_plan(self.map, [self._readback])[0], regs)
        value = values[self._readback]
        return float(value) if not isinstance(value, str) else None

    async def _ensure_failsafe(self) -> bool:
        """Program the failsafe if this connection has not had it; False (logged once) if the charger refuses.

        A refusal does not hold back the limit: the charger obeying the site now matters more than its
        fallback later, and the one error line says the fallback is missing. Timeouts propagate."""
        try:
            await self._program_failsafe()
        except CodecError as exc:
            self.trouble.fail("failsafe", f"failsafe not programmed: {exc}")
            return False
        except LinkError as exc:
            if exc.kind != "exception":
                raise
            self.trouble.fail("failsafe", exc.detail)
            return False
        self.trouble.ok("failsafe")
        return True

    async def _program_failsafe(self) -> None:
        """Once per connection: a charger may have restarted with its defaults since the last one."""
        connection = self.link.connection
        if connection is not None and connection is self._programmed_client:
            return
        m = self.map
        for name, value in (("failsafe_current", self.base_wanted), ("failsafe_timeout", self.failsafe_timeout_s)):
            r = m.reg(name)
            if r is None or not r.writable or value is None:
                continue
            if name == "failsafe_current":
                value = _floor_to(r, value)  # a fallback never above the configured one
            try:
                await self._write(r.address, encode(m, r, value))
            except LinkError as exc:
                if exc.kind != "exception":
                    raise
                # the register the map names is refused: say which, so the map (or firmware) can be fixed
                where = f"{r.table.value} {r.address} (0x{r.address:04X})"
                raise LinkError(exc.kind, f"programming {name} = {value:g} into {where}: {exc.detail}",
                                exc.code) from None
        self._programmed_client = self.link.connection
        self._programmed_a, self._programmed_at = self.base_wanted, self._clock()

    def base_a(self) -> float:
        """What it falls back to by itself when its failsafe timeout runs out: the failsafe current it was
        told, or (a map without the register) its configured fallback, set with its own tool."""
        r = self.map.reg("failsafe_current")
        if r is None or not r.writable or self._programmed_client is None:
            return self.fallback_a
        return self._programmed_a

    async def hold_fallback(self, amps: float) -> bool:
        """Tell the charger the failsafe current it should fall back to (at most its configured fallback); False
        when a lower one did not reach it (it may still fall back to more). A map without the register, or a
        charger refusing the value (said once), keeps what it has: nothing to wait for."""
        r = self.map.reg("failsafe_current")
        if r is None or not r.writable:
            return True
        wanted = _floor_to(r, min(self.fallback_a, max(0.0, amps)))
        self.base_wanted = wanted
        async with self._lock:
            if self._programmed_client is None or self._programmed_client is not self.link.connection:
                # not programmed on this connection yet: now, at the wanted value (and its timeout)
                try:
                    await self._ensure_failsafe()  # a refusal is said once there: it keeps its own
                except LinkError:
                    return wanted >= self.base_a()
                return True
            if wanted == self._programmed_a:
                return True
            wait = min(self.refresh_s or RAISE_WAIT_S, RAISE_WAIT_S)
            if wanted > self._programmed_a and self._clock() - self._programmed_at < wait:
                return True  # a raise waits: one following every move of the room up and down would be churn
            try:
                await self._write(r.address, encode(self.map, r, wanted))
            except LinkError as exc:
                self.trouble.fail("failsafe", f"failsafe current {wanted:g} A not programmed: {exc.detail}",
                                  reported=exc.kind != "exception")
                return exc.kind == "exception" or wanted >= self._programmed_a
            except CodecError as exc:
                self.trouble.fail("failsafe", f"failsafe current {wanted:g} A not programmed: {exc}")
                return True
            self.trouble.ok("failsafe")
            self._programmed_a, self._programmed_at = wanted, self._clock()
        return True

    # ------------------------------------------------------------------ readings

    async def read(self) -> ChargerReading:
        """Everything the map can read, as one reading; OFFLINE when the charger does not answer."""
        at = self._wall()
        values: dict[str, Value] = {}
        try:
            async with self._lock:
                await self._ensure_failsafe()
            for block in self._plan:
                regs = await self.link.read(block.table, block.address, block.count, self.unit)
                values.update(decode_block(self.map, block, regs))
        except LinkError as exc:
            self.trouble.fail("read", exc.detail, reported=exc.kind != "exception")
            status = ChargerStatus.FAULTED if exc.kind == "exception" else ChargerStatus.OFFLINE
            return ChargerReading(self.id, at, status)
        self.trouble.ok("read")
        for name, value in values.items():
            if name != "status" and (why := implausible(self.map, name, value)):
                self.trouble.fail("values", f"{why} (wrong word order or scale in map {self.map.name}?)")
                return ChargerReading(self.id, at, ChargerStatus.UNAVAILABLE)
        self.trouble.ok("values")
        return ChargerReading(
            charger_id=self.id,
            at=at,
            status=self._status(values),
            current_a={PHASE_OF[n]: float(v) for n, v in values.items() if n in PHASE_OF},
            power_kw=_num(values.get("power")),
            energy_kwh=_num(values.get("energy")),
            applied_limit_a=_max(_num(values.get("applied_limit")), self.base_a()),
        )

    def _status(self, values: dict[str, Value]) -> ChargerStatus:
        raw = values.get("status")
        if raw is None:
            drawing = any(float(v) > 1.0 for n, v in values.items() if n in PHASE_OF)
            return ChargerStatus.CHARGING if drawing else ChargerStatus.PREPARING
        key = raw if isinstance(raw, str) else f"{raw:g}"
        status = self.map.status.get(key)
        if status is None:
            self.trouble.fail("status", f"state {key!r} is not in map {self.map.name}'s [status] table")
            return ChargerStatus.UNAVAILABLE
        self.trouble.ok("status")
        return status


def _max(applied: float | None, base: float) -> float | None:
    """What it applies now, or its failsafe current when that is more (its timeout may run out at any
    instant); unknown stays unknown (counted at its maximum)."""
    return None if applied is None else max(applied, base)


def _floor_to(r: Register, value: float) -> float:
    """`value` rounded down to a step of an integer register (floats hold it as it is)."""
    if r.type in (RegType.FLOAT32, RegType.FLOAT64):
        return value
    step = abs(r.scale)
    return math.floor(value / step + 1e-9) * step


def _num(value: Value | None) -> float | None:
    return None if value is None or isinstance(value, str) else float(value)


class ModbusChargers:
    """`EvseDriver` for a set of Modbus chargers: concurrent pushes, one polling loop for readings."""

    def __init__(self, chargers: Sequence[ModbusCharger], poll_s: float = 1.0) -> None:
        self.chargers = {c.id: c for c in chargers}
        refresh = [c.refresh_s for c in chargers if c.refresh_s]
        # poll at least twice per refresh period, so a refresh is never late by more than half of it
        self.poll_s = min([poll_s, *(r / 2 for r in refresh)])

    @classmethod
    def from_config(
        cls, sections: Sequence[ModbusChargerSettings], pool: LinkPool, base: Path | None = None, poll_s: float = 1.0
    ) -> ModbusChargers:
        chargers = []
        for s in sections:
            if s.protocol != "modbus" or s.modbus is None:
                continue
            ep = s.modbus
            chargers.append(ModbusCharger(
                s.id, load_map(ep.model, base), pool.get(ep.host, ep.port, ep.timeout_s), unit=ep.unit,
                max_a=s.max_a, min_a=s.min_a, fallback_a=s.fallback_a,
            ))
        return cls(chargers, poll_s)

    async def apply_limits(self, limits: dict[str, float], reason: str) -> list[LimitAck]:
        known = {cid: a for cid, a in limits.items() if cid in self.chargers}
        acks = list(await asyncio.gather(*(self.chargers[cid].apply(a) for cid, a in known.items())))
        now = datetime.now(UTC)
        for cid in limits.keys() - known.keys():
            acks.append(LimitAck(cid, limits[cid], now, False, 0.0, "not a Modbus charger of this driver"))
        for ack in acks:
            if ack.detail != "unchanged":
                log.info("modbus limit charger=%s amps=%g accepted=%s rtt_ms=%.0f reason=%r detail=%r",
                         ack.charger_id, ack.amps, ack.accepted, ack.round_trip_s * 1000, reason, ack.detail)
        return acks

    async def hold_fallbacks(self, wanted: Mapping[str, float], keep: Iterable[str] = ()) -> list[str]:
        """What each charger named should fall back to (its failsafe current, never above its configured
        fallback; `keep`: left as they are), written now; the chargers a lowering did not reach."""
        kept = set(keep)
        named = [(c, wanted[cid]) for cid, c in self.chargers.items() if cid in wanted and cid not in kept]
        done = await asyncio.gather(*(c.hold_fallback(a) for c, a in named))
        return [c.id for (c, _), ok in zip(named, done, strict=True) if not ok]

    async def poll_once(self) -> list[ChargerReading]:
        async def one(c: ModbusCharger) -> ChargerReading:
            await c.refresh()
            return await c.read()

        return list(await asyncio.gather(*(one(c) for c in self.chargers.values())))

    async def readings(self) -> AsyncIterator[ChargerReading]:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            for reading in await self.poll_once():
                yield reading
            next_at += self.poll_s
            delay = next_at - loop.time()
            if delay < 0:  # fell behind: skip missed slots rather than burst
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(delay)

    async def close(self) -> None:
        for link in {id(c.link): c.link for c in self.chargers.values()}.values():
            await link.close()

    # ------------------------------------------------------------------ commissioning (`ports.Commissions`)

    def ready(self, charger_id: str) -> bool | None:
        return None  # a Modbus charger is there when it answers: its readings say so

    def own_sample(self, charger_id: str) -> tuple[object, dict[str, float]] | None:
        return None  # its own measurement is its reading

    def own_status(self, charger_id: str) -> str | None:
        return None

    def nameplate(self, charger_id: str) -> Nameplate | None:
        """The register map's vendor and product (a Modbus charger does not say what it is)."""
        charger = self.chargers.get(charger_id)
        if charger is None:
            return None
        m = charger.map
        return Nameplate(m.vendor, m.product, None, None, source=f"register map {m.name}")

    async def failsafe_report(self, charger_id: str, fallback_a: float) -> FailsafeReport:
        """The fail-safe current and timeout read back from the charger, against the configured ones."""
        ch = self.chargers[charger_id]
        m = ch.map
        rows: list[tuple[str, str]] = [("fail-safe current (config)", f"{fallback_a:g} A")]
        problems: list[str] = []
        back: dict[str, float] = {}
        for name in ("failsafe_current", "failsafe_timeout"):
            reg = m.reg(name)
            if reg is None:
                continue
            if not reg.readable:
                rows.append((f"{name} register", "written at connect (cannot be read back)"))
                continue
            try:
                regs = await ch.link.read(reg.table, reg.address, reg.width, ch.unit)
                value = decode_block(m, read_plan(m, [name])[0], regs)[name]
            except (LinkError, CodecError) as exc:
                problems.append(f"cannot read {name} back: {exc}")
                continue
            if isinstance(value, str):
                problems.append(f"{name} reads {value!r}, not a number")
                continue
            back[name] = float(value)
            unit = "A" if name == "failsafe_current" else "s"
            rows.append((f"{name} register", f"{float(value):g} {unit} (read back)"))
        watchdog = m.reg("watchdog")
        refresh = f", refreshed every {ch.refresh_s:g} s" if ch.refresh_s else ""
        rows.append(("fail-safe timeout", f"{ch.failsafe_timeout_s:g} s{refresh}" if ch.failsafe_timeout_s
                     else "none known"))
        rows.append(("watchdog register", "written with every setpoint" if watchdog is not None else "none"))
        tolerance = 0.1
        if m.reg("failsafe_current") is None:
            problems.append(f"map {m.name} has no fail-safe current register: what the charger does without the "
                            "gateway is its own setting; check it by hand")
        elif "failsafe_current" in back and abs(back["failsafe_current"] - fallback_a) > tolerance:
            problems.append(f"the charger's fail-safe current reads {back['failsafe_current']:g} A, not the "
                            f"configured {fallback_a:g} A")
        if ch.failsafe_timeout_s and "failsafe_timeout" in back and abs(back["failsafe_timeout"]
                                                                        - ch.failsafe_timeout_s) > tolerance:
            problems.append(f"the charger's fail-safe timeout reads {back['failsafe_timeout']:g} s, not "
                            f"{ch.failsafe_timeout_s:g} s")
        if problems:
            return FailsafeReport(tuple(rows), False, "; ".join(problems))
        timeout = f" {ch.failsafe_timeout_s:g} s" if ch.failsafe_timeout_s else ""
        return FailsafeReport(tuple(rows), True, f"falls back to {fallback_a:g} A{timeout} after the gateway's "
                              "last write")


__all__ = ["ModbusCharger", "ModbusChargers", "Table"]
