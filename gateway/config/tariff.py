"""Config of the site's tariff when the VTN sends no prices."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TariffSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = "USD"
    flat_price: float | None = Field(default=None, ge=0)  # per kWh
