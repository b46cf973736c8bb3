"""The Modbus meter poller against simulated meters over real TCP on 127.0.0.1: per-phase values with
their timestamp, export as negative, a silent meter going stale, wrong word order caught, the poll rate."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pymodbus.constants import ExcCodes

from gateway.config.site import MeterSection
from gateway.modbus.link import LinkPool, ModbusLink
from gateway.modbus.maps import load_map
from gateway.modbus.meter import ModbusMeter
from gateway.ports import Meter
from gateway.sim.modbus_meter import SimMeter

METERS = ["eastron-sdm630", "carlo-gavazzi-em24"]


class FakeClock:
    def __init__(self) -> None:
        self.t = 50.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def sims() -> AsyncIterator[list[SimMeter]]:
    made: list[SimMeter] = []
    yield made
    for sim in made:
        await sim.stop()


# For calls that must succeed: generous, so a busy machine never turns an answer into a timeout.
OK_TIMEOUT_S = 5.0


async def _pair(sims: list[SimMeter], model: str, clock: FakeClock | None = None, timeout_s: float = OK_TIMEOUT_S,
                **kw: float) -> tuple[SimMeter, ModbusMeter]:
    now = clock or time.monotonic
    sim = SimMeter(model, clock=now)
    sims.append(sim)
    port = await sim.start()
    link = ModbusLink("127.0.0.1", port, timeout_s=timeout_s, backoff_s=0.05, backoff_max_s=0.2, clock=now)
    meter = ModbusMeter("site", load_map(model), link, clock=now, **kw)  # type: ignore[arg-type]
    return sim, meter


@pytest.mark.parametrize("model", METERS)
async def test_per_phase_readings_with_their_timestamp(model: str, sims: list[SimMeter]) -> None:
    sim, meter = await _pair(sims, model)
    sim.set_load(L1=40.0, L2=12.5, L3=3.0)
    before = datetime.now(UTC)
    m = await meter.poll_once()
    assert m is not None
    assert before <= m.at <= datetime.now(UTC)
    assert m.meter_id == "site"
    assert m.current_a == pytest.approx({"L1": 40.0, "L2": 12.5, "L3": 3.0})
    assert m.voltage_v == pytest.approx({"L1": 230.0, "L2": 230.0, "L3": 230.0})
    assert m.power_phase_kw["L1"] == pytest.approx(9.2, abs=1e-3)
    assert m.power_kw == pytest.approx(230 * 55.5 / 1000, abs=1e-3)
    assert not meter.stale()


@pytest.mark.parametrize("model", METERS)
async def test_export_is_negative_power_and_negative_amps(model: str, sims: list[SimMeter]) -> None:
    clock = FakeClock()
    sim, meter = await _pair(sims, model, clock)
    sim.set_load(L1=-20.0, L2=-20.0, L3=5.0)  # PV exporting on two phases
    clock.t += 3600.0
    m = await meter.poll_once()
    assert m is not None and m.power_kw is not None and m.export_kwh is not None
    assert m.power_kw == pytest.approx(-230 * 35 / 1000, abs=1e-3)
    assert m.current_a["L1"] == pytest.approx(-20.0) and m.current_a["L3"] == pytest.approx(5.0)
    assert m.export_kwh == pytest.approx(8.05, abs=0.1)


async def test_a_silent_meter_goes_stale_and_recovers(
    sims: list[SimMeter], caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    sim, meter = await _pair(sims, "eastron-sdm630", clock, timeout_s=0.3, stale_after_s=5.0)
    assert meter.stale(), "no reading yet is stale"
    sim.set_load(L1=25.0)
    assert await meter.poll_once() is not None
    sim.set_load(L1=5.0)
    assert await meter.poll_once() is not None
    sim.image.mute = True
    with caplog.at_level(logging.DEBUG, logger="gateway.modbus"):
        for _ in range(3):
            clock.t += 2.0
            assert await meter.poll_once() is None
    assert meter.stale() and meter.age_s() == pytest.approx(6.0)
    assert meter.worst_recent_a(window_s=10.0)["L1"] == pytest.approx(25.0)
    assert meter.worst_recent_a() == {}, "nothing good within stale_after_s"
    assert meter.last is not None, "the last good reading is kept, with its old timestamp"
    sim.image.mute = False
    meter.link.timeout_s = OK_TIMEOUT_S  # it answers again: no short timeout from here on
    clock.t += 1.0  # past the bounded backoff
    assert await meter.poll_once() is not None
    assert not meter.stale()
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


async def test_exception_answers_yield_nothing(sims: list[SimMeter]) -> None:
    sim, meter = await _pair(sims, "carlo-gavazzi-em24")
    sim.image.fail_with = ExcCodes.ILLEGAL_ADDRESS
    assert await meter.poll_once() is None
    assert meter.polls_failed == 1


@pytest.mark.parametrize(("model", "wrong"), [("eastron-sdm630", "little"), ("carlo-gavazzi-em24", "big")])
async def test_wrong_word_order_is_caught_by_the_sanity_check(
    model: str, wrong: str, sims: list[SimMeter], caplog: pytest.LogCaptureFixture
) -> None:
    sim = SimMeter(model)
    sims.append(sim)
    port = await sim.start()
    sim.set_load(L1=16.0, L2=16.0, L3=16.0)
    bad_map = load_map(model).model_copy(update={"word_order": wrong})
    meter = ModbusMeter("site", bad_map, ModbusLink("127.0.0.1", port, timeout_s=OK_TIMEOUT_S))
    with caplog.at_level(logging.ERROR, logger="gateway.modbus"):
        assert await meter.poll_once() is None
    assert "wrong word order" in caplog.text
    assert meter.stale()


async def test_polls_at_250_ms_from_site_config(sims: list[SimMeter]) -> None:
    sim = SimMeter("eastron-sdm630")
    sims.append(sim)
    port = await sim.start()
    section = MeterSection.model_validate({"id": "main", "poll_s": 0.25, "stale_after_s": 2,
                                           "modbus": {"model": "eastron-sdm630", "host": "127.0.0.1", "port": port}})
    pool = LinkPool()
    meter = ModbusMeter.from_config(section, pool)
    assert isinstance(meter, Meter)
    assert meter.poll_s == 0.25
    got = []
    async for m in meter.measurements():
        got.append(m)
        if len(got) == 5:
            break
    # never faster than the configured rate: poll k starts no earlier than its slot, k × 0.25 s after the
    # first (how close to the rate a busy machine gets is for bench/)
    assert all(a.at < b.at for a, b in itertools.pairwise(got))
    assert (got[-1].at - got[0].at).total_seconds() >= 4 * 0.25 - 0.01
    assert meter.polls_ok == 5 and not meter.stale()
    await pool.close()


def test_the_poll_rate_is_bounded_at_250_ms() -> None:
    link = ModbusLink("127.0.0.1", 1)
    assert ModbusMeter("m", load_map("eastron-sdm630"), link, poll_s=0.05).poll_s == 0.25
    assert ModbusMeter("m", load_map("eastron-sdm630"), link, poll_s=2.0).poll_s == 2.0


async def test_a_charger_map_is_not_a_meter() -> None:
    with pytest.raises(ValueError, match="not a meter map"):
        ModbusMeter("m", load_map("webasto-next"), ModbusLink("127.0.0.1", 1))


async def test_a_lying_sim_meter_is_read_as_it_lies_and_absurd_values_are_refused_with_why(
    sims: list[SimMeter], caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    sim, meter = await _pair(sims, "eastron-sdm630", clock)
    sim.set_load(L1=30.0, L2=30.0, L3=30.0)
    sim.lie(L1=-50.0, L2=0.0)
    m = await meter.poll_once()
    assert m is not None and m.current_a == pytest.approx({"L1": -50.0, "L2": 0.0, "L3": 30.0})
    assert m.power_phase_kw["L1"] < 0, "a lie in amps comes with the power that goes with it"
    meter.report_values = False  # the runtime reports refused values through its meter check
    for absurd in (1e9, float("nan")):
        sim.lie(L1=absurd)
        with caplog.at_level(logging.DEBUG, logger="gateway.modbus"):
            result = await meter.poll()
        assert result.measurement is None and result.rejected is not None and "current_l1" in result.rejected
        assert meter.rejected == result.rejected and result.values
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "left to the caller to report"
    sim.tell_truth()
    good = await meter.poll()
    assert good.measurement is not None and good.rejected is None and meter.rejected is None
    assert good.measurement.current_a["L1"] == pytest.approx(30.0)


async def test_a_frozen_sim_meter_repeats_every_value_while_a_live_one_does_not(sims: list[SimMeter]) -> None:
    clock = FakeClock()
    sim, meter = await _pair(sims, "eastron-sdm630", clock)
    sim.set_load(L1=20.0, L2=20.0, L3=20.0)
    first = await meter.poll()
    clock.t += 1.0
    second = await meter.poll()
    assert first.values != second.values, "a live meter's energy counter moves with current flowing"
    sim.freeze()
    frozen = await meter.poll()
    sim.set_load(L1=35.0, L2=35.0, L3=35.0)  # the house rises under the frozen meter
    clock.t += 1.0
    again = await meter.poll()
    assert frozen.values == again.values and again.measurement is not None
    assert again.measurement.current_a["L1"] == pytest.approx(20.0)
    assert again.at > frozen.at, "each poll carries its own monotonic time"
    sim.tell_truth()
    thawed = await meter.poll()
    assert thawed.measurement is not None and thawed.measurement.current_a["L1"] == pytest.approx(35.0)


async def test_the_age_of_a_reading_is_monotonic_whatever_the_wall_clock_does(sims: list[SimMeter]) -> None:
    clock = FakeClock()
    walls = iter([datetime(2026, 1, 5, 12, 0, tzinfo=UTC), datetime(2026, 1, 5, 11, 0, tzinfo=UTC)])
    sim = SimMeter("eastron-sdm630", clock=clock)
    sims.append(sim)
    port = await sim.start()
    meter = ModbusMeter("site", load_map("eastron-sdm630"), ModbusLink("127.0.0.1", port, timeout_s=OK_TIMEOUT_S,
                        clock=clock), clock=clock, wall=lambda: next(walls), stale_after_s=5.0)
    assert await meter.poll_once() is not None
    clock.t += 6.0  # the wall clock stepped back an hour meanwhile: the reading is still 6 s old
    assert meter.age_s() == pytest.approx(6.0) and meter.stale()
