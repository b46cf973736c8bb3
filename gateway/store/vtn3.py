"""What the OpenADR 3 VEN keeps in SQLite besides the events: its VEN and resource ids at the VTN, its
subscription, each event's program and report descriptors, and the report backlog.

The events themselves go into the same `events` table as 2.0b's (this is a `VenStore`), so the runtime,
the status page and the export see one schedule whichever protocol brought it. Its tables come with the
store's schema version 5 (`gateway.store.db.MIGRATIONS`).
Methods are synchronous and short; the VEN calls them from a worker thread one at a time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Self

from gateway.ports import ReportSample
from gateway.store.db import Synchronous, open_db
from gateway.store.health import WriteHealth
from gateway.store.vtn import VenStore


class Oadr3Store(VenStore):
    @classmethod
    def open(cls, path: str | Path, *, synchronous: Synchronous = "FULL", health: WriteHealth | None = None) -> Self:
        return cls(open_db(path, synchronous=synchronous), health)

    # ------------------------------------------------------------------------------------------ state

    def state(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM oadr3_state WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    def put_state(self, key: str, value: str | None, now: datetime) -> None:
        with self._tx():
            if value is None:
                self.db.conn.execute("DELETE FROM oadr3_state WHERE key = ?", (key,))
            else:
                self.db.conn.execute(
                    "INSERT INTO oadr3_state (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key)"
                    " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    (key, value, now.isoformat()))

    # ------------------------------------------------------------------------------------- event meta

    def save_event_meta(self, event_id: str, program_id: str, descriptors: list[dict[str, object]]) -> None:
        with self._tx():
            self.db.conn.execute(
                "INSERT INTO oadr3_events (event_id, program_id, report_descriptors) VALUES (?, ?, ?)"
                " ON CONFLICT (event_id) DO UPDATE SET program_id = excluded.program_id,"
                " report_descriptors = excluded.report_descriptors",
                (event_id, program_id, json.dumps(descriptors)))

    def event_meta(self) -> dict[str, tuple[str, list[dict[str, object]], datetime | None]]:
        """event id → (program id, report descriptors as received, when its next report is due)."""
        return {
            str(r["event_id"]): (str(r["program_id"]), list(json.loads(str(r["report_descriptors"]))),
                                 datetime.fromisoformat(str(r["next_report_at"])) if r["next_report_at"] else None)
            for r in self._rows("SELECT event_id, program_id, report_descriptors, next_report_at FROM oadr3_events")
        }

    def add_samples(self, event_id: str, samples: Sequence[ReportSample], next_report_at: datetime) -> None:
        """One round of samples and the event's next report time, atomically."""
        with self._tx():
            for s in samples:
                self.db.conn.execute(
                    "INSERT OR IGNORE INTO oadr3_backlog (event_id, program_id, payload_type, resource_name, start,"
                    " duration_s, value) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (s.event_id, s.program_id, s.payload_type, s.resource_name, s.start.isoformat(), s.duration_s,
                     json.dumps(s.value)))
            self.db.conn.execute("UPDATE oadr3_events SET next_report_at = ? WHERE event_id = ?",
                                 (next_report_at.isoformat(), event_id))

    def unsent_samples(self, limit: int = 1000) -> list[ReportSample]:
        rows = self._rows(
            "SELECT id, event_id, program_id, payload_type, resource_name, start, duration_s, value FROM oadr3_backlog"
            " WHERE sent_at IS NULL ORDER BY id LIMIT ?", (limit,))
        return [ReportSample(str(r["event_id"]), str(r["program_id"]), str(r["payload_type"]),
                             str(r["resource_name"]), datetime.fromisoformat(str(r["start"])),
                             float(str(r["duration_s"])), json.loads(str(r["value"])), int(str(r["id"])))
                for r in rows]

    def mark_samples_sent(self, ids: Sequence[int], now: datetime) -> None:
        with self._tx():
            self.db.conn.executemany("UPDATE oadr3_backlog SET sent_at = ? WHERE id = ?",
                                     [(now.isoformat(), i) for i in ids])

    def prune_samples(self, before: datetime) -> int:
        with self._tx():
            cur = self.db.conn.execute("DELETE FROM oadr3_backlog WHERE start < ?", (before.isoformat(),))
        return int(cur.rowcount)
