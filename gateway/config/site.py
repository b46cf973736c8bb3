"""The electrical site in the config: wiring, the service, the tree of circuits, chargers and meters.

Only shape and range checks live on the models; checks that relate one entry to another (references,
cycles, phases a circuit does not carry, currents a circuit cannot hold) are in `gateway.config.checks`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.config.modbus import ModbusEndpoint
from gateway.config.ocpp import OcppChargerSettings
from gateway.domain import J1772_MIN_A, PHASES

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
        parts = [p.strip() for p in value.replace(",", "-").split("-") if p.strip()]
    elif isinstance(value, list | tuple):
        parts = [str(p).strip() for p in value]
    else:
        raise ValueError("expected phase conductors like 'L1-L2' or ['L1', 'L2']")
    for p in parts:
        if p not in PHASES:
            raise ValueError(f"unknown phase conductor {p!r} (use L1, L2, L3)")
    if not parts:
        raise ValueError("at least one phase conductor is needed")
    if len(set(parts)) != len(parts):
        raise ValueError(f"phase conductor listed twice in {value!r}")
    return tuple(sorted(parts))


class SiteSection(Strict):
    name: str = "site"
    wiring: Wiring
    voltage_ln_v: float | None = Field(default=None, gt=0, le=1000)
    voltage_ll_v: float | None = Field(default=None, gt=0, le=1000)
    service_id: Id = "main"
    service_breaker_a: float = Field(gt=0, le=10000)
    continuous_factor: float = Field(default=0.8, gt=0, le=1.0)
    power_factor: float = Field(default=0.99, gt=0, le=1.0)
    timezone: str = "UTC"

    @property
    def phases(self) -> tuple[str, ...]:
        return WIRING_FACTS[self.wiring][0]

    @property
    def ln_v(self) -> float:
        return self.voltage_ln_v or WIRING_FACTS[self.wiring][1]

    @property
    def ll_v(self) -> float:
        return self.voltage_ll_v or WIRING_FACTS[self.wiring][2]

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class CircuitSection(Strict):
    id: Id
    parent: Id | None = None  # None: hangs off the service
    breaker_a: float = Field(gt=0, le=10000)
    phases: tuple[str, ...] | None = None  # None: every conductor of its parent
    continuous_factor: float | None = Field(default=None, gt=0, le=1.0)
    limit_a: float | None = Field(default=None, gt=0, le=10000)  # usable limit, replaces breaker × factor

    @field_validator("phases", mode="before")
    @classmethod
    def _phases(cls, value: object) -> tuple[str, ...] | None:
        return None if value is None else parse_phases(value)


Protocol = Literal["ocpp1.6", "ocpp2.0.1", "modbus"]


class ChargerSection(Strict):
    id: Id
    protocol: Protocol
    circuit: Id | None = None  # None: directly on the service
    phases: tuple[str, ...]
    min_a: float = Field(default=J1772_MIN_A, ge=J1772_MIN_A, le=1000)
    max_a: float = Field(gt=0, le=1000)
    step_a: float = Field(default=1.0, gt=0, le=100)
    priority: int = Field(default=0, ge=-100, le=100)
    fallback_a: float = Field(default=J1772_MIN_A, ge=0, le=1000)
    critical: bool = False  # a DR limit that cannot keep critical chargers at their min is opted out
    modbus: ModbusEndpoint | None = None
    ocpp: OcppChargerSettings = Field(default_factory=OcppChargerSettings)

    @field_validator("phases", mode="before")
    @classmethod
    def _phases(cls, value: object) -> tuple[str, ...]:
        return parse_phases(value)

    @model_validator(mode="after")
    def _currents(self) -> ChargerSection:
        if self.min_a > self.max_a:
            raise ValueError(f"min_a ({self.min_a:g} A) is above max_a ({self.max_a:g} A)")
        if 0 < self.fallback_a < J1772_MIN_A:
            raise ValueError(f"fallback_a ({self.fallback_a:g} A) must be 0 or at least 6 A")
        if self.fallback_a > self.max_a:
            raise ValueError(f"fallback_a ({self.fallback_a:g} A) is above max_a ({self.max_a:g} A)")
        if self.protocol == "modbus" and self.modbus is None:
            raise ValueError("a modbus charger needs a [chargers.modbus] table (model, host, port, unit)")
        if self.protocol != "modbus" and self.modbus is not None:
            raise ValueError(f"a [chargers.modbus] table on a {self.protocol} charger")
        return self


class MeterSection(Strict):
    id: Id
    circuit: Id | None = None  # None: the service entrance
    includes_evs: bool = True  # the meter sees the managed chargers' current too
    modbus: ModbusEndpoint
    poll_s: float = Field(default=1.0, ge=0.25, le=3600)
    stale_after_s: float = Field(default=10.0, gt=0, le=3600)
