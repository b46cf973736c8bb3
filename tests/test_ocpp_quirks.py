"""Misbehaving chargers and users: strategies that fall back, slow acks, drops, garbage, bad credentials."""

from __future__ import annotations

import asyncio
import logging

import pytest
from support.ocpp import PASSWORD, base_url, charger, collect_readings, section
from support.waiting import until

from gateway.config.ocpp import OcppSection
from gateway.domain import ChargerStatus
from gateway.ocpp import OcppDriver
from gateway.sim.ocpp_cp import Quirks, SimChargePoint


@pytest.fixture(params=["1.6", "2.0.1"])
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def station_max(version: str) -> str:
    return "ChargePointMaxProfile" if version == "1.6" else "ChargingStationMaxProfile"


async def test_charger_rejecting_the_station_profile_is_limited_by_tx_default_and_remembered(version: str) -> None:
    driver = OcppDriver(section(lease_s=30), [charger("cp1", f"ocpp{version}")])
    async with driver:
        quirks = Quirks(reject_purposes=frozenset({station_max(version)}), boot_on_reconnect=False)
        sim = SimChargePoint(base_url(driver), "cp1", version=version, password=PASSWORD, quirks=quirks)  # type: ignore[arg-type]
        await sim.start()
        try:
            await until(lambda: sim.limit_a() == 8.0)  # the base went in as TxDefaultProfile
            await sim.plug_in()
            acks = await driver.apply_limits({"cp1": 14.0}, "test")
            assert acks[0].accepted
            assert sim.draw_a() == 14.0
            assert driver.history[-1].strategy == "TxDefaultProfile/A/sl1"
            # after a drop it goes straight to what worked
            tried = len(sim.received)
            await sim.drop()
            await until(lambda: len(sim.received) >= tried + 2)
            assert all(p.startswith("TxDefaultProfile") for p, _ in sim.received[tried:])
            assert sim.draw_a() == 14.0
        finally:
            await sim.stop()


async def test_a_call_error_to_the_station_profile_moves_on_to_tx_default_and_is_remembered(version: str) -> None:
    driver = OcppDriver(section(lease_s=30), [charger("cp1", f"ocpp{version}")])
    async with driver:
        quirks = Quirks(call_error_purposes=frozenset({station_max(version)}))
        sim = SimChargePoint(base_url(driver), "cp1", version=version, password=PASSWORD, quirks=quirks)  # type: ignore[arg-type]
        await sim.start()
        try:
            await until(lambda: sim.limit_a() == 8.0)  # the base went in as TxDefaultProfile after the CallError
            assert (f"{station_max(version)}/A", "CallError") in sim.received
            await sim.plug_in()
            acks = await driver.apply_limits({"cp1": 14.0}, "test")
            assert acks[0].accepted and sim.draw_a() == 14.0
            assert driver.history[-1].strategy == "TxDefaultProfile/A/sl1"
            tried = len(sim.received)
            acks = await driver.apply_limits({"cp1": 11.0}, "again")
            assert acks[0].accepted and sim.draw_a() == 11.0
            assert sim.received[tried:] == [("TxDefaultProfile/A", "Accepted")]  # straight to what worked
        finally:
            await sim.stop()


@pytest.mark.parametrize("says", ["reports 0", "lies: reports 8"])
async def test_a_stack_level_0_charger_is_always_leased_and_falls_back(version: str, says: str) -> None:
    """Stack level 0 only (ABB Terra AC is reported so): base TxDefaultProfile at level 0, the live limit
    beside it at level 0 under another purpose, always with a lease: a TxProfile in a session, a station
    cap under the fallback with nobody there. Never the unleased slot, never a profile the rules refuse."""
    key = "ChargeProfileMaxStackLevel" if version == "1.6" else "ProfileStackLevel"
    quirks = Quirks(reports={key: "0"}) if says == "reports 0" else Quirks(only_stack_level_0=True)
    driver = OcppDriver(section(lease_s=2), [charger("cp1", f"ocpp{version}")])
    await driver.start()
    sim = SimChargePoint(base_url(driver), "cp1", version=version, password=PASSWORD,  # type: ignore[arg-type]
                         quirks=quirks)
    await sim.start()
    ctl = driver.controls["cp1"]
    station = "ChargePointMaxProfile" if version == "1.6" else "ChargingStationMaxProfile"
    try:
        await until(lambda: sim.limit_a() == 8.0)
        await sim.plug_in()
        acks = await driver.apply_limits({"cp1": 20.0}, "test")
        assert acks[0].accepted and sim.draw_a() == 20.0
        assert driver.history[-1].strategy == "TxProfile/A/sl0"
        # the car leaves; a limit at or above the fallback needs nothing sent: the TxDefault base holds
        await sim.unplug()
        sent = len(sim.received)
        acks = await driver.apply_limits({"cp1": 10.0}, "idle")
        assert acks[0].accepted and "no session" in acks[0].detail and len(sim.received) == sent
        assert driver.applied_limit(ctl) == 8.0  # a car arriving now may draw the fallback
        # the next car: its TxProfile follows as soon as the session starts
        await sim.plug_in()
        await until(lambda: any(r.reason == "new session: idle" and r.accepted for r in driver.history))
        assert sim.draw_a() == 10.0 and driver.history[-1].strategy == "TxProfile/A/sl0"
        # under the fallback with nobody there: a leased station cap beside the base (the lower is in force)
        await sim.unplug()
        acks = await driver.apply_limits({"cp1": 0.0}, "nobody")
        assert acks[0].accepted and driver.history[-1].strategy == f"{station}/A/sl0"
        # counted at its base's fallback all the same: the cap's lease runs out by itself
        assert sim.limit_a() == 0.0 and driver.applied_limit(ctl) == 8.0
        # its fallback lowered too (and confirmed): now nothing puts it back on more
        assert await driver.hold_fallbacks({"cp1": 0.0}) == []
        assert ctl.base_amps == 0.0 and driver.applied_limit(ctl) == 0.0
        assert await driver.hold_fallbacks({"cp1": 8.0}) == []  # raised again later, by the renewal task
        await until(lambda: ctl.base_amps == 8.0, timeout_s=4.0)
        await sim.plug_in()
        assert sim.draw_a() == 0.0
        # the session starts: re-chosen, a leased TxProfile (same id: it replaces the cap)
        acks = await driver.apply_limits({"cp1": 20.0}, "car back")
        await until(lambda: sim.draw_a() == 20.0)
        # the charger applies it before its answer reaches the driver's history: wait for that too
        await until(lambda: driver.history[-1].strategy == "TxProfile/A/sl0" and driver.history[-1].accepted)
        await sim.unplug()
        await driver.apply_limits({"cp1": 0.0}, "nobody again")
        assert sim.limit_a() == 0.0
        # the gateway dies holding the cap: it runs out and the base fallback takes over by itself
        await driver.stop(release=False)
        await until(lambda: sim.limit_a() == 8.0, timeout_s=4.0)
        if says == "reports 0":
            assert sim.rejections == []  # it was told nothing the rules refuse
        assert all(not label.endswith("unleased") for label in (r.strategy for r in driver.history))
    finally:
        await sim.stop()
        await driver.stop(release=False)


async def test_watts_only_charger_gets_watts(version: str) -> None:
    driver = OcppDriver(section(lease_s=30), [charger("cp1", f"ocpp{version}")], watts_per_amp={"cp1": 690.0})
    async with driver:
        sim = SimChargePoint(base_url(driver), "cp1", version=version, password=PASSWORD,  # type: ignore[arg-type]
                             quirks=Quirks(watts_only=True))
        await sim.start()
        try:
            await until(lambda: sim.limit_a() == 8.0)
            await sim.plug_in()
            acks = await driver.apply_limits({"cp1": 16.0}, "test")
            assert acks[0].accepted
            assert sim.draw_a() == 16.0
            assert driver.history[-1].strategy.endswith("/W/sl1")
        finally:
            await sim.stop()


async def test_a_slow_charger_delays_nobody_and_counts_at_what_it_may_hold_until_it_answers() -> None:
    ids = ["slow", "a", "b", "c"]
    driver = OcppDriver(section(lease_s=30, ack_wait_s=2.0, response_timeout_s=10),
                        [charger(i, "ocpp1.6") for i in ids])
    async with driver:
        sims = {i: SimChargePoint(base_url(driver), i, password=PASSWORD) for i in ids}
        await asyncio.gather(*(s.start() for s in sims.values()))
        _seen, task = collect_readings(driver)
        try:
            await until(lambda: all(s.limit_a() == 8.0 for s in sims.values()))
            await until(lambda: all(c.setup is not None and c.setup.done() for c in driver.controls.values()))
            gate = asyncio.Event()  # the slow charger answers only when the test says so: no clock involved
            sims["slow"].quirks.ack_gate = gate
            acks = {a.charger_id: a for a in await driver.apply_limits(dict.fromkeys(ids, 12.0), "test")}
            # the others got their limit and answered while the slow one still sits on its answer
            assert all(acks[i].accepted and sims[i].limit_a() == 12.0 for i in "abc")
            assert not acks["slow"].accepted and "no answer yet" in acks["slow"].detail
            assert sims["slow"].limit_a() == 8.0
            # unanswered, it may hold either its fallback or the 12 A on their way: counted at the higher
            assert driver.applied_limit(driver.controls["slow"]) == 12.0
            assert not any(r.charger_id == "slow" for r in driver.history if r.reason == "test")
            gate.set()
            await until(lambda: any(r.charger_id == "slow" and r.reason == "test" for r in driver.history), 5.0)
            assert sims["slow"].limit_a() == 12.0
            # the late answer is on record: accepted, and a round trip longer than the wait it outlasted
            late = next(r for r in driver.history if r.charger_id == "slow" and r.reason == "test")
            assert late.accepted and late.round_trip_s > driver.section.ack_wait_s > max(acks[i].round_trip_s
                                                                                        for i in "abc")
        finally:
            task.cancel()
            await asyncio.gather(*(s.stop() for s in sims.values()))


async def test_a_charger_that_drops_mid_session_comes_back_with_its_limit(version: str) -> None:
    driver = OcppDriver(section(lease_s=30), [charger("cp1", f"ocpp{version}")])
    async with driver:
        sim = SimChargePoint(base_url(driver), "cp1", version=version, password=PASSWORD)  # type: ignore[arg-type]
        await sim.start()
        seen, task = collect_readings(driver)
        try:
            await until(lambda: sim.limit_a() == 8.0)
            await sim.plug_in()
            await driver.apply_limits({"cp1": 18.0}, "test")
            await sim.drop()
            await until(lambda: any(r.status is ChargerStatus.OFFLINE for r in seen))
            # while it is away the driver does not trust the lease it gave: counts the charger at most at 18 A
            assert driver.applied_limit(driver.controls["cp1"]) == 18.0
            sim.book.clear()  # it rebooted and lost its profiles
            await until(lambda: sim.connected.is_set() and sim.limit_a() == 18.0)
            assert sim.boots == 2
            acks = await driver.apply_limits({"cp1": 10.0}, "after the drop")
            assert acks[0].accepted and sim.draw_a() == 10.0
        finally:
            task.cancel()
            await sim.stop()


async def test_malformed_frames_and_unknown_actions_get_the_right_call_error(
    version: str, caplog: pytest.LogCaptureFixture
) -> None:
    driver = OcppDriver(section(lease_s=30), [charger("cp1", f"ocpp{version}")])
    async with driver:
        sim = SimChargePoint(base_url(driver), "cp1", version=version, password=PASSWORD)  # type: ignore[arg-type]
        await sim.start()
        try:
            await until(lambda: sim.limit_a() == 8.0)
            with caplog.at_level(logging.WARNING, logger="gateway.ocpp"):
                unknown = await sim.send_raw('[2, "u1", "MakeCoffee", {}]')
                known = await sim.send_raw('[2, "u2", "Reset", {"type": "Hard"}]')
                bad = await sim.send_raw('[2, "u3", "Heartbeat", {"surprise": 1}]')
                garbage = await sim.send_raw("this is not json", timeout_s=0.3)
            assert unknown is not None and unknown[:3] == [4, "u1", "NotImplemented"]
            assert known is not None and known[:3] == [4, "u2", "NotSupported"]
            violation = "FormationViolation" if version == "1.6" else "FormatViolation"
            assert bad is not None and bad[:3] == [4, "u3", violation]
            if version == "1.6":
                assert garbage is None
            else:
                assert garbage is not None and garbage[:3] == [4, "-1", "RpcFrameworkError"]
            assert "Traceback" not in caplog.text
            lines = [r for r in caplog.records if "malformed" in r.getMessage() or "refused" in r.getMessage()]
            assert len(lines) == 4  # one line per bad frame
            # nothing else disturbed: the link still carries limits
            acks = await driver.apply_limits({"cp1": 11.0}, "after garbage")
            assert acks[0].accepted and sim.limit_a() == 11.0
        finally:
            await sim.stop()


@pytest.mark.parametrize(
    ("cp_id", "password", "status"),
    [("cp1", "wrong-password", 401), ("cp1", None, 401), ("stranger", PASSWORD, 404)],
)
async def test_wrong_credentials_and_unknown_ids_are_refused(
    cp_id: str, password: str | None, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    driver = OcppDriver(section(), [charger("cp1")])
    async with driver:
        sim = SimChargePoint(base_url(driver), cp_id, password=password)
        with caplog.at_level(logging.WARNING, logger="gateway.ocpp"):
            await sim.start(wait=False)
            try:
                await until(lambda: sim.refused is not None)
            finally:
                await sim.stop()
        assert sim.refused == status
        assert not sim.connected.is_set()
        assert "ocpp refused" in caplog.text
        assert driver.controls["cp1"].station is None


async def test_charger_speaking_the_other_version_is_closed_with_a_clear_line(caplog: pytest.LogCaptureFixture) -> None:
    driver = OcppDriver(section(), [charger("cp1", "ocpp2.0.1")])
    async with driver:
        sim = SimChargePoint(base_url(driver), "cp1", version="1.6", password=PASSWORD)
        with caplog.at_level(logging.WARNING, logger="gateway.ocpp"):
            await sim.start(wait=False)
            await until(lambda: "config says ocpp2.0.1" in caplog.text)
            await sim.stop()
        assert driver.controls["cp1"].station is None


def test_tls_needs_both_files() -> None:
    with pytest.raises(ValueError, match="go together"):
        OcppSection(tls_cert="cert.pem")


async def test_a_charger_drawing_above_its_limit_counts_at_its_draw_and_is_sent_it_again(
        caplog: pytest.LogCaptureFixture) -> None:
    """Accepted is not believed over the meter: a charger drawing clearly above its acknowledged limit
    counts at what it draws (so nobody is raised into that room) and gets its limit again until it holds;
    said once when it starts and once when it ends."""
    driver = OcppDriver(section(lease_s=30), [charger("cp1")])
    async with driver:
        sim = SimChargePoint(base_url(driver), "cp1", password=PASSWORD, quirks=Quirks(ignores_limits=True),
                             meter_interval_s=1)
        await sim.start()
        ctl = driver.controls["cp1"]
        try:
            await until(lambda: sim.limit_a() == 8.0)
            with caplog.at_level(logging.INFO, logger="gateway.ocpp"):
                await sim.plug_in()
                await driver.apply_limits({"cp1": 10.0}, "test")
                await until(lambda: "above its acknowledged 10.0 A limit" in caplog.text, timeout_s=8.0)
                assert driver.applied_limit(ctl) == 32.0  # counted at its measured draw, not at 10 A
                sent = sum(1 for r in driver.history if r.amps == 10.0)
                await until(lambda: sum(1 for r in driver.history if r.amps == 10.0) > sent, timeout_s=8.0)
                await sim.send_meter_values()
                assert caplog.text.count("above its acknowledged") == 1
                sim.quirks.ignores_limits = False  # it keeps to it at last
                await sim.send_meter_values()
                await until(lambda: "keeps to its limit again" in caplog.text, timeout_s=5.0)
            assert driver.applied_limit(ctl) == 10.0
        finally:
            await sim.stop()


async def test_local_auth_list_refuses_unknown_tags(version: str) -> None:
    driver = OcppDriver(section(lease_s=30, local_auth_list=["GOODTAG"]), [charger("cp1", f"ocpp{version}")])
    async with driver:
        sim = SimChargePoint(base_url(driver), "cp1", version=version, password=PASSWORD)  # type: ignore[arg-type]
        await sim.start()
        try:
            await sim.plug_in()  # the simulator presents SIMTAG
            if version == "1.6":
                assert driver.controls["cp1"].view.transaction_id() is None
            assert not driver.authorize("SIMTAG") and driver.authorize("GOODTAG")
        finally:
            await sim.stop()


async def test_a_charger_refusing_every_leased_way_is_limited_without_a_lease_and_said_so(
    version: str, caplog: pytest.LogCaptureFixture
) -> None:
    driver = OcppDriver(section(lease_s=2), [charger("cp1", f"ocpp{version}")])
    await driver.start()
    station = "ChargePointMaxProfile" if version == "1.6" else "ChargingStationMaxProfile"
    sim = SimChargePoint(base_url(driver), "cp1", version=version, password=PASSWORD,  # type: ignore[arg-type]
                         quirks=Quirks(only_stack_level_0=True, reject_purposes=frozenset({"TxProfile"})))
    await sim.start()
    try:
        await until(lambda: sim.limit_a() == 8.0)
        await sim.plug_in()
        with caplog.at_level(logging.WARNING, logger="gateway.ocpp"):
            await driver.apply_limits({"cp1": 20.0}, "test")
        await until(lambda: sim.limit_a() == 20.0)
        await until(lambda: driver.history[-1].strategy == f"{station}/A/sl0/unleased"
                    and driver.history[-1].accepted)
        assert "no lease" in caplog.text
        # the live limit took the base's own id: 2.0.1 refuses a second profile there (K01.FR.06)
        assert list(sim.book.profiles) == [1]
        await asyncio.sleep(2.5)  # longer than a lease: nothing expires, since nothing was leased
        assert sim.limit_a() == 20.0
        pushes = len(driver.history)
        await asyncio.sleep(1.0)
        assert len(driver.history) == pushes  # no churn: what the model refused is not tried again
        await driver.stop(release=True)  # a clean stop puts the fallback back in the shared slot
        assert sim.limit_a() == 8.0
    finally:
        await sim.stop()
        await driver.stop()


async def test_data_transfer_is_answered_not_acted_on_and_heartbeat_gives_the_time(version: str) -> None:
    driver = OcppDriver(section(lease_s=30), [charger("cp1", f"ocpp{version}")])
    async with driver:
        sim = SimChargePoint(base_url(driver), "cp1", version=version, password=PASSWORD)  # type: ignore[arg-type]
        await sim.start()
        try:
            answer = await sim.send_raw('[2, "d1", "DataTransfer", {"vendorId": "com.example", "data": "x"}]')
            assert answer == [3, "d1", {"status": "UnknownVendorId"}]
            beat = await sim.send_raw('[2, "h1", "Heartbeat", {}]')
            assert beat is not None and beat[:2] == [3, "h1"] and beat[2]["currentTime"].endswith("Z")
        finally:
            await sim.stop()


async def test_an_oversized_frame_costs_the_link_not_the_gateway(caplog: pytest.LogCaptureFixture) -> None:
    driver = OcppDriver(section(lease_s=30, max_message_bytes=4096), [charger("cp1"), charger("cp2")])
    async with driver:
        big = SimChargePoint(base_url(driver), "cp1", password=PASSWORD)
        other = SimChargePoint(base_url(driver), "cp2", password=PASSWORD)
        await asyncio.gather(big.start(), other.start())
        try:
            await until(lambda: big.limit_a() == 8.0 and other.limit_a() == 8.0)
            with caplog.at_level(logging.INFO, logger="gateway.ocpp"):
                await big.send_raw('[2, "b1", "DataTransfer", {"vendorId": "' + "x" * 8000 + '"}]', timeout_s=0.3)
                await until(lambda: "charger=cp1 disconnected, closed by gateway code=1009" in caplog.text)
            acks = await driver.apply_limits({"cp2": 12.0}, "unaffected")
            assert acks[0].accepted and other.limit_a() == 12.0
            await until(lambda: driver.controls["cp1"].station is not None)  # it reconnects by itself
        finally:
            await asyncio.gather(big.stop(), other.stop())


async def test_require_password_refuses_a_charger_without_one(caplog: pytest.LogCaptureFixture) -> None:
    driver = OcppDriver(section(require_password=True), [charger("cp1", ocpp={})])
    async with driver:
        sim = SimChargePoint(base_url(driver), "cp1")
        with caplog.at_level(logging.WARNING, logger="gateway.ocpp"):
            await sim.start(wait=False)
            try:
                await until(lambda: sim.refused is not None)
            finally:
                await sim.stop()
        assert sim.refused == 401 and "ocpp.require_password is on" in caplog.text


async def test_a_charger_that_stops_reporting_is_asked_for_meter_values(version: str) -> None:
    driver = OcppDriver(section(lease_s=30), [charger("cp1", f"ocpp{version}")])
    async with driver:
        sim = SimChargePoint(base_url(driver), "cp1", version=version, password=PASSWORD,  # type: ignore[arg-type]
                             quirks=Quirks(meter_silent=True))
        await sim.start()
        seen, task = collect_readings(driver)
        try:
            await until(lambda: sim.limit_a() == 8.0)
            await sim.plug_in()
            await driver.apply_limits({"cp1": 16.0}, "test")
            await until(lambda: any(r.current_a.get("L1") == 16.0 for r in seen), timeout_s=6.0)
        finally:
            task.cancel()
            await sim.stop()
