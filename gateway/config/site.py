"""The electrical site in the config: wiring, the service, the tree of circuits, chargers and meters.

The models check shapes, ranges and what relates fields of one entry (min_a ≤ max_a, a step that fits,
a modbus table for a modbus charger), as field validators so that each problem names its field. Checks
that relate one entry to another (references, cycles, phases a circuit does not carry, currents a circuit
cannot hold) are in `gateway.config.checks`.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from gateway.config.modbus import ModbusEndpoint
from gateway.config.numbers import Real, Whole
from gateway.config.ocpp import OcppChargerSettings
from gateway.domain import J1772_MIN_A, PHASES

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Wiring(StrEnum):
    SPLIT_PHASE_240 = "split-phase-120/240"
    THREE_PHASE_208 = "three-phase-208Y/120"
    THREE_PHASE_400 = "three-phase-400/230"
    SINGLE_PHASE_230 = "single-phase-230"


WIRING_FACTS: dict[Wiring, tuple[tuple[str, ...], float, float]] = {
    # phases, line-to-neutral V, line-to-line V
    Wiring.SPLIT_PHASE_240: (("L1", "L2"), 120.0, 240.0),
    Wiring.THREE_PHASE_208: (("L1", "L2", "L3"), 120.0, 208.0),
    Wiring.THREE_PHASE_400: (("L1", "L2", "L3"), 230.0, 400.0),
    Wiring.SINGLE_PHASE_230: (("L1",), 230.0, 230.0),
}


def parse_phases(value: object) -> tuple[str, ...]:
    """Accept "L1-L2", "L1,L2" or ["L1", "L2"]; normalise to an ordered tuple of distinct conductors."""
    if isinstance(value, str):
        parts = [p.strip().upper() for p in value.replace(",", "-").split("-") if p.strip()]
    elif isinstance(value, list | tuple):
        parts = [str(p).strip().upper() for p in value]
    else:
        raise ValueError("expected phase conductors like 'L1-L2' or ['L1', 'L2']")
    for p in parts:
        if p not in PHASES:
            joined = len(p) > 2 and len(p) % 2 == 0 and all(p[i : i + 2] in PHASES for i in range(0, len(p), 2))
            hint = f"; write {'-'.join(p[i : i + 2] for i in range(0, len(p), 2))!r}" if joined else ""
            raise ValueError(f"unknown phase conductor {p!r} (use L1, L2, L3{hint})")
    if not parts:
        raise ValueError("at least one phase conductor is needed")
    if len(set(parts)) != len(parts):
        raise ValueError(f"phase conductor listed twice in {value!r}")
    return tuple(sorted(parts))


# Line-to-line over line-to-neutral voltage: two legs in series on split phase, √3 on a wye.
LL_OVER_LN: dict[Wiring, float] = {
    Wiring.SPLIT_PHASE_240: 2.0,
    Wiring.THREE_PHASE_208: math.sqrt(3.0),
    Wiring.THREE_PHASE_400: math.sqrt(3.0),
    Wiring.SINGLE_PHASE_230: 1.0,
}
# Nameplate voltages are rounded (208 ≈ √3·120); a pair further apart than this is a typo.
VOLTAGE_TOLERANCE = 0.05


class SiteSection(Strict):
    name: str = Field(default="site", min_length=1)
    wiring: Wiring
    voltage_ln_v: Real | None = Field(default=None, gt=0, le=1000)  # None: from wiring (or voltage_ll_v)
    voltage_ll_v: Real | None = Field(default=None, gt=0, le=1000)  # None: from wiring (or voltage_ln_v)
    service_id: Id = "main"
    service_breaker_a: Real = Field(gt=0, le=10000)
    service_limit_a: Real | None = Field(default=None, gt=0, le=10000)  # replaces breaker × factor
    continuous_factor: Real = Field(default=0.8, gt=0, le=1.0)
    power_factor: Real = Field(default=0.99, gt=0, le=1.0)
    timezone: str = "UTC"

    @property
    def phases(self) -> tuple[str, ...]:
        return WIRING_FACTS[self.wiring][0]

    @property
    def ln_v(self) -> float:
        if self.voltage_ln_v is not None:
            return self.voltage_ln_v
        if self.voltage_ll_v is not None:
            return self.voltage_ll_v / LL_OVER_LN[self.wiring]
        return WIRING_FACTS[self.wiring][1]

    @property
    def ll_v(self) -> float:
        if self.voltage_ll_v is not None:
            return self.voltage_ll_v
        if self.voltage_ln_v is not None:
            return self.voltage_ln_v * LL_OVER_LN[self.wiring]
        return WIRING_FACTS[self.wiring][2]

    @property
    def service_usable_a(self) -> float:
        return self.service_limit_a or self.service_breaker_a * self.continuous_factor

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like 'America/Chicago')") from exc
        return value

    @field_validator("voltage_ll_v")
    @classmethod
    def _voltages_agree(cls, value: float | None, info: ValidationInfo) -> float | None:
        wiring, ln = info.data.get("wiring"), info.data.get("voltage_ln_v")
        if value is None or ln is None or wiring is None:
            return value
        expected = ln * LL_OVER_LN[wiring]
        if abs(value - expected) > VOLTAGE_TOLERANCE * expected:
            raise ValueError(
                f"{value:g} V does not fit {wiring.value} with {ln:g} V line-to-neutral (expected about "
                f"{expected:.0f} V)"
            )
        return value

    @field_validator("service_limit_a")
    @classmethod
    def _limit_within_breaker(cls, value: float | None, info: ValidationInfo) -> float | None:
        breaker = info.data.get("service_breaker_a")
        if value is not None and breaker is not None and value > breaker:
            raise ValueError(f"{value:g} A is above the service breaker ({breaker:g} A)")
        return value


class CircuitSection(Strict):
    id: Id
    parent: Id | None = None  # None: hangs off the service
    breaker_a: Real = Field(gt=0, le=10000)
    phases: tuple[str, ...] | None = None  # None: every conductor of its parent
    continuous_factor: Real | None = Field(default=None, gt=0, le=1.0)  # None: the site's
    limit_a: Real | None = Field(default=None, gt=0, le=10000)  # usable limit, replaces breaker × factor

    @field_validator("phases", mode="before")
    @classmethod
    def _phases(cls, value: object) -> tuple[str, ...] | None:
        return None if value is None else parse_phases(value)

    @field_validator("limit_a")
    @classmethod
    def _limit_within_breaker(cls, value: float | None, info: ValidationInfo) -> float | None:
        breaker = info.data.get("breaker_a")
        if value is not None and breaker is not None and value > breaker:
            raise ValueError(f"{value:g} A is above the circuit's breaker ({breaker:g} A)")
        return value


Protocol = Literal["ocpp1.6", "ocpp2.0.1", "modbus"]


class ChargerSection(Strict):
    id: Id
    protocol: Protocol
    circuit: Id | None = None  # None: directly on the service
    phases: tuple[str, ...]
    min_a: Real = Field(default=J1772_MIN_A, ge=J1772_MIN_A, le=1000)
    max_a: Real = Field(ge=J1772_MIN_A, le=1000)
    step_a: Real = Field(default=1.0, gt=0, le=100)
    priority: Whole = Field(default=0, ge=-100, le=100)  # larger is served first
    fallback_a: Real = Field(default=J1772_MIN_A, ge=0, le=1000)
    critical: bool = False  # a DR limit that cannot keep critical chargers at their min is opted out
    # now: as fast as the limits allow; pv: only from the PV surplus; minpv: the minimum always, plus surplus;
    # plan: as the price planner says (see [pv] and docs/pv.md)
    mode: Literal["now", "pv", "minpv", "plan"] = "plan"
    modbus: ModbusEndpoint | None = Field(default=None, validate_default=True)  # required for protocol modbus
    ocpp: OcppChargerSettings = Field(default_factory=OcppChargerSettings)

    @field_validator("phases", mode="before")
    @classmethod
    def _phases(cls, value: object) -> tuple[str, ...]:
        return parse_phases(value)

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_any_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    # Field validators (not one model validator) so that each problem names the field to fix.
    @field_validator("max_a")
    @classmethod
    def _max_not_below_min(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("min_a")
        if low is not None and value < low:
            raise ValueError(f"{value:g} A is below min_a ({low:g} A)")
        return value

    @field_validator("step_a")
    @classmethod
    def _step_fits(cls, value: float, info: ValidationInfo) -> float:
        low, high = info.data.get("min_a"), info.data.get("max_a")
        if info.data.get("protocol") == "ocpp1.6" and abs(value * 10 - round(value * 10)) > 1e-9:
            raise ValueError(f"{value:g} A: OCPP 1.6 limits are multiples of 0.1 A")
        if low is not None and high is not None and math.ceil(low / value - 1e-9) * value > high + 1e-9:
            raise ValueError(f"no multiple of {value:g} A lies between min_a ({low:g} A) and max_a ({high:g} A)")
        return value

    @field_validator("fallback_a")
    @classmethod
    def _fallback_range(cls, value: float, info: ValidationInfo) -> float:
        if 0 < value < J1772_MIN_A:
            raise ValueError(f"{value:g} A: must be 0 (stop) or at least {J1772_MIN_A:g} A")
        high = info.data.get("max_a")
        if high is not None and value > high:
            raise ValueError(f"{value:g} A is above max_a ({high:g} A)")
        return value

    @field_validator("modbus")
    @classmethod
    def _modbus_only_for_modbus(cls, value: ModbusEndpoint | None, info: ValidationInfo) -> ModbusEndpoint | None:
        protocol = info.data.get("protocol")
        if value is None and protocol == "modbus":
            raise ValueError("a modbus charger needs a modbus table (model, host, port, unit)")
        if value is not None and protocol is not None and protocol != "modbus":
            raise ValueError(f"a modbus table on a {protocol} charger (set protocol = \"modbus\" or remove it)")
        return value


class MeterSection(Strict):
    id: Id
    circuit: Id | None = None  # None: the service entrance
    includes_evs: bool = True  # the meter sees the managed chargers' current too
    modbus: ModbusEndpoint
    poll_s: Real = Field(default=1.0, ge=0.25, le=3600)
    stale_after_s: Real = Field(default=10.0, gt=0, le=3600)
    # Generation behind this meter (PV, a battery that discharges): the most it can export. 0: nothing can,
    # so a negative current is a lie. Judged per phase as if all of it were on one phase (the loose bound).
    pv_kw: Real = Field(default=0.0, ge=0, le=100000)
    # What the non-EV load is counted at per phase while this meter cannot be believed (implausible,
    # frozen, absurd). None: the circuit's whole limit, which leaves nothing for the chargers below it;
    # set it to the most the other loads can draw (their breakers) to keep charging at a reduced rate.
    fault_non_ev_a: Real | None = Field(default=None, ge=0, le=10000)
    # How long readings below what the chargers report (or exporting more than the PV can) must last
    # before they are a fault: the chargers report late, so a short dip is only held, not alarmed.
    implausible_after_s: Real = Field(default=5.0, gt=0, le=600)
    # Identical readings with current flowing for this long are a frozen meter (0: only judged by the
    # chargers' draws moving while the meter stands still).
    frozen_after_s: Real = Field(default=10.0, ge=0, le=86400)

    @field_validator("stale_after_s")
    @classmethod
    def _stale_after_a_poll(cls, value: float, info: ValidationInfo) -> float:
        poll = info.data.get("poll_s")
        if poll is not None and value <= poll:
            raise ValueError(f"{value:g} s is not longer than poll_s ({poll:g} s): every reading would be stale")
        return value
