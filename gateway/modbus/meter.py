"""The Modbus meter poller: a site or circuit meter read by its register map at a fixed rate (≥ 250 ms).

Each good poll becomes one `Measurement` stamped with the time it was read. A meter that does not answer,
answers with an exception, or returns values no meter can measure (the sanity check that catches a map
with the wrong word order, a lying meter's NaN or 1e9 A) yields no measurement, so its last reading ages;
`stale()` says when it is older than `stale_after_s` (by the monotonic clock: a step of the wall clock
makes no reading fresh or stale), and the runtime treats a stale meter pessimistically. `polls()` yields
every poll, good or refused, with every number read (so a frozen meter can be told from a steady one)
and why values were refused, for `gateway.runtime.meter_check`. Phase currents carry the sign of the phase
power, so export (PV) shows up as negative amps as well as negative kilowatts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gateway.clock import utc_now
from gateway.domain import Measurement
from gateway.modbus.codec import Value, decode_block, implausible, read_plan
from gateway.modbus.link import LinkError, LinkPool, ModbusLink, Trouble
from gateway.modbus.maps import RegisterMap, load_map
from gateway.modbus.settings import MeterSettings

log = logging.getLogger(__name__)

MIN_POLL_S = 0.25
PHASES = (("l1", "L1"), ("l2", "L2"), ("l3", "L3"))


@dataclass(frozen=True, slots=True)
class MeterPoll:
    """One poll: its measurement when the values were good, else why they were refused (both None: no
    answer); `values` every number read, in register order, and `at` the monotonic time of the poll."""

    at: float
    measurement: Measurement | None = None
    rejected: str | None = None
    values: tuple[float, ...] = ()


class ModbusMeter:
    """`gateway.ports.Meter` for one Modbus meter."""

    def __init__(
        self,
        meter_id: str,
        m: RegisterMap,
        link: ModbusLink,
        *,
        unit: int | None = None,
        poll_s: float = 1.0,
        stale_after_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utc_now,
    ) -> None:
        if m.kind != "meter":
            raise ValueError(f"meter {meter_id}: map {m.name!r} is a {m.kind} map, not a meter map")
        self.id = meter_id
        self.map = m
        self.link = link
        self.unit = m.unit if unit is None else unit
        self.poll_s = max(poll_s, MIN_POLL_S)
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._wall = wall
        self._plan = read_plan(m)
        self.last: Measurement | None = None
        self.last_ok_at: float | None = None  # monotonic time of the last good poll
        self.polls_ok = 0
        self.polls_failed = 0
        self.trouble = Trouble(log, f"modbus meter={meter_id}")
        self._recent: deque[tuple[float, Mapping[str, float]]] = deque()  # (clock, current_a) of good polls
        self.rejected: str | None = None  # why the last poll's values were refused (None: it was good)
        self.values: tuple[float, ...] = ()  # every number the last answered poll read
        self.report_values = True  # False: refused values are reported by the caller (the meter check)

    @classmethod
    def from_config(cls, section: MeterSettings, pool: LinkPool, base: Path | None = None) -> ModbusMeter:
        ep = section.modbus
        return cls(
            section.id, load_map(ep.model, base), pool.get(ep.host, ep.port, ep.timeout_s), unit=ep.unit,
            poll_s=section.poll_s, stale_after_s=section.stale_after_s,
        )

    def stale(self, now: float | None = None) -> bool:
        """True when no good reading arrived within `stale_after_s` (or none ever did)."""
        if self.last_ok_at is None:
            return True
        return (self._clock() if now is None else now) - self.last_ok_at > self.stale_after_s

    def worst_recent_a(self, window_s: float | None = None) -> dict[str, float]:
        """The highest current per phase over the last `window_s` (default `stale_after_s`) of good polls:
        what a stale reading is replaced by, so a meter going quiet during a peak is not read as calm."""
        now = self._clock()
        window = self.stale_after_s if window_s is None else window_s
        worst: dict[str, float] = {}
        for at, current in self._recent:
            if now - at <= window:
                for phase, amps in current.items():
                    worst[phase] = max(amps, worst.get(phase, amps))
        return worst

    def age_s(self) -> float | None:
        return None if self.last_ok_at is None else self._clock() - self.last_ok_at

    async def poll_once(self) -> Measurement | None:
        return (await self.poll()).measurement

    async def poll(self) -> MeterPoll:
        """One poll, whatever came of it."""
        at = self._wall()
        values: dict[str, Value] = {}
        try:
            for block in self._plan:
                regs = await self.link.read(block.table, block.address, block.count, self.unit)
                values.update(decode_block(self.map, block, regs))
        except LinkError as exc:
            self.polls_failed += 1
            self.trouble.fail("poll", exc.detail, reported=exc.kind != "exception")
            return MeterPoll(self._clock())
        self.trouble.ok("poll")
        self.values = tuple(float(v) for v in values.values() if not isinstance(v, str))
        for name, value in values.items():
            if why := implausible(self.map, name, value):
                self.polls_failed += 1
                self.rejected = why
                self.trouble.fail("values", f"{why} (wrong word order or scale in map {self.map.name}?)",
                                  reported=not self.report_values)
                return MeterPoll(self._clock(), rejected=why, values=self.values)
        self.rejected = None
        self.trouble.ok("values")
        measurement = _measurement(self.id, at, values)
        self.polls_ok += 1
        self.last = measurement
        self.last_ok_at = self._clock()
        self._recent.append((self.last_ok_at, measurement.current_a))
        horizon = max(self.stale_after_s, 60.0)
        while self._recent and self.last_ok_at - self._recent[0][0] > horizon:
            self._recent.popleft()
        return MeterPoll(self.last_ok_at, measurement, values=self.values)

    async def measurements(self) -> AsyncIterator[Measurement]:
        """The good readings, polled at a fixed rate."""
        async for result in self.polls():
            if result.measurement is not None:
                yield result.measurement

    async def polls(self) -> AsyncIterator[MeterPoll]:
        """Poll at a fixed rate; missed slots are skipped, not caught up in a burst."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            yield await self.poll()
            next_at += self.poll_s
            delay = next_at - loop.time()
            if delay < 0:
                next_at = loop.time()
                delay = 0.0
            await asyncio.sleep(delay)


def _f(values: dict[str, Value], name: str) -> float | None:
    v = values.get(name)
    return None if v is None or isinstance(v, str) else float(v)


def _measurement(meter_id: str, at: datetime, values: dict[str, Value]) -> Measurement:
    current: dict[str, float] = {}
    voltage: dict[str, float] = {}
    power_phase: dict[str, float] = {}
    for key, phase in PHASES:
        p = _f(values, f"power_{key}")
        if p is not None:
            power_phase[phase] = p
        a = _f(values, f"current_{key}")
        if a is not None:
            # meters report current as a magnitude; the phase power says which way it flows
            current[phase] = -abs(a) if p is not None and p < 0 else a
        v = _f(values, f"voltage_{key}")
        if v is not None:
            voltage[phase] = v
    total = _f(values, "power")
    if total is None and power_phase:
        total = sum(power_phase.values())
    return Measurement(
        meter_id=meter_id,
        at=at,
        power_kw=total,
        current_a=current,
        voltage_v=voltage,
        power_phase_kw=power_phase,
        import_kwh=_f(values, "import_energy"),
        export_kwh=_f(values, "export_energy"),
    )
