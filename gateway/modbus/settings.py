"""The settings the Modbus adapter reads, as it sees them: a device's endpoint, a Modbus charger and a meter.
The config's sections satisfy these protocols as they are; the adapter never imports the config.
"""

from __future__ import annotations

from typing import Protocol


class Endpoint(Protocol):
    """Where a device answers and which register map describes it."""

    @property
    def model(self) -> str: ...  # a register map name

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def unit(self) -> int | None: ...  # None: the map's default unit id

    @property
    def timeout_s(self) -> float: ...


class ModbusChargerSettings(Protocol):
    """One charger as the Modbus adapter needs it (a charger of another protocol is skipped)."""

    @property
    def id(self) -> str: ...

    @property
    def protocol(self) -> str: ...  # "modbus" for these

    @property
    def min_a(self) -> float: ...

    @property
    def max_a(self) -> float: ...

    @property
    def fallback_a(self) -> float: ...  # what its watchdog falls back to

    @property
    def modbus(self) -> Endpoint | None: ...


class MeterSettings(Protocol):
    """One meter as the Modbus adapter needs it."""

    @property
    def id(self) -> str: ...

    @property
    def modbus(self) -> Endpoint: ...

    @property
    def poll_s(self) -> float: ...

    @property
    def stale_after_s(self) -> float: ...
