"""A site for the meter and clock fault tests: five simulated Modbus chargers and a grid meter that reads
the house plus what they draw (while it is honest), sampled from the chargers' side; the runtime on it in
this process, and where an alarm must show (status, healthz, metrics, the log)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.runtime.loop import Runtime
from gateway.sim.modbus_charger import SimCharger
from gateway.sim.modbus_meter import SimMeter
from support.waiting import stopped, until

USABLE_A = 64.0  # 80 A service × 0.8
HOUSE_A = 15.0
PHASES = ("L1", "L2", "L3")
SAMPLE_S = 0.05


@dataclass
class FaultSite:
    """Five Modbus chargers and a grid meter that reads the house plus what they draw (while it is honest)."""

    house_a: float = HOUSE_A
    chargers: dict[str, SimCharger] = field(default_factory=dict)
    meter: SimMeter = field(default_factory=lambda: SimMeter("eastron-sdm630", noise_a=0.02))
    peak_a: float = 0.0
    over: list[tuple[float, str, float]] = field(default_factory=list)  # (loop time, phase, amps)
    samples: int = 0
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for i in range(1, 6):
            sim = SimCharger("generic-charger", rating_a=32.0)
            await sim.start()
            self.chargers[f"mb-{i}"] = sim
        await self.meter.start()
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

    def drawing_a(self, phase: str) -> float:
        index = PHASES.index(phase)
        return sum(c.drawing_a for c in self.chargers.values() if index < c.ev_phases)

    def site_a(self, phase: str) -> float:
        """What the conductor carries now, from the chargers' side: the house plus every car's draw."""
        return self.house_a + self.drawing_a(phase)

    def _follow_once(self) -> None:
        loads = {p: self.site_a(p) for p in PHASES}
        self.meter.set_load(**loads)
        self.samples += 1
        for phase, amps in loads.items():
            self.peak_a = max(self.peak_a, amps)
            if amps > USABLE_A + 1e-6:
                self.over.append((asyncio.get_running_loop().time(), phase, amps))

    async def _follow(self) -> None:
        while True:
            self._follow_once()
            await asyncio.sleep(SAMPLE_S)

    def reset(self) -> None:
        self.over.clear()
        self.peak_a = 0.0
        self.samples = 0

    def over_s(self) -> float:
        """How long some conductor was over its limit, in sampled time."""
        return len({round(t / SAMPLE_S) for t, _, _ in self.over}) * SAMPLE_S

    def config_text(self, store: Path, meter: str = "") -> str:
        lines = ['[site]', 'wiring = "three-phase-400/230"', "service_breaker_a = 80", ""]
        for cid, sim in self.chargers.items():
            lines += ["[[chargers]]", f'id = "{cid}"', 'protocol = "modbus"', 'phases = "L1-L2-L3"', "max_a = 32",
                      f'modbus = {{ model = "generic-charger", host = "127.0.0.1", port = {sim.port} }}', ""]
        lines += ["[[meters]]", 'id = "grid"', "poll_s = 0.25", "stale_after_s = 2", "implausible_after_s = 2",
                  meter, f'modbus = {{ model = "eastron-sdm630", host = "127.0.0.1", port = {self.meter.port} }}', "",
                  "[control]", "tick_s = 0.25", "min_on_time_s = 0", "",
                  "[status]", "port = 0", "", "[store]", f'path = "{store}"', ""]
        return "\n".join(lines)


@contextlib.asynccontextmanager
async def sim_site() -> AsyncIterator[FaultSite]:
    """The site running; a test module's `site` fixture enters it."""
    s = FaultSite()
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@contextlib.asynccontextmanager
async def running(site: FaultSite, tmp_path: Path, meter: str = "",
                  clock: Callable[[], datetime] | None = None) -> AsyncIterator[Runtime]:
    config = tmp_path / "site.toml"
    config.write_text(site.config_text(tmp_path / "gw.sqlite", meter))
    runtime = Runtime(load_config(config)) if clock is None else Runtime(load_config(config), clock=clock)
    task = asyncio.create_task(runtime.run())
    try:
        await asyncio.wait_for(runtime.started.wait(), 10)
        yield runtime
    finally:
        runtime.stop()
        await stopped(task)


async def fetch(url: str) -> tuple[int, str]:
    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    return await asyncio.to_thread(get)


async def visible(runtime: Runtime, key: str) -> None:
    """The alarm is in /api/status, makes /healthz answer 503 naming it, and is in /metrics."""
    assert runtime.status_url is not None
    code, body = await fetch(runtime.status_url + "api/status")
    assert code == 200 and key in {a["key"] for a in json.loads(body)["alarms"]}
    code, body = await fetch(runtime.status_url + "healthz")
    assert code == 503 and key in body, body
    code, body = await fetch(runtime.status_url + "metrics")
    assert f'gateway_alarm{{key="{key}",severity="critical"}} 1.0' in body


async def gone(runtime: Runtime, key: str) -> None:
    assert runtime.status_url is not None
    code, body = await fetch(runtime.status_url + "healthz")
    assert code == 200 and key not in body, body


def logged(caplog: pytest.LogCaptureFixture, key: str) -> tuple[int, int]:
    """How many times the alarm was logged as raised and as cleared."""
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.alarm"]
    return (sum(f"alarm raised key={key} " in line for line in lines),
            sum(f"alarm cleared key={key} " in line for line in lines))


async def busy(site: FaultSite) -> None:
    """Five cars plugged in (one on a single phase) until the chargers share all the room the house leaves.
    The cars arrive once the gateway has set every charger (a charger never set runs at its rating)."""
    await until(lambda: all(c.setpoint_a is not None for c in site.chargers.values()), 20, "chargers never set")
    for i, sim in enumerate(site.chargers.values()):
        sim.plug_in(ev_max_a=32.0, phases=1 if i == 4 else 3)
    await until(lambda: site.drawing_a("L1") >= USABLE_A - HOUSE_A - 8, 20, "the cars never got the site's room")
    await asyncio.sleep(1.0)  # settled
    assert site.over == [], f"over the limit before any fault: peak {site.peak_a:.1f} A"


def total_limit_a(site: FaultSite) -> float:
    return sum(c.limit_a for c in site.chargers.values() if c.plugged)
