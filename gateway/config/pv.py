"""The `[pv]` section: which meter is the grid point, the inverters read over SunSpec, the import cap, the
export target and the delays before a `pv` charger starts or stops.

Each charger's mode is its own key (`chargers[i].mode`, "plan" unless set); a charger in `pv` or `minpv`
mode needs `[pv] grid_meter`, since the surplus is measured there and never guessed. `pv_problems` checks
what relates this section to the rest (the grid meter exists, sits at the service entrance and may read
export; inverter ids are unique), one line each, like `gateway.config.checks`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from gateway.config.numbers import Real, Whole

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class InverterSection(_Strict):
    """A PV (or hybrid) inverter with SunSpec over Modbus TCP."""

    id: Id
    host: str = Field(min_length=1)
    port: Whole = Field(default=502, ge=1, le=65535)
    unit: Whole = Field(default=1, ge=0, le=255)
    base_address: Whole | None = Field(default=None, ge=0, le=65533)  # None: 40000, then 0, then 50000
    poll_s: Real = Field(default=2.0, ge=0.5, le=3600)
    stale_after_s: Real = Field(default=15.0, gt=0, le=3600)
    timeout_s: Real = Field(default=2.0, gt=0, le=60)
    max_kw: Real = Field(default=1000.0, gt=0, le=100000)  # a reading beyond this is refused as nonsense

    @field_validator("stale_after_s")
    @classmethod
    def _stale_after_a_poll(cls, value: float, info: ValidationInfo) -> float:
        poll = info.data.get("poll_s")
        if poll is not None and value <= poll:
            raise ValueError(f"{value:g} s is not longer than poll_s ({poll:g} s): every reading would be stale")
        return value


class PvSection(_Strict):
    grid_meter: Id | None = None  # a [[meters]] id at the service entrance: where the surplus is measured
    import_cap_kw: Real | None = Field(default=None, ge=0, le=100000)  # most the site may import (0 allowed)
    export_target_kw: Real = Field(default=0.0, ge=0, le=100000)  # what the site keeps exporting
    start_delay_s: Real = Field(default=60.0, ge=0, le=3600)  # surplus above a pv charger's minimum this long
    stop_delay_s: Real = Field(default=180.0, ge=0, le=3600)  # below it this long
    inverters: tuple[InverterSection, ...] = ()


def pv_problems(config: GatewayConfig) -> list[str]:
    """What ties `[pv]` to the meters and chargers, one line each."""
    pv = config.pv
    problems: list[str] = []
    meters = {m.id: m for m in config.meters}
    if pv.grid_meter is not None:
        meter = meters.get(pv.grid_meter)
        if meter is None:
            known = ", ".join(sorted(meters)) or "none configured"
            problems.append(f"pv.grid_meter: no meter {pv.grid_meter!r} (meters: {known})")
        elif meter.circuit not in (None, config.site.service_id):
            problems.append(f"pv.grid_meter: meter {pv.grid_meter!r} is on circuit {meter.circuit!r}, not at the "
                            "service entrance: the surplus is measured where the site meets the grid")
        elif meter.pv_kw == 0:
            problems.append(f"pv.grid_meter: meter {pv.grid_meter!r} has pv_kw = 0, so any export it reads is taken "
                            "for a fault (and gives no surplus); set its pv_kw to the PV's peak, kW")
    if pv.grid_meter is None:
        for i, ch in enumerate(config.chargers):
            if ch.mode in ("pv", "minpv"):
                problems.append(f"chargers[{i}].mode: {ch.mode!r} needs [pv] grid_meter (the meter where the site "
                                "meets the grid: the surplus is measured there)")
        if pv.import_cap_kw is not None:
            problems.append("pv.import_cap_kw: needs [pv] grid_meter (the import is measured there)")
    seen: set[str] = set()
    for i, inv in enumerate(pv.inverters):
        if inv.id in seen:
            problems.append(f"pv.inverters[{i}].id: {inv.id!r} is used twice")
        seen.add(inv.id)
    return problems
