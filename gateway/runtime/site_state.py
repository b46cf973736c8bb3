"""What the site's chargers and meters said last, and the charging sessions that follows from it.

`observe` takes each charger reading as it comes: a status-only message keeps the last measured
current, and each session's meter reading at its start is kept, so what a car still asks for is its
request less what it had since the session began (a charger that drops its link or has not dialled in
since a restart and comes back with the same session goes on counting from that session's start).
The power figures here are what the site, its EVs and each charger draw now, for the VTN's reports, the
status and telemetry. No I/O; the caller passes the site.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from gateway.domain import ChargerReading, ChargerStatus, Measurement
from gateway.runtime.decide import Site


@dataclass(slots=True)
class SiteState:
    meter_circuit: Mapping[str, str]  # meter → the circuit it measures
    readings: dict[str, ChargerReading] = field(default_factory=dict)
    measurements: dict[str, Measurement] = field(default_factory=dict)
    session_start_kwh: dict[str, tuple[str | None, float]] = field(default_factory=dict)  # (session, kWh)

    def observe(self, reading: ChargerReading) -> tuple[ChargerReading, ChargerReading | None]:
        """Keep a charger's reading; returns it as kept, and the one before it (None: the first)."""
        before = self.readings.get(reading.charger_id)
        if not reading.current_a and reading.power_kw is None and before is not None and reading.status.connected:
            # A status-only message (OCPP): keep the last measured current and meter register rather than
            # forget them (the session's energy so far is still known).
            reading = replace(reading, current_a=before.current_a, power_kw=before.power_kw,
                              energy_kwh=before.energy_kwh if reading.energy_kwh is None else reading.energy_kwh)
        self.readings[reading.charger_id] = reading
        if reading.energy_kwh is not None and reading.status.connected:
            start = self.session_start_kwh.get(reading.charger_id)
            # Offline is not unplugged: a charger that drops its link (or has not dialled in since a
            # restart) and comes back with the same session goes on counting from that session's start.
            unplugged = (before is not None and not before.status.connected
                         and before.status is not ChargerStatus.OFFLINE)
            if start is None or start[0] != reading.session_id or reading.energy_kwh < start[1] or unplugged:
                self.session_start_kwh[reading.charger_id] = (reading.session_id, reading.energy_kwh)
        elif not reading.status.connected and reading.status is not ChargerStatus.OFFLINE:
            self.session_start_kwh.pop(reading.charger_id, None)
        return reading, before

    def energy_needed(self) -> dict[str, float]:
        """What each session still asks for: the EV's request less what its meter counted since it began."""
        out: dict[str, float] = {}
        for cid, reading in self.readings.items():
            if reading.energy_requested_kwh is None or not reading.status.connected:
                continue
            start = self.session_start_kwh.get(cid)
            delivered = 0.0
            if start is not None and reading.energy_kwh is not None:
                delivered = max(0.0, reading.energy_kwh - start[1])
            out[cid] = max(0.0, reading.energy_requested_kwh - delivered)
        return out

    def _service(self, site: Site) -> Measurement | None:
        found = [m for mid, m in self.measurements.items() if self.meter_circuit.get(mid) == site.service_id]
        return found[0] if found else None

    def site_power_kw(self, site: Site) -> float | None:
        service = self._service(site)
        return service.power_kw if service is not None else None

    def site_energy_kwh(self, site: Site) -> float | None:
        service = self._service(site)
        return service.import_kwh if service is not None else None

    def charger_power_kw(self, site: Site) -> dict[str, float]:
        out: dict[str, float] = {}
        for evse in site.evses:
            r = self.readings.get(evse.id)
            if r is None or not r.status.connected:
                out[evse.id] = 0.0
            elif r.power_kw is not None:
                out[evse.id] = r.power_kw
            else:
                out[evse.id] = sum(r.current_a.get(p, 0.0) for p in evse.phases) / len(evse.phases) * evse.kw_per_a
        return out
