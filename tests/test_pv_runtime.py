"""Solar first in the running gateway, against real pymodbus peers: a Modbus charger, a SunSpec inverter and
an SDM630 grid meter reading the house plus the car less the inverter. Delays are short (start 1 s, stop 2 s)
so the scenarios run in seconds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.pv_site import PvSite, pv_site, running
from support.waiting import until

from gateway.runtime.loop import Runtime

DELAYS = "start_delay_s = 1\nstop_delay_s = 2"
KW_PER_A_3PH = 3 * 230.0 / 1000.0  # what the simulated car draws per amp on three phases


@pytest.fixture
async def site() -> AsyncIterator[PvSite]:
    async with pv_site() as s:
        yield s


async def plugged_in(site: PvSite, runtime: Runtime, cid: str = "ev3") -> None:
    await until(lambda: site.chargers[cid].setpoint_a is not None, 10, "the charger was never set")
    site.chargers[cid].plug_in(ev_max_a=32.0, phases=site.phases[cid])
    await until(lambda: runtime.readings.get(cid) is not None and runtime.readings[cid].status.connected, 5,
                "the car was never seen")


async def test_a_pv_charger_follows_the_surplus_up_and_down(site: PvSite, tmp_path: Path) -> None:
    car = site.chargers["ev3"]
    async with running(site, tmp_path, DELAYS) as runtime:
        await plugged_in(site, runtime)
        await asyncio.sleep(2.0)
        assert car.limit_a == 0.0, "no sun: a pv charger waits"
        site.inverter.set(pv_kw=8.0)  # 7.5 kW over the house: about 10 A on three phases
        await until(lambda: car.limit_a >= 10.0, 8, "never started on the surplus")
        assert car.limit_a <= 11.0
        site.inverter.set(pv_kw=12.0)
        await until(lambda: car.limit_a >= 16.0, 8, "did not follow the surplus up")
        site.inverter.set(pv_kw=5.5)
        await until(lambda: 6.0 <= car.limit_a <= 8.0, 8, "did not follow the surplus down")
        site.inverter.set(pv_kw=2.0)  # 1.5 kW: under the 4.1 kW a three-phase car needs
        await until(lambda: car.limit_a == 6.0, 5, "not held at its minimum during the stop delay")
        await until(lambda: car.limit_a == 0.0, 8, "never stopped once the surplus stayed too low")
        status = runtime.status()["pv"]
        assert status["chargers"]["ev3"]["mode"] == "pv"
        assert status["pv_kw"] == pytest.approx(2.0, abs=0.05)
        assert runtime.last is not None and runtime.last.reasons["ev3"] == "pv surplus"


async def test_a_cloud_shorter_than_the_stop_delay_changes_nothing(site: PvSite, tmp_path: Path) -> None:
    car = site.chargers["ev3"]
    site.inverter.set(pv_kw=8.0)
    async with running(site, tmp_path, "start_delay_s = 1\nstop_delay_s = 4") as runtime:
        await plugged_in(site, runtime)
        await until(lambda: car.limit_a >= 10.0, 8, "never started on the surplus")
        site.inverter.set(pv_kw=1.0)  # a cloud for 1.5 s
        limits = []
        for _ in range(30):
            limits.append(car.limit_a)
            await asyncio.sleep(0.05)
        site.inverter.set(pv_kw=8.0)
        for _ in range(40):
            limits.append(car.limit_a)
            await asyncio.sleep(0.05)
        assert min(limits) >= 6.0, "the cloud switched the car off"
        await until(lambda: car.limit_a >= 10.0, 5, "not back up after the cloud")


async def test_the_export_goes_to_the_car_down_to_about_zero(site: PvSite, tmp_path: Path) -> None:
    car = site.chargers["ev3"]
    site.inverter.set(pv_kw=9.0)
    async with running(site, tmp_path, DELAYS) as runtime:
        await plugged_in(site, runtime)
        await until(lambda: car.drawing_a >= 10.0, 8, "never started on the surplus")
        await asyncio.sleep(1.5)
        site.grid_samples.clear()
        await asyncio.sleep(2.0)
        grid = site.grid_samples
        # whole amps on three phases: at most one step (0.69 kW) of export is left, and nothing is imported
        assert max(grid) <= 0.05, f"imported {max(grid):.2f} kW for a pv car"
        assert min(grid) >= -KW_PER_A_3PH - 0.05, f"still exporting {-min(grid):.2f} kW"
        status = runtime.status()["pv"]
        assert status["handed_kw"] == pytest.approx(site.ev_kw(), abs=0.3)


async def test_battery_discharge_is_not_surplus(site: PvSite, tmp_path: Path) -> None:
    car = site.chargers["ev3"]
    site.inverter.set(pv_kw=0.0, battery_kw=5.0)  # the grid meter sees 4.5 kW of export, all from the battery
    async with running(site, tmp_path, DELAYS) as runtime:
        await plugged_in(site, runtime)
        await until(lambda: runtime.status()["pv"]["battery_kw"] == pytest.approx(5.0, abs=0.05), 5,
                    "the battery was never read")
        await asyncio.sleep(2.5)  # well past the start delay
        assert car.limit_a == 0.0
        assert runtime.status()["pv"]["surplus_kw"] == pytest.approx(-0.5, abs=0.3)  # the house, from the battery


async def test_a_silent_grid_meter_means_no_surplus_said_once(site: PvSite, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    car = site.chargers["ev3"]
    site.inverter.set(pv_kw=9.0)
    async with running(site, tmp_path, "start_delay_s = 1\nstop_delay_s = 30") as runtime:
        await plugged_in(site, runtime)
        await until(lambda: car.limit_a >= 10.0, 8, "never started on the surplus")
        site.meter.image.mute = True
        # a stop delay of 30 s does not keep it on: no surplus is known at all
        await until(lambda: car.limit_a == 0.0, 6, "a pv car kept charging on a silent grid meter")
        assert runtime.alarms.active("pv.surplus")
        assert "stale" in (runtime.status()["pv"]["no_surplus_because"] or "")
        await asyncio.sleep(1.0)
        raised = [r for r in caplog.records if "alarm raised key=pv.surplus" in r.getMessage()]
        assert len(raised) == 1
        site.meter.image.mute = False
        await until(lambda: not runtime.alarms.active("pv.surplus"), 10, "the alarm never cleared")
        await until(lambda: car.limit_a >= 10.0, 10, "not back on the surplus once the meter answered")


async def test_the_import_cap_holds_a_now_charger_to_the_sun_plus_the_cap(site: PvSite, tmp_path: Path) -> None:
    car = site.chargers["ev3"]
    site.inverter.set(pv_kw=6.0)
    async with running(site, tmp_path, "import_cap_kw = 1.0", modes={"ev3": "now"}) as runtime:
        await plugged_in(site, runtime)
        await until(lambda: car.drawing_a >= 9.0, 8, "never charged")
        await asyncio.sleep(1.5)
        site.grid_samples.clear()
        await asyncio.sleep(1.5)
        assert max(site.grid_samples) <= 1.0 + 0.05, f"imported {max(site.grid_samples):.2f} kW over a 1 kW cap"
        assert car.limit_a <= 10.0
        assert runtime.last is not None and "grid import cap" in runtime.last.reasons["ev3"]


async def test_an_operator_mode_for_the_session_ends_when_the_car_leaves(site: PvSite, tmp_path: Path) -> None:
    car = site.chargers["ev3"]
    async with running(site, tmp_path, DELAYS) as runtime:
        await plugged_in(site, runtime)
        await asyncio.sleep(1.0)
        assert car.limit_a == 0.0
        assert runtime.set_charge_mode("ev3", "now")
        await until(lambda: car.limit_a >= 30.0, 8, "now mode did not charge at full speed")
        assert runtime.status()["pv"]["chargers"]["ev3"]["set_by"] == "operator (session)"
        car.unplug()
        await until(lambda: runtime.status()["pv"]["chargers"]["ev3"]["mode"] == "pv", 5,
                    "the session's mode outlived the session")
        assert not runtime.set_charge_mode("nope", "now")
