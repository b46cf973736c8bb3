"""The OCPP driver against real simulated charge points: base profile at boot, leased live limits, fallback.

Scenarios run for both protocol versions over real websockets on 127.0.0.1 with OS-chosen ports.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.ocpp import PASSWORD, base_url, charger, collect_readings, section
from support.waiting import until

from gateway.domain import ChargerStatus
from gateway.ocpp import OcppDriver
from gateway.ocpp.cp201 import Cp201
from gateway.ports import EvseDriver
from gateway.sim.ocpp_cp import Ev, Quirks, SimChargePoint
from gateway.store.chargers import ChargerBook


@pytest.fixture(params=["1.6", "2.0.1"])
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def site(version: str) -> AsyncIterator[tuple[OcppDriver, SimChargePoint]]:
    driver = OcppDriver(section(), [charger("cp1", f"ocpp{version}")])
    await driver.start()
    sim = SimChargePoint(base_url(driver), "cp1", version=version, password=PASSWORD,  # type: ignore[arg-type]
                         ev=Ev(max_a=20))
    await sim.start()
    try:
        yield driver, sim
    finally:
        await sim.stop()
        await driver.stop(release=False)


async def test_driver_is_an_evse_driver() -> None:
    assert isinstance(OcppDriver(section(), []), EvseDriver)


async def test_boot_installs_the_base_profile_before_any_limit(site: tuple[OcppDriver, SimChargePoint]) -> None:
    driver, sim = site
    await until(lambda: sim.limit_a() == 8.0)
    await sim.plug_in()
    assert sim.draw_a() == 8.0  # the fallback holds from the first second, not "unlimited"
    # counted at its maximum until the live slot is known empty, then at its fallback
    await until(lambda: driver.applied_limit(driver.controls["cp1"]) == 8.0)


async def test_a_limit_takes_effect_and_the_fallback_returns_when_the_gateway_dies(
    site: tuple[OcppDriver, SimChargePoint],
) -> None:
    driver, sim = site
    await until(lambda: sim.limit_a() == 8.0)
    await sim.plug_in()
    acks = await driver.apply_limits({"cp1": 16.0}, "test")
    assert [(a.charger_id, a.amps, a.accepted) for a in acks] == [("cp1", 16.0, True)]
    assert sim.draw_a() == 16.0
    # the lease is renewed while the gateway lives: a later validTo arrives before the first one ends,
    # and past that first end the charger still holds 16 A
    first_end = sim.book.profiles[2].valid_to
    assert first_end is not None
    await until(lambda: (end := sim.book.profiles[2].valid_to) is not None and end > first_end)
    # the charger takes it before its answer reaches the driver's history: wait for that too
    await until(lambda: any(r.reason == "lease renewal" and r.accepted for r in driver.history))
    await asyncio.sleep(max(0.0, (first_end - datetime.now(UTC)).total_seconds()) + 0.2)
    assert sim.draw_a() == 16.0
    # the gateway dies without saying goodbye: the charger falls back by itself when the lease ends
    await driver.stop(release=False)
    await until(lambda: sim.draw_a() == 8.0, timeout_s=3.0)


async def test_graceful_stop_releases_the_live_limit_at_once(site: tuple[OcppDriver, SimChargePoint]) -> None:
    driver, sim = site
    await until(lambda: sim.limit_a() == 8.0)
    await sim.plug_in()
    await driver.apply_limits({"cp1": 20.0}, "test")
    assert sim.draw_a() == 20.0
    await driver.stop(release=True)
    assert sim.draw_a() == 8.0


async def test_only_changed_limits_are_sent(version: str) -> None:
    driver = OcppDriver(section(lease_s=30), [charger("cp1", f"ocpp{version}")])
    await driver.start()
    sim = SimChargePoint(base_url(driver), "cp1", version=version, password=PASSWORD)  # type: ignore[arg-type]
    await sim.start()
    try:
        await until(lambda: sim.limit_a() == 8.0)
        await _only_changed(driver, sim)
    finally:
        await sim.stop()
        await driver.stop()


async def _only_changed(driver: OcppDriver, sim: SimChargePoint) -> None:
    await driver.apply_limits({"cp1": 12.0}, "first")
    sent = len(sim.received)
    acks = await driver.apply_limits({"cp1": 12.04}, "same after rounding")
    assert acks[0].accepted and acks[0].detail == "unchanged"
    assert len(sim.received) == sent
    await driver.apply_limits({"cp1": 0.0}, "pause")
    assert sim.limit_a() == 0.0
    assert [r.reason for r in driver.history][-2:] == ["first", "pause"]


async def test_readings_carry_status_current_energy_and_session(site: tuple[OcppDriver, SimChargePoint]) -> None:
    driver, sim = site
    seen, task = collect_readings(driver)
    try:
        await until(lambda: sim.limit_a() == 8.0)
        await sim.plug_in()
        await driver.apply_limits({"cp1": 16.0}, "test")
        await until(lambda: any(r.current_a.get("L3") == 16.0 for r in seen), timeout_s=4.0)
        last = next(r for r in reversed(seen) if r.current_a)
        assert last.status is ChargerStatus.CHARGING
        assert last.session_id is not None
        assert last.power_kw == pytest.approx(16 * 230 * 3 / 1000, rel=0.01)
        assert last.applied_limit_a == 16.0
        await sim.unplug()
        await until(lambda: seen[-1].status is ChargerStatus.AVAILABLE and seen[-1].session_id is None)
        await sim.stop()
        await until(lambda: seen[-1].status is ChargerStatus.OFFLINE)
    finally:
        task.cancel()


async def test_offline_charger_gets_its_limit_when_it_comes_back(version: str) -> None:
    driver = OcppDriver(section(lease_s=30), [charger("cp1", f"ocpp{version}")])
    async with driver:
        acks = await driver.apply_limits({"cp1": 10.0}, "before it connects")
        assert not acks[0].accepted and "offline" in acks[0].detail
        sim = SimChargePoint(base_url(driver), "cp1", version=version, password=PASSWORD)  # type: ignore[arg-type]
        await sim.start()
        try:
            await until(lambda: sim.limit_a() == 10.0)
        finally:
            await sim.stop()


async def test_ev_charging_needs_reach_the_allocator() -> None:
    departure = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)
    driver = OcppDriver(section(), [charger("cp1", "ocpp2.0.1")])
    async with driver:
        sim = SimChargePoint(base_url(driver), "cp1", version="2.0.1", password=PASSWORD)
        await sim.start()
        seen, task = collect_readings(driver)
        try:
            await sim.plug_in(Ev(max_a=16, departure=departure, energy_wh=30_000))
            await until(lambda: any(r.departure == departure for r in seen))
            assert seen[-1].energy_requested_kwh == 30.0
        finally:
            task.cancel()
            await sim.stop()


async def test_an_ev_drawing_well_under_its_limit_offers_the_rest_back() -> None:
    driver = OcppDriver(section(lease_s=30, hand_back_after_s=1.0), [charger("cp1")])
    async with driver:
        sim = SimChargePoint(base_url(driver), "cp1", password=PASSWORD, ev=Ev(max_a=10))
        await sim.start()
        try:
            await until(lambda: sim.limit_a() == 8.0)
            await sim.plug_in()
            await driver.apply_limits({"cp1": 24.0}, "test")
            assert sim.draw_a() == 10.0
            await until(lambda: driver.unused_cap("cp1") == 11.0, timeout_s=4.0)
            sim.ev.max_a = 32  # the car wants more again
            await until(lambda: driver.unused_cap("cp1") is None, timeout_s=3.0)
        finally:
            await sim.stop()


async def test_composite_schedule_shows_the_limit_in_force() -> None:
    driver = OcppDriver(section(lease_s=30), [charger("cp1", "ocpp2.0.1")])
    async with driver:
        sim = SimChargePoint(base_url(driver), "cp1", version="2.0.1", password=PASSWORD)
        await sim.start()
        try:
            await until(lambda: sim.limit_a() == 8.0)
            await driver.apply_limits({"cp1": 12.5}, "test")
            station = driver.controls["cp1"].station
            assert isinstance(station, Cp201)
            schedule = await station.composite_schedule(0, 60)
            assert schedule is not None and schedule["charging_schedule_period"][0]["limit"] == 12.5
        finally:
            await sim.stop()


async def test_after_a_gateway_restart_an_old_live_profile_is_cleared_before_fallback_is_believed() -> None:
    first = OcppDriver(section(lease_s=60), [charger("cp1")])
    await first.start()
    port = first.server.port
    sim = SimChargePoint(base_url(first), "cp1", password=PASSWORD, quirks=Quirks(boot_on_reconnect=False))
    await sim.start()
    try:
        await until(lambda: sim.limit_a() == 8.0)
        await first.apply_limits({"cp1": 24.0}, "before the crash")
        await first.stop(release=False)  # dies: the charger keeps 24 A for up to a minute
        assert sim.limit_a() == 24.0
        second = OcppDriver(section(lease_s=60, port=port), [charger("cp1")])
        async with second:
            seen, task = collect_readings(second)
            try:
                await until(lambda: second.controls["cp1"].station is not None, timeout_s=5.0)
                await until(lambda: sim.limit_a() == 8.0)  # the stale 24 A profile is gone
                await until(lambda: seen[-1].applied_limit_a == 8.0)
                # until then nobody claimed the charger was at its fallback
                before = [r.applied_limit_a for r in seen[:-1] if r.applied_limit_a is not None]
                assert all(a == 32.0 for a in before[1:])
            finally:
                task.cancel()
    finally:
        await sim.stop()


async def test_after_a_restart_the_store_says_what_a_charger_holds_and_a_201_charger_says_it_charges(
        tmp_path: Path) -> None:
    """The previous process's lease is read from the store and counted (not the maximum, not the fallback),
    the charging EV stays charging (the status the store kept until the charger reports), and a 2.0.1
    station is asked for a TransactionEvent, since periodic ones need not carry the charging state."""
    book = ChargerBook.open(tmp_path / "gw.sqlite")
    first = OcppDriver(section(lease_s=60), [charger("cp1", "ocpp2.0.1")], book=book)
    await first.start()
    port = first.server.port
    sim = SimChargePoint(base_url(first), "cp1", version="2.0.1", password=PASSWORD,
                         quirks=Quirks(boot_on_reconnect=False))
    await sim.start()
    try:
        await until(lambda: sim.limit_a() == 8.0)
        await sim.plug_in()
        await first.apply_limits({"cp1": 24.0}, "before the crash")
        await until(lambda: book.load().get("cp1") is not None and book.load()["cp1"].live_a == 24.0)
        await first.stop(release=False)  # dies: the charger keeps 24 A on its lease
        second = OcppDriver(section(lease_s=60, port=port), [charger("cp1", "ocpp2.0.1")], book=book)
        ctl = second.controls["cp1"]
        assert second.applied_limit(ctl) == 24.0  # its lease, before it even reconnects
        async with second:
            await until(lambda: ctl.station is not None, timeout_s=5.0)
            assert ctl.view.status() is ChargerStatus.CHARGING  # as the store had it, until it reports
            await until(lambda: ("TriggerMessage", {"requestedMessage": "TransactionEvent", "evse": {"id": 1}})
                        in list(sim.requests))
            await until(lambda: ctl.view.connectors.get(1) is ChargerStatus.CHARGING)
            assert sim.limit_a() == 24.0 and sim.draw_a() == 24.0  # nothing cleared, nothing paused
            assert second.applied_limit(ctl) == 24.0
    finally:
        await sim.stop()
        book.close()


@pytest.mark.parametrize("skew_s", [3600.0, -3600.0])
async def test_a_charger_whose_clock_is_an_hour_off_still_applies_and_drops_its_lease(version: str,
                                                                                   skew_s: float) -> None:
    """Profiles go out in the charger's own time (from the timestamps it sends): an hour ahead it would
    otherwise drop every lease on arrival (validTo in its past) and sit at its fallback; an hour behind it
    would ignore every profile (startSchedule in its future) or keep a lease an hour too long."""
    driver = OcppDriver(section(lease_s=3.0), [charger("cp1", f"ocpp{version}")])
    await driver.start()
    sim = SimChargePoint(base_url(driver), "cp1", version=version, password=PASSWORD,  # type: ignore[arg-type]
                         ev=Ev(max_a=32), meter_interval_s=1, clock_offset=timedelta(seconds=skew_s))
    await sim.start()
    try:
        await sim.plug_in()
        await until(lambda: len(sim.trace) > 0 and driver.controls["cp1"].view.clock_offset() != timedelta(0),
                    timeout_s=10.0)
        assert abs(driver.controls["cp1"].view.clock_offset().total_seconds() - skew_s) < 2.0
        acks = await driver.apply_limits({"cp1": 20.0}, "skewed")
        assert acks[0].accepted
        assert sim.limit_a() == 20.0 and sim.draw_a() == 20.0  # in force at once, in its own time
        await asyncio.sleep(4.0)  # longer than a lease: renewed in its own time, still in force
        assert sim.limit_a() == 20.0
        await driver.stop(release=False)
        await until(lambda: sim.limit_a() == 8.0, timeout_s=5.0)  # and it ends within a lease, not an hour
    finally:
        await sim.stop()
        await driver.stop(release=False)


async def test_a_clean_stop_says_which_chargers_did_not_confirm_their_release() -> None:
    driver = OcppDriver(section(lease_s=30, response_timeout_s=1.0), [charger("cp1"), charger("cp2")])
    await driver.start()
    sims = [SimChargePoint(base_url(driver), cid, password=PASSWORD) for cid in ("cp1", "cp2")]
    await asyncio.gather(*(s.start() for s in sims))
    try:
        await until(lambda: all(s.limit_a() == 8.0 for s in sims))
        await driver.apply_limits({"cp1": 20.0, "cp2": 20.0}, "test")

        def failing_clear(*args: object) -> bool:
            raise RuntimeError("firmware fault")  # cp2 answers the clear with a CallError, clearing nothing

        sims[1].clear_profiles = failing_clear  # type: ignore[method-assign,assignment]  # a charger that fails
        kept = await driver.stop(release=True)
        assert kept == ["cp2"] and sims[0].limit_a() == 8.0 and sims[1].limit_a() == 20.0
    finally:
        await asyncio.gather(*(s.stop() for s in sims))
