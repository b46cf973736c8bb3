"""The gateway's vocabulary: plain frozen data shared by the pure core and every adapter.

Nothing here does I/O or reads a clock. Adapters translate OpenADR, OCPP and Modbus messages into these
types at the edge, so the scheduling and allocation core never sees a wire format. Electrical quantities
are amps per phase conductor, kilowatts and kilowatt-hours; times are timezone-aware datetimes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

# J1772 / NEC 625.42: a pilot below 6 A means "do not charge".
J1772_MIN_A = 6.0

Phase = str  # "L1", "L2" or "L3"
PHASES: tuple[Phase, ...] = ("L1", "L2", "L3")


# --------------------------------------------------------------------------------------------- electrical


def power_kw_per_amp(conductors: int, voltage_v: float, power_factor: float = 1.0) -> float:
    """Real power drawn per amp of pilot current.

    One conductor (line to neutral) or two (line to line) carry the same current through one load:
    P = V·I·PF with the voltage across the load. Three conductors: P = √3·V_LL·I·PF.
    """
    factor = math.sqrt(3.0) if conductors >= 3 else 1.0
    return factor * voltage_v * power_factor / 1000.0


# --------------------------------------------------------------------------------------------- the site


@dataclass(frozen=True, slots=True)
class Circuit:
    """A node of the site's tree of conductors: the service, a panel or a branch circuit.

    `limit_a` is the usable current of every phase conductor the circuit carries (the continuous-load
    derating already applied). `phase_limits_a` may lower it for one conductor.
    """

    id: str
    parent: str | None
    limit_a: float
    phases: tuple[Phase, ...] = PHASES
    phase_limits_a: Mapping[Phase, float] = field(default_factory=dict)

    def limit_of(self, phase: Phase) -> float:
        return self.phase_limits_a.get(phase, self.limit_a)


@dataclass(frozen=True, slots=True)
class NonEvLoad:
    """Measured current on one conductor of a circuit that is not drawn by a managed charger.

    Negative means export (PV). `worst_a` is the worst reading recently seen; a stale reading is
    replaced by it (or, when there is none, by the whole conductor limit: nothing is left for EVs).
    """

    circuit: str
    phase: Phase
    amps: float
    measured_at: datetime | None = None
    worst_a: float | None = None


@dataclass(frozen=True, slots=True)
class EvseState:
    """What the allocator knows about one charger (EVSE) at the moment of a decision."""

    id: str
    circuit: str
    phases: tuple[Phase, ...]
    voltage_v: float  # across the load: line-to-neutral for one conductor, line-to-line otherwise
    max_a: float
    min_a: float = J1772_MIN_A
    step_a: float = 1.0
    priority: int = 0  # larger is more important
    connected: bool = False
    energy_needed_kwh: float | None = None  # None: unknown, keeps wanting energy until departure
    departure: datetime | None = None
    measured_a: float | None = None
    on_since: datetime | None = None  # when it last went from 0 to a positive limit
    waiting_since: datetime | None = None  # when it started waiting (plugged in, or was paused)
    held_a: float | None = None  # not re-allocated now (e.g. a limit not yet acknowledged): counts as this
    want_a: float | None = None  # the charging plan's target now: a cap below max_a (None: no plan)
    power_factor: float = 1.0
    fallback_a: float = 0.0  # what it falls back to by itself without the gateway (its base; 0: nothing)

    @property
    def kw_per_a(self) -> float:
        return power_kw_per_amp(len(self.phases), self.voltage_v, self.power_factor)


@dataclass(frozen=True, slots=True)
class SiteLimits:
    """The limits in force at one moment besides the conductors' own: from DR events and operators."""

    site_kw: float | None = None  # EV power + non-EV power must stay at or under this
    ev_kw: float | None = None  # EV power alone must stay at or under this
    non_ev_kw: float = 0.0  # measured site power not drawn by managed chargers (negative: export)
    groups: tuple[GroupLimit, ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class GroupLimit:
    """A power cap on a group of chargers (an OpenADR resource a targeted event limits)."""

    id: str
    evse_ids: frozenset[str]
    kw: float


@dataclass(frozen=True, slots=True)
class Allocation:
    """Amps per charger, and for each the constraint that bound it ("max", "site", "panel-1/L2", …)."""

    amps: Mapping[str, float]
    binding: Mapping[str, str]
    overloaded: tuple[str, ...] = ()  # constraints already exceeded by load the gateway cannot control
    notes: tuple[str, ...] = ()  # how the decision was made where it was not the configured way


# --------------------------------------------------------------------------------------------- measurements


@dataclass(frozen=True, slots=True)
class Measurement:
    """One meter reading. Per-phase values are keyed "L1".."L3"; power is positive for import."""

    meter_id: str
    at: datetime
    power_kw: float | None = None
    current_a: Mapping[Phase, float] = field(default_factory=dict)
    voltage_v: Mapping[Phase, float] = field(default_factory=dict)
    power_phase_kw: Mapping[Phase, float] = field(default_factory=dict)
    import_kwh: float | None = None
    export_kwh: float | None = None


class ChargerStatus(StrEnum):
    """Charger state in the terms the allocator cares about (mapped from OCPP status / pilot state)."""

    AVAILABLE = "available"  # nothing plugged in
    PREPARING = "preparing"  # plugged in, not yet charging
    CHARGING = "charging"
    SUSPENDED_EV = "suspended_ev"  # the car stopped drawing (full or its own schedule)
    SUSPENDED_EVSE = "suspended_evse"  # we (or the charger) hold it at 0 A
    FINISHING = "finishing"
    FAULTED = "faulted"
    UNAVAILABLE = "unavailable"
    OFFLINE = "offline"

    @property
    def connected(self) -> bool:
        return self in {
            ChargerStatus.PREPARING,
            ChargerStatus.CHARGING,
            ChargerStatus.SUSPENDED_EV,
            ChargerStatus.SUSPENDED_EVSE,
            ChargerStatus.FINISHING,
        }


@dataclass(frozen=True, slots=True)
class ChargerReading:
    """What a charger driver reports about one charger (OCPP MeterValues/Status, Modbus registers)."""

    charger_id: str
    at: datetime
    status: ChargerStatus
    current_a: Mapping[Phase, float] = field(default_factory=dict)
    power_kw: float | None = None
    energy_kwh: float | None = None  # meter register, monotonic
    applied_limit_a: float | None = None  # what the charger says it is using
    departure: datetime | None = None  # when the EV says it leaves (OCPP 2.0.1 charging needs)
    energy_requested_kwh: float | None = None
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class LimitAck:
    """The outcome of pushing one limit to one charger."""

    charger_id: str
    amps: float
    sent_at: datetime
    accepted: bool
    round_trip_s: float
    detail: str = ""


# --------------------------------------------------------------------------------------------- DR events


class SignalName(StrEnum):
    SIMPLE = "SIMPLE"
    LOAD_CONTROL = "LOAD_CONTROL"
    LOAD_DISPATCH = "LOAD_DISPATCH"
    ELECTRICITY_PRICE = "ELECTRICITY_PRICE"
    ENERGY_PRICE = "ENERGY_PRICE"
    DEMAND_CHARGE = "DEMAND_CHARGE"


class SignalType(StrEnum):
    LEVEL = "level"
    PRICE = "price"
    PRICE_RELATIVE = "priceRelative"
    PRICE_MULTIPLIER = "priceMultiplier"
    SETPOINT = "setpoint"
    DELTA = "delta"
    MULTIPLIER = "multiplier"
    X_LOAD_CONTROL_CAPACITY = "x-loadControlCapacity"
    X_LOAD_CONTROL_LEVEL_OFFSET = "x-loadControlLevelOffset"
    X_LOAD_CONTROL_PERCENT_OFFSET = "x-loadControlPercentOffset"
    X_LOAD_CONTROL_SETPOINT = "x-loadControlSetpoint"


class EventStatus(StrEnum):
    NONE = "none"
    FAR = "far"
    NEAR = "near"
    ACTIVE = "active"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class OptState(StrEnum):
    NONE = "none"  # not answered yet: acted on (a VEN complies unless it opts out)
    OPT_IN = "optIn"
    OPT_OUT = "optOut"


@dataclass(frozen=True, slots=True)
class Interval:
    """One interval of a signal: consecutive from the event's start. A zero duration runs to the end."""

    duration: timedelta
    value: float


@dataclass(frozen=True, slots=True)
class Signal:
    name: SignalName
    type: SignalType
    intervals: tuple[Interval, ...]
    signal_id: str = ""
    unit: str | None = None  # e.g. "powerReal" for LOAD_DISPATCH, "currencyPerKWh" for prices
    targets: tuple[str, ...] = ()  # resource ids; empty: the whole site


@dataclass(frozen=True, slots=True)
class Event:
    """A demand-response event as the gateway acts on it, independent of the OpenADR library.

    `start_offset` is the randomized delay drawn once (within `start_after`) and stored, so a restart
    resumes the same schedule. `priority` follows OpenADR: 1 is highest, 0 means none (lowest).
    """

    event_id: str
    modification_number: int
    dtstart: datetime
    duration: timedelta  # zero: until cancelled
    signals: tuple[Signal, ...]
    priority: int = 0
    status: EventStatus = EventStatus.FAR
    test_event: bool = False
    start_after: timedelta = timedelta(0)
    start_offset: timedelta = timedelta(0)
    cancelled_at: datetime | None = None  # an active event cancelled at this moment (before the offset)
    opt: OptState = OptState.NONE
    market_context: str = ""
    targets: tuple[str, ...] = ()
    response_required: bool = True
    created_at: datetime | None = None

    @property
    def start(self) -> datetime:
        return self.dtstart + self.start_offset

    @property
    def end(self) -> datetime | None:
        """When the event stops being in force, or None if it runs until cancelled."""
        ends: list[datetime] = []
        if self.duration > timedelta(0):
            ends.append(self.start + self.duration)
        if self.cancelled_at is not None:
            ends.append(self.cancelled_at + self.start_offset)
        return min(ends) if ends else None

    @property
    def acted_on(self) -> bool:
        """Test events and events we opted out of never change the site."""
        if self.test_event or self.opt is OptState.OPT_OUT:
            return False
        return not (self.status is EventStatus.CANCELLED and self.cancelled_at is None)


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of the schedule with constant limits and price, and why."""

    start: datetime
    end: datetime | None  # None: open-ended
    site_kw: float | None = None
    ev_kw: float | None = None
    price: float | None = None  # currency per kWh
    demand_charge: float | None = None  # currency per kW of peak
    group_kw: Mapping[str, float] = field(default_factory=dict)  # resource id → EV power cap
    reasons: tuple[str, ...] = ()

    def covers(self, moment: datetime) -> bool:
        return self.start <= moment and (self.end is None or moment < self.end)
