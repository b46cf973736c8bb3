"""Config of the OCPP central system and of each OCPP charger's credentials."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class OcppChargerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    password: str | None = Field(default=None, min_length=8, max_length=40)  # HTTP Basic (profiles 1, 2)


class OcppSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bind: str = "127.0.0.1"
    port: int = Field(default=9000, ge=0, le=65535)
    lease_s: float = Field(default=120.0, ge=10, le=3600)  # validTo of the live profile; renewed at half
    tls_cert: str | None = None
    tls_key: str | None = None
    require_password: bool = False
    response_timeout_s: float = Field(default=10.0, gt=0, le=120)
