"""The runtime's side of the meter check: each meter's state, the chargers' draws it is judged against,
the alarms it raises, and the readings the decision gets.

`observe()` is given every poll of a meter (good or refused) with the monotonic time it was read; it steps
the pure `gateway.runtime.meter_check` with what the managed chargers behind the meter report drawing,
and raises `meter.<id>.implausible` (absurd values too) or `meter.<id>.frozen` when a fault starts, and
clears it when it ends (each logged once, by `Alarms`). `reading()` turns a meter's last good reading
into what `decide` counts: as it is when believed, else marked `distrusted` with the non-EV load to count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from gateway.domain import ChargerReading, ChargerStatus, Phase
from gateway.runtime.alarms import Alarms
from gateway.runtime.decide import MeterReading, Site, measured_a
from gateway.runtime.meter_check import CheckSettings, Fault, MeterState, Poll, counted_non_ev, step

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

ACTION = {
    "implausible": "check the meter's CT direction and wiring, its register map (word order, scale) and pv_kw "
                   "(docs/operations.md: A meter that lies)",
    "absurd": "check the meter's register map (word order, scale) and its wiring to the Modbus gateway "
              "(docs/operations.md: A meter that lies)",
    "frozen": "check the meter and any Modbus gateway in front of it (a cached value); power-cycle it "
              "(docs/operations.md: A meter that lies)",
}


def alarm_key(meter_id: str, fault: Fault) -> str:
    return f"meter.{meter_id}.{'frozen' if fault.kind == 'frozen' else 'implausible'}"


def settings_for(config: GatewayConfig, site: Site, meter_id: str, hold_s: float) -> CheckSettings:
    """How a meter of the config is judged; implausible readings are held at least `hold_s` (the time
    every charger needs to report once) before they count as a fault."""
    section = next(m for m in config.meters if m.id == meter_id)
    circuit_id = section.circuit or site.service_id
    circuit = next(c for c in site.circuits if c.id == circuit_id)
    export = section.pv_kw * 1000.0 / site.ln_v if section.pv_kw > 0 else 0.0
    return CheckSettings(
        limit_a={p: circuit.limit_of(p) for p in circuit.phases},
        includes_evs=section.includes_evs,
        export_a=export,
        confirm_s=max(section.implausible_after_s, hold_s),
        frozen_after_s=section.frozen_after_s,
        fault_non_ev_a=section.fault_non_ev_a,
    )


class MeterWatch:
    """Every configured meter's check state; used from the event loop only."""

    def __init__(self, config: GatewayConfig, site: Site, alarms: Alarms, *, hold_s: float = 2.0) -> None:
        self.site = site
        self.alarms = alarms
        self.settings = {m.id: settings_for(config, site, m.id, hold_s) for m in config.meters}
        self.circuit = {m.id: m.circuit or site.service_id for m in config.meters}
        self.states: dict[str, MeterState] = {m.id: MeterState() for m in config.meters}

    def ev_draw(self, meter_id: str, readings: Mapping[str, ChargerReading], now: datetime) -> dict[Phase, float]:
        """Per phase, what the managed chargers behind the meter report drawing now (silent ones: nothing,
        which only makes the meter look more plausible)."""
        below = self.site.below(self.circuit.get(meter_id, self.site.service_id))
        out: dict[Phase, float] = {}
        for evse in self.site.evses:
            reading = readings.get(evse.id)
            if (evse.circuit not in below or reading is None or not reading.status.connected
                    or reading.status is ChargerStatus.OFFLINE or now - reading.at > self.site.charger_stale):
                continue
            fallback = measured_a(evse, reading) if not reading.current_a else None
            for phase in evse.phases:
                amps = reading.current_a.get(phase, fallback or 0.0)
                out[phase] = out.get(phase, 0.0) + max(0.0, amps)
        return out

    def observe(self, meter_id: str, poll: Poll, now: datetime) -> MeterState:
        """One more poll of `meter_id`; raises or clears its alarm on a transition (`now`: for the alarm)."""
        settings = self.settings.get(meter_id)
        if settings is None:  # not a configured meter (a test feeding readings by hand): believed
            return MeterState()
        state = step(self.states[meter_id], poll, settings)
        self.states[meter_id] = state
        if state.ended is not None:
            self.alarms.clear(alarm_key(meter_id, state.ended), now, "readings plausible again")
        if state.started is not None:
            self._raise(meter_id, state.started, now, settings, state)
        elif state.fault is not None:  # the same fault, its figures updated (not logged again)
            self._raise(meter_id, state.fault, now, settings, state)
        return state

    def _raise(self, meter_id: str, fault: Fault, now: datetime, settings: CheckSettings, state: MeterState) -> None:
        counted = counted_non_ev(state, settings) or {}
        amps = max(counted.values(), default=0.0)
        circuit = self.circuit.get(meter_id, self.site.service_id)
        what = {"absurd": "absurd reading", "implausible": "implausible reading", "frozen": "frozen"}[fault.kind]
        message = (f"meter {meter_id} {what}: {fault.why}; not believed: the non-EV load on {circuit} counts at "
                   f"{amps:g} A per phase until it reads plausibly for {settings.clear_s:g} s")
        self.alarms.raise_(alarm_key(meter_id, fault), message, now, severity="critical", action=ACTION[fault.kind])

    def reading(self, reading: MeterReading) -> MeterReading:
        """The meter's reading as the decision is to count it."""
        state = self.states.get(reading.meter_id)
        settings = self.settings.get(reading.meter_id)
        if state is None or settings is None:
            return reading
        counted = counted_non_ev(state, settings)
        if counted is None:
            return reading
        why = state.fault or state.suspect
        return replace(reading, distrusted=why.why if why is not None else "not believed", non_ev_a=counted)

    def fault(self, meter_id: str) -> Fault | None:
        state = self.states.get(meter_id)
        return state.fault if state is not None else None
