"""The small interfaces the runtime calls; adapters (OCPP, Modbus, OpenADR, SQLite) implement them.

The runtime only ever sees these: it does not know which protocol a charger speaks. Every method that
does I/O is async and must bound itself with a timeout; none raises for a peer's misbehaviour (that is
logged by the adapter and shows up as a rejected `LimitAck` or a stale reading).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from gateway.domain import ChargerReading, Event, LimitAck, Measurement, OptState


@runtime_checkable
class EvseDriver(Protocol):
    """Pushes limits to a set of chargers and streams what they report."""

    async def apply_limits(self, limits: dict[str, float], reason: str) -> list[LimitAck]:
        """Send each charger its new limit (amps per phase; 0 pauses), concurrently; one ack each."""
        ...

    def readings(self) -> AsyncIterator[ChargerReading]:
        """Every status or measurement a charger reports, as it arrives."""
        ...


@runtime_checkable
class Meter(Protocol):
    """A site or circuit meter."""

    def measurements(self) -> AsyncIterator[Measurement]:
        """Readings as they are polled; a meter that stops answering simply stops yielding."""
        ...


class TelemetrySource(Protocol):
    """What the VEN reports to the VTN, filled by the runtime from meters and chargers."""

    def site_power_kw(self) -> float | None: ...

    def site_energy_kwh(self) -> float | None: ...

    def ev_power_kw(self) -> float | None: ...

    def charger_power_kw(self) -> dict[str, float]: ...

    def limit_kw(self) -> float | None: ...

    def online(self) -> bool: ...


class EventSink(Protocol):
    """Where the VTN adapter delivers domain events; stored before the VEN answers the VTN."""

    def events_changed(self, events: Sequence[Event], now: datetime) -> None: ...

    def opt_of(self, event_id: str) -> OptState: ...
