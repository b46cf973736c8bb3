"""One OCPP 2.0.1 charging station as the CSMS sees it: its handlers and the calls the driver makes.

Same shape as `cp16`: handlers answer at once and update the `ChargerView`; the driver makes the CALLs
(GetVariables on the SmartChargingCtrlr, SetVariables for metering, Set/ClearChargingProfile,
GetCompositeSchedule) after the BootNotification answer has gone out. The EV's charging needs
(departure time, energy) go into the view for the allocator, the BootNotification's chargingStation
(vendor, model, firmware, serial) into its identity.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ocpp.v201 import ChargePoint, call, call_result

from gateway.clock import utc_now
from gateway.ocpp.link import (
    GuardedRouting,
    Outcome,
    after,
    attempt,
    cleared,
    on,
    status_is_accepted,
)
from gateway.ocpp.profiles import Abilities, ProfileSpec, Version, first_int, ocpp_time, parse_units, v201_profile
from gateway.ocpp.state import (
    CHARGING_STATE_201,
    CONNECTOR_201,
    ChargerIdentity,
    parse_meter_values,
    parse_time,
    text_or_none,
)

SMART_VARIABLES = ("Enabled", "RateUnit", "ProfileStackLevel")
MEASURANDS = "Energy.Active.Import.Register,Current.Import,Power.Active.Import"


def _variable(component: str, variable: str, value: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"component": {"name": component}, "variable": {"name": variable}}
    if value is not None:
        item["attribute_value"] = value
    return item


class Cp201(GuardedRouting, ChargePoint):  # type: ignore[misc]
    version: Version = "2.0.1"


    # ------------------------------------------------------------------------------------------- handlers

    @on("BootNotification")
    def on_boot(self, charging_station: dict[str, Any], reason: str, **_: Any) -> Any:
        self.view.identity = ChargerIdentity(
            vendor=str(charging_station.get("vendor_name", "")), model=str(charging_station.get("model", "")),
            firmware=text_or_none(charging_station.get("firmware_version")),
            serial=text_or_none(charging_station.get("serial_number")))
        return call_result.BootNotification(current_time=ocpp_time(utc_now()), interval=self.heartbeat_s,
                                            status="Accepted")

    @after("BootNotification")
    def after_boot(self, **_: Any) -> None:
        self.hooks.booted(self)

    @on("Heartbeat")
    def on_heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time=ocpp_time(utc_now()))

    @on("StatusNotification")
    def on_status(self, timestamp: str, connector_status: str, evse_id: int, connector_id: int, **_: Any) -> Any:
        self.view.heard_at(parse_time(timestamp))
        status = CONNECTOR_201[connector_status]
        current = self.view.connectors.get(evse_id) or self.view.assumed
        # "Occupied" says only that a cable is in; keep the finer state a TransactionEvent gave us
        if not (connector_status == "Occupied" and current is not None and current.connected):
            self.view.connectors[evse_id] = status
        if connector_status == "Available":
            self.view.transactions.pop(evse_id, None)
        self.hooks.updated(self.charger_id, measured=False)
        return call_result.StatusNotification()

    def _sample(self, meter_value: list[dict[str, Any]] | None) -> bool:
        sample = parse_meter_values(meter_value or [], self.charger_id)
        if sample is not None:
            self.view.sample = sample
        return sample is not None

    @on("MeterValues")
    def on_meter_values(self, evse_id: int, meter_value: list[dict[str, Any]], **_: Any) -> Any:
        if self._sample(meter_value):
            self.hooks.updated(self.charger_id, measured=True)
        return call_result.MeterValues()

    def _token_info(self, id_token: dict[str, Any] | None) -> dict[str, str] | None:
        if id_token is None:
            return None
        return {"status": "Accepted" if self.hooks.authorize(str(id_token.get("id_token", ""))) else "Invalid"}

    @on("Authorize")
    def on_authorize(self, id_token: dict[str, Any], **_: Any) -> Any:
        return call_result.Authorize(id_token_info=self._token_info(id_token))

    @on("TransactionEvent")
    def on_transaction_event(self, event_type: str, timestamp: str, trigger_reason: str, seq_no: int,
                             transaction_info: dict[str, Any], meter_value: list[dict[str, Any]] | None = None,
                             evse: dict[str, Any] | None = None, id_token: dict[str, Any] | None = None,
                             **_: Any) -> Any:
        tx = str(transaction_info.get("transaction_id", ""))
        if trigger_reason != "MeterValuePeriodic":  # a periodic one may be sent late, from a queue
            self.view.heard_at(parse_time(timestamp))
        # evse is only required on the first event of a transaction; later ones are matched by id
        known = next((e for e, t in self.view.transactions.items() if t == tx), 1)
        evse_id = int(evse["id"]) if evse and "id" in evse else known
        state = transaction_info.get("charging_state")
        if event_type == "Ended":
            self.view.transactions.pop(evse_id, None)
            self.view.session_started = None
            self.view.departure = self.view.energy_requested_kwh = None
            self.view.connectors[evse_id] = CONNECTOR_201["Available"] if state is None else CHARGING_STATE_201[state]
        else:
            if event_type == "Started" or evse_id not in self.view.transactions:
                self.view.session_started = parse_time(timestamp) or datetime.now(UTC)
            self.view.transactions[evse_id] = tx
            if state is not None:
                self.view.connectors[evse_id] = CHARGING_STATE_201[state]
        measured = self._sample(meter_value)
        self.hooks.updated(self.charger_id, measured=measured)
        return call_result.TransactionEvent(id_token_info=self._token_info(id_token))

    @on("NotifyEVChargingNeeds")
    def on_charging_needs(self, charging_needs: dict[str, Any], evse_id: int, **_: Any) -> Any:
        self.view.departure = parse_time(charging_needs.get("departure_time"))
        ac = charging_needs.get("ac_charging_parameters") or charging_needs.get("dc_charging_parameters") or {}
        energy_wh = ac.get("energy_amount")
        self.view.energy_requested_kwh = None if energy_wh is None else float(energy_wh) / 1000.0
        self.hooks.updated(self.charger_id, measured=False)
        return call_result.NotifyEVChargingNeeds(status="Accepted")

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, **_: Any) -> Any:
        return call_result.DataTransfer(status="UnknownVendorId")

    @on("NotifyReport")
    def on_notify_report(self, **_: Any) -> Any:
        return call_result.NotifyReport()

    @on("NotifyEvent")
    def on_notify_event(self, **_: Any) -> Any:
        return call_result.NotifyEvent()

    @on("SecurityEventNotification")
    def on_security_event(self, **_: Any) -> Any:
        return call_result.SecurityEventNotification()

    @on("FirmwareStatusNotification")
    def on_firmware_status(self, **_: Any) -> Any:
        return call_result.FirmwareStatusNotification()

    # ------------------------------------------------------------------------------------------- calls

    async def discover(self) -> Abilities | None:
        result: Any = None

        async def get() -> Any:
            nonlocal result
            data = [_variable("SmartChargingCtrlr", name) for name in SMART_VARIABLES]
            result = await self.call(call.GetVariables(get_variable_data=data), suppress=False)
            return result

        outcome = await attempt(get, lambda r: None)
        if not outcome.answered:
            return None
        if not outcome.accepted or result is None:
            return Abilities()
        values: dict[str, str] = {}
        for item in result.get_variable_result or []:
            if item.get("attribute_status") == "Accepted" and item.get("attribute_value") is not None:
                values[item["variable"]["name"]] = str(item["attribute_value"])
        return Abilities(
            units=parse_units(values.get("RateUnit", "A,W")) or ("A", "W"),
            max_stack_level=first_int([values.get("ProfileStackLevel", "")], 8),
            smart_charging=values.get("Enabled", "true").lower() != "false",
        )

    async def configure(self, meter_interval_s: int) -> None:
        data = [
            _variable("SampledDataCtrlr", "TxUpdatedInterval", str(meter_interval_s)),
            _variable("SampledDataCtrlr", "TxUpdatedMeasurands", MEASURANDS),
            _variable("AlignedDataCtrlr", "Interval", str(meter_interval_s)),
            _variable("AlignedDataCtrlr", "Measurands", MEASURANDS),
        ]
        await attempt(lambda: self.call(call.SetVariables(set_variable_data=data), suppress=False), lambda r: None)
        await attempt(lambda: self.call(call.TriggerMessage(requested_message="StatusNotification"), suppress=False),
                      status_is_accepted)
        # StatusNotification says only "Occupied"; the charging state of a running transaction comes with a
        # TransactionEvent, which periodic updates need not carry: ask for one per transaction we know of
        for evse_id in sorted(self.view.transactions) or [1]:
            await attempt(lambda e=evse_id: self.call(call.TriggerMessage(  # type: ignore[misc]
                requested_message="TransactionEvent", evse={"id": e}), suppress=False), status_is_accepted)

    async def set_profile(self, spec: ProfileSpec) -> Outcome:
        slot = self.slot_of(spec)
        if slot is None:
            return Outcome(False, "no running transaction for a TxProfile")
        return await self.send_profile(call.SetChargingProfile(evse_id=slot, charging_profile=v201_profile(spec)))

    async def clear_profile(self, profile_id: int) -> Outcome:
        return await attempt(lambda: self.call(call.ClearChargingProfile(charging_profile_id=profile_id),
                                               suppress=False), cleared)

    async def composite_schedule(self, evse_id: int, duration_s: int) -> dict[str, Any] | None:
        """What the station says it will apply (many models refuse this; None then)."""
        result: Any = None

        async def get() -> Any:
            nonlocal result
            result = await self.call(call.GetCompositeSchedule(duration=duration_s, evse_id=evse_id,
                                                               charging_rate_unit="A"), suppress=False)
            return result

        outcome = await attempt(get, status_is_accepted)
        schedule: dict[str, Any] | None = result.schedule if outcome.accepted and result is not None else None
        return schedule

    async def trigger_meter_values(self) -> Outcome:
        return await attempt(lambda: self.call(call.TriggerMessage(requested_message="MeterValues"), suppress=False),
                             status_is_accepted)

    async def close(self) -> None:
        await self._connection.close()
