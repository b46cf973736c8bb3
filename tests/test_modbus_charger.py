"""The Modbus charger driver against simulated chargers over real TCP on 127.0.0.1: the setpoint round trip
for every shipped model, read-back disagreement, failsafe taking over when refreshing stops, timeouts,
exception codes, the link dropping and coming back, and the EvseDriver built from site config."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
from pymodbus.constants import ExcCodes

from gateway.config.site import ChargerSection
from gateway.domain import ChargerStatus
from gateway.modbus.charger import ModbusCharger, ModbusChargers
from gateway.modbus.link import LinkError, LinkPool, ModbusLink
from gateway.modbus.maps import Table, load_map
from gateway.ports import EvseDriver
from gateway.sim.modbus_charger import SimCharger, serve_station

CHARGERS = ["abb-terra-ac", "alfen-ng9xx", "generic-charger", "keba-p30", "webasto-next"]


# For calls that must succeed: generous, so a busy machine never turns an answer into a timeout. Only the
# tests of timeouts (against a muted device, which never answers) use short ones.
OK_TIMEOUT_S = 5.0


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
    sims: list[SimCharger], model: str, *, rating_a: float = 32.0, timeout_s: float = OK_TIMEOUT_S,
    clock: FakeClock | None = None, link_clock: FakeClock | None = None, **driver: float,
) -> tuple[SimCharger, ModbusCharger]:
    sim = SimCharger(model, rating_a=rating_a, clock=clock or time.monotonic)
    sims.append(sim)
    port = await sim.start()
    link = ModbusLink("127.0.0.1", port, timeout_s=timeout_s, backoff_s=0.05, backoff_max_s=0.2,
                      clock=link_clock or time.monotonic)
    charger = ModbusCharger("cp-1", load_map(model), link, max_a=32.0, clock=clock or time.monotonic,
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


async def test_a_failsafe_current_under_the_limit_is_lowered_and_counted_until_it_is(sims: list[SimCharger]) -> None:
    """Its failsafe timeout runs out at its own instant: a charger paused beside a full circuit must fall back
    to no more than its pause, so the failsafe current goes down with it (and back up with the room)."""
    clock = FakeClock()
    sim, charger = await _pair(sims, "generic-charger", clock=clock, fallback_a=8.0, failsafe_timeout_s=4.0)
    driver = ModbusChargers([charger])
    sim.plug_in(ev_max_a=32.0)
    assert (await driver.apply_limits({"cp-1": 0.0}, "no room"))[0].accepted
    reading = await charger.read()
    assert reading.applied_limit_a == 8.0  # paused, but its failsafe of 8 A holds once its timeout runs out
    assert await driver.hold_fallbacks({"cp-1": 0.0}) == []
    assert sim.failsafe_a == 0.0 and (await charger.read()).applied_limit_a == 0.0
    clock.t += 4.5  # the gateway stops: the charger falls back on its own, to nothing
    assert sim.in_failsafe and sim.drawing_a == 0.0
    assert await driver.hold_fallbacks({"cp-1": 6.5}) == []  # the room is back: up again, never above 8 A
    assert sim.failsafe_a == 6.5
    assert await driver.hold_fallbacks({"cp-1": 20.0}, keep=["cp-1"]) == [] and sim.failsafe_a == 6.5
    assert await driver.hold_fallbacks({"cp-1": 20.0}) == [] and sim.failsafe_a == 6.5  # a raise waits a refresh
    clock.t += 2.0
    assert await driver.hold_fallbacks({"cp-1": 20.0}) == [] and sim.failsafe_a == 8.0
    assert await driver.hold_fallbacks({"cp-1": 0.0}) == [] and sim.failsafe_a == 0.0  # a lowering never waits


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
    backoff = FakeClock()
    sim, charger = await _pair(sims, "generic-charger", timeout_s=0.2, link_clock=backoff)
    assert (await charger.apply(10.0)).accepted
    sim.image.mute = True
    with caplog.at_level(logging.DEBUG, logger="gateway.modbus"):
        ack = await charger.apply(16.0)
        assert not ack.accepted and "no answer within 0.2 s" in ack.detail
        for _ in range(3):  # still silent after each backoff: offline, and nothing new in the log
            backoff.t += 1.0
            assert (await charger.read()).status is ChargerStatus.OFFLINE
        assert (await charger.read()).status is ChargerStatus.OFFLINE, "inside the backoff: no call at all"
        sim.image.mute = False
        charger.link.timeout_s = OK_TIMEOUT_S  # it answers again: no short timeout from here on
        assert (await charger.read()).status is ChargerStatus.OFFLINE, "still inside the backoff"
        backoff.t += 1.0  # past the (bounded) backoff
        assert (await charger.read()).status is not ChargerStatus.OFFLINE
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "link=127.0.0.1" in errors[0].getMessage() and "no answer within 0.2 s" in errors[0].getMessage()
    recovered = [r for r in caplog.records if r.levelno == logging.INFO and "recovered" in r.getMessage()]
    assert len(recovered) == 1
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
    link = ModbusLink("127.0.0.1", port, timeout_s=OK_TIMEOUT_S, backoff_s=0.05)
    charger = ModbusCharger("cp-1", load_map("generic-charger"), link, unit=7)
    ack = await charger.apply(10.0)
    assert not ack.accepted
    assert "exception 11 (gateway target failed to respond)" in ack.detail


async def test_link_drops_and_comes_back_and_failsafe_is_reprogrammed(sims: list[SimCharger]) -> None:
    backoff = FakeClock()
    sim, charger = await _pair(sims, "generic-charger", fallback_a=7.0, link_clock=backoff)
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
    backoff.t += 60.0  # past the longest backoff
    ack = await charger.apply(12.0)
    assert ack.accepted, ack.detail
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
                                                                   "port": pa, "timeout_s": OK_TIMEOUT_S}}),
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
    charger = ModbusCharger("cp", fc16_map, ModbusLink("127.0.0.1", port, timeout_s=OK_TIMEOUT_S))
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


async def test_the_readings_loop_keeps_the_charger_out_of_failsafe(sims: list[SimCharger]) -> None:
    clock = FakeClock()
    sim, charger = await _pair(sims, "generic-charger", clock=clock, fallback_a=6.0, failsafe_timeout_s=4.0)
    assert ModbusChargers([charger], poll_s=10.0).poll_s == 1.0, "at least twice per 2 s refresh period"
    driver = ModbusChargers([charger], poll_s=0.01)
    sim.plug_in(ev_max_a=32.0)
    assert (await driver.apply_limits({"cp-1": 20.0}, "t"))[0].accepted
    assert sim.failsafe_timeout_s == 4.0
    polls = 0
    async for _ in driver.readings():  # each reading is one poll; charger time moves 1 s per poll
        assert not sim.in_failsafe and sim.drawing_a == 20.0
        clock.t += 1.0
        polls += 1
        if polls == 12:  # 12 s of charger time, three times the failsafe timeout
            break
    assert 1 + 12 // 3 <= sum(1 for n, _ in sim.writes if n == "setpoint") <= 1 + 12 // 2
    clock.t += 4.5  # the gateway went quiet: the charger falls back by itself
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


async def test_a_charger_that_disagrees_is_not_taken_as_agreeing_on_the_next_tick(sims: list[SimCharger]) -> None:
    sim, charger = await _pair(sims, "alfen-ng9xx", rating_a=16.0)
    assert not (await charger.apply(25.0)).accepted
    again = await charger.apply(25.0)  # the same limit: not written again, and still not accepted
    assert not again.accepted and again.detail == "unchanged; charger reports 16 A after 25 A was written"
    assert [n for n, _ in sim.writes].count("setpoint") == 1
    assert (await charger.apply(12.0)).accepted
    assert (await charger.apply(12.0)).detail == "unchanged"


async def test_a_whole_amp_setpoint_is_rounded_down_never_up(sims: list[SimCharger]) -> None:
    sim, charger = await _pair(sims, "webasto-next", fallback_a=7.9)
    assert (await charger.apply(10.7)).accepted
    assert sim.setpoint_a == 10.0 and sim.failsafe_a == 7.0


async def test_abb_gets_its_fallback_limit_and_communication_timeout_at_connect(sims: list[SimCharger]) -> None:
    sim, charger = await _pair(sims, "abb-terra-ac", fallback_a=8.0)
    sim.plug_in(ev_max_a=32.0, phases=1)
    assert (await charger.apply(14.0)).accepted
    assert ("failsafe_current", 8.0) in sim.writes and ("failsafe_timeout", 60.0) in sim.writes
    reading = await charger.read()
    assert reading.status is ChargerStatus.CHARGING and reading.current_a["L1"] == 14.0


async def test_a_refused_failsafe_register_is_one_line_and_the_limit_still_goes_out(
    sims: list[SimCharger], caplog: pytest.LogCaptureFixture
) -> None:
    sim, charger = await _pair(sims, "abb-terra-ac", fallback_a=8.0)
    refuse = sim.image.on_write

    def older_firmware(name: str, value: float | str) -> ExcCodes | None:
        return ExcCodes.ILLEGAL_ADDRESS if name == "failsafe_current" else refuse(name, value)

    sim.image.on_write = older_firmware
    with caplog.at_level(logging.DEBUG, logger="gateway.modbus"):
        first = await charger.apply(12.0)
        second = await charger.apply(13.0)
        await charger.read()
    assert first.accepted and first.detail.endswith("failsafe not programmed")
    assert second.accepted and sim.setpoint_a == 13.0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["modbus charger=cp-1 failsafe failed: programming failsafe_current = 8 into holding 16649 "
                      "(0x4109): write 16649: exception 2 (illegal data address)"]


async def test_keba_is_read_one_value_per_request_and_its_failsafe_timeout_is_the_heartbeat(
    sims: list[SimCharger],
) -> None:
    clock = FakeClock()
    sim, charger = await _pair(sims, "keba-p30", clock=clock, fallback_a=6.0)
    sim.plug_in(ev_max_a=32.0)
    assert (await charger.apply(16.0)).accepted
    assert (await charger.read()).status is ChargerStatus.CHARGING
    sim.writes.clear()
    clock.t += 15.0  # half the 30 s failsafe timeout: the refresh rewrites the current and the timeout
    await charger.refresh()
    assert [n for n, _ in sim.writes] == ["setpoint", "enable", "failsafe_timeout"]

    # the same charger read by a map that asks for several values at once: the station refuses
    greedy = load_map("keba-p30").model_copy(update={"max_read": 120, "max_gap": 8})
    reader = ModbusCharger("cp-2", greedy, charger.link)
    assert (await reader.read()).status is ChargerStatus.FAULTED


async def test_a_second_call_waits_for_the_first_and_never_rides_a_timed_out_link(sims: list[SimCharger]) -> None:
    sim = SimCharger("generic-charger")
    sims.append(sim)
    link = ModbusLink("127.0.0.1", await sim.start(), timeout_s=OK_TIMEOUT_S, backoff_s=30.0)
    assert await link.read(Table.INPUT, 0, 1, 1) == [0]
    sim.image.mute = True
    link.timeout_s = 0.2
    first, second = await asyncio.gather(link.read(Table.INPUT, 0, 1, 1), link.read(Table.INPUT, 1, 1, 1),
                                         return_exceptions=True)
    # the second was held while the first was on the wire; the first timed out and dropped the link, so the
    # second was never sent on it (interleaved, it would have timed out on the same connection)
    assert isinstance(first, LinkError) and first.kind == "timeout"
    assert isinstance(second, LinkError) and second.kind == "offline" and "next try in" in second.detail
    await link.close()


async def test_a_charger_map_with_the_wrong_word_order_is_caught(
    sims: list[SimCharger], caplog: pytest.LogCaptureFixture
) -> None:
    sim, _ = await _pair(sims, "alfen-ng9xx")
    sim.plug_in(ev_max_a=16.0)
    wrong = load_map("alfen-ng9xx").model_copy(update={"word_order": "little"})
    charger = ModbusCharger("cp-1", wrong, ModbusLink("127.0.0.1", sim.port, timeout_s=OK_TIMEOUT_S))
    with caplog.at_level(logging.ERROR, logger="gateway.modbus"):
        reading = await charger.read()
    assert reading.status is ChargerStatus.UNAVAILABLE and reading.current_a == {}
    assert "wrong word order or scale in map alfen-ng9xx" in caplog.text


async def test_the_simulator_shows_its_failsafe_settings_as_programmed(sims: list[SimCharger]) -> None:
    _, charger = await _pair(sims, "webasto-next", fallback_a=9.0)
    link = charger.link
    before = await link.read(Table.HOLDING, 2000, 3, 255)
    assert before == [6, 0, 20], "the simulator's defaults: 6 A, and the map's 20 s"
    await charger.read()  # connecting programs the failsafe
    assert await link.read(Table.HOLDING, 2000, 3, 255) == [9, 0, 20]
