"""What the OpenADR 3 VEN needs to know, as one frozen value built from the config by `gateway.assembly`.

The adapter never reads the config itself: the runtime hands it this, the ports it reports through and a
store that keeps its state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Version = Literal["3.0.1", "3.1.0"]


@dataclass(frozen=True, slots=True)
class Oadr3Settings:
    url: str  # the VTN's base URL, up to (not including) /programs
    version: Version
    ven_name: str
    client_id: str
    client_secret: str
    token_url: str | None = None  # None: discovered through GET /auth/server (3.1.0)
    scope: str | None = None
    ca_file: str | None = None  # the CA that signed the VTN's (and the token server's) certificate
    check_hostname: bool = True
    request_timeout_s: float = 10.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    max_body_bytes: int = 1_000_000
    poll_s: float = 10.0
    # The webhook the VTN notifies: where the gateway listens and the URL the VTN is given for it.
    subscribe: bool = True
    callback_bind: str = "127.0.0.1"
    callback_port: int = 0
    callback_url: str | None = None  # None: http://<bind>:<port>/openadr3/notify
    emergency_level: int = 3  # the SIMPLE level ALERT_GRID_EMERGENCY curtails to
    programs: tuple[str, ...] = ()  # program names enrolled in; empty: any
    charger_ids: tuple[str, ...] = ()
    # Resource name → what it stands for (a charger, a circuit or a configured group of them).
    resources: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    resource_kw: Mapping[str, float] = field(default_factory=dict)  # MAX_POWER_CONSUMPTION per resource
    report_interval_s: float = 60.0  # a report's interval when the event's intervals do not say
    backlog_days: float = 7.0
    currency: str | None = None  # the tariff's: a PRICE in another currency is refused

    @property
    def allow_plain_http(self) -> bool:
        return self.url.startswith("http://")
