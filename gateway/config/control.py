"""Config of the control loop, the store and the status endpoint."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ControlSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tick_s: float = Field(default=1.0, ge=0.1, le=60)
    deadband_a: float = Field(default=0.5, ge=0, le=10)  # increases smaller than this are not sent
    ramp_a_per_s: float | None = Field(default=None, gt=0)  # None: increases go out at once
    min_on_time_s: float = Field(default=300.0, ge=0, le=86400)  # before a charger may be paused for another
    charger_stale_s: float = Field(default=60.0, gt=0, le=3600)
    failsafe_after_s: float = Field(default=120.0, gt=0, le=86400)


class StatusSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bind: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    token: str | None = Field(default=None, min_length=16)  # writes are refused without one


class StoreSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = "gateway.sqlite"
    telemetry_days: int = Field(default=90, ge=1, le=3650)
