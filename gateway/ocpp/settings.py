"""The settings the OCPP adapter reads, as it sees them: what the config's `[ocpp]` section and each OCPP
charger's entry must offer. The config's sections satisfy these protocols as they are; the adapter never
imports the config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class CentralSystemSettings(Protocol):
    """The central system: where it listens, TLS, the timeouts, the lease and the meter interval."""

    @property
    def bind(self) -> str: ...

    @property
    def port(self) -> int: ...  # 0: the OS picks one

    @property
    def tls_cert(self) -> str | None: ...  # security profile 2

    @property
    def tls_key(self) -> str | None: ...

    @property
    def require_password(self) -> bool: ...  # refuse chargers without a configured password

    @property
    def max_message_bytes(self) -> int: ...

    @property
    def response_timeout_s(self) -> float: ...

    @property
    def ack_wait_s(self) -> float: ...

    @property
    def lease_s(self) -> float: ...  # how long a live profile holds without renewal

    @property
    def heartbeat_s(self) -> int: ...

    @property
    def meter_interval_s(self) -> int: ...  # MeterValueSampleInterval / SampledDataCtrlr

    @property
    def local_auth_list(self) -> Sequence[str] | None: ...

    @property
    def hand_back_after_s(self) -> float: ...


class ChargerOcppOptions(Protocol):
    """A charger's own OCPP options."""

    @property
    def password(self) -> str | None: ...  # HTTP Basic (security profiles 1 and 2)

    @property
    def volts(self) -> float | None: ...  # its voltage per phase for W limits (None: the site's)


class OcppChargerSettings(Protocol):
    """One charger as the OCPP adapter needs it."""

    @property
    def id(self) -> str: ...  # its charge point identity

    @property
    def protocol(self) -> str: ...  # "ocpp1.6" or "ocpp2.0.1" (others are not served)

    @property
    def phases(self) -> Sequence[str]: ...  # the conductors it draws from

    @property
    def max_a(self) -> float: ...

    @property
    def fallback_a(self) -> float: ...  # what it falls back to when the gateway is gone

    @property
    def ocpp(self) -> ChargerOcppOptions: ...
