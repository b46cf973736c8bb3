"""The SunSpec inverter reader against a real pymodbus server whose registers come from pysunspec2's models."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator

import pytest

from gateway.modbus.link import ModbusLink
from gateway.modbus.sunspec import SunSpecInverter, SunSpecSettings
from gateway.sim.sunspec_inverter import SimInverter


@pytest.fixture
async def sim() -> AsyncIterator[SimInverter]:
    inverter = SimInverter(phases=3, battery=True, meter=True, w_sf=1)
    await inverter.start()
    try:
        yield inverter
    finally:
        await inverter.stop()


def reader(sim: SimInverter, **settings: object) -> SunSpecInverter:
    link = ModbusLink("127.0.0.1", sim.port, timeout_s=0.5, backoff_s=0.05, backoff_max_s=0.2)
    return SunSpecInverter(SunSpecSettings("roof", "127.0.0.1", sim.port, **settings), link)  # type: ignore[arg-type]


async def test_the_models_are_discovered_and_the_powers_read_with_their_scale_factor(sim: SimInverter) -> None:
    sim.set(pv_kw=5.23, battery_kw=0.0, meter_kw=-3.1)
    inv = reader(sim)
    reading = await inv.poll()
    assert reading is not None
    assert [m.model_id for m in inv.models or []] == [1, 103, 802, 203]
    assert inv.identity["serial"] == "SIM-0001" and inv.identity["manufacturer"] == "Gateway Sim"
    # W_SF = 1: tens of watts
    assert reading.ac_kw is not None and math.isclose(reading.ac_kw, 5.23, abs_tol=0.01)
    assert reading.dc_kw is not None and math.isclose(reading.dc_kw, 5.23, abs_tol=0.01)
    assert reading.meter_kw is not None and math.isclose(reading.meter_kw, -3.1, abs_tol=0.01)
    assert reading.battery_kw == 0.0
    await inv.link.close()


async def test_a_discharging_battery_reads_positive_and_a_charging_one_negative(sim: SimInverter) -> None:
    inv = reader(sim)
    sim.set(pv_kw=0.0, battery_kw=2.0)
    first = await inv.poll()
    sim.set(pv_kw=6.0, battery_kw=-1.5)
    second = await inv.poll()
    assert first is not None and second is not None
    assert first.battery_kw == 2.0 and first.ac_kw == 2.0
    assert second.battery_kw == -1.5 and second.ac_kw == 4.5
    await inv.link.close()


async def test_a_single_phase_inverter_without_battery_or_meter() -> None:
    sim = SimInverter(phases=1, w_sf=0)
    await sim.start()
    try:
        sim.set(pv_kw=2.5)
        inv = reader(sim)
        reading = await inv.poll()
        assert reading is not None and inv.models is not None
        assert [m.model_id for m in inv.models] == [1, 101]
        assert reading.ac_kw == 2.5 and reading.battery_kw is None and reading.meter_kw is None
        await inv.link.close()
    finally:
        await sim.stop()


async def test_an_inverter_going_silent_is_stale_and_said_once(sim: SimInverter,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    inv = reader(sim, stale_after_s=0.3)
    sim.set(pv_kw=3.0)
    assert await inv.poll() is not None and not inv.stale()
    sim.mute = True
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            assert await inv.poll() is None
    assert inv.stale()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    sim.mute = False
    caplog.clear()
    with caplog.at_level(logging.INFO):
        reading = None
        for _ in range(20):  # the link's backoff (≤ 0.2 s) passes, then it answers again
            reading = await inv.poll()
            if reading is not None:
                break
            await asyncio.sleep(0.05)
    assert reading is not None and not inv.stale()
    assert any("recovered" in r.getMessage() for r in caplog.records)
    await inv.link.close()


async def test_no_sunspec_map_at_the_address_is_one_clear_line(sim: SimInverter,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    inv = reader(sim, base_address=50000)
    with caplog.at_level(logging.ERROR):
        assert await inv.poll() is None
        assert await inv.poll() is None
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 1 and "no SunSpec map" in lines[0] and "50000" in lines[0]
    await inv.link.close()


async def test_a_value_beyond_any_inverter_is_refused(sim: SimInverter) -> None:
    inv = reader(sim, max_kw=50.0)
    sim.set(pv_kw=3.0)
    assert await inv.poll() is not None
    sim.set(pv_kw=300.0)  # a scale factor gone wrong
    assert await inv.poll() is None
    assert inv.last is not None and inv.last.ac_kw == 3.0
    await inv.link.close()
