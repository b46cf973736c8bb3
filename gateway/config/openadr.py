"""Config of the VTN link and of how OpenADR signals map onto the site."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class VtnSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1)
    ven_name: str = Field(min_length=1)
    ven_id: str | None = None
    cert: str | None = None
    key: str | None = None
    ca_file: str | None = None
    vtn_fingerprint: str | None = None
    allow_plain_http: bool = False

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value


class OpenAdrSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # SIMPLE level → fraction of normal EV capacity left to the chargers.
    simple_levels: dict[str, float] = Field(
        default_factory=lambda: {"0": 1.0, "1": 0.5, "2": 0.25, "3": 0.0}
    )
    ev_capacity_kw: float | None = Field(default=None, gt=0)  # None: sum of the chargers' max power
    market_contexts: tuple[str, ...] = ()  # enrolled programs; empty: any
    resources: dict[str, tuple[str, ...]] = Field(default_factory=dict)  # resource id → charger/circuit ids

    @field_validator("simple_levels")
    @classmethod
    def _levels(cls, value: dict[str, float]) -> dict[str, float]:
        for level, fraction in value.items():
            if level not in {"0", "1", "2", "3"}:
                raise ValueError(f"SIMPLE level {level!r} is not one of 0, 1, 2, 3")
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(f"level {level}: fraction {fraction} is outside 0..1")
        return value
