"""Config of the VTN link and of how OpenADR signals map onto the site.

`[vtn]` says where the utility's VTN is and how we prove who we are (mTLS certificate, pinned VTN
fingerprint); `[openadr]` says how signals change the site and which programs we are enrolled in.
Plain HTTP is refused unless `allow_plain_http = true` is written explicitly.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.config.numbers import Real, Whole


class Oadr3Section(BaseModel):
    """`[vtn.oadr3]`: how an OpenADR 3 VEN authenticates and is notified (with `[vtn] protocol = "3"`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    version: Literal["3.0.1", "3.1.0"] = "3.1.0"
    client_id: str = Field(min_length=1)
    client_secret: str = Field(min_length=1)
    token_url: str | None = None  # None: discovered through GET /auth/server (3.1.0 only)
    scope: str | None = None
    subscribe: bool = True  # a webhook subscription besides polling
    callback_bind: str = "127.0.0.1"
    callback_port: Whole = Field(default=0, ge=0, le=65535)
    callback_url: str | None = None  # the URL the VTN calls; None: http://<bind>:<port>/openadr3/notify
    emergency_level: Whole = Field(default=3, ge=0, le=3)  # the SIMPLE level ALERT_GRID_EMERGENCY curtails to

    @model_validator(mode="after")
    def _token(self) -> Oadr3Section:
        if self.token_url is None and self.version == "3.0.1":
            raise ValueError("token_url is required with version = \"3.0.1\" (only 3.1.0 has /auth/server)")
        for name in ("token_url", "callback_url"):
            value = getattr(self, name)
            if value is not None and not value.startswith(("http://", "https://")):
                raise ValueError(f"{name}: expected an http:// or https:// URL, got {value!r}")
        return self


class VtnSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    url: str = Field(min_length=1)  # up to the service names, e.g. https://vtn.example/OpenADR2/Simple/2.0b
    ven_name: str = Field(min_length=1)
    ven_id: str | None = None  # pre-allocated by the utility; otherwise the VTN assigns one
    cert: str | None = None  # PEM client certificate (mTLS and, if enabled, XML signatures)
    key: str | None = None
    ca_file: str | None = None  # CA that signed the VTN's server certificate
    vtn_fingerprint: str | None = None  # openleadr format: last 10 bytes of SHA-256(DER), "AB:CD:…"
    allow_plain_http: bool = False
    check_hostname: bool = True
    tls12_only: bool = False  # pin TLS 1.2 where strict 2.0b cipher-suite conformance is required
    sign_messages: bool = False  # XML signatures are optional in 2.0b; TLS already authenticates
    request_timeout_s: Real = Field(default=10.0, gt=0, le=120)
    backoff_initial_s: Real = Field(default=1.0, gt=0, le=60)
    backoff_max_s: Real = Field(default=300.0, gt=0, le=3600)
    max_body_bytes: Whole = Field(default=1_000_000, ge=4096, le=50_000_000)
    poll_s: Real | None = Field(default=None, gt=0, le=86400)  # None: what the VTN asks for
    protocol: Literal["2.0b", "3"] = "2.0b"  # "3": an OpenADR 3 VEN, configured in [vtn.oadr3]
    oadr3: Oadr3Section | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("vtn_fingerprint")
    @classmethod
    def _fingerprint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = value.upper().split(":")
        if len(parts) != 10 or not all(len(p) == 2 and all(c in "0123456789ABCDEF" for c in p) for p in parts):
            raise ValueError(f"expected 10 colon-separated hex bytes (AB:CD:…), got {value!r}")
        return ":".join(parts)

    @model_validator(mode="after")
    def _transport(self) -> VtnSection:
        if self.url.startswith("http://") and not self.allow_plain_http:
            raise ValueError("url is plain http://: use https:// or set allow_plain_http = true explicitly")
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together: give both or neither")
        if self.url.startswith("https://") and self.cert is not None and self.ca_file is None:
            raise ValueError("ca_file is required with a client certificate (to verify the VTN)")
        if self.sign_messages and self.cert is None:
            raise ValueError("sign_messages needs cert and key")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be at least backoff_initial_s")
        if self.protocol == "3" and self.oadr3 is None:
            raise ValueError('protocol = "3" needs a [vtn.oadr3] section (client_id, client_secret, version)')
        if self.protocol != "3" and self.oadr3 is not None:
            raise ValueError('[vtn.oadr3] is given but protocol is not "3"')
        return self

    @property
    def plain_http(self) -> bool:
        return self.url.startswith("http://")


class OpenAdrSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # SIMPLE level → fraction of normal EV capacity left to the chargers.
    simple_levels: dict[str, Real] = Field(
        default_factory=lambda: {"0": 1.0, "1": 0.5, "2": 0.25, "3": 0.0}
    )
    ev_capacity_kw: Real | None = Field(default=None, gt=0)  # None: sum of the chargers' max power
    market_contexts: tuple[str, ...] = ()  # enrolled programs; empty: any
    resources: dict[str, tuple[str, ...]] = Field(default_factory=dict)  # resource id → charger/circuit ids
    # Opt out when an event would leave the EVs less than this (kW) while critical chargers need it.
    critical_kw: Real = Field(default=0.0, ge=0)
    report_interval_s: Real = Field(default=60.0, ge=1, le=86400)  # offered minimum sampling period
    backlog_days: Real = Field(default=7.0, gt=0, le=365)  # readings kept for a VTN that is away

    @field_validator("simple_levels")
    @classmethod
    def _levels(cls, value: dict[str, float]) -> dict[str, float]:
        for level, fraction in value.items():
            if level not in {"0", "1", "2", "3"}:
                raise ValueError(f"SIMPLE level {level!r} is not one of 0, 1, 2, 3")
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(f"level {level}: fraction {fraction} is outside 0..1")
        return value
