"""What the central system does when a charger connects, and how it answers the charger's own messages.

Real simulated charge points (both versions) over websockets on 127.0.0.1: the boot sequence in the order
the issue asks (abilities, base profile, metering, a StatusNotification trigger), what the charger says it
is (vendor, model, firmware, serial: `OcppDriver.identity`), what the discovered abilities change,
Authorize with and without a local list, and the EV's own suspension reaching the reading.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from support.ocpp import PASSWORD, base_url, charger, collect_readings, section
from support.waiting import until

from gateway.domain import ChargerStatus
from gateway.ocpp import ChargerIdentity, OcppDriver
from gateway.sim.ocpp_cp import Nameplate, Quirks, SimChargePoint


@pytest.fixture(params=["1.6", "2.0.1"])
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def actions(sim: SimChargePoint) -> list[str]:
    return [action for action, _ in sim.requests]


def payloads(sim: SimChargePoint, action: str) -> list[dict[str, Any]]:
    return [payload for a, payload in sim.requests if a == action]


async def booted(driver: OcppDriver, cid: str = "cp1") -> None:
    await until(lambda: (task := driver.controls[cid].setup) is not None and task.done())


async def test_16_boot_reads_abilities_installs_the_base_sets_metering_and_asks_for_status() -> None:
    driver = OcppDriver(section(lease_s=30, meter_interval_s=7), [charger("cp1")])
    async with driver:
        sim = SimChargePoint(base_url(driver), "cp1", password=PASSWORD)
        await sim.start()
        try:
            await booted(driver)
            seq = actions(sim)
            assert seq[0] == "GetConfiguration"
            assert set(payloads(sim, "GetConfiguration")[0]["key"]) >= {
                "ChargeProfileMaxStackLevel", "ChargingScheduleAllowedChargingRateUnit", "SupportedFeatureProfiles"}
            base = payloads(sim, "SetChargingProfile")[0]
            profile = base["csChargingProfiles"]
            assert base["connectorId"] == 0
            assert profile["chargingProfilePurpose"] == "ChargePointMaxProfile" and profile["stackLevel"] == 0
            assert "validTo" not in profile and profile["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 8
            changes = {p["key"]: p["value"] for p in payloads(sim, "ChangeConfiguration")}
            assert changes["MeterValueSampleInterval"] == "7" and sim.meter_interval_s == 7
            assert "Current.Import" in changes["MeterValuesSampledData"]
            assert {"requestedMessage": "StatusNotification"} in payloads(sim, "TriggerMessage")
            # abilities first, the base before metering: the charger is never unlimited while we talk
            assert seq.index("SetChargingProfile") < seq.index("ChangeConfiguration") < seq.index("TriggerMessage")
        finally:
            await sim.stop()


async def test_201_boot_reads_the_smart_charging_controller_installs_the_base_and_sets_metering() -> None:
    driver = OcppDriver(section(lease_s=30, meter_interval_s=7), [charger("cp1", "ocpp2.0.1")])
    async with driver:
        sim = SimChargePoint(base_url(driver), "cp1", version="2.0.1", password=PASSWORD)
        await sim.start()
        try:
            await booted(driver)
            seq = actions(sim)
            assert seq[0] == "GetVariables"
            asked = {(v["component"]["name"], v["variable"]["name"])
                     for v in payloads(sim, "GetVariables")[0]["getVariableData"]}
            assert asked == {("SmartChargingCtrlr", n) for n in ("Enabled", "RateUnit", "ProfileStackLevel")}
            base = payloads(sim, "SetChargingProfile")[0]
            assert base["evseId"] == 0
            assert base["chargingProfile"]["chargingProfilePurpose"] == "ChargingStationMaxProfile"
            assert base["chargingProfile"]["stackLevel"] == 0 and "validTo" not in base["chargingProfile"]
            assert sim.meter_interval_s == 7
            assert {"requestedMessage": "StatusNotification"} in payloads(sim, "TriggerMessage")
            assert seq.index("SetChargingProfile") < seq.index("SetVariables") < seq.index("TriggerMessage")
        finally:
            await sim.stop()


async def test_the_boot_notification_says_what_the_charger_is(version: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.ocpp")
    driver = OcppDriver(section(lease_s=30), [charger("cp1", f"ocpp{version}")])
    plate = Nameplate(vendor="Acme Power", model="AC22-T", firmware="4.2.1-rc3", serial="AC22-000417",
                      meter_type="SDM72", meter_serial="M-99")
    async with driver:
        assert driver.identity("cp1") is None  # nothing said yet
        sim = SimChargePoint(base_url(driver), "cp1", version=version, password=PASSWORD,  # type: ignore[arg-type]
                             nameplate=plate)
        await sim.start()
        try:
            await booted(driver)
            meter = ("SDM72", "M-99") if version == "1.6" else (None, None)  # 2.0.1 boots name no meter
            assert driver.identity("cp1") == ChargerIdentity("Acme Power", "AC22-T", "4.2.1-rc3", "AC22-000417",
                                                             *meter)
            assert driver.identity("not-a-charger") is None
            assert ("ocpp charger=cp1 booted vendor='Acme Power' model='AC22-T' firmware='4.2.1-rc3' "
                    "serial='AC22-000417'") in caplog.messages
        finally:
            await sim.stop()


async def test_a_reboot_with_new_firmware_replaces_the_identity_and_a_reconnect_without_one_keeps_it(
        version: str) -> None:
    driver = OcppDriver(section(lease_s=30), [charger("cp1", f"ocpp{version}")])
    async with driver:
        sim = SimChargePoint(base_url(driver), "cp1", version=version, password=PASSWORD,  # type: ignore[arg-type]
                             nameplate=Nameplate(firmware="1.0", serial="S-1"))
        await sim.start()
        try:
            await booted(driver)
            assert driver.identity("cp1") == ChargerIdentity("Sim", "SimAC", "1.0", "S-1")
            sim.nameplate = Nameplate(firmware="2.0")  # updated, and this model stops sending its serial
            await sim.drop()
            await until(lambda: sim.boots == 2 and (i := driver.identity("cp1")) is not None and i.firmware == "2.0")
            assert driver.identity("cp1") == ChargerIdentity("Sim", "SimAC", "2.0", None)
            sim.quirks.boot_on_reconnect = False
            sim.nameplate = Nameplate(firmware="3.0")
            await sim.drop()
            await until(lambda: not driver.controls["cp1"].view.online)
            await until(lambda: driver.controls["cp1"].view.online, 10, "never back online")  # a busy machine
            await booted(driver)
            assert sim.boots == 2
            assert driver.identity("cp1") == ChargerIdentity("Sim", "SimAC", "2.0", None)
        finally:
            await sim.stop()


async def test_the_16_deprecated_charge_box_serial_and_blank_fields() -> None:
    driver = OcppDriver(section(lease_s=30), [charger("cp1")])
    async with driver:
        sim = SimChargePoint(base_url(driver), "cp1", password=PASSWORD, nameplate=Nameplate(firmware=None))
        await sim.start()
        try:
            await booted(driver)
            assert driver.identity("cp1") == ChargerIdentity("Sim", "SimAC")  # only the required fields
            answer = await sim.send_raw('[2, "b2", "BootNotification", {"chargePointVendor": "Old", '
                                        '"chargePointModel": "Box", "chargeBoxSerialNumber": "CB-7", '
                                        '"firmwareVersion": " ", "meterType": ""}]')
            assert answer is not None and answer[:2] == [3, "b2"] and answer[2]["status"] == "Accepted"
            assert driver.identity("cp1") == ChargerIdentity("Old", "Box", None, "CB-7")
        finally:
            await sim.stop()


async def test_a_charger_that_says_it_takes_watts_only_is_never_sent_amps(version: str) -> None:
    reports = ({"ChargingScheduleAllowedChargingRateUnit": "Power"} if version == "1.6" else {"RateUnit": "W"})
    driver = OcppDriver(section(lease_s=30), [charger("cp1", f"ocpp{version}")], watts_per_amp={"cp1": 690.0})
    async with driver:
        sim = SimChargePoint(base_url(driver), "cp1", version=version, password=PASSWORD,  # type: ignore[arg-type]
                             quirks=Quirks(watts_only=True, reports=reports))
        await sim.start()
        try:
            await until(lambda: sim.limit_a() == 8.0)
            acks = await driver.apply_limits({"cp1": 16.0}, "test")
            assert acks[0].accepted and sim.limit_a() == 16.0
            assert sim.received and all(p.endswith("/W") and s == "Accepted" for p, s in sim.received)
        finally:
            await sim.stop()


async def test_authorize_accepts_everyone_by_default(version: str) -> None:
    driver = OcppDriver(section(lease_s=30), [charger("cp1", f"ocpp{version}")])
    async with driver:
        sim = SimChargePoint(base_url(driver), "cp1", version=version, password=PASSWORD)  # type: ignore[arg-type]
        await sim.start()
        try:
            assert await authorize(sim, version, "ANYONE") == "Accepted"
            await sim.plug_in()
            await until(lambda: driver.controls["cp1"].view.transaction_id() == sim.transaction_id)
        finally:
            await sim.stop()


async def test_authorize_with_a_local_list_answers_invalid_to_other_tags(version: str) -> None:
    driver = OcppDriver(section(lease_s=30, local_auth_list=["GOODTAG"]), [charger("cp1", f"ocpp{version}")])
    async with driver:
        sim = SimChargePoint(base_url(driver), "cp1", version=version, password=PASSWORD)  # type: ignore[arg-type]
        await sim.start()
        try:
            assert await authorize(sim, version, "GOODTAG") == "Accepted"
            assert await authorize(sim, version, "SIMTAG") == "Invalid"
        finally:
            await sim.stop()


async def authorize(sim: SimChargePoint, version: str, tag: str) -> str:
    if version == "1.6":
        answer = await sim.send_raw(f'[2, "a-{tag}", "Authorize", {{"idTag": "{tag}"}}]')
        assert answer is not None and answer[:2] == [3, f"a-{tag}"]
        return str(answer[2]["idTagInfo"]["status"])
    frame = f'[2, "a-{tag}", "Authorize", {{"idToken": {{"idToken": "{tag}", "type": "ISO14443"}}}}]'
    answer = await sim.send_raw(frame)
    assert answer is not None and answer[:2] == [3, f"a-{tag}"]
    return str(answer[2]["idTokenInfo"]["status"])


async def test_an_ev_that_suspends_itself_is_reported_as_suspended_by_the_ev(version: str) -> None:
    driver = OcppDriver(section(lease_s=30), [charger("cp1", f"ocpp{version}")])
    async with driver:
        sim = SimChargePoint(base_url(driver), "cp1", version=version, password=PASSWORD)  # type: ignore[arg-type]
        await sim.start()
        seen, task = collect_readings(driver)
        try:
            await sim.plug_in()
            await until(lambda: bool(seen) and seen[-1].status is ChargerStatus.CHARGING)
            if version == "1.6":
                frame = '[2, "s1", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", ' \
                        '"status": "SuspendedEV"}]'
            else:
                frame = ('[2, "s1", "TransactionEvent", {"eventType": "Updated", "timestamp": '
                         '"2026-06-01T12:00:00Z", "triggerReason": "ChargingStateChanged", "seqNo": 99, '
                         f'"transactionInfo": {{"transactionId": "{sim.transaction_id}", '
                         '"chargingState": "SuspendedEV"}}]')
            answer = await sim.send_raw(frame)
            assert answer is not None and answer[:2] == [3, "s1"]
            await until(lambda: any(r.status is ChargerStatus.SUSPENDED_EV for r in seen))
            suspended = next(r for r in seen if r.status is ChargerStatus.SUSPENDED_EV)
            assert suspended.session_id == sim.transaction_id
        finally:
            task.cancel()
            await sim.stop()


async def test_a_single_phase_charger_gets_number_phases_1_in_amps_and_in_watts(version: str) -> None:
    driver = OcppDriver(section(lease_s=30), [charger("amps", f"ocpp{version}", phases="L2"),
                                              charger("watts", f"ocpp{version}", phases="L2")],
                        watts_per_amp={"amps": 230.0, "watts": 230.0})
    async with driver:
        sims = {cid: SimChargePoint(base_url(driver), cid, version=version, password=PASSWORD,  # type: ignore[arg-type]
                                    phases=1, quirks=Quirks(watts_only=cid == "watts"))
                for cid in ("amps", "watts")}
        await asyncio.gather(*(s.start() for s in sims.values()))
        try:
            await until(lambda: all(s.limit_a() == 8.0 for s in sims.values()))
            acks = await driver.apply_limits({"amps": 16.0, "watts": 16.0}, "test")
            assert all(a.accepted for a in acks)
            key = "csChargingProfiles" if version == "1.6" else "chargingProfile"
            for cid, unit, limit in (("amps", "A", 16.0), ("watts", "W", 3680.0)):
                profile = payloads(sims[cid], "SetChargingProfile")[-1][key]
                schedule = profile["chargingSchedule"]
                schedule = schedule if version == "1.6" else schedule[0]
                assert schedule["chargingRateUnit"] == unit
                assert schedule["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": limit, "numberPhases": 1}]
                assert sims[cid].limit_a() == 16.0
        finally:
            await asyncio.gather(*(s.stop() for s in sims.values()))
