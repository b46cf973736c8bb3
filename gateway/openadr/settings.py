"""The settings the OpenADR 2.0b VEN reads, as it sees them: the VTN it talks to (`[vtn]`) and the site's
OpenADR rules (`[openadr]`). The config's sections satisfy these protocols as they are; the adapter never
imports the config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol


class VtnSettings(Protocol):
    """The VTN: its URL and the VEN's identity, TLS and signatures, timeouts, backoff and polling."""

    @property
    def url(self) -> str: ...

    @property
    def ven_name(self) -> str: ...

    @property
    def ven_id(self) -> str | None: ...  # pre-allocated by the utility

    @property
    def cert(self) -> str | None: ...  # PEM client certificate

    @property
    def key(self) -> str | None: ...

    @property
    def ca_file(self) -> str | None: ...  # the CA that signed the VTN's certificate

    @property
    def vtn_fingerprint(self) -> str | None: ...

    @property
    def check_hostname(self) -> bool: ...

    @property
    def tls12_only(self) -> bool: ...

    @property
    def sign_messages(self) -> bool: ...

    @property
    def request_timeout_s(self) -> float: ...

    @property
    def backoff_initial_s(self) -> float: ...

    @property
    def backoff_max_s(self) -> float: ...

    @property
    def max_body_bytes(self) -> int: ...

    @property
    def poll_s(self) -> float | None: ...  # None: what the VTN asks for

    @property
    def plain_http(self) -> bool: ...


class OpenAdrSettings(Protocol):
    """The site's OpenADR rules: SIMPLE levels, programs, resources, opt-out threshold, reports."""

    @property
    def simple_levels(self) -> Mapping[str, float]: ...  # SIMPLE level → fraction of EV capacity

    @property
    def ev_capacity_kw(self) -> float | None: ...

    @property
    def market_contexts(self) -> Sequence[str]: ...  # enrolled programs; empty: any

    @property
    def resources(self) -> Mapping[str, Sequence[str]]: ...  # resource id → charger/circuit ids

    @property
    def critical_kw(self) -> float: ...

    @property
    def report_interval_s(self) -> float: ...

    @property
    def backlog_days(self) -> float: ...
