"""The Modbus charger driver against simulated chargers over real TCP on 127.0.0.1: the setpoint round trip
for every shipped model, read-back disagreement, failsafe taking over when refreshing stops, timeouts,
exception codes, the link dropping and coming back, and the EvseDriver built from site config."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from pymodbus.constants import ExcCodes

from gateway.config.site import ChargerSection
from gateway.domain import ChargerStatus
from gateway.modbus.charger import ModbusCharger, ModbusChargers
from gateway.modbus.link import LinkPool, ModbusLink
from gateway.modbus.maps import load_map
from gateway.ports import EvseDriver
from gateway.sim.modbus_charger import SimCharger, serve_station

CHARGERS = ["abb-terra-ac", "alfen-ng9xx", "generic-charger", "keba-p30", "webasto-next"]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def sims() -> AsyncIterator[list[SimCharger]]:
    made: list[SimCharger] = []
    yield made
    for sim in made:
        await sim.stop()


async def _pair(
    sims: list[SimCharger], model: str, *, rating_a: float = 32.0, timeout_s: float = 0.5,
    clock: FakeClock | None = None, **driver: float,
) -> tuple[SimCharger, ModbusCharger]:
    sim = SimCharger(model, rating_a=rating_a, **({"clock": clock} if clock else {}))
    sims.append(sim)
    port = await sim.start()
    link = ModbusLink("127.0.0.1", port, timeout_s=timeout_s, backoff_s=0.05, backoff_max_s=0.2)
    charger = ModbusCharger("cp-1", load_map(model), link, max_a=32.0, **({"clock": clock} if clock else {}),
                            **driver)  # type: ignore[arg-type]
    return sim, charger


@pytest.mark.parametrize("model", CHARGERS)
async def test_setpoint_round_trip_for_each_model(model: str, sims: list[SimCharger]) -> None:
    sim, charger = await _pair(sims, model)
    reading = await charger.read()
    assert reading.status is ChargerStatus.AVAILABLE
    sim.plug_in(ev_max_a=16.0, phases=3)

    ack = await charger.apply(10.0)
    assert ack.accepted, ack.detail
    assert sim.setpoint_a == 10.0 and sim.drawing_a == 10.0
    reading = await charger.read()
    assert reading.status is ChargerStatus.CHARGING
    assert reading.current_a == {"L1": 10.0, "L2": 10.0, "L3": 10.0}
    assert reading.power_kw == pytest.approx(3 * 230 * 10 / 1000)

    # the EV takes no more than its own maximum
    assert (await charger.apply(20.0)).accepted
    assert sim.drawing_a == 16.0

    # below the minimum is a pause, written as 0
    assert (await charger.apply(4.0)).accepted
    assert sim.limit_a == 0.0 and sim.drawing_a == 0.0
    assert (await charger.read()).status in (ChargerStatus.SUSPENDED_EVSE, ChargerStatus.PREPARING)

    sim.unplug()
    assert (await charger.read()).status is ChargerStatus.AVAILABLE


async def test_failsafe_is_programmed_at_connect_and_writes_only_on_change(sims: list[SimCharger]) -> None:
    sim, charger = await _pair(sims, "webasto-next", fallback_a=8.0)
    await charger.read()
    assert ("failsafe_current", 8.0) in sim.writes and ("failsafe_timeout", 20.0) in sim.writes
    sim.writes.clear()
    assert (await charger.apply(12.0)).accepted
    assert [n for n, _ in sim.writes] == ["setpoint", "watchdog"]
    ack = await charger.apply(12.0)
    assert ack.accepted and ack.detail == "unchanged"
    assert len(sim.writes) == 2, "an unchanged limit is not written again"


async def test_failsafe_takes_over_when_refreshing_stops(sims: list[SimCharger]) -> None:
    clock = FakeClock()
    sim, charger = await _pair(sims, "webasto-next", clock=clock, fallback_a=8.0, failsafe_timeout_s=4.0)
    driver = ModbusChargers([charger])
    sim.plug_in(ev_max_a=32.0)
    assert (await driver.apply_limits({"cp-1": 20.0}, "test"))[0].accepted
    assert sim.failsafe_timeout_s == 4.0 and sim.failsafe_a == 8.0
    assert charger.refresh_s == 2.0

    for _ in range(6):  # the gateway alive: polling refreshes every 2 s, the 4 s failsafe never fires
        clock.t += 1.5
        await driver.poll_once()
        assert not sim.in_failsafe and sim.drawing_a == 20.0
    writes = sum(1 for n, _ in sim.writes if n == "setpoint")
    assert 4 <= writes <= 6, "refreshed about every 2 s, no more"

    clock.t += 4.5  # the gateway stops (no polling): the charger falls back on its own
    assert sim.in_failsafe and sim.drawing_a == 8.0
    assert (await charger.read()).current_a["L1"] == 8.0

    await driver.poll_once()  # the gateway is back: the next refresh restores the limit
    assert not sim.in_failsafe and sim.drawing_a == 20.0


async def test_a_charger_that_disagrees_with_the_limit_is_reported(
    sims: list[SimCharger], caplog: pytest.LogCaptureFixture
) -> None:
    sim, charger = await _pair(sims, "alfen-ng9xx", rating_a=16.0)
    sim.plug_in(ev_max_a=32.0)
    with caplog.at_level(logging.ERROR, logger="gateway.modbus"):
        ack = await charger.apply(25.0)
    assert not ack.accepted
    assert ack.detail == "charger reports 16 A after 25 A was written"
    assert "read-back failed" in caplog.text
    assert (await charger.apply(12.0)).accepted


async def test_read_back_via_applied_limit_when_the_setpoint_is_write_only(sims: list[SimCharger]) -> None:
    _, charger = await _pair(sims, "abb-terra-ac", rating_a=16.0)
    ack = await charger.apply(20.0)
    assert not ack.accepted and "reports 16 A" in ack.detail


async def test_timeout_is_one_clear_line_then_recovery_once(
    sims: list[SimCharger], caplog: pytest.LogCaptureFixture
) -> None:
    sim, charger = await _pair(sims, "generic-charger", timeout_s=0.2)
    assert (await charger.apply(10.0)).accepted
    sim.image.mute = True
    with caplog.at_level(logging.DEBUG, logger="gateway.modbus"):
        start = asyncio.get_running_loop().time()
        ack = await charger.apply(16.0)
        assert asyncio.get_running_loop().time() - start < 1.5, "bounded by the timeout"
        assert not ack.accepted and "no answer within 0.2 s" in ack.detail
        for _ in range(3):
            assert (await charger.read()).status is ChargerStatus.OFFLINE
            await asyncio.sleep(0.06)
        sim.image.mute = False
        for _ in range(20):  # the backoff is bounded (0.2 s here)
            if (await charger.read()).status is not ChargerStatus.OFFLINE:
                break
            await asyncio.sleep(0.05)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len({r.getMessage().split(" failed")[0] for r in errors}) == len(errors), "each problem logged once"
    assert any("recovered" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    assert (await charger.apply(16.0)).accepted and sim.setpoint_a == 16.0


async def test_exception_codes_become_a_rejected_ack_and_a_faulted_reading(sims: list[SimCharger]) -> None:
    sim, charger = await _pair(sims, "generic-charger")
    sim.image.fail_with = ExcCodes.DEVICE_BUSY
    ack = await charger.apply(10.0)
    assert not ack.accepted and "exception 6 (server device busy)" in ack.detail
    assert (await charger.read()).status is ChargerStatus.FAULTED
    sim.image.fail_with = None
    assert (await charger.apply(10.0)).accepted


async def test_wrong_unit_id_is_an_error_not_a_hang(sims: list[SimCharger]) -> None:
    sim = SimCharger("generic-charger")
    sims.append(sim)
    port = await sim.start()
    link = ModbusLink("127.0.0.1", port, timeout_s=0.3, backoff_s=0.05)
    charger = ModbusCharger("cp-1", load_map("generic-charger"), link, unit=7)
    ack = await charger.apply(10.0)
    assert not ack.accepted and ack.round_trip_s < 1.0
    assert "exception 11 (gateway target failed to respond)" in ack.detail


async def test_link_drops_and_comes_back_and_failsafe_is_reprogrammed(sims: list[SimCharger]) -> None:
    sim, charger = await _pair(sims, "generic-charger", fallback_a=7.0)
    assert (await charger.apply(10.0)).accepted
    port = sim.port
    await sim.stop()
    assert (await charger.read()).status is ChargerStatus.OFFLINE
    ack = await charger.apply(12.0)
    assert not ack.accepted

    # the charger restarts with factory defaults on the same address
    reborn = SimCharger("generic-charger")
    sims.append(reborn)
    await reborn.start(port)
    for _ in range(20):
        ack = await charger.apply(12.0)
        if ack.accepted:
            break
        await asyncio.sleep(0.05)
    assert ack.accepted
    assert reborn.setpoint_a == 12.0 and reborn.failsafe_a == 7.0 and reborn.failsafe_timeout_s == 30.0


async def test_concurrent_calls_on_one_link_are_serialised(sims: list[SimCharger]) -> None:
    sim, charger = await _pair(sims, "alfen-ng9xx")
    sim.plug_in()
    results = await asyncio.gather(*(charger.read() for _ in range(10)), charger.apply(11.0),
                                   *(charger.read() for _ in range(10)))
    assert all(getattr(r, "status", None) is not ChargerStatus.OFFLINE for r in results)
    assert sim.setpoint_a == 11.0


async def test_driver_from_site_config_is_an_evse_driver(sims: list[SimCharger]) -> None:
    a, b = SimCharger("webasto-next"), SimCharger("abb-terra-ac")
    sims += [a, b]
    pa, pb = await a.start(), await b.start()
    sections = [
        ChargerSection.model_validate({"id": "w1", "protocol": "modbus", "phases": "L1-L2-L3", "max_a": 16,
                                       "fallback_a": 6, "modbus": {"model": "webasto-next", "host": "127.0.0.1",
                                                                   "port": pa, "timeout_s": 0.5}}),
        ChargerSection.model_validate({"id": "a1", "protocol": "modbus", "phases": "L1", "max_a": 32,
                                       "modbus": {"model": "abb-terra-ac", "host": "127.0.0.1", "port": pb}}),
    ]
    pool = LinkPool(backoff_s=0.05)
    driver = ModbusChargers.from_config(sections, pool)
    assert isinstance(driver, EvseDriver)
    assert driver.poll_s == 1.0
    a.plug_in(ev_max_a=32)
    acks = await driver.apply_limits({"w1": 20.0, "a1": 13.0, "zz": 6.0}, "site limit")
    by_id = {ack.charger_id: ack for ack in acks}
    assert by_id["w1"].accepted and a.setpoint_a == 16.0, "clamped to the configured max_a"
    assert by_id["a1"].accepted and b.setpoint_a == 13.0
    assert not by_id["zz"].accepted
    seen: dict[str, ChargerStatus] = {}
    async for reading in driver.readings():
        seen[reading.charger_id] = reading.status
        if len(seen) == 2:
            break
    assert seen == {"w1": ChargerStatus.CHARGING, "a1": ChargerStatus.AVAILABLE}
    await pool.close()


async def test_one_register_values_go_as_fc6_unless_the_map_says_fc16(sims: list[SimCharger]) -> None:
    sim, charger = await _pair(sims, "generic-charger")
    assert (await charger.apply(10.0)).accepted
    assert (6, 0) in sim.image.write_requests and (16, 0) not in sim.image.write_requests
    sim, charger = await _pair(sims, "alfen-ng9xx")
    assert (await charger.apply(10.0)).accepted
    assert sim.image.write_requests == [(16, 1210)], "a float32 goes in one FC16 request, never split"
    fc16_map = load_map("generic-charger").model_copy(update={"single_write": "fc16"})
    sim = SimCharger(fc16_map)
    sims.append(sim)
    port = await sim.start()
    charger = ModbusCharger("cp", fc16_map, ModbusLink("127.0.0.1", port, timeout_s=0.5))
    assert (await charger.apply(10.0)).accepted
    assert {fc for fc, _ in sim.image.write_requests} == {16}


async def test_two_sockets_behind_one_address_share_one_link(sims: list[SimCharger]) -> None:
    left, right = SimCharger("alfen-ng9xx", unit=1), SimCharger("alfen-ng9xx", unit=2)
    server = await serve_station([left, right])
    sims.append(left)  # stopping one stops the shared server
    left.plug_in(ev_max_a=32.0)
    right.plug_in(ev_max_a=32.0, phases=1)
    pool = LinkPool()
    sections = [
        ChargerSection.model_validate({"id": f"s{u}", "protocol": "modbus", "phases": "L1-L2-L3", "max_a": 32,
                                       "modbus": {"model": "alfen-ng9xx", "host": "127.0.0.1",
                                                  "port": server.port, "unit": u}})
        for u in (1, 2)
    ]
    driver = ModbusChargers.from_config(sections, pool)
    assert driver.chargers["s1"].link is driver.chargers["s2"].link
    for amps in (10.0, 14.0, 7.0):
        acks = await asyncio.gather(driver.apply_limits({"s1": amps}, "t"), driver.apply_limits({"s2": amps + 1}, "t"),
                                    driver.poll_once(), driver.poll_once())
        assert acks[0][0].accepted and acks[1][0].accepted
        assert left.drawing_a == amps and right.drawing_a == amps + 1
    readings = {r.charger_id: r for r in await driver.poll_once()}
    assert readings["s1"].current_a["L1"] == 7.0 and readings["s2"].current_a == {"L1": 8.0, "L2": 0.0, "L3": 0.0}
    await pool.close()


async def test_the_readings_loop_keeps_the_charger_out_of_failsafe_in_real_time(sims: list[SimCharger]) -> None:
    sim, charger = await _pair(sims, "generic-charger", fallback_a=6.0, failsafe_timeout_s=1.0)
    driver = ModbusChargers([charger], poll_s=1.0)
    assert driver.poll_s == 0.25  # at least twice per 0.5 s refresh period
    sim.plug_in(ev_max_a=32.0)
    assert (await driver.apply_limits({"cp-1": 20.0}, "t"))[0].accepted

    async def consume() -> None:
        async for _ in driver.readings():
            pass

    task = asyncio.create_task(consume())
    for _ in range(15):  # 1.5 s, longer than the 1 s failsafe timeout
        await asyncio.sleep(0.1)
        assert sim.drawing_a == 20.0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    for _ in range(30):  # the gateway went quiet: the charger falls back by itself
        if sim.in_failsafe:
            break
        await asyncio.sleep(0.1)
    assert sim.in_failsafe and sim.drawing_a == 6.0


async def test_a_charger_with_an_enable_register_is_paused_by_it_never_by_0_a(sims: list[SimCharger]) -> None:
    sim, charger = await _pair(sims, "keba-p30", fallback_a=10.0)
    sim.plug_in(ev_max_a=32.0)
    assert (await charger.apply(16.0)).accepted and sim.drawing_a == 16.0
    ack = await charger.apply(0.0)
    assert ack.accepted and ack.detail == "paused (disabled)"
    assert not sim.enabled and sim.drawing_a == 0.0 and sim.setpoint_a == 6.0
    assert (await charger.read()).status is ChargerStatus.SUSPENDED_EVSE
    assert (await charger.apply(12.0)).accepted and sim.enabled and sim.drawing_a == 12.0
    assert all(v >= 6.0 for n, v in sim.writes if n == "setpoint")
    assert ("failsafe_current", 10.0) in sim.writes and ("failsafe_timeout", 30.0) in sim.writes
    assert {fc for fc, _ in sim.image.write_requests} == {6}, "KEBA takes single-register writes"
