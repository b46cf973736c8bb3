"""Smart-charging profiles the central system sends, built as plain data before they meet the wire.

A charger holds two of our profiles: a *base* one at the lowest stack level with the charger's configured
fallback current and no end, installed at every boot, and a *live* one a level above it whose `validTo`
is a short lease renewed by the driver. If the gateway dies the lease runs out and the charger falls back
by itself. Chargers disagree on what they accept, so a `Strategy` (purpose, unit, stack levels) is tried
in order and the one that works is remembered per charger. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Version = Literal["1.6", "2.0.1"]
Unit = Literal["A", "W"]

BASE_PROFILE_ID = 1
LIVE_PROFILE_ID = 2
# startSchedule a day in the past: a one-period schedule with no duration holds from then on, so a charger
# whose clock is behind ours by up to a day (before its skew is known, or unnoticed) still applies it now
START_SKEW = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Abilities:
    """What a charger says it can do (1.6 GetConfiguration, 2.0.1 SmartChargingCtrlr variables)."""

    units: tuple[Unit, ...] = ("A", "W")
    max_stack_level: int = 8
    smart_charging: bool = True


@dataclass(frozen=True, slots=True)
class Strategy:
    """How one charger is limited: which purpose carries base and live profile, in which unit.

    `needs_session`: the live profile is a TxProfile, so it can only go on a running transaction.
    `up_to_fallback`: the live profile caps beside the base rather than over it (a station cap over a
    TxDefault base at the same level: the lower of the two is in force), so it holds limits up to the
    fallback only."""

    purpose: str  # of the live profile
    base_purpose: str
    unit: Unit
    base_level: int = 0
    live_level: int = 1
    needs_session: bool = False
    up_to_fallback: bool = False

    @property
    def leased(self) -> bool:
        """False when live and base share one slot: the live profile replaces the base and must not
        expire, or the charger would be left with no profile at all (that is: unlimited)."""
        return self.live_level > self.base_level or self.purpose != self.base_purpose

    @property
    def label(self) -> str:
        return f"{self.purpose}/{self.unit}/sl{self.live_level}" + ("" if self.leased else "/unleased")

    @property
    def live_id(self) -> int:
        """An unleased live profile takes the base's id: the same id replaces in both versions, where a
        second id with the base's purpose and level would be refused by 2.0.1 (K01.FR.06)."""
        return LIVE_PROFILE_ID if self.leased else BASE_PROFILE_ID

    def holds(self, amps: float, fallback_a: float) -> bool:
        return not self.up_to_fallback or amps <= fallback_a


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    """One profile to install, independent of the OCPP version."""

    profile_id: int
    purpose: str
    stack_level: int
    unit: Unit
    limit: float  # in `unit`, already quantised
    number_phases: int
    start: datetime
    valid_to: datetime | None = None
    transaction_id: str | None = None


def station_max_purpose(version: Version) -> str:
    return "ChargePointMaxProfile" if version == "1.6" else "ChargingStationMaxProfile"


def strategies(version: Version, abilities: Abilities) -> list[Strategy]:
    """Every way to limit this charger, most preferred first; each falls back by itself when the gateway
    is gone (its live profile has a validTo) except the last resort.

    The whole-station cap comes first: it works with or without a session and caps every connector.
    Then TxDefaultProfile (what many chargers and evcc use), both a level above their base. For chargers
    that take stack level 0 only (ChargeProfileMaxStackLevel / ProfileStackLevel 0), the base is a
    TxDefaultProfile at level 0 and the live limit goes beside it at level 0 under another purpose, which
    neither version lets replace it: a TxProfile on the running transaction (it overrides the TxDefault
    whatever the levels), or with no session and a limit under the fallback, a station cap (the lower of
    the two is in force). Last resort, for a model refusing all of these: the station cap at level 0 in
    the base's own slot, without a lease (it keeps its last limit, not its fallback, if the gateway goes).
    A unit the charger says it does not take is left out; amps before watts because the allocator thinks
    in amps and a W limit depends on the voltage the charger converts at.
    """
    units: list[Unit] = [u for u in ("A", "W") if u in abilities.units] or ["A", "W"]
    station = station_max_purpose(version)
    out: list[Strategy] = []
    if abilities.max_stack_level >= 1:
        for purpose in (station, "TxDefaultProfile"):
            for unit in units:
                out.append(Strategy(purpose=purpose, base_purpose=purpose, unit=unit))
    for unit in units:
        out.append(Strategy(purpose="TxProfile", base_purpose="TxDefaultProfile", unit=unit, live_level=0,
                            needs_session=True))
    for unit in units:
        out.append(Strategy(purpose=station, base_purpose="TxDefaultProfile", unit=unit, live_level=0,
                            up_to_fallback=True))
    for unit in units:
        out.append(Strategy(purpose=station, base_purpose=station, unit=unit, live_level=0))
    return out


def floor_tenth(amps: float) -> float:
    """1.6 limits are multiples of 0.1; round down so we never allow more than decided."""
    return math.floor(amps * 10 + 1e-6) / 10


def number_phases(conductors: int) -> int:
    """numberPhases of a schedule: 3 for a three-phase load, else 1 (split-phase is one load across two)."""
    return 3 if conductors >= 3 else 1


def to_unit(amps: float, unit: Unit, watts_per_amp: float) -> float:
    """A limit in the profile's unit, rounded down so the charger's own amps never exceed `amps`.

    `watts_per_amp` is the charger's conversion (its voltage per phase × the schedule's numberPhases):
    both specs have the charger turn W back into A that way, so the gateway must use the same figures,
    not the site's power formula (√3·V_LL for three phases, a power factor)."""
    if unit == "A":
        return floor_tenth(amps)
    return float(math.floor(amps * watts_per_amp + 1e-9))


def base_spec(strategy: Strategy, fallback_a: float, watts_per_amp: float, phases: int, now: datetime) -> ProfileSpec:
    return ProfileSpec(
        profile_id=BASE_PROFILE_ID,
        purpose=strategy.base_purpose,
        stack_level=strategy.base_level,
        unit=strategy.unit,
        limit=to_unit(fallback_a, strategy.unit, watts_per_amp),
        number_phases=phases,
        start=now - START_SKEW,
    )


def live_spec(
    strategy: Strategy,
    amps: float,
    watts_per_amp: float,
    phases: int,
    now: datetime,
    lease: timedelta,
    transaction_id: str | None = None,
) -> ProfileSpec:
    return ProfileSpec(
        profile_id=strategy.live_id,
        purpose=strategy.purpose,
        stack_level=strategy.live_level,
        unit=strategy.unit,
        limit=to_unit(amps, strategy.unit, watts_per_amp),
        number_phases=phases,
        start=now - START_SKEW,
        valid_to=now + lease if strategy.leased else None,
        transaction_id=transaction_id if strategy.purpose == "TxProfile" else None,
    )


def ocpp_time(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a Z, the form chargers parse most reliably."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _schedule(spec: ProfileSpec) -> dict[str, Any]:
    return {
        "charging_rate_unit": spec.unit,
        "start_schedule": ocpp_time(spec.start),
        "charging_schedule_period": [{"start_period": 0, "limit": spec.limit, "number_phases": spec.number_phases}],
    }


def v16_profile(spec: ProfileSpec) -> dict[str, Any]:
    """The cs_charging_profiles of a 1.6 SetChargingProfile (snake_case; the library camel-cases it)."""
    profile: dict[str, Any] = {
        "charging_profile_id": spec.profile_id,
        "stack_level": spec.stack_level,
        "charging_profile_purpose": spec.purpose,
        "charging_profile_kind": "Absolute",
        "charging_schedule": _schedule(spec),
    }
    if spec.valid_to is not None:
        profile["valid_to"] = ocpp_time(spec.valid_to)
    if spec.transaction_id is not None:
        profile["transaction_id"] = int(spec.transaction_id)
    return profile


def v201_profile(spec: ProfileSpec) -> dict[str, Any]:
    """The charging_profile of a 2.0.1 SetChargingProfile; its schedule needs an id of its own."""
    profile: dict[str, Any] = {
        "id": spec.profile_id,
        "stack_level": spec.stack_level,
        "charging_profile_purpose": spec.purpose,
        "charging_profile_kind": "Absolute",
        "charging_schedule": [{"id": spec.profile_id, **_schedule(spec)}],
    }
    if spec.valid_to is not None:
        profile["valid_to"] = ocpp_time(spec.valid_to)
    if spec.transaction_id is not None:
        profile["transaction_id"] = spec.transaction_id
    return profile


def parse_units(text: str) -> tuple[Unit, ...]:
    """'Current,Power' (1.6) or 'A,W' (2.0.1) → ('A', 'W'); unknown words are ignored."""
    words = {w.strip().lower() for w in text.replace(";", ",").split(",")}
    units: list[Unit] = []
    if words & {"current", "a"}:
        units.append("A")
    if words & {"power", "w"}:
        units.append("W")
    return tuple(units)


def first_int(values: Iterable[str], default: int) -> int:
    for v in values:
        try:
            return int(float(v))
        except ValueError:
            continue
    return default
