"""The DR event lifecycle rules, pure: which incoming version wins, implicit cancel, randomization. Shared by
the OpenADR 2.0b and 3 VENs (3.x: a later modificationDateTime is a higher modification number, a deleted
event a cancel).

Rules (2.0b spec and the conformance cases built on it):
- an unknown eventID is a new event; one that arrives already cancelled is acknowledged and ignored;
- a higher modificationNumber replaces the stored version, an equal one changes nothing, a lower one is
  answered 450 (out of sequence) and ignored;
- an event the VTN stops listing in an oadrDistributeEvent is cancelled (implied cancel); one it lists in a
  form we refuse is left as stored; one it lists again, not cancelled, with the same modificationNumber after
  we cancelled it (implicitly) is in force again: the VTN's list is the authority, and the answer (optIn)
  must match what the gateway does;
- a cancelled event that had started ends `start_offset` after the cancel (the cancel is randomized
  with the same draw as the start); one that had not started never acts;
- the randomized offset inside `startafter` is drawn once and kept across modifications that keep the
  same `startafter`, and across restarts (it is stored with the event).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.domain import Event, EventStatus

OUT_OF_SEQUENCE = 450

Draw = Callable[[timedelta], timedelta]


@dataclass(frozen=True, slots=True)
class Verdict:
    event_id: str
    modification_number: int
    code: int
    description: str
    response_required: bool


@dataclass(frozen=True, slots=True)
class Reconciled:
    changed: tuple[Event, ...]  # to store (new, modified, cancelled, implicitly cancelled)
    verdicts: tuple[Verdict, ...]  # one per incoming event, in order
    notes: tuple[str, ...]  # one log line per decision worth telling an operator


def has_started(event: Event, now: datetime) -> bool:
    return now >= event.start


def has_ended(event: Event, now: datetime) -> bool:
    end = event.end
    return end is not None and now >= end


def cancel(event: Event, now: datetime, *, base: Event | None = None) -> Event:
    """`event` cancelled at `now`; `base` is the version that was in force (for whether it had started)."""
    live = base or event
    started = live.acted_on and has_started(live, now) and not has_ended(live, now)
    return dataclasses.replace(
        event,
        status=EventStatus.CANCELLED,
        cancelled_at=(live.cancelled_at or now) if started else None,
        start_offset=live.start_offset,
    )


def reconcile(
    stored: Mapping[str, Event],
    incoming: Sequence[Event],
    now: datetime,
    draw: Draw,
    *,
    complete_list: bool,
    listed: Iterable[str] = (),
) -> Reconciled:
    """Decide what an oadrDistributeEvent changes. `complete_list`: it lists every event the VTN has for us;
    `listed`: ids it listed in a form we refused (not implicitly cancelled: a refusal changes nothing stored)."""
    changed: list[Event] = []
    verdicts: list[Verdict] = []
    notes: list[str] = []
    seen: set[str] = set(listed)
    for new in incoming:
        seen.add(new.event_id)
        old = stored.get(new.event_id)

        def verdict(code: int, text: str, event: Event = new) -> None:
            verdicts.append(Verdict(event.event_id, event.modification_number, code, text, event.response_required))

        if old is not None and new.modification_number < old.modification_number:
            verdict(OUT_OF_SEQUENCE, "OUT OF SEQUENCE")
            notes.append(f"event={new.event_id} refused: modificationNumber went back from "
                         f"{old.modification_number} to {new.modification_number}")
            continue
        revived = (old is not None and new.modification_number == old.modification_number
                   and old.status is EventStatus.CANCELLED and new.status is not EventStatus.CANCELLED)
        if old is not None and new.modification_number == old.modification_number and not revived:
            verdict(200, "OK")
            continue
        if old is None and new.status is EventStatus.CANCELLED:
            verdict(200, "OK")
            notes.append(f"event={new.event_id} ignored: new event arrived already cancelled")
            continue
        if old is not None and old.start_after == new.start_after:
            offset = old.start_offset
        else:
            offset = draw(new.start_after) if new.start_after > timedelta(0) else timedelta(0)
            offset = min(max(offset, timedelta(0)), new.start_after)
        version = dataclasses.replace(new, start_offset=offset, opt=old.opt if old else new.opt,
                                      created_at=old.created_at if old else new.created_at)
        if new.status is EventStatus.CANCELLED:
            version = cancel(version, now, base=old)
            notes.append(f"event={new.event_id} cancelled by the VTN"
                         + (f", ends at {version.end.isoformat()}" if version.end and version.cancelled_at else
                            " before it started"))
        elif revived and old is not None:
            notes.append(f"event={new.event_id} listed again (#{new.modification_number}) after a cancel: in force "
                         "again")
        elif old is None:
            notes.append(f"event={new.event_id} new: start={version.start.isoformat()} offset_s="
                         f"{offset.total_seconds():.1f} signals="
                         + ",".join(f"{s.name.value}/{s.type.value}" for s in new.signals))
        else:
            notes.append(f"event={new.event_id} modified: #{old.modification_number} -> #{new.modification_number}")
        changed.append(version)
        verdict(200, "OK")
    if complete_list:
        for event_id, old in stored.items():
            if event_id in seen or old.status in (EventStatus.CANCELLED, EventStatus.COMPLETED):
                continue
            if has_ended(old, now):
                changed.append(dataclasses.replace(old, status=EventStatus.COMPLETED))
                continue
            gone = cancel(old, now)
            changed.append(gone)
            notes.append(f"event={event_id} cancelled implicitly (no longer listed by the VTN)")
    return Reconciled(tuple(changed), tuple(verdicts), tuple(notes))
