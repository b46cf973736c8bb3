"""Config of the OCPP central system (the websocket server the chargers dial into) and of each OCPP
charger's credentials. Ranges here are shape checks; the server reports a missing TLS file itself."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.config.numbers import Real, Whole


class OcppChargerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    password: str | None = Field(default=None, min_length=8, max_length=40)  # HTTP Basic (profiles 1, 2)
    # the voltage per phase the charger converts a W limit at (None: the site's line-to-neutral voltage,
    # line-to-line for a load across two conductors); set it for a model converting at another figure
    volts: Real | None = Field(default=None, gt=0, le=1000)


class OcppSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    bind: str = "127.0.0.1"
    port: Whole = Field(default=9000, ge=0, le=65535)
    # validTo of the live profile, renewed at half. Short leases (a few seconds) are for labs and tests:
    # every renewal is one SetChargingProfile per charger.
    lease_s: Real = Field(default=120.0, ge=2, le=3600)
    tls_cert: str | None = None  # security profile 2: TLS + Basic auth
    tls_key: str | None = None
    require_password: bool = False  # refuse chargers that have no password in the config
    response_timeout_s: Real = Field(default=10.0, gt=0, le=120)
    # apply_limits returns after this long; a later answer arrives as a reading with applied_limit_a
    ack_wait_s: Real = Field(default=2.0, gt=0, le=120)
    meter_interval_s: Whole = Field(default=10, ge=1, le=3600)  # MeterValueSampleInterval / SampledDataCtrlr
    heartbeat_s: Whole = Field(default=300, ge=10, le=86400)
    # idTags / idTokens accepted by Authorize; None accepts everyone (the site has no RFID policy)
    local_auth_list: tuple[str, ...] | None = None
    # an EV drawing well under its limit this long is offered a lower cap (driver.unused_cap)
    hand_back_after_s: Real = Field(default=60.0, gt=0, le=3600)
    max_message_bytes: Whole = Field(default=65536, ge=1024, le=16 * 1024 * 1024)

    @model_validator(mode="after")
    def _tls_pair(self) -> OcppSection:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together (security profile 2 needs both)")
        return self
