"""Solar first at run time: the inverters' readers, each charger's mode, and the surplus put into a decision.

`SolarWatch` is built from the config (`[pv]` and each charger's `mode`), reads the SunSpec inverters on the
runtime's Modbus link pool, and at every decision (`apply`) turns what the grid meter, the chargers and the
inverters said into `gateway.surplus` inputs, runs it, and hands the result to the decision as caps: a
per-charger surplus cap for `pv`/`minpv` chargers (0 pauses) and an EV power cap from the grid import cap.
`now` chargers lose the plan's target, `plan` chargers keep it. The allocator still decides under every
limit. A grid meter that is stale or not believed, or a battery inverter gone silent, means no surplus:
alarm `pv.surplus` (one line when it starts, one when it ends) and the status says so. An operator may set a
charger's mode for the session (until its car is unplugged) or for good (until changed or the gateway
restarts), or go back to the config's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from gateway.domain import J1772_MIN_A, ChargerReading, Measurement
from gateway.ports import Inverter
from gateway.runtime.alarms import Alarms
from gateway.runtime.decide import Inputs, Site
from gateway.runtime.supervise import supervised
from gateway.surplus import (
    SOLAR_MODES,
    GridPoint,
    Hold,
    Mode,
    PvCharger,
    PvReading,
    PvSettings,
    SurplusDecision,
    decide_surplus,
)

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.modbus.link import LinkPool

log = logging.getLogger("gateway.runtime")
ALARM = "pv.surplus"


def pv_settings(config: GatewayConfig) -> PvSettings:
    pv = config.pv
    return PvSettings(
        start_delay=timedelta(seconds=pv.start_delay_s),
        stop_delay=timedelta(seconds=pv.stop_delay_s),
        import_cap_kw=pv.import_cap_kw,
        export_target_kw=pv.export_target_kw,
    )


class SolarWatch:
    def __init__(self, config: GatewayConfig, site: Site, alarms: Alarms,
                 changed: Callable[[str], None] = lambda why: None) -> None:
        self.config = config
        self.site = site
        self.alarms = alarms
        self.changed = changed  # asks for a decision, saying why
        self.settings = pv_settings(config)
        self.grid_meter = config.pv.grid_meter
        self.modes: dict[str, Mode] = {c.id: Mode(c.mode) for c in config.chargers}
        self.overrides: dict[str, tuple[Mode, bool]] = {}  # charger → (mode, for this session only)
        # Told every change of the overrides, to keep them over a restart (the operator's store).
        self.kept: Callable[[dict[str, tuple[str, bool]]], None] = lambda overrides: None
        self._plugged: dict[str, bool] = {}
        self.inverters: dict[str, Inverter] = {}
        self.readings: dict[str, PvReading] = {}
        self.memory: dict[str, Hold] = {}
        self.last: SurplusDecision | None = None
        self.grid: GridPoint | None = None
        self.why_none: str | None = None  # why no surplus is known (None: it is)

    @property
    def active(self) -> bool:
        """Anything to do: a grid meter named, or an inverter to read."""
        return self.grid_meter is not None or bool(self.inverters) or bool(self.config.pv.inverters)

    def open(self, pool: LinkPool | None) -> None:
        """Build the inverters' readers on the runtime's link pool (one owner per host:port)."""
        if not self.config.pv.inverters:
            return
        from gateway.modbus.sunspec import SunSpecInverter, SunSpecSettings

        assert pool is not None, "a Modbus link pool is needed for SunSpec inverters"
        for inv in self.config.pv.inverters:
            settings = SunSpecSettings(inv.id, inv.host, inv.port, inv.unit, inv.base_address, inv.poll_s,
                                       inv.stale_after_s, inv.timeout_s, inv.max_kw)
            self.inverters[inv.id] = SunSpecInverter(settings, pool.get(inv.host, inv.port, inv.timeout_s))

    def tasks(self, restarts: dict[str, int]) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        for inv_id, inverter in self.inverters.items():
            async def read(inverter: Inverter = inverter) -> None:
                async for reading in inverter.readings():
                    self.readings[inverter.id] = reading

            out.append((f"inverter-{inv_id}", supervised(f"inverter-{inv_id}", read, restarts=restarts)))
        return out

    # ------------------------------------------------------------------------------------ modes

    def mode_of(self, charger_id: str) -> Mode:
        override = self.overrides.get(charger_id)
        return override[0] if override is not None else self.modes.get(charger_id, Mode.PLAN)

    def set_mode(self, charger_id: str, mode: Mode | None, *, session: bool = True) -> bool:
        """The operator's mode for a charger (None: back to the config's); False when there is no such
        charger. `session`: only until its car is unplugged."""
        if charger_id not in self.modes:
            return False
        if mode is None:
            self.overrides.pop(charger_id, None)
        else:
            self.overrides[charger_id] = (mode, session)
        self.memory.pop(charger_id, None)
        self._keep()
        log.info("charge mode charger=%s mode=%s for=%s", charger_id, self.mode_of(charger_id).value,
                 "config" if mode is None else "session" if session else "until changed")
        self.changed(f"charger={charger_id} mode={self.mode_of(charger_id).value}")
        return True

    def restore(self, kept: Mapping[str, tuple[str, bool]]) -> None:
        """The modes set by hand before a restart (a session's holds until its car is seen unplugged)."""
        for cid, (mode, session) in kept.items():
            if cid in self.modes and mode in {m.value for m in Mode}:
                self.overrides[cid] = (Mode(mode), session)

    def _keep(self) -> None:
        self.kept({cid: (mode.value, session) for cid, (mode, session) in self.overrides.items()})

    def _sessions_ended(self, readings: Mapping[str, ChargerReading]) -> None:
        for cid in self.modes:
            reading = readings.get(cid)
            plugged = reading is not None and reading.status.connected
            if self._plugged.get(cid) and not plugged:
                override = self.overrides.get(cid)
                if override is not None and override[1]:
                    del self.overrides[cid]
                    self._keep()
                    log.info("charge mode charger=%s mode=%s (session ended; the config's again)", cid,
                             self.mode_of(cid).value)
            self._plugged[cid] = plugged

    # ------------------------------------------------------------------------------------ the decision

    def grid_point(self, inputs: Inputs, measurements: Mapping[str, Measurement], ev_kw: float) -> GridPoint:
        """The grid meter's power and the batteries' discharge, None where not known now (with why)."""
        battery = 0.0
        for inv_id, inverter in self.inverters.items():
            pv = self.readings.get(inv_id)
            if pv is None or pv.battery_kw is None:
                continue
            if inverter.stale():
                self.why_none = f"inverter {inv_id} with a battery is silent: its discharge is unknown"
                return GridPoint(None)
            battery += max(0.0, pv.battery_kw)
        if self.grid_meter is None:
            self.why_none = "no grid meter configured ([pv] grid_meter)"
            return GridPoint(None)
        spec = next((m for m in self.site.meters if m.id == self.grid_meter), None)
        reading = inputs.meters.get(self.grid_meter)
        m = measurements.get(self.grid_meter)
        if spec is None or reading is None or m is None:
            self.why_none = f"grid meter {self.grid_meter} not read yet"
            return GridPoint(None)
        if inputs.now - reading.measured_at > spec.stale_after:
            self.why_none = f"grid meter {self.grid_meter} is stale"
            return GridPoint(None)
        if reading.distrusted is not None:
            self.why_none = f"grid meter {self.grid_meter} is not believed ({reading.distrusted})"
            return GridPoint(None)
        power = m.power_kw
        if power is None and m.power_phase_kw:
            power = sum(m.power_phase_kw.values())
        if power is None:
            power = sum(m.current_a.values()) * self.site.ln_v / 1000.0
        if not math.isfinite(power):
            self.why_none = f"grid meter {self.grid_meter} reads no number"
            return GridPoint(None)
        if not spec.includes_evs:
            power += ev_kw
        self.why_none = None
        return GridPoint(power, battery)

    def apply(self, inputs: Inputs, measurements: Mapping[str, Measurement], power_kw: Mapping[str, float],
              paused: frozenset[str] = frozenset()) -> Inputs:
        """`inputs` with the surplus caps, the import cap and the plan's targets for `plan` chargers only."""
        if not self.active and not self.overrides and all(m is Mode.PLAN for m in self.modes.values()):
            return inputs
        now = inputs.now
        self._sessions_ended(inputs.readings)
        chargers: list[PvCharger] = []
        for evse in self.site.evses:
            reading = inputs.readings.get(evse.id)
            connected = reading is not None and reading.status.connected and evse.id not in paused
            low = max(J1772_MIN_A, evse.min_a)
            low = math.ceil(low / evse.step_a - 1e-9) * evse.step_a
            chargers.append(PvCharger(evse.id, self.mode_of(evse.id), low, evse.max_a, evse.kw_per_a,
                                      evse.priority, connected, power_kw.get(evse.id, 0.0) if connected else 0.0))
        ev_kw = sum(c.draw_kw for c in chargers)
        self.grid = self.grid_point(inputs, measurements, ev_kw)
        decision = decide_surplus(self.settings, chargers, self.grid, self.memory, now)
        self.memory = dict(decision.memory)
        self.last = decision
        needs = any(c.mode in SOLAR_MODES and c.connected for c in chargers) or self.settings.import_cap_kw is not None
        if self.why_none is not None and needs:
            self.alarms.raise_(ALARM, f"no PV surplus known: {self.why_none}; pv chargers paused, minpv at their "
                               "minimum" + (", EVs held to 0 kW by the import cap"
                                            if self.settings.import_cap_kw is not None else ""), now,
                               action="check the grid meter (and the inverters) and their links")
        else:
            self.alarms.clear(ALARM, now)
        wants = {cid: amps for cid, amps in inputs.want_a.items() if self.mode_of(cid) is Mode.PLAN}
        return replace(inputs, want_a=wants, surplus_a=dict(decision.caps_a), import_cap_ev_kw=decision.ev_cap_kw)

    # ------------------------------------------------------------------------------------ the status

    def status(self, mono: float | None = None) -> dict[str, Any]:
        grid_kw = self.grid.grid_kw if self.grid is not None else None
        last = self.last
        inverters = []
        for inv_id, inverter in self.inverters.items():
            r = self.readings.get(inv_id)
            inverters.append({
                "id": inv_id,
                "state": "unknown" if r is None else "stale" if inverter.stale(mono) else "fresh",
                "ac_kw": _r(r.ac_kw) if r else None,
                "dc_kw": _r(r.dc_kw) if r else None,
                "battery_kw": _r(r.battery_kw) if r else None,
                "meter_kw": _r(r.meter_kw) if r else None,
                "at": r.at.isoformat() if r else None,
                **inverter.identity,
            })
        pv = [r.ac_kw - (r.battery_kw or 0.0) for inv_id, r in self.readings.items()
              if r.ac_kw is not None and not self.inverters[inv_id].stale(mono)]
        chargers = {}
        for cid in self.modes:
            override = self.overrides.get(cid)
            chargers[cid] = {
                "mode": self.mode_of(cid).value,
                "set_by": "config" if override is None else "operator (session)" if override[1] else "operator",
                "cap_a": _r(last.caps_a.get(cid)) if last is not None else None,
                "reason": last.reasons.get(cid) if last is not None else None,
                "pending_s": _r(last.waiting.get(cid)) if last is not None else None,
            }
        return {
            "grid_meter": self.grid_meter,
            "grid_kw": _r(grid_kw),
            "import_kw": _r(max(0.0, grid_kw)) if grid_kw is not None else None,
            "export_kw": _r(max(0.0, -grid_kw)) if grid_kw is not None else None,
            "pv_kw": _r(sum(pv)) if pv else None,
            "battery_kw": _r(self.grid.battery_discharge_kw) if self.grid is not None else None,
            "surplus_kw": _r(last.surplus_kw) if last is not None else None,
            "handed_kw": _r(last.handed_kw) if last is not None else None,
            "import_cap_kw": self.settings.import_cap_kw,
            "import_cap_ev_kw": _r(last.ev_cap_kw) if last is not None else None,
            "export_target_kw": self.settings.export_target_kw,
            "no_surplus_because": self.why_none,
            "inverters": inverters,
            "chargers": chargers,
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
