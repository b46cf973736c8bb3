"""Config of one Modbus TCP device (a charger or a meter): where it is and which register map it speaks."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ModbusEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)  # a register map name, e.g. "abb-terra-ac" or "eastron-sdm630"
    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)
    unit: int | None = Field(default=None, ge=0, le=255)  # None: the map's default unit id
    timeout_s: float = Field(default=2.0, gt=0, le=60)
