"""A solar site for the PV tests: Modbus chargers, a SunSpec inverter and a grid meter (SDM630) that reads the
house plus what the cars draw less what the inverter puts out, all real pymodbus servers on 127.0.0.1; the
runtime on it in this process (or its config for `gateway run`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import load_config
from gateway.runtime.loop import Runtime
from gateway.sim.modbus_charger import SimCharger
from gateway.sim.modbus_meter import SimMeter
from gateway.sim.sunspec_inverter import SimInverter
from support.waiting import stopped

PHASES = ("L1", "L2", "L3")
VOLTAGE_V = 230.0
SAMPLE_S = 0.05


@dataclass
class PvSite:
    house_kw: float = 0.5  # spread over the three phases
    phases: dict[str, int] = field(default_factory=lambda: {"ev3": 3})  # charger id → its phases (1 or 3)
    chargers: dict[str, SimCharger] = field(default_factory=dict)
    meter: SimMeter = field(default_factory=lambda: SimMeter("eastron-sdm630"))
    inverter: SimInverter = field(default_factory=lambda: SimInverter(phases=3, battery=True, w_sf=0))
    grid_samples: list[float] = field(default_factory=list)  # grid kW, import positive, each sample
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for cid in self.phases:
            sim = SimCharger("generic-charger", rating_a=32.0, voltage_v=VOLTAGE_V)
            await sim.start()
            self.chargers[cid] = sim
        await self.meter.start()
        await self.inverter.start()
        self._follow_once()
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for sim in self.chargers.values():
            await sim.stop()
        await self.meter.stop()
        await self.inverter.stop()

    def ev_kw(self) -> float:
        return sum(c.drawing_a * VOLTAGE_V * c.ev_phases / 1000.0 for c in self.chargers.values())

    def grid_kw(self) -> float:
        """What the site takes from the grid now: the house and the cars less the inverter's AC output."""
        return self.house_kw + self.ev_kw() - (self.inverter.pv_kw + self.inverter.battery_kw)

    def _follow_once(self) -> None:
        amps = {p: self.house_kw * 1000.0 / VOLTAGE_V / 3 for p in PHASES}
        for c in self.chargers.values():
            for i in range(c.ev_phases):
                amps[PHASES[i]] += c.drawing_a
        inverter_a = (self.inverter.pv_kw + self.inverter.battery_kw) * 1000.0 / VOLTAGE_V / 3
        self.meter.set_load(**{p: a - inverter_a for p, a in amps.items()})
        self.grid_samples.append(self.grid_kw())

    async def _follow(self) -> None:
        while True:
            self._follow_once()
            await asyncio.sleep(SAMPLE_S)

    def config_text(self, store: Path, pv: str = "", modes: dict[str, str] | None = None) -> str:
        modes = modes or {}
        lines = ['[site]', 'wiring = "three-phase-400/230"', "service_breaker_a = 80", ""]
        for cid, sim in self.chargers.items():
            wires = "L1-L2-L3" if self.phases[cid] == 3 else "L1"
            lines += ["[[chargers]]", f'id = "{cid}"', 'protocol = "modbus"', f'phases = "{wires}"', "max_a = 32",
                      f'mode = "{modes.get(cid, "pv")}"',
                      f'modbus = {{ model = "generic-charger", host = "127.0.0.1", port = {sim.port} }}', ""]
        lines += ["[[meters]]", 'id = "grid"', "poll_s = 0.25", "stale_after_s = 1.5", "pv_kw = 30",
                  f'modbus = {{ model = "eastron-sdm630", host = "127.0.0.1", port = {self.meter.port} }}', "",
                  "[pv]", 'grid_meter = "grid"', pv, "",
                  "[[pv.inverters]]", 'id = "roof"', 'host = "127.0.0.1"', f"port = {self.inverter.port}",
                  "poll_s = 0.5", "stale_after_s = 2", "",
                  "[control]", "tick_s = 0.25", "min_on_time_s = 0", "",
                  "[status]", "port = 0", "", "[store]", f'path = "{store}"', ""]
        return "\n".join(lines)


@contextlib.asynccontextmanager
async def pv_site(**kwargs: object) -> AsyncIterator[PvSite]:
    site = PvSite(**kwargs)  # type: ignore[arg-type]
    await site.start()
    try:
        yield site
    finally:
        await site.stop()


@contextlib.asynccontextmanager
async def running(site: PvSite, tmp_path: Path, pv: str = "", modes: dict[str, str] | None = None,
                  status: bool = False) -> AsyncIterator[Runtime]:
    config = tmp_path / "site.toml"
    config.write_text(site.config_text(tmp_path / "gw.sqlite", pv, modes))
    runtime = Runtime(load_config(config), serve_status=status)
    task = asyncio.create_task(runtime.run())
    try:
        await asyncio.wait_for(runtime.started.wait(), 10)
        yield runtime
    finally:
        runtime.stop()
        await stopped(task)
