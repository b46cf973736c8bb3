"""The smart-charging rules of OCPP 1.6J (section 3.13) and 2.0.1 (use case K01), applied to the letter by
the simulated charge points, and the limit those profiles put in force at any instant.

`ProfileStore.install` answers a SetChargingProfile as a strict charger would: Accepted, or Rejected with
the rule it broke (stack level above the charger's maximum, a rate unit it does not take, too many
periods, a station profile off connector/EVSE 0, a TxProfile without its transaction, and for 2.0.1
K01.FR.06 / .38 / .39 / .40 / .41). Replacement follows each version: 1.6 replaces by id or by (connector,
purpose, stack level); 2.0.1 replaces by id only and refuses a second profile that would be valid beside
another of the same purpose, stack level and EVSE. `limit_a` is the composite for one connector: per
purpose the valid profile with the highest stack level, TxProfile over TxDefaultProfile (a connector's own
over connector 0's), capped by the station maximum; watts turn into amps at the charger's voltage and the
schedule's numberPhases (3 when absent, as both specs say). No profile at all: None (unlimited).
Pure: every answer takes `now`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

Version = Literal["1.6", "2.0.1"]
STATION_MAX = {"1.6": "ChargePointMaxProfile", "2.0.1": "ChargingStationMaxProfile"}


def parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class Abilities:
    """What the charger reports and enforces: 1.6 ChargeProfileMaxStackLevel,
    ChargingScheduleAllowedChargingRateUnit, ChargingScheduleMaxPeriods, MaxChargingProfilesInstalled;
    2.0.1 SmartChargingCtrlr ProfileStackLevel, RateUnit, PeriodsPerSchedule, Entries."""

    max_stack_level: int = 8
    units: tuple[str, ...] = ("A", "W")
    max_periods: int = 24
    max_profiles: int = 16


@dataclass(frozen=True, slots=True)
class Profile:
    profile_id: int
    connector: int  # 1.6 connectorId, 2.0.1 evseId
    purpose: str
    stack_level: int
    kind: str
    unit: str
    start: datetime | None
    periods: tuple[tuple[int, float, int | None], ...]  # (startPeriod s, limit, numberPhases)
    duration_s: int | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    transaction_id: str | None = None

    @classmethod
    def from_wire(cls, profile: dict[str, Any], connector: int, version: Version) -> Profile:
        """From the library's snake_case handler arguments (1.6 cs_charging_profiles, 2.0.1 charging_profile)."""
        if version == "1.6":
            pid, schedule = int(profile["charging_profile_id"]), profile["charging_schedule"]
        else:
            pid, schedule = int(profile["id"]), profile["charging_schedule"][0]
        tx = profile.get("transaction_id")
        return cls(
            profile_id=pid,
            connector=connector,
            purpose=profile["charging_profile_purpose"],
            stack_level=int(profile["stack_level"]),
            kind=profile["charging_profile_kind"],
            unit=schedule["charging_rate_unit"],
            start=parse_time(schedule.get("start_schedule")),
            periods=tuple((int(p["start_period"]), float(p["limit"]), p.get("number_phases"))
                          for p in schedule["charging_schedule_period"]),
            duration_s=schedule.get("duration"),
            valid_from=parse_time(profile.get("valid_from")),
            valid_to=parse_time(profile.get("valid_to")),
            transaction_id=None if tx is None else str(tx),
        )

    def valid_at(self, now: datetime) -> bool:
        return not ((self.valid_from and now < self.valid_from) or (self.valid_to and now >= self.valid_to))

    def overlaps(self, other: Profile) -> bool:
        """Validity periods overlap (an open end reaches forever)."""
        starts = [t for t in (self.valid_from, other.valid_from) if t is not None]
        ends = [t for t in (self.valid_to, other.valid_to) if t is not None]
        return not starts or not ends or max(starts) < min(ends)

    def amps_at(self, now: datetime, schedule_start: datetime | None, volts: float, phases: int) -> float | None:
        """The limit this profile sets at `now` in amps per phase, None when it sets none then."""
        if not self.valid_at(now):
            return None
        start = self.start if self.start is not None else schedule_start
        if start is None:
            return None
        elapsed = (now - start).total_seconds()
        if elapsed < 0 or (self.duration_s is not None and elapsed >= self.duration_s):
            return None
        value: float | None = None
        n_phases = 3
        for begin, limit, np in sorted(self.periods):
            if begin <= elapsed:
                value, n_phases = limit, np or 3
        if value is None:
            return None
        if self.unit == "A":
            return value
        return value / (volts * (phases if phases == 1 else n_phases))

    def boundaries(self, schedule_start: datetime | None) -> list[datetime]:
        """The instants at which what this profile sets may change by itself."""
        out = [t for t in (self.valid_from, self.valid_to) if t is not None]
        start = self.start if self.start is not None else schedule_start
        if start is not None:
            out += [start + timedelta(seconds=begin) for begin, _, _ in self.periods]
            if self.duration_s is not None:
                out.append(start + timedelta(seconds=self.duration_s))
        return out


@dataclass(frozen=True, slots=True)
class Answer:
    status: str  # "Accepted" or "Rejected"
    reason: str = ""  # the rule, for a Rejected (2.0.1 statusInfo.reasonCode where the spec names one)
    reason_code: str = ""


@dataclass(slots=True)
class ProfileStore:
    """The profiles one charge point holds, under one version's rules."""

    version: Version
    abilities: Abilities = field(default_factory=Abilities)
    profiles: dict[int, Profile] = field(default_factory=dict)

    @property
    def station_max(self) -> str:
        return STATION_MAX[self.version]

    def check(self, p: Profile, transaction_of: dict[int, str]) -> Answer:
        """Accepted, or Rejected with the rule `p` breaks; changes nothing."""
        ab = self.abilities
        if p.stack_level < 0 or p.stack_level > ab.max_stack_level:
            key = "ChargeProfileMaxStackLevel" if self.version == "1.6" else "ProfileStackLevel"
            return Answer("Rejected", f"stack level {p.stack_level} above {key} {ab.max_stack_level}")
        if p.unit not in ab.units:
            return Answer("Rejected", f"rate unit {p.unit} not among {','.join(ab.units)}")
        if not p.periods or len(p.periods) > ab.max_periods:
            return Answer("Rejected", f"{len(p.periods)} periods (at most {ab.max_periods})")
        if p.purpose == self.station_max and p.connector != 0:
            return Answer("Rejected", f"{p.purpose} only on connector/EVSE 0")
        if p.purpose == "TxProfile":
            if p.connector == 0:
                return Answer("Rejected", "TxProfile needs a connector/EVSE, not 0")
            running = transaction_of.get(p.connector)
            if running is None:
                return Answer("Rejected", "TxProfile without a transaction on that connector/EVSE",
                              "TxNotFound")
            if (p.transaction_id is not None or self.version == "2.0.1") and p.transaction_id != running:
                return Answer("Rejected", f"TxProfile for transaction {p.transaction_id}, running {running}",
                              "TxNotFound")
        if self.version == "2.0.1":
            if p.purpose == self.station_max and p.kind == "Relative":
                return Answer("Rejected", "K01.FR.38: a Relative ChargingStationMaxProfile", "InvalidSchedule")
            if p.kind in ("Absolute", "Recurring") and p.start is None:
                return Answer("Rejected", "K01.FR.40: Absolute/Recurring without startSchedule", "InvalidSchedule")
            if p.kind == "Relative" and p.start is not None:
                return Answer("Rejected", "K01.FR.41: Relative with a startSchedule", "InvalidSchedule")
            for old in self.profiles.values():
                if old.profile_id == p.profile_id:
                    continue  # K01.FR.05: the same id replaces
                if (p.purpose == "TxProfile" and old.purpose == "TxProfile" and old.stack_level == p.stack_level
                        and old.transaction_id == p.transaction_id):
                    return Answer("Rejected", f"K01.FR.39: TxProfile {old.profile_id} has stack level "
                                  f"{p.stack_level} for this transaction", "DuplicateProfile")
                if (old.purpose == p.purpose and old.stack_level == p.stack_level and old.connector == p.connector
                        and p.purpose != "TxProfile" and old.overlaps(p)):
                    return Answer("Rejected", f"K01.FR.06: profile {old.profile_id} has the same purpose, stack "
                                  "level and EVSE with overlapping validity", "DuplicateProfile")
        kept = [q for q in self.profiles.values() if not self._replaced_by(q, p)]
        if len(kept) + 1 > ab.max_profiles:
            return Answer("Rejected", f"more than {ab.max_profiles} profiles installed")
        return Answer("Accepted")

    def _replaced_by(self, old: Profile, new: Profile) -> bool:
        if old.profile_id == new.profile_id:
            return True
        # 1.6 (3.13.2): the same stack level and purpose on the same connector replaces
        return (self.version == "1.6" and old.purpose == new.purpose and old.stack_level == new.stack_level
                and old.connector == new.connector)

    def install(self, p: Profile, transaction_of: dict[int, str]) -> Answer:
        answer = self.check(p, transaction_of)
        if answer.status == "Accepted":
            for pid in [q.profile_id for q in self.profiles.values() if self._replaced_by(q, p)]:
                del self.profiles[pid]
            self.profiles[p.profile_id] = p
        return answer

    def clear(self, profile_id: int | None = None, connector: int | None = None, purpose: str | None = None,
              stack_level: int | None = None) -> bool:
        """ClearChargingProfile: by id, or every profile matching all the criteria given (none: all)."""
        if profile_id is not None:
            return self.profiles.pop(profile_id, None) is not None
        gone = [q.profile_id for q in self.profiles.values()
                if (connector is None or q.connector == connector) and (purpose is None or q.purpose == purpose)
                and (stack_level is None or q.stack_level == stack_level)]
        for pid in gone:
            del self.profiles[pid]
        return bool(gone)

    def end_transaction(self, transaction_id: str | None) -> None:
        """A TxProfile lives only as long as its transaction (both versions)."""
        for pid, q in list(self.profiles.items()):
            if q.purpose == "TxProfile" and (transaction_id is None or q.transaction_id in (None, transaction_id)):
                del self.profiles[pid]

    def snapshot(self) -> tuple[Profile, ...]:
        return tuple(self.profiles.values())


def _top(profiles: Iterable[Profile], now: datetime, schedule_start: datetime | None, volts: float,
         phases: int) -> float | None:
    """The valid profile with the highest stack level among `profiles`, and what it sets now.

    A profile valid now whose schedule sets nothing now (not begun, or past its duration) is passed over
    for the next level down."""
    for p in sorted(profiles, key=lambda q: -q.stack_level):
        amps = p.amps_at(now, schedule_start, volts, phases)
        if amps is not None:
            return amps
    return None


def limit_a(profiles: Iterable[Profile], version: Version, connector: int, now: datetime,
            transaction_id: str | None, tx_start: datetime | None, volts: float, phases: int) -> float | None:
    """The composite limit on `connector` at `now` in amps per phase; None: no profile limits it."""
    held = list(profiles)
    station = _top([p for p in held if p.purpose == STATION_MAX[version]], now, now, volts, phases)
    tx = None
    if transaction_id is not None:
        tx = _top([p for p in held if p.purpose == "TxProfile" and p.connector == connector
                   and p.transaction_id in (None, transaction_id)], now, tx_start, volts, phases)
    if tx is None:
        start = tx_start or now
        tx = _top([p for p in held if p.purpose == "TxDefaultProfile" and p.connector == connector],
                  now, start, volts, phases)
        if tx is None:
            tx = _top([p for p in held if p.purpose == "TxDefaultProfile" and p.connector == 0],
                      now, start, volts, phases)
    known = [v for v in (station, tx) if v is not None]
    return min(known) if known else None

