"""Between the allocator's raw answer and what is sent: deadband, ramps and the rotation memory.

The allocator answers from scratch every tick; sending that as-is would make chargers flap. This step
compares it with what each charger was last given: decreases always go out at once (safety), increases
smaller than the deadband are dropped, larger ones may be ramped. Every value it returns is at or below
the raw allocation or at or below what was already in force, so whatever the raw allocation respects,
the smoothed one respects too. It also remembers when each charger last started charging and since when
it has been waiting, which the allocator uses to make paused chargers take turns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from gateway.allocate import step_floor, usable_range
from gateway.domain import Allocation, EvseState


@dataclass(frozen=True, slots=True)
class SmoothingSettings:
    deadband_a: float = 0.5
    ramp_a_per_s: float | None = None  # None: increases go out at once


@dataclass(frozen=True, slots=True)
class ChargerMemory:
    """What the gateway last decided for one charger, and the rotation state derived from it."""

    limit_a: float
    decided_at: datetime
    on_since: datetime | None = None
    waiting_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class Change:
    evse_id: str
    old_a: float
    new_a: float
    reason: str


def _wants_energy(evse: EvseState) -> bool:
    return evse.connected and (evse.energy_needed_kwh is None or evse.energy_needed_kwh > 1e-6)


def remembered(evses: Sequence[EvseState], memory: Mapping[str, ChargerMemory]) -> list[EvseState]:
    """The chargers with the rotation memory filled in, ready for the next allocation."""
    out = []
    for evse in evses:
        mem = memory.get(evse.id)
        if mem is None:
            out.append(evse)
        else:
            out.append(replace(evse, on_since=mem.on_since, waiting_since=mem.waiting_since))
    return out


def smooth(
    raw: Allocation,
    evses: Sequence[EvseState],
    memory: Mapping[str, ChargerMemory],
    now: datetime,
    settings: SmoothingSettings,
) -> tuple[dict[str, float], dict[str, ChargerMemory], list[Change]]:
    """The limits to have in force, the new memory, and the changes to send (with why)."""
    limits: dict[str, float] = {}
    new_memory: dict[str, ChargerMemory] = {}
    changes: list[Change] = []
    for evse in evses:
        target = raw.amps.get(evse.id, 0.0)
        why = raw.binding.get(evse.id, "")
        mem = memory.get(evse.id)
        old = mem.limit_a if mem is not None else None
        new = target
        if old is not None and target > old:
            if old > 0 and target - old < settings.deadband_a:
                new = old  # too small to be worth a message: no flapping
            elif settings.ramp_a_per_s is not None and mem is not None:
                dt = max(0.0, (now - mem.decided_at).total_seconds())
                low = usable_range(evse)[0]
                ramped = step_floor(old + settings.ramp_a_per_s * dt, evse.step_a)
                new = min(target, max(ramped, low if old == 0 else old))
                if new < target:
                    why = f"ramp toward {target:g} A ({why})"
        limits[evse.id] = new
        if old is None or new != old:
            changes.append(Change(evse.id, old if old is not None else 0.0, new, why))
        on_since = mem.on_since if mem is not None else None
        waiting_since = mem.waiting_since if mem is not None else None
        if new > 0:
            waiting_since = None
            if on_since is None or (old is not None and old == 0):
                on_since = now
        else:
            on_since = None
            if not _wants_energy(evse):
                waiting_since = None
            elif waiting_since is None:
                waiting_since = now
        decided_at = now if (old is None or new != old) else mem.decided_at if mem is not None else now
        new_memory[evse.id] = ChargerMemory(new, decided_at, on_since, waiting_since)
    return limits, new_memory, changes
