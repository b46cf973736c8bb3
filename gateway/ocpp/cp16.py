"""One OCPP 1.6J charge point as the central system sees it: its handlers and the calls the driver makes.

Handlers answer at once and hand state to the `ChargerView`; work that needs a CALL back to the charger
(abilities, metering setup, profiles) is started by the driver after the BootNotification answer has gone
out, never inside a handler, because the library reads the next frame only when a handler returns.
"""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

from ocpp.v16 import ChargePoint, call, call_result

from gateway.clock import utc_now
from gateway.ocpp.link import (
    GuardedRouting,
    Hooks,
    Outcome,
    after,
    attempt,
    cleared,
    on,
    status_is_accepted,
)
from gateway.ocpp.profiles import Abilities, ProfileSpec, Version, first_int, ocpp_time, parse_units, v16_profile
from gateway.ocpp.state import (
    STATUS_16,
    ChargerIdentity,
    ChargerView,
    parse_meter_values,
    parse_time,
    text_or_none,
)

# 1.6 transaction ids are integers we hand out; seeded from the clock so a restart does not reuse them
_TRANSACTION_IDS = itertools.count(int(time.time()) % 1_000_000_000)
ABILITY_KEYS = ["ChargeProfileMaxStackLevel", "ChargingScheduleAllowedChargingRateUnit", "SupportedFeatureProfiles"]
SAMPLED_DATA = "Energy.Active.Import.Register,Current.Import,Power.Active.Import"


class Cp16(GuardedRouting, ChargePoint):  # type: ignore[misc]
    version: Version = "1.6"

    def __init__(self, charger_id: str, connection: Any, view: ChargerView, hooks: Hooks, timeout_s: float,
                 heartbeat_s: int) -> None:
        super().__init__(charger_id, connection, view, hooks, timeout_s, heartbeat_s)
        self.booted = False

    # ------------------------------------------------------------------------------------------- handlers

    @on("BootNotification")
    def on_boot(self, charge_point_vendor: str, charge_point_model: str, firmware_version: str | None = None,
                charge_point_serial_number: str | None = None, charge_box_serial_number: str | None = None,
                meter_type: str | None = None, meter_serial_number: str | None = None, **_: Any) -> Any:
        self.booted = True
        self.view.identity = ChargerIdentity(
            vendor=str(charge_point_vendor), model=str(charge_point_model), firmware=text_or_none(firmware_version),
            serial=text_or_none(charge_point_serial_number) or text_or_none(charge_box_serial_number),
            meter_type=text_or_none(meter_type), meter_serial=text_or_none(meter_serial_number))
        return call_result.BootNotification(current_time=ocpp_time(utc_now()), interval=self.heartbeat_s,
                                            status="Accepted")

    @after("BootNotification")
    def after_boot(self, **_: Any) -> None:
        self.hooks.booted(self)

    @on("Heartbeat")
    def on_heartbeat(self) -> Any:
        return call_result.Heartbeat(current_time=ocpp_time(utc_now()))

    @on("StatusNotification")
    def on_status(self, connector_id: int, error_code: str, status: str, timestamp: str | None = None,
                  **_: Any) -> Any:
        self.view.heard_at(parse_time(timestamp))
        self.view.connectors[connector_id] = STATUS_16[status]
        if status == "Available":
            self.view.transactions.pop(connector_id, None)
        self.hooks.updated(self.charger_id, measured=False)
        return call_result.StatusNotification()

    @on("MeterValues")
    def on_meter_values(self, connector_id: int, meter_value: list[dict[str, Any]], **_: Any) -> Any:
        sample = parse_meter_values(meter_value, self.charger_id)
        if sample is not None:
            self.view.heard_at(sample.at)
            self.view.sample = sample
            self.hooks.updated(self.charger_id, measured=True)
        return call_result.MeterValues()

    def _id_tag_info(self, id_tag: str) -> dict[str, str]:
        return {"status": "Accepted" if self.hooks.authorize(id_tag) else "Invalid"}

    @on("Authorize")
    def on_authorize(self, id_tag: str) -> Any:
        return call_result.Authorize(id_tag_info=self._id_tag_info(id_tag))

    @on("StartTransaction")
    def on_start(self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **_: Any) -> Any:
        info = self._id_tag_info(id_tag)
        transaction_id = next(_TRANSACTION_IDS)
        if info["status"] == "Accepted":
            self.view.transactions[connector_id] = str(transaction_id)
            self.view.session_started = parse_time(timestamp) or datetime.now(UTC)
        return call_result.StartTransaction(transaction_id=transaction_id, id_tag_info=info)

    @after("StartTransaction")
    def after_start(self, **_: Any) -> None:
        # told only once the answer is out: a TxProfile for this transaction must not overtake its id
        self.hooks.updated(self.charger_id, measured=False)

    @on("StopTransaction")
    def on_stop(self, meter_stop: int, timestamp: str, transaction_id: int, **_: Any) -> Any:
        for connector, tx in list(self.view.transactions.items()):
            if tx == str(transaction_id):
                del self.view.transactions[connector]
        self.view.session_started = None
        self.hooks.updated(self.charger_id, measured=False)
        return call_result.StopTransaction()

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, **_: Any) -> Any:
        return call_result.DataTransfer(status="UnknownVendorId")

    @on("FirmwareStatusNotification")
    def on_firmware_status(self, status: str) -> Any:
        return call_result.FirmwareStatusNotification()

    @on("DiagnosticsStatusNotification")
    def on_diagnostics_status(self, status: str) -> Any:
        return call_result.DiagnosticsStatusNotification()

    # ------------------------------------------------------------------------------------------- calls

    async def discover(self) -> Abilities | None:
        result: Any = None

        async def get() -> Any:
            nonlocal result
            result = await self.call(call.GetConfiguration(key=ABILITY_KEYS), suppress=False)
            return result

        outcome = await attempt(get, lambda r: None)
        if not outcome.answered:
            return None
        if not outcome.accepted or result is None:
            return Abilities()
        values = {k.get("key"): str(k.get("value", "")) for k in (result.configuration_key or [])}
        units = parse_units(values.get("ChargingScheduleAllowedChargingRateUnit", "Current,Power")) or ("A", "W")
        features = values.get("SupportedFeatureProfiles")
        return Abilities(
            units=units,
            max_stack_level=first_int([values.get("ChargeProfileMaxStackLevel", "")], 8),
            smart_charging=features is None or "SmartCharging" in features,
        )

    async def configure(self, meter_interval_s: int) -> None:
        settings = {"MeterValueSampleInterval": str(meter_interval_s), "MeterValuesSampledData": SAMPLED_DATA}
        for key, value in settings.items():
            await attempt(partial(self.call, call.ChangeConfiguration(key=key, value=value), suppress=False),
                          status_is_accepted)
        await attempt(lambda: self.call(call.TriggerMessage(requested_message="StatusNotification"), suppress=False),
                      status_is_accepted)

    async def set_profile(self, spec: ProfileSpec) -> Outcome:
        slot = self.slot_of(spec)
        if slot is None:
            return Outcome(False, "no running transaction for a TxProfile")
        payload = call.SetChargingProfile(connector_id=slot, cs_charging_profiles=v16_profile(spec))
        return await self.send_profile(payload)

    async def clear_profile(self, profile_id: int) -> Outcome:
        return await attempt(lambda: self.call(call.ClearChargingProfile(id=profile_id), suppress=False),
                             cleared)

    async def trigger_meter_values(self) -> Outcome:
        return await attempt(lambda: self.call(call.TriggerMessage(requested_message="MeterValues"), suppress=False),
                             status_is_accepted)

    async def close(self) -> None:
        await self._connection.close()
