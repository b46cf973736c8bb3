"""What the VTN adapter keeps in SQLite: registration, events with their opt state and randomized offset,
operator opt overrides, opts still to be sent, the VTN's report requests and the report backlog.

Methods are synchronous and short; the async VEN calls them from a worker thread one at a time. Every
write that must be atomic (all events of one oadrDistributeEvent) is one transaction.

A write the store cannot take (another process holds it locked, the disk is full) must not stop the VEN
acting on what the VTN said: events, the registration, report samples and what was sent are then held in
memory (reads see them), the failure goes into `health` (the runtime's `store.write` alarm), and `flush()`
(called again and again by the runtime) writes them once the store takes writes again. Writes an operator
asks for (an opt override) raise `StoreWriteError` instead, so the operator is told it was not done.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Self

import sqlite_utils

from gateway.domain import Event, OptState
from gateway.records import PendingOpt, Reading, Registration, ReportRequest, StoreWriteError
from gateway.store.codec import event_from_json, event_to_json
from gateway.store.db import Synchronous, immediate, open_db
from gateway.store.health import WriteHealth, describe, is_store_fault

__all__ = ["PendingOpt", "Reading", "Registration", "ReportRequest", "StoreWriteError", "VenStore"]

MAX_HELD_READINGS = 100_000  # report samples held in memory while the store cannot take them (oldest go)


class VenStore:
    def __init__(self, db: sqlite_utils.Database, health: WriteHealth | None = None) -> None:
        self.db = db
        self._lock = threading.Lock()
        self.health = health or WriteHealth()
        # Held in memory while the store cannot take them (see the module's docstring).
        self._held_events: dict[str, tuple[Event, str, datetime]] = {}
        self._held_deletes: set[str] = set()
        self._held_registration: tuple[Registration, datetime] | None = None
        self._held_opts_sent: dict[int, datetime] = {}
        self._held_readings: deque[tuple[ReportRequest, tuple[tuple[str, float], ...], datetime, datetime]] = deque(
            maxlen=MAX_HELD_READINGS)
        self._held_next_sample: dict[str, datetime] = {}
        self._held_readings_sent: dict[int, datetime] = {}
        self._hold = threading.Lock()  # the VEN's thread holds, the runtime's flushes: one at a time

    @classmethod
    def open(cls, path: str | Path, *, synchronous: Synchronous = "FULL", health: WriteHealth | None = None) -> Self:
        return cls(open_db(path, synchronous=synchronous), health)

    def _held(self, what: str, exc: Exception) -> None:
        """A store fault: note it (the alarm); a bug is raised as it is."""
        if not is_store_fault(exc):
            raise exc
        self.health.failed(what, exc)

    def holding(self) -> bool:
        """Something is held in memory, waiting for `flush()`."""
        return bool(self._held_events or self._held_deletes or self._held_registration or self._held_opts_sent
                    or self._held_readings or self._held_readings_sent)

    def flush(self) -> bool:
        """Write what is held in memory; True when nothing is left held. Never raises a store fault."""
        steps = [
            ("events", bool(self._held_events or self._held_deletes), self._flush_events),
            ("registration", self._held_registration is not None, self._flush_registration),
            ("opts", bool(self._held_opts_sent), self._flush_opts),
            ("reports", bool(self._held_readings or self._held_readings_sent), self._flush_readings),
        ]
        for what, held, step in steps:
            if not held:  # written directly since it failed (or never failed): fine now
                self.health.ok(what)
                continue
            try:
                step()
            except Exception as exc:
                self._held(what, exc)
                return False
            self.health.ok(what)
        return not self.holding()

    def _flush_events(self) -> None:
        held, deletes = dict(self._held_events), set(self._held_deletes)
        with self._tx():
            for event, reason, at in held.values():
                self._upsert_event(event, reason, at)
            for event_id in deletes:
                self.db.conn.execute("DELETE FROM events WHERE event_id = ?", (event_id,))
        for event_id, entry in held.items():
            if self._held_events.get(event_id) is entry:
                del self._held_events[event_id]
        self._held_deletes -= deletes

    def _flush_registration(self) -> None:
        held = self._held_registration
        if held is not None:
            self._save_registration(*held)
            if self._held_registration is held:
                self._held_registration = None

    def _flush_opts(self) -> None:
        held = dict(self._held_opts_sent)
        with self._tx():
            for outbox_id, at in held.items():
                self.db.conn.execute("UPDATE opt_outbox SET sent_at = ? WHERE id = ?", (at.isoformat(), outbox_id))
        for outbox_id in held:
            self._held_opts_sent.pop(outbox_id, None)

    def _flush_readings(self) -> None:
        with self._hold:
            batch = list(self._held_readings)
            sent = dict(self._held_readings_sent)
        with self._tx():
            for rr, values, at, next_sample_at in batch:
                self._insert_readings(rr, values, at, next_sample_at)
            self.db.conn.executemany("UPDATE report_backlog SET sent_at = ? WHERE id = ?",
                                     [(at.isoformat(), i) for i, at in sent.items()])
        with self._hold:
            for _ in batch:
                self._held_readings.popleft()
        for rr, _values, _at, next_sample_at in batch:
            if self._held_next_sample.get(rr.report_request_id) == next_sample_at:
                del self._held_next_sample[rr.report_request_id]
        for i in sent:
            self._held_readings_sent.pop(i, None)

    def close(self) -> None:
        # Waits for a call still running in a worker thread (a cancelled to_thread does not stop it):
        # closing under it would pull the connection from under sqlite.
        with self._lock:
            self.db.conn.close()

    @contextmanager
    def _tx(self) -> Iterator[None]:
        with self._lock, immediate(self.db.conn):
            yield

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[dict[str, object]]:
        with self._lock:
            cur = self.db.conn.execute(sql, tuple(params))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    # ----------------------------------------------------------------------------------- registration

    def registration(self) -> Registration:
        if self._held_registration is not None:
            return self._held_registration[0]
        rows = self._rows("SELECT ven_id, registration_id, vtn_id, poll_s FROM registration WHERE id = 1")
        if not rows:
            return Registration(None, None, None, None)
        r = rows[0]
        poll = r["poll_s"]
        return Registration(
            _opt_str(r["ven_id"]),
            _opt_str(r["registration_id"]),
            _opt_str(r["vtn_id"]),
            float(poll) if isinstance(poll, int | float) else None,
        )

    def save_registration(self, reg: Registration, now: datetime) -> None:
        """Kept in memory when the store cannot take it (the VEN stays registered; written later)."""
        try:
            self._save_registration(reg, now)
        except Exception as exc:
            self._held("registration", exc)
            self._held_registration = (reg, now)
            return
        self._held_registration = None

    def _save_registration(self, reg: Registration, now: datetime) -> None:
        with self._tx():
            self.db.conn.execute(
                "INSERT INTO registration (id, ven_id, registration_id, vtn_id, poll_s, updated_at)"
                " VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET ven_id = excluded.ven_id,"
                " registration_id = excluded.registration_id, vtn_id = excluded.vtn_id,"
                " poll_s = excluded.poll_s, updated_at = excluded.updated_at",
                (reg.ven_id, reg.registration_id, reg.vtn_id, reg.poll_s, now.isoformat()),
            )

    def forget_registration(self, now: datetime) -> None:
        """The VTN cancelled us or no longer knows us: keep the ven id (a VTN may pre-allocate it)."""
        reg = self.registration()
        self.save_registration(Registration(reg.ven_id, None, reg.vtn_id, reg.poll_s), now)

    # ----------------------------------------------------------------------------------------- events

    def events(self) -> dict[str, Event]:
        """The stored events, with those held in memory (not stored yet) over them."""
        stored = {
            str(r["event_id"]): event_from_json(str(r["body"]))
            for r in self._rows("SELECT event_id, body FROM events ORDER BY event_id")
        }
        for event_id, (event, _, _) in list(self._held_events.items()):
            stored[event_id] = event
        for event_id in list(self._held_deletes):
            stored.pop(event_id, None)
        return dict(sorted(stored.items()))

    def opt_reasons(self) -> dict[str, str]:
        reasons = {str(r["event_id"]): str(r["opt_reason"])
                   for r in self._rows("SELECT event_id, opt_reason FROM events")}
        reasons.update({event_id: reason for event_id, (_, reason, _) in list(self._held_events.items())})
        return reasons

    def save_events(self, events: Iterable[Event], now: datetime, reasons: dict[str, str] | None = None) -> None:
        """Upsert all of them in one transaction (all of one VTN message, or none). When the store cannot
        take them they are held in memory (`events()` returns them; `flush()` writes them): an event the VTN
        sent is acted on and answered whether or not the disk has room for it."""
        reasons = reasons or {}
        batch = list(events)
        try:
            with self._tx():
                for e in batch:
                    self._upsert_event(e, reasons.get(e.event_id, ""), now)
        except Exception as exc:
            self._held("events", exc)
            for e in batch:
                self._held_events[e.event_id] = (e, reasons.get(e.event_id, ""), now)
                self._held_deletes.discard(e.event_id)
            return
        for e in batch:
            self._held_events.pop(e.event_id, None)

    def _upsert_event(self, e: Event, reason: str, now: datetime) -> None:
        self.db.conn.execute(
            "INSERT INTO events (event_id, modification_number, status, opt, opt_reason, start_offset_s,"
            " body, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO UPDATE SET"
            " modification_number = excluded.modification_number, status = excluded.status,"
            " opt = excluded.opt, opt_reason = excluded.opt_reason,"
            " start_offset_s = excluded.start_offset_s, body = excluded.body,"
            " updated_at = excluded.updated_at",
            (e.event_id, e.modification_number, e.status.value, e.opt.value, reason,
             e.start_offset.total_seconds(), event_to_json(e), now.isoformat()),
        )

    def delete_events(self, event_ids: Iterable[str]) -> None:
        ids = list(event_ids)
        try:
            with self._tx():
                for event_id in ids:
                    self.db.conn.execute("DELETE FROM events WHERE event_id = ?", (event_id,))
        except Exception as exc:
            self._held("events", exc)
            self._held_deletes.update(ids)
        for event_id in ids:
            self._held_events.pop(event_id, None)

    def prune_events(self, before: datetime) -> int:
        """Forget completed and cancelled events last touched before `before` (kept a while for the record).
        Nothing is pruned while the store cannot be written (it is tried again next time)."""
        try:
            with self._tx():
                cur = self.db.conn.execute(
                    "DELETE FROM events WHERE status IN ('completed', 'cancelled') AND updated_at < ?",
                    (before.isoformat(),),
                )
        except Exception as exc:
            self._held("prune", exc)
            return 0
        self.health.ok("prune")
        return int(cur.rowcount)

    # ------------------------------------------------------------------------------------------- opts

    def overrides(self) -> dict[str, tuple[OptState, str]]:
        rows = self._rows("SELECT event_id, opt, reason FROM opt_overrides")
        return {str(r["event_id"]): (OptState(str(r["opt"])), str(r["reason"])) for r in rows}

    @contextmanager
    def _operator_tx(self) -> Iterator[None]:
        """A transaction for an operator's change: a store fault becomes StoreWriteError (nothing changed)."""
        try:
            with self._tx():
                yield
        except sqlite3.Error as exc:
            if not is_store_fault(exc):
                raise
            raise StoreWriteError(f"not stored, so not changed: the store cannot be written ({describe(exc)})") from exc

    def set_override(self, event_id: str, opt: OptState | None, reason: str, now: datetime) -> None:
        with self._operator_tx():
            if opt is None:
                self.db.conn.execute("DELETE FROM opt_overrides WHERE event_id = ?", (event_id,))
            else:
                self.db.conn.execute(
                    "INSERT INTO opt_overrides (event_id, opt, reason, at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (event_id) DO UPDATE SET opt = excluded.opt, reason = excluded.reason,"
                    " at = excluded.at",
                    (event_id, opt.value, reason, now.isoformat()),
                )

    def queue_opt(self, event: Event, reason: str, opt_id: str, now: datetime, *, in_flight: int | None = None) -> None:
        """Queue an opt to send. Only the latest change of mind matters, so unsent earlier ones for this event
        are dropped, except `in_flight` (being sent right now: the VTN may already have it)."""
        with self._operator_tx():
            self.db.conn.execute("DELETE FROM opt_outbox WHERE event_id = ? AND sent_at IS NULL AND id IS NOT ?",
                                 (event.event_id, in_flight))
            self.db.conn.execute(
                "INSERT INTO opt_outbox (event_id, modification_number, opt, reason, opt_id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (event.event_id, event.modification_number, event.opt.value, reason, opt_id, now.isoformat()),
            )

    def pending_opts(self) -> list[PendingOpt]:
        rows = self._rows(
            "SELECT id, event_id, modification_number, opt, reason, opt_id FROM opt_outbox"
            " WHERE sent_at IS NULL ORDER BY id"
        )
        sent = set(self._held_opts_sent)
        return [
            PendingOpt(
                int(str(r["id"])),
                str(r["event_id"]),
                int(str(r["modification_number"])),
                OptState(str(r["opt"])),
                str(r["reason"]),
                str(r["opt_id"]),
            )
            for r in rows
            if int(str(r["id"])) not in sent
        ]

    def last_sent_opt_id(self, event_id: str) -> str | None:
        rows = self._rows(
            "SELECT id, opt_id, sent_at FROM opt_outbox WHERE event_id = ? ORDER BY id DESC", (event_id,))
        sent = set(self._held_opts_sent)
        return next((str(r["opt_id"]) for r in rows if r["sent_at"] is not None or int(str(r["id"])) in sent), None)

    def mark_opt_sent(self, outbox_id: int, now: datetime) -> None:
        """Held in memory when the store cannot take it: the opt is not sent twice meanwhile."""
        try:
            with self._tx():
                self.db.conn.execute("UPDATE opt_outbox SET sent_at = ? WHERE id = ?", (now.isoformat(), outbox_id))
        except Exception as exc:
            self._held("opts", exc)
            self._held_opts_sent[outbox_id] = now

    # ---------------------------------------------------------------------------------------- reports

    def report_requests(self) -> list[ReportRequest]:
        rows = self._rows(
            "SELECT report_request_id, report_specifier_id, granularity_s, report_back_s, r_ids, next_sample_at"
            " FROM report_requests ORDER BY created_at, report_request_id"
        )
        return [
            ReportRequest(
                str(r["report_request_id"]),
                str(r["report_specifier_id"]),
                float(str(r["granularity_s"])),
                float(str(r["report_back_s"])),
                tuple(json.loads(str(r["r_ids"]))),
                self._held_next_sample.get(str(r["report_request_id"]))
                or (datetime.fromisoformat(str(r["next_sample_at"])) if r["next_sample_at"] else None),
            )
            for r in rows
        ]

    def save_report_request(self, rr: ReportRequest, now: datetime) -> None:
        with self._tx():
            self.db.conn.execute(
                "INSERT INTO report_requests (report_request_id, report_specifier_id, granularity_s, report_back_s,"
                " r_ids, next_sample_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (report_request_id)"
                " DO UPDATE SET granularity_s = excluded.granularity_s, report_back_s = excluded.report_back_s,"
                " r_ids = excluded.r_ids",
                (
                    rr.report_request_id,
                    rr.report_specifier_id,
                    rr.granularity_s,
                    rr.report_back_s,
                    json.dumps(list(rr.r_ids)),
                    rr.next_sample_at.isoformat() if rr.next_sample_at else None,
                    now.isoformat(),
                ),
            )

    def cancel_report_request(self, report_request_id: str) -> None:
        with self._tx():
            self.db.conn.execute("DELETE FROM report_requests WHERE report_request_id = ?", (report_request_id,))
            self.db.conn.execute(
                "DELETE FROM report_backlog WHERE report_request_id = ? AND sent_at IS NULL", (report_request_id,)
            )

    def supersede(self, rr: ReportRequest) -> int:
        """`rr` (asked again in answer to our oadrRegisterReport) replaces stored requests of the same report
        for its rIDs: their unsent readings move to `rr` (sent once, under the id the VTN now knows), and a
        request left with no rIDs is dropped. Returns how many readings moved."""
        moved = 0
        with self._tx():
            rows = self.db.conn.execute(
                "SELECT report_request_id, r_ids FROM report_requests WHERE report_specifier_id = ?"
                " AND report_request_id != ?",
                (rr.report_specifier_id, rr.report_request_id),
            ).fetchall()
            for old_id, r_ids_json in rows:
                old_r_ids = list(json.loads(str(r_ids_json)))
                overlap = [r for r in old_r_ids if r in rr.r_ids]
                if not overlap:
                    continue
                marks = ",".join("?" for _ in overlap)
                cur = self.db.conn.execute(
                    f"UPDATE OR IGNORE report_backlog SET report_request_id = ? WHERE report_request_id = ?"
                    f" AND sent_at IS NULL AND r_id IN ({marks})",
                    (rr.report_request_id, old_id, *overlap),
                )
                moved += int(cur.rowcount)
                self.db.conn.execute(
                    f"DELETE FROM report_backlog WHERE report_request_id = ? AND sent_at IS NULL AND r_id IN ({marks})",
                    (old_id, *overlap),
                )
                left = [r for r in old_r_ids if r not in overlap]
                if left:
                    self.db.conn.execute("UPDATE report_requests SET r_ids = ? WHERE report_request_id = ?",
                                         (json.dumps(left), old_id))
                else:
                    self.db.conn.execute("DELETE FROM report_requests WHERE report_request_id = ?", (old_id,))
        return moved

    def unsent_count(self, report_request_id: str) -> int:
        rows = self._rows("SELECT COUNT(*) AS n FROM report_backlog WHERE report_request_id = ? AND sent_at IS NULL",
                          (report_request_id,))
        return int(str(rows[0]["n"]))

    def add_readings(
        self, rr: ReportRequest, values: Sequence[tuple[str, float]], at: datetime, next_sample_at: datetime
    ) -> None:
        """Store one sample of every r_id and move the request's clock on, atomically. Held in memory when
        the store cannot take it (sent to the VTN once it is stored: late, not lost)."""
        try:
            with self._tx():
                self._insert_readings(rr, tuple(values), at, next_sample_at)
        except Exception as exc:
            self._held("reports", exc)
            with self._hold:
                self._held_readings.append((rr, tuple(values), at, next_sample_at))
            self._held_next_sample[rr.report_request_id] = next_sample_at

    def _insert_readings(self, rr: ReportRequest, values: Sequence[tuple[str, float]], at: datetime,
                         next_sample_at: datetime) -> None:
        for r_id, value in values:
            self.db.conn.execute(
                "INSERT OR IGNORE INTO report_backlog (report_request_id, report_specifier_id, r_id,"
                " measured_at, value) VALUES (?, ?, ?, ?, ?)",
                (rr.report_request_id, rr.report_specifier_id, r_id, at.isoformat(), value),
            )
        self.db.conn.execute(
            "UPDATE report_requests SET next_sample_at = ? WHERE report_request_id = ?",
            (next_sample_at.isoformat(), rr.report_request_id),
        )

    def unsent_readings(self, limit: int = 1000) -> list[Reading]:
        rows = self._rows(
            # Only rows of requests still in force: a stray row must never block the queue behind it.
            "SELECT id, report_request_id, report_specifier_id, r_id, measured_at, value FROM report_backlog"
            " WHERE sent_at IS NULL AND report_request_id IN (SELECT report_request_id FROM report_requests)"
            " ORDER BY id LIMIT ?",
            (limit + len(self._held_readings_sent),),
        )
        sent = set(self._held_readings_sent)
        return [
            Reading(
                int(str(r["id"])),
                str(r["report_request_id"]),
                str(r["report_specifier_id"]),
                str(r["r_id"]),
                datetime.fromisoformat(str(r["measured_at"])),
                float(str(r["value"])),
            )
            for r in rows
            if int(str(r["id"])) not in sent
        ][:limit]

    def mark_readings_sent(self, ids: Sequence[int], now: datetime) -> None:
        """Held in memory when the store cannot take it: what the VTN has is not sent again meanwhile."""
        try:
            with self._tx():
                self.db.conn.executemany(
                    "UPDATE report_backlog SET sent_at = ? WHERE id = ?", [(now.isoformat(), i) for i in ids]
                )
        except Exception as exc:
            self._held("reports", exc)
            self._held_readings_sent.update(dict.fromkeys(ids, now))

    def prune_readings(self, before: datetime) -> int:
        """Drop readings older than the backlog horizon (sent or not): a VTN gone for weeks gets the recent part.
        Nothing is pruned while the store cannot be written."""
        try:
            with self._tx():
                cur = self.db.conn.execute("DELETE FROM report_backlog WHERE measured_at < ?", (before.isoformat(),))
        except Exception as exc:
            self._held("prune", exc)
            return 0
        self.health.ok("prune")
        return int(cur.rowcount)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)
