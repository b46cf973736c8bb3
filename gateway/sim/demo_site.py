"""A whole simulated site for `gateway demo` and the end-to-end test: a VTN, chargers, EVs and a meter.

On 127.0.0.1 with ports the OS picks: the demo VTN (openleadr), six OCPP charge points (three 1.6J,
three 2.0.1) that dial into the gateway's central system once it is up, two Modbus chargers and a Modbus meter
at the service whose reading is a house load plus whatever the simulated chargers draw (so the meter
sees the EVs, as a real grid meter does). `config_text()` writes the gateway config for it. Once the
gateway has registered, the VTN sends a price signal for the next hour and a SIMPLE level-2 curtailment
starting `curtail_after_s` later; EVs arrive one after the other (the one at cp-3 says it leaves in 55
minutes with 8 kWh to go, so the plan can wait for cheaper prices), then one leaves every two minutes and
a new one arrives a minute later. `speed` makes the simulated world (arrivals and departures, the
event's start, the house load's swings) run that many times faster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.sim.modbus_charger import SimCharger
from gateway.sim.modbus_meter import SimMeter
from gateway.sim.ocpp_cp import Ev, SimChargePoint
from gateway.sim.vtn import SimVtn

log = logging.getLogger("gateway.sim.demo")

OCPP_CHARGERS: Sequence[tuple[str, str]] = (
    ("cp-1", "1.6"), ("cp-2", "1.6"), ("cp-3", "2.0.1"), ("cp-4", "2.0.1"), ("cp-5", "1.6"), ("cp-6", "2.0.1"),
)
MODBUS_CHARGERS: Sequence[str] = ("mb-1", "mb-2")
HOUSE_BASE_A = 15.0
FLEXIBLE_CAR = "cp-3"


@dataclass
class DemoSite:
    speed: float = 1.0
    curtail_after_s: float = 40.0  # in simulated seconds from the gateway's registration
    curtail_level: int = 2
    curtail_minutes: float = 10.0
    house_a: float = HOUSE_BASE_A
    vtn: SimVtn = field(default_factory=lambda: SimVtn(poll_s=1.0))
    modbus: dict[str, SimCharger] = field(default_factory=dict)
    meter: SimMeter = field(default_factory=lambda: SimMeter("eastron-sdm630"))
    ocpp: dict[str, SimChargePoint] = field(default_factory=dict)
    curtailment_id: str | None = None
    price_id: str | None = None
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def start_peers(self) -> None:
        """The VTN, the Modbus chargers and the meter: everything the gateway dials out to."""
        await self.vtn.start()
        for cid in MODBUS_CHARGERS:
            sim = SimCharger("generic-charger", rating_a=32.0)
            await sim.start()
            self.modbus[cid] = sim
        await self.meter.start()
        self._tasks.append(asyncio.create_task(self._meter_follows(), name="demo-meter"))

    def config_text(self, store_path: Path, status_port: int = 0, tick_s: float = 1.0) -> str:
        lines = [
            "# Written by `gateway demo`: a simulated site on 127.0.0.1.",
            "[site]", 'name = "demo site"', 'wiring = "three-phase-400/230"', "service_breaker_a = 125", "",
        ]
        for cid, version in OCPP_CHARGERS:
            lines += ["[[chargers]]", f'id = "{cid}"', f'protocol = "ocpp{version}"', 'phases = "L1-L2-L3"',
                      "max_a = 32", "fallback_a = 6", ""]
        for cid, sim in self.modbus.items():
            lines += ["[[chargers]]", f'id = "{cid}"', 'protocol = "modbus"', 'phases = "L1-L2-L3"', "max_a = 32",
                      "fallback_a = 6",
                      f'modbus = {{ model = "generic-charger", host = "127.0.0.1", port = {sim.port} }}', ""]
        lines += [
            "[[meters]]", 'id = "grid"', "poll_s = 0.5", "stale_after_s = 5",
            f'modbus = {{ model = "eastron-sdm630", host = "127.0.0.1", port = {self.meter.port} }}', "",
            "[vtn]", f'url = "{self.vtn.url}"', 'ven_name = "demo-ven"', "allow_plain_http = true", "poll_s = 1", "",
            "[ocpp]", "port = 0", "meter_interval_s = 1", "lease_s = 60", "ack_wait_s = 2", "",
            "[control]", f"tick_s = {tick_s}", "min_on_time_s = 0", f"charger_stale_s = {max(30.0, 3 * tick_s)}", "",
            "[status]", f"port = {status_port}", "",
            "[store]", f'path = "{store_path}"', "",
        ]
        return "\n".join(lines)

    async def start_chargers(self, ocpp_base_url: str) -> None:
        """OCPP charge points dial in; EVs arrive one after the other (every 3 simulated seconds)."""
        for cid, version in OCPP_CHARGERS:
            cp = SimChargePoint(ocpp_base_url, cid, version=version,  # type: ignore[arg-type]
                                ev=Ev(max_a=32.0), meter_interval_s=1.0)
            await cp.start()
            self.ocpp[cid] = cp
        self._tasks.append(asyncio.create_task(self._arrivals(), name="demo-arrivals"))
        self._tasks.append(asyncio.create_task(self._events(), name="demo-events"))

    async def _sleep(self, simulated_s: float) -> None:
        await asyncio.sleep(simulated_s / self.speed)

    async def _arrivals(self) -> None:
        for n, cid in enumerate([*self.ocpp, *self.modbus]):
            if n:
                await self._sleep(3.0)
            if cid == FLEXIBLE_CAR:
                # An OCPP 2.0.1 car that says when it leaves and how much it needs: the plan can wait for
                # the cheaper prices of the demo's price signal.
                leaves = datetime.now(UTC) + timedelta(seconds=55 * 60 / self.speed)
                with contextlib.suppress(Exception):
                    await self.ocpp[cid].plug_in(Ev(max_a=32.0, plugged=True, departure=leaves, energy_wh=8000))
            elif cid in self.ocpp:
                with contextlib.suppress(Exception):  # a charger still connecting plugs in on the next demo
                    await self.ocpp[cid].plug_in(Ev(max_a=32.0 if n % 2 == 0 else 16.0, plugged=True))
            else:
                self.modbus[cid].plug_in(ev_max_a=32.0, phases=3)
            log.info("demo: an EV plugged in at %s", cid)
        # Then, every two simulated minutes, one car leaves and a new one takes its place a minute later.
        turn = 0
        while True:
            await self._sleep(120.0)
            cid = [*self.ocpp, *self.modbus][turn % (len(self.ocpp) + len(self.modbus))]
            turn += 1
            await self._plug(cid, False)
            await self._sleep(60.0)
            await self._plug(cid, True)

    async def _plug(self, cid: str, arrive: bool) -> None:
        with contextlib.suppress(Exception):  # a charger that is reconnecting misses this turn
            if cid in self.ocpp:
                await (self.ocpp[cid].plug_in(Ev(max_a=32.0, plugged=True)) if arrive else self.ocpp[cid].unplug())
            elif arrive:
                self.modbus[cid].plug_in(ev_max_a=32.0, phases=3)
            else:
                self.modbus[cid].unplug()
        log.info("demo: an EV %s %s", "plugged in at" if arrive else "left", cid)

    async def _events(self) -> None:
        """Wait for the gateway to register, then send the price signal and the curtailment."""
        while not self.vtn.vens:
            await asyncio.sleep(0.1)
        ven_id = next(iter(self.vtn.vens))
        now = datetime.now(UTC)
        self.price_id = self.vtn.add_event(ven_id, [("ELECTRICITY_PRICE", "price", [0.32, 0.28, 0.12, 0.10])],
                                           start=now, interval=timedelta(minutes=15), event_id="demo-price")
        start = now + timedelta(seconds=self.curtail_after_s / self.speed)
        interval = timedelta(seconds=max(60.0, round(self.curtail_minutes * 60.0 / self.speed)))
        self.curtailment_id = self.vtn.add_event(ven_id, [("SIMPLE", "level", [self.curtail_level])],
                                                 start=start, interval=interval, event_id="demo-curtail")
        log.info("demo: price signal and curtailment (level %d from %s) sent to %s", self.curtail_level,
                 start.strftime("%H:%M:%S"), ven_id)

    def ev_draw_a(self) -> float:
        """What the simulated chargers draw per phase (all are three-phase)."""
        return sum(cp.draw_a() for cp in self.ocpp.values()) + sum(s.drawing_a for s in self.modbus.values())

    async def _meter_follows(self) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        while True:
            # The house swings ±5 A over a simulated quarter hour; the meter adds every EV's draw.
            swing = 5.0 * math.sin((loop.time() - began) * self.speed * 2 * math.pi / 900.0)
            amps = max(0.0, self.house_a + swing) + self.ev_draw_a()
            self.meter.set_load(L1=amps, L2=amps, L3=amps)
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for cp in self.ocpp.values():
            with contextlib.suppress(Exception):
                await cp.stop()
        for sim in self.modbus.values():
            await sim.stop()
        await self.meter.stop()
        await self.vtn.stop()
