"""What one OCPP charger has told us, turned into the driver's `ChargerReading`.

Both versions report connector status, transactions and sampled meter values; this module keeps the
latest of each per charger and maps them to the domain's terms, and what the charger said it is in its
BootNotification (`ChargerIdentity`: vendor, model, firmware, serial). Sampled values are read per measurand and
phase with their units and multipliers; charger phase n is the n-th conductor the charger is wired to in
the config, so a single-phase charger on L2 reporting "L1" lands on L2. Unparseable values are skipped
with one log line, never zeroed: a missing reading stays missing.
"""

from __future__ import annotations

import logging
import statistics
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.domain import ChargerReading, ChargerStatus

log = logging.getLogger(__name__)

STATUS_16: dict[str, ChargerStatus] = {
    "Available": ChargerStatus.AVAILABLE,
    "Preparing": ChargerStatus.PREPARING,
    "Charging": ChargerStatus.CHARGING,
    "SuspendedEV": ChargerStatus.SUSPENDED_EV,
    "SuspendedEVSE": ChargerStatus.SUSPENDED_EVSE,
    "Finishing": ChargerStatus.FINISHING,
    "Reserved": ChargerStatus.AVAILABLE,
    "Unavailable": ChargerStatus.UNAVAILABLE,
    "Faulted": ChargerStatus.FAULTED,
}
CONNECTOR_201: dict[str, ChargerStatus] = {
    "Available": ChargerStatus.AVAILABLE,
    "Occupied": ChargerStatus.PREPARING,
    "Reserved": ChargerStatus.AVAILABLE,
    "Unavailable": ChargerStatus.UNAVAILABLE,
    "Faulted": ChargerStatus.FAULTED,
}
CHARGING_STATE_201: dict[str, ChargerStatus] = {
    "Charging": ChargerStatus.CHARGING,
    "EVConnected": ChargerStatus.PREPARING,
    "SuspendedEV": ChargerStatus.SUSPENDED_EV,
    "SuspendedEVSE": ChargerStatus.SUSPENDED_EVSE,
    "Idle": ChargerStatus.PREPARING,
}
# when connectors disagree, the charger as a whole is the most "active" of them
_RANK = [
    ChargerStatus.CHARGING,
    ChargerStatus.SUSPENDED_EVSE,
    ChargerStatus.SUSPENDED_EV,
    ChargerStatus.PREPARING,
    ChargerStatus.FINISHING,
    ChargerStatus.AVAILABLE,
    ChargerStatus.FAULTED,
    ChargerStatus.UNAVAILABLE,
    ChargerStatus.OFFLINE,
]
CLOCK_SAMPLES = 5
SKEW_IGNORED_S = 2.0
_UNIT_SCALE = {"A": 1.0, "W": 0.001, "kW": 1.0, "Wh": 0.001, "kWh": 1.0}


@dataclass(frozen=True, slots=True)
class Sample:
    """One MeterValue's measurands: per charger phase ("L1".."L3", or "" for a total), kW, kWh."""

    at: datetime | None
    current_a: dict[str, float] = field(default_factory=dict)
    power_kw: float | None = None
    energy_kwh: float | None = None


@dataclass(frozen=True, slots=True)
class ChargerIdentity:
    """What a charger said it is in a BootNotification. Optional fields it left out (or sent empty) are None.

    1.6: chargePointVendor, chargePointModel, firmwareVersion, chargePointSerialNumber (else the deprecated
    chargeBoxSerialNumber), meterType, meterSerialNumber. 2.0.1: chargingStation vendorName, model,
    firmwareVersion, serialNumber (2.0.1 names no meter there)."""

    vendor: str
    model: str
    firmware: str | None = None
    serial: str | None = None
    meter_type: str | None = None
    meter_serial: str | None = None


def text_or_none(value: object) -> str | None:
    """An optional text field as the charger sent it, None when absent or blank."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _phase(raw: object) -> str:
    text = str(raw or "")
    return text[:2] if text[:2] in ("L1", "L2", "L3") and "-L" not in text else ""


def parse_meter_values(meter_values: Sequence[Mapping[str, Any]], charger_id: str) -> Sample | None:
    """The newest sample of a MeterValues / TransactionEvent list (1.6 strings or 2.0.1 numbers)."""
    if not meter_values:
        return None
    current: dict[str, float] = {}
    power: float | None = None
    energy: float | None = None
    at: datetime | None = None
    for mv in meter_values:
        at = parse_time(mv.get("timestamp")) or at
        for sv in mv.get("sampled_value", []):
            try:
                value = float(sv["value"])
            except (KeyError, TypeError, ValueError):
                log.warning("ocpp charger=%s meter value not a number: %r (skipped)", charger_id, sv.get("value"))
                continue
            measurand = sv.get("measurand", "Energy.Active.Import.Register")
            uom = sv.get("unit_of_measure") or {}
            unit = sv.get("unit") or uom.get("unit")
            value *= 10.0 ** float(uom.get("multiplier", 0))
            phase = _phase(sv.get("phase"))
            if measurand == "Current.Import":
                current[phase] = value
            elif measurand == "Power.Active.Import" and not phase:
                power = value * _UNIT_SCALE.get(unit or "W", 0.001)
            elif measurand == "Energy.Active.Import.Register" and not phase:
                energy = value * _UNIT_SCALE.get(unit or "Wh", 0.001)
    return Sample(at=at, current_a=current, power_kw=power, energy_kwh=energy)


def to_conductors(current: Mapping[str, float], conductors: Sequence[str]) -> dict[str, float]:
    """Charger phases → the site conductors it is wired to (config order)."""
    if not current:
        return {}
    per_phase = {p: a for p, a in current.items() if p}
    if len(conductors) == 2 or not per_phase:  # one load across two conductors, or only a total
        total = max(per_phase.values()) if per_phase else current[""]
        return dict.fromkeys(conductors, total)
    out: dict[str, float] = {}
    for i, conductor in enumerate(conductors):
        amps = per_phase.get(f"L{i + 1}")
        if amps is not None:
            out[conductor] = amps
    return out


@dataclass(slots=True)
class ChargerView:
    """The latest state of one charger, updated by the version handlers, read by the driver."""

    charger_id: str
    conductors: tuple[str, ...]
    online: bool = False
    connectors: dict[int, ChargerStatus] = field(default_factory=dict)
    sample: Sample | None = None
    transactions: dict[int, str] = field(default_factory=dict)  # connector/evse → transaction id
    session_started: datetime | None = None
    departure: datetime | None = None
    energy_requested_kwh: float | None = None
    # from the last BootNotification; kept when the charger reconnects without one (same hardware)
    identity: ChargerIdentity | None = None
    # what the previous process last heard, believed until the charger reports a status itself: a car
    # charging on its lease across a gateway restart is still charging, not "unavailable"
    assumed: ChargerStatus | None = None
    # how far the charger's clock is from ours: its message timestamps less when they arrived (seconds)
    clock: Callable[[], datetime] | None = None
    skews: deque[float] = field(default_factory=lambda: deque(maxlen=CLOCK_SAMPLES))

    def heard_at(self, theirs: datetime | None) -> None:
        """A timestamp the charger just sent ("now" in its clock), for the skew between the two clocks."""
        if theirs is None or self.clock is None:
            return
        self.skews.append((theirs - self.clock()).total_seconds())

    def clock_offset(self) -> timedelta:
        """The charger's clock less ours, from the last few messages; zero under SKEW_IGNORED_S (network
        delay and sampling make small figures noise). Profiles go out in the charger's own time, so a
        charger clock that is off neither disables a profile (startSchedule in its future, validTo in its
        past) nor extends it."""
        if len(self.skews) < 2:
            return timedelta(0)
        middle = statistics.median(self.skews)
        return timedelta(seconds=middle) if abs(middle) >= SKEW_IGNORED_S else timedelta(0)

    def restore(self, status: str | None, transactions: Mapping[int, str], session_started: datetime | None) -> None:
        try:
            self.assumed = ChargerStatus(status) if status is not None else None
        except ValueError:
            self.assumed = None
        if self.assumed is ChargerStatus.OFFLINE:
            self.assumed = None
        self.transactions = dict(transactions)
        self.session_started = session_started

    def status(self) -> ChargerStatus:
        if not self.online:
            return ChargerStatus.OFFLINE
        real = {c: s for c, s in self.connectors.items() if c != 0} or self.connectors
        if not real:
            return self.assumed or ChargerStatus.UNAVAILABLE
        station = self.connectors.get(0)
        if station in (ChargerStatus.FAULTED, ChargerStatus.UNAVAILABLE):
            return station
        return min(real.values(), key=_RANK.index)

    def transaction_id(self) -> str | None:
        return next(iter(self.transactions.values()), None)

    def reading(self, now: datetime, applied_limit_a: float | None, measured: bool = False) -> ChargerReading:
        """A reading now; it carries the meter sample only when `measured` (just received), so a status
        change never makes an old current look fresh."""
        sample = self.sample if measured else None
        at = now
        if sample is not None and sample.at is not None and sample.at < now:
            at = sample.at  # an old (queued) sample stays old; a clock running ahead is clamped to now
        return ChargerReading(
            charger_id=self.charger_id,
            at=at,
            status=self.status(),
            current_a=to_conductors(sample.current_a, self.conductors) if sample else {},
            power_kw=sample.power_kw if sample else None,
            energy_kwh=sample.energy_kwh if sample else None,
            applied_limit_a=applied_limit_a,
            departure=self.departure,
            energy_requested_kwh=self.energy_requested_kwh,
            session_id=self.transaction_id(),
        )


@dataclass(slots=True)
class DrawWatch:
    """Notices an EV drawing well under its limit for a while, so the allocator can hand the rest to others.

    "Well under" is at least `margin_a` and 20 % below the limit, for `window_s`. The cap offered is the
    highest draw seen meanwhile plus `headroom_a`; it is withdrawn as soon as the EV draws close to it
    (the car wants more again).
    """

    window_s: float = 60.0
    margin_a: float = 2.0
    headroom_a: float = 1.0
    under_since: datetime | None = None
    peak_a: float = 0.0
    capped_a: float | None = None

    def update(self, at: datetime, draw_a: float, limit_a: float | None) -> None:
        if self.capped_a is not None:
            if draw_a >= self.capped_a - self.headroom_a / 2:
                self.capped_a, self.under_since = None, None
            return
        if limit_a is None or draw_a > limit_a - max(self.margin_a, 0.2 * limit_a):
            self.under_since = None
            return
        if self.under_since is None:
            self.under_since, self.peak_a = at, draw_a
            return
        self.peak_a = max(self.peak_a, draw_a)
        if (at - self.under_since).total_seconds() >= self.window_s:
            self.capped_a = self.peak_a + self.headroom_a

    def reset(self) -> None:
        self.under_since, self.capped_a = None, None
