"""The small interfaces the runtime calls; adapters (OCPP, Modbus, OpenADR, SQLite) implement them.

The runtime only ever sees these: it does not know which protocol a charger speaks. Every method that
does I/O is async and must bound itself with a timeout; none raises for a peer's misbehaviour (that is
logged by the adapter and shows up as a rejected `LimitAck` or a stale reading).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from gateway.domain import ChargerReading, Event, LimitAck, Measurement, OptState
from gateway.records import ChargerRecord, PendingOpt, Reading, Registration, ReportRequest
from gateway.surplus import PvReading


@runtime_checkable
class EvseDriver(Protocol):
    """Pushes limits to a set of chargers and streams what they report."""

    async def apply_limits(self, limits: dict[str, float], reason: str) -> list[LimitAck]:
        """Send each charger its new limit (amps per phase; 0 pauses), concurrently; one ack each."""
        ...

    def readings(self) -> AsyncIterator[ChargerReading]:
        """Every status or measurement a charger reports, as it arrives."""
        ...


# Capabilities a charger driver may have beyond `EvseDriver`; the runtime asks for each with isinstance,
# so a driver that lacks one is simply not asked (no protocol names in the runtime).


@runtime_checkable
class Starts(Protocol):
    """Has to be started (a server to listen, tasks to run) before its chargers can be reached."""

    async def start(self) -> None: ...


@runtime_checkable
class Snapshots(Protocol):
    """Can say at once what each of its chargers may be drawing, before any of them has spoken."""

    def snapshot(self) -> list[ChargerReading]: ...


@runtime_checkable
class Releases(Protocol):
    """Puts its chargers on their own fallback at a clean stop."""

    async def stop(self, release: bool = True, at_rest: Mapping[str, float] | None = None) -> list[str]:
        """Stop; with `release`, first put every charger on its fallback, then (every charger having
        confirmed it) raise the fallbacks lowered beside the limits to `at_rest` (what each may fall back
        to with every limit at 0 A). The chargers that did not confirm going to their fallback (they fall
        back by themselves later, e.g. when a lease ends)."""
        ...


@runtime_checkable
class Closes(Protocol):
    """Holds links or tasks to close at a stop (its chargers' watchdogs take over)."""

    async def close(self) -> None: ...


@runtime_checkable
class HandsBack(Protocol):
    """Notices an EV drawing well under its limit, so the allocator can give the rest to others."""

    def unused_cap(self, charger_id: str) -> float | None: ...


@runtime_checkable
class HoldsFallbacks(Protocol):
    """Its chargers' own fallback (what each falls back to by itself) can be lowered and put back.

    `hold_fallbacks` sets what each charger named should fall back to (never above its configured
    fallback; `keep`: left as they are), sends the lowerings at once and waits for their answers, and
    returns the chargers whose lowering is not confirmed: until it is, they may still fall back to more.
    Raises go out later."""

    async def hold_fallbacks(self, wanted: Mapping[str, float], keep: Iterable[str] = ()) -> list[str]: ...


@runtime_checkable
class FollowsClock(Protocol):
    """Keeps wall-clock times of its own (leases, peers' clock skew) that a step of the clock moves."""

    def clock_stepped(self, step_s: float) -> None: ...


@runtime_checkable
class Remembers(Protocol):
    """Keeps what its chargers hold in the store; says when it cannot (raises are then not sent)."""

    def store_failing(self) -> bool: ...


@runtime_checkable
class Listens(Protocol):
    """Its chargers connect to it (a central system): where each one is to connect."""

    def url_of(self, charger_id: str) -> str: ...


@dataclass(frozen=True, slots=True)
class Nameplate:
    """What a charger says it is: OCPP BootNotification fields, or what its Modbus register map names."""

    vendor: str | None = None
    model: str | None = None
    firmware: str | None = None
    serial: str | None = None
    source: str = "BootNotification"


@dataclass(frozen=True, slots=True)
class FailsafeReport:
    """How a charger falls back without the gateway, as its driver can tell: rows for the report, whether
    it holds, and why in one line."""

    rows: tuple[tuple[str, str], ...]
    ok: bool
    detail: str


@runtime_checkable
class Commissions(Protocol):
    """Answers commissioning's questions about one of its chargers in its own protocol's terms."""

    def ready(self, charger_id: str) -> bool | None:
        """Connected and set up (None: the driver cannot tell; the readings decide)."""
        ...

    def own_sample(self, charger_id: str) -> tuple[object, dict[str, float]] | None:
        """Its latest own measurement: a token that changes with every new one, and amps per conductor."""
        ...

    def own_status(self, charger_id: str) -> str | None: ...

    def nameplate(self, charger_id: str) -> Nameplate | None: ...

    async def failsafe_report(self, charger_id: str, fallback_a: float) -> FailsafeReport: ...


@runtime_checkable
class Meter(Protocol):
    """A site or circuit meter."""

    def measurements(self) -> AsyncIterator[Measurement]:
        """Readings as they are polled; a meter that stops answering simply stops yielding."""
        ...


@runtime_checkable
class Inverter(Protocol):
    """A PV inverter (or a hybrid with a battery), for the surplus and the status."""

    id: str

    @property
    def identity(self) -> Mapping[str, str]:
        """Manufacturer, model, serial and version as the device says them (empty until read)."""
        ...

    def readings(self) -> AsyncIterator[PvReading]:
        """Readings as they are polled; one that stops answering simply stops yielding."""
        ...

    def stale(self, now: float | None = None) -> bool:
        """No good reading within its staleness limit (by the monotonic clock)."""
        ...


@dataclass(frozen=True, slots=True)
class Curtailment:
    """The limits in force right now besides the conductors' own, whatever their source (a SIMPLE level, a
    LOAD_CONTROL or LOAD_DISPATCH signal, a per-resource cap, the operator): what the VEN reports as its load
    control state."""

    site_kw: float | None = None  # site power cap (a LOAD_DISPATCH setpoint or the operator's cap)
    ev_kw: float | None = None  # EV power cap for the whole site (SIMPLE, LOAD_CONTROL, delta, multiplier)
    group_kw: Mapping[str, float] = field(default_factory=dict)  # resource id → EV power cap
    normal_ev_kw: float | None = None  # EV capacity with nothing in force
    non_ev_kw: float = 0.0  # the site's other load, to say a cap on the EVs at the site meter
    level: int | None = None  # the SIMPLE level or level offset in force (0 normal .. 3)
    manual_override: bool = False  # the operator holds the site (a cap or paused chargers)

    @property
    def in_force(self) -> bool:
        return (self.site_kw is not None or self.ev_kw is not None or bool(self.group_kw)
                or bool(self.level))

    @property
    def limit_kw(self) -> float | None:
        """The lowest cap in force, at the site meter (an EV cap plus the other load); None: nothing in force."""
        caps = [c for c in (self.site_kw, None if self.ev_kw is None else self.ev_kw + self.non_ev_kw)
                if c is not None and math.isfinite(c)]
        return min(caps) if caps else None

    @property
    def capacity(self) -> float | None:
        """The fraction of normal EV capacity left to the chargers (1.0 with nothing in force)."""
        if not self.normal_ev_kw or self.normal_ev_kw <= 0:
            return None
        caps = [self.ev_kw] if self.ev_kw is not None else []
        if self.site_kw is not None:
            caps.append(max(0.0, self.site_kw - self.non_ev_kw))
        if self.group_kw:
            caps.append(min(self.normal_ev_kw, sum(self.group_kw.values())))
        return min(1.0, max(0.0, min(caps) / self.normal_ev_kw)) if caps else 1.0


class TelemetrySource(Protocol):
    """What the VEN reports to the VTN, filled by the runtime from meters and chargers."""

    def site_power_kw(self) -> float | None: ...

    def site_energy_kwh(self) -> float | None: ...

    def ev_power_kw(self) -> float | None: ...

    def charger_power_kw(self) -> dict[str, float]: ...

    def limit_kw(self) -> float | None: ...

    def online(self) -> bool: ...

    def curtailment(self) -> Curtailment: ...


class EventSink(Protocol):
    """Where the VTN adapter delivers domain events; stored before the VEN answers the VTN."""

    def events_changed(self, events: Sequence[Event], now: datetime) -> None: ...

    def opt_of(self, event_id: str) -> OptState: ...


# The store, as the adapters see it (`gateway.store` implements both on the gateway's SQLite file). Methods
# are synchronous and short: an async adapter calls them from a worker thread, one at a time, under a
# timeout. A write the store cannot take is held in memory where the store says so (see `gateway.store.vtn`);
# an operator's write that cannot be kept raises `gateway.records.StoreWriteError`.


class ChargerRecords(Protocol):
    """What each OCPP charger holds, kept across a restart (a raise is saved before it is sent)."""

    def load(self) -> dict[str, ChargerRecord]: ...

    def save(self, records: list[ChargerRecord], now: datetime) -> None: ...

    def close(self) -> None: ...


class VenRecords(Protocol):
    """What an OpenADR VEN keeps: its registration, the events with their opts, the operator's opt overrides
    and the opts still to send, the VTN's report requests and the report backlog."""

    def registration(self) -> Registration: ...

    def save_registration(self, reg: Registration, now: datetime) -> None: ...

    def forget_registration(self, now: datetime) -> None: ...

    def events(self) -> dict[str, Event]: ...

    def save_events(self, events: Iterable[Event], now: datetime, reasons: dict[str, str] | None = None) -> None: ...

    def prune_events(self, before: datetime) -> int: ...

    def overrides(self) -> dict[str, tuple[OptState, str]]: ...

    def set_override(self, event_id: str, opt: OptState | None, reason: str, now: datetime) -> None: ...

    def queue_opt(self, event: Event, reason: str, opt_id: str, now: datetime, *,
                  in_flight: int | None = None) -> None: ...

    def pending_opts(self) -> list[PendingOpt]: ...

    def last_sent_opt_id(self, event_id: str) -> str | None: ...

    def mark_opt_sent(self, outbox_id: int, now: datetime) -> None: ...

    def report_requests(self) -> list[ReportRequest]: ...

    def save_report_request(self, rr: ReportRequest, now: datetime) -> None: ...

    def cancel_report_request(self, report_request_id: str) -> None: ...

    def supersede(self, rr: ReportRequest) -> int: ...

    def unsent_count(self, report_request_id: str) -> int: ...

    def add_readings(self, rr: ReportRequest, values: Sequence[tuple[str, float]], at: datetime,
                     next_sample_at: datetime) -> None: ...

    def unsent_readings(self, limit: int = 1000) -> list[Reading]: ...

    def mark_readings_sent(self, ids: Sequence[int], now: datetime) -> None: ...

    def prune_readings(self, before: datetime) -> int: ...


@dataclass(frozen=True, slots=True)
class ReportSample:
    """One value of an OpenADR 3 report: a payload type of one resource over one interval of an event."""

    event_id: str
    program_id: str
    payload_type: str  # USAGE, DEMAND, OPERATING_STATE …
    resource_name: str
    start: datetime
    duration_s: float
    value: float | str
    id: int = 0  # the backlog row, once stored


class Oadr3Records(Protocol):
    """What the OpenADR 3 VEN keeps: the events with their opts (the same table as 2.0b's, so the schedule is
    one), its ids at the VTN, each event's program and report descriptors, and the report backlog."""

    def events(self) -> dict[str, Event]: ...

    def save_events(self, events: Iterable[Event], now: datetime, reasons: dict[str, str] | None = None) -> None: ...

    def prune_events(self, before: datetime) -> int: ...

    def overrides(self) -> dict[str, tuple[OptState, str]]: ...

    def set_override(self, event_id: str, opt: OptState | None, reason: str, now: datetime) -> None: ...

    def holding(self) -> bool: ...

    def flush(self) -> bool: ...

    def state(self, key: str) -> str | None: ...

    def put_state(self, key: str, value: str | None, now: datetime) -> None: ...

    def save_event_meta(self, event_id: str, program_id: str, descriptors: list[dict[str, object]]) -> None: ...

    def event_meta(self) -> dict[str, tuple[str, list[dict[str, object]], datetime | None]]: ...

    def add_samples(self, event_id: str, samples: Sequence[ReportSample], next_report_at: datetime) -> None: ...

    def unsent_samples(self, limit: int = 1000) -> list[ReportSample]: ...

    def mark_samples_sent(self, ids: Sequence[int], now: datetime) -> None: ...

    def prune_samples(self, before: datetime) -> int: ...

    def close(self) -> None: ...
