"""Config of the control loop, the store and the status endpoint.

`[control]` sets how often the site is re-decided and how limits may move (deadband, ramp, minimum
on-time, when readings count as stale); `[status]` where the HTTP status endpoint listens and the token
that guards its writes; `[store]` where the SQLite file lives and how long telemetry is kept.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from gateway.config.numbers import Real, Whole

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


class ControlSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    tick_s: Real = Field(default=1.0, ge=0.1, le=60)
    deadband_a: Real = Field(default=0.5, ge=0, le=10)  # increases smaller than this are not sent
    ramp_a_per_s: Real | None = Field(default=None, gt=0)  # None: increases go out at once
    min_on_time_s: Real = Field(default=300.0, ge=0, le=86400)  # before a charger may be paused for another
    charger_stale_s: Real = Field(default=60.0, gt=0, le=3600)
    failsafe_after_s: Real = Field(default=120.0, gt=0, le=86400)
    # How a priority class shares what it may use (docs/allocation.md): "optimise" (a small mixed-integer
    # program per decision, scipy's HiGHS; deadline order when it has no answer in time), "deadline"
    # (urgency tiers, earliest departure first) or "fair" (max-min fair in amps, departures ignored).
    sharing: Literal["optimise", "deadline", "fair"] = "optimise"

    @field_validator("charger_stale_s")
    @classmethod
    def _stale_after_a_tick(cls, value: float, info: ValidationInfo) -> float:
        tick = info.data.get("tick_s")
        if tick is not None and value <= tick:
            raise ValueError(f"{value:g} s is not longer than tick_s ({tick:g} s): every charger would be stale")
        return value


class StatusSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    bind: str = "127.0.0.1"
    port: Whole = Field(default=8080, ge=0, le=65535)  # 0: the OS picks one (tests)
    token: str | None = Field(default=None, min_length=16)  # writes are refused without one

    @field_validator("bind")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not _HOSTNAME.match(value):
                raise ValueError(f"{value!r} is not an IP address or a host name") from None
        return value


class StoreSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    path: str = Field(default="gateway.sqlite", min_length=1)
    telemetry_days: Whole = Field(default=90, ge=1, le=3650)
