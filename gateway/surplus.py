"""Solar first, pure: how much of the PV surplus each charger may take, and the EV cap a grid import cap sets.

The surplus is measured at the grid point, never guessed: what the managed chargers draw now less what the
grid meter imports (export counts as negative import), less the export target the site keeps, less what a
battery discharges (that is stored energy, not sunshine). Chargers in `now` and `plan` mode take what they
draw first; the rest goes to the `pv` and `minpv` chargers by priority, a charger already on before one
that waits (so a second car does not knock the first off). A `minpv` charger always gets its minimum
(from the grid if need be) plus any surplus; a `pv` charger gets only surplus, and starts or stops only after
the surplus has held above or below its minimum (6 A at its phases' voltage: about 1.4 kW on one phase at
230 V, 4.1 kW on three at 400 V) for `start_delay` or `stop_delay`, so a passing cloud does not toggle its
contactor. While it is on it gets at least its minimum (during the stop delay that comes from the grid).
A grid meter that is stale gives no surplus at all: `pv` chargers stop at once and `minpv` ones fall to
their minimum. A grid import cap (kW, 0 allowed) becomes an EV power cap for every charger: what keeps
the grid import at or under it (0 when the grid meter is stale). The results are caps: the allocator still
decides under every electrical and demand-response limit, which always win. `now` is a parameter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

EPS_KW = 1e-6
SETTLE = timedelta(seconds=30)  # a car just switched on is counted at its whole cap this long (it ramps up)


class Mode(StrEnum):
    """How a charger charges: as fast as the limits allow, only from surplus, its minimum plus surplus, or
    as the price planner says."""

    NOW = "now"
    PV = "pv"
    MINPV = "minpv"
    PLAN = "plan"


SOLAR_MODES = (Mode.PV, Mode.MINPV)


@dataclass(frozen=True, slots=True)
class PvSettings:
    start_delay: timedelta = timedelta(seconds=60)  # surplus above a charger's minimum this long: it starts
    stop_delay: timedelta = timedelta(seconds=180)  # below its minimum this long: it stops
    import_cap_kw: float | None = None  # the most the site may import from the grid (None: no cap)
    export_target_kw: float = 0.0  # what the site keeps exporting; only the rest is surplus


@dataclass(frozen=True, slots=True)
class PvCharger:
    """One charger as the surplus sees it now."""

    id: str
    mode: Mode
    min_a: float  # its lowest non-zero limit (at least 6 A)
    max_a: float
    kw_per_a: float
    priority: int = 0
    connected: bool = False
    draw_kw: float = 0.0  # measured now

    @property
    def min_kw(self) -> float:
        return self.min_a * self.kw_per_a


@dataclass(frozen=True, slots=True)
class PvReading:
    """What an inverter said at `at`: AC power out (positive when producing), PV (DC) power, a battery's
    power (positive when it discharges) and its own meter's power, each None where it has no such point."""

    at: datetime
    ac_kw: float | None = None
    dc_kw: float | None = None
    battery_kw: float | None = None
    meter_kw: float | None = None


@dataclass(frozen=True, slots=True)
class GridPoint:
    """The grid meter's power now (import positive, export negative; None: stale or never read) and what
    batteries discharge (positive; charging counts as 0: the battery's own control decides that)."""

    grid_kw: float | None
    battery_discharge_kw: float = 0.0


@dataclass(frozen=True, slots=True)
class Hold:
    """A `pv` charger's switch: whether it is on, and since when the surplus has said otherwise."""

    on: bool = False
    since: datetime | None = None
    on_at: datetime | None = None  # when it was last switched on (None: long enough ago)


@dataclass(frozen=True, slots=True)
class SurplusDecision:
    surplus_kw: float | None  # what the EVs may draw keeping the grid at the export target (None: unknown)
    caps_a: Mapping[str, float]  # per `pv`/`minpv` charger plugged in: the most it may take now (0: paused)
    ev_cap_kw: float | None  # the EV power the import cap allows (None: no import cap)
    reasons: Mapping[str, str]
    memory: Mapping[str, Hold]
    handed_kw: float = 0.0  # EV power covered by the surplus now (self-consumption)
    waiting: Mapping[str, float] = field(default_factory=dict)  # charger → seconds its pending switch has held


def surplus_kw(grid: GridPoint, ev_kw: float, export_target_kw: float = 0.0) -> float | None:
    """What the EVs may draw with the grid at `-export_target_kw`; None when the grid meter is stale."""
    if grid.grid_kw is None:
        return None
    return ev_kw - grid.grid_kw - export_target_kw - max(0.0, grid.battery_discharge_kw)


def import_cap_ev_kw(settings: PvSettings, grid: GridPoint, ev_kw: float) -> float | None:
    """The EV power that keeps the grid import at or under the cap (0 when the grid is unknown)."""
    if settings.import_cap_kw is None:
        return None
    if grid.grid_kw is None:
        return 0.0
    return max(0.0, settings.import_cap_kw + ev_kw - grid.grid_kw - max(0.0, grid.battery_discharge_kw))


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def taking_kw(c: PvCharger, cap_a: float, settling: bool = False) -> float:
    """How much of the surplus a charger given `cap_a` is counted as taking, so the rest goes to the next one.

    Its whole cap while it is settling (just switched on: its car has yet to ramp up) or while it draws
    about all of it (it may want more); otherwise what it draws plus one amp (its car takes less: full, or
    limited by itself), so a finished car does not sit on surplus another could use. A car that then takes
    more is met at the next decision: the surplus left for the others shrinks by what it took."""
    cap_kw = cap_a * c.kw_per_a
    if settling or c.draw_kw >= cap_kw - c.kw_per_a:
        return cap_kw
    return min(cap_kw, c.draw_kw + c.kw_per_a)


def decide_surplus(
    settings: PvSettings,
    chargers: Sequence[PvCharger],
    grid: GridPoint,
    memory: Mapping[str, Hold],
    now: datetime,
) -> SurplusDecision:
    ev_kw = sum(c.draw_kw for c in chargers if c.connected)
    surplus = surplus_kw(grid, ev_kw, settings.export_target_kw)
    solar = [c for c in chargers if c.mode in SOLAR_MODES and c.connected]
    caps: dict[str, float] = {}
    reasons: dict[str, str] = {}
    new_memory: dict[str, Hold] = {}
    waiting: dict[str, float] = {}
    # What is left for the solar chargers: the surplus less what the others draw, less the minimum the
    # `minpv` chargers always take.
    budget = None if surplus is None else (
        surplus
        - sum(c.draw_kw for c in chargers if c.connected and c.mode not in SOLAR_MODES)
        - sum(c.min_kw for c in solar if c.mode is Mode.MINPV)
    )
    order = sorted(solar, key=lambda c: (-c.priority, not memory.get(c.id, Hold()).on, c.id))
    for c in order:
        if c.mode is Mode.MINPV:
            extra = 0.0 if budget is None else max(0.0, budget)
            cap = _clamp(c.min_a + extra / c.kw_per_a, c.min_a, c.max_a)
            caps[c.id] = cap
            if budget is not None:
                budget -= max(0.0, taking_kw(c, cap) - c.min_kw)
            reasons[c.id] = ("minpv: minimum only (grid meter stale)" if surplus is None
                             else "minpv: minimum plus surplus" if cap > c.min_a else "minpv: minimum")
            continue
        hold = memory.get(c.id, Hold())
        if budget is None:
            # Nothing is known about the surplus: none is assumed, and the charger stops at once.
            new_memory[c.id] = Hold()
            caps[c.id] = 0.0
            reasons[c.id] = "pv: no surplus known (grid meter stale)"
            continue
        enough = budget >= c.min_kw - EPS_KW
        on, since, on_at = hold.on, hold.since, None
        if on == enough:
            since = None  # the surplus agrees with the switch: no change pending
        else:
            since = since or now
            delay = settings.stop_delay if on else settings.start_delay
            if now - since >= delay:
                on, since = not on, None
                on_at = now if on else None
            else:
                waiting[c.id] = (now - since).total_seconds()
        on_at = on_at if on_at is not None or not on else hold.on_at
        if on_at is not None and now - on_at >= SETTLE:
            on_at = None
        new_memory[c.id] = Hold(on, since, on_at)
        if on:
            cap = _clamp(budget / c.kw_per_a, c.min_a, c.max_a)
            caps[c.id] = cap
            budget -= taking_kw(c, cap, settling=on_at is not None)
            reasons[c.id] = "pv: surplus" if since is None else "pv: surplus below minimum, stopping after delay"
        else:
            caps[c.id] = 0.0
            reasons[c.id] = "pv: waiting for surplus" if since is None else "pv: surplus, starting after delay"
    handed = 0.0
    if grid.grid_kw is not None:
        handed = _clamp(ev_kw - max(0.0, grid.grid_kw) - max(0.0, grid.battery_discharge_kw), 0.0, ev_kw)
    return SurplusDecision(
        surplus_kw=surplus,
        caps_a=caps,
        ev_cap_kw=import_cap_ev_kw(settings, grid, ev_kw),
        reasons=reasons,
        memory=new_memory,
        handed_kw=handed,
        waiting=waiting,
    )
