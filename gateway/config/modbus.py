"""Config of one Modbus TCP device (a charger or a meter): where it is and which register map it speaks.

`model` names a map shipped with the gateway ("abb-terra-ac") or a user's map file (a path ending in
.toml, relative to the working directory); either way the map is loaded and validated here, so
`gateway check-config` rejects an unknown model or a broken map with one line saying why.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.config.numbers import Real, Whole


class ModbusEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model: str = Field(min_length=1)  # a register map name, e.g. "abb-terra-ac" or "eastron-sdm630"
    host: str = Field(min_length=1)
    port: Whole = Field(default=502, ge=1, le=65535)
    unit: Whole | None = Field(default=None, ge=0, le=255)  # None: the map's default unit id
    timeout_s: Real = Field(default=2.0, gt=0, le=60)

    @field_validator("model")
    @classmethod
    def _known_map(cls, value: str) -> str:
        from gateway.modbus.maps import MapError, load_map

        try:
            load_map(value)
        except MapError as exc:
            raise ValueError("; ".join(exc.problems)) from None
        return value

    @property
    def kind(self) -> str:
        """"charger" or "meter": what the map describes."""
        from gateway.modbus.maps import load_map

        return load_map(self.model).kind
