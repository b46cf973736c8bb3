"""The limits-sent table: migration 2, one row per change joined with its acknowledgement, newest first,
pruned by age; the VEN's tables beside it are untouched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.domain import LimitAck
from gateway.store.db import MIGRATIONS, open_db, schema_version
from gateway.store.decisions import DecisionStore, rows_for
from gateway.store.vtn import VenStore

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def test_limits_sent_round_trip_and_prune(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    ven = VenStore.open(path)
    store = DecisionStore.open(path)
    try:
        assert schema_version(open_db(path)) == len(MIGRATIONS) >= 2
        acks = [LimitAck("a", 16.0, NOW, True, 0.012, "Accepted")]
        old = rows_for(NOW - timedelta(days=100), [("a", 32.0, 16.0, "ev (e1:SIMPLE:level=2)")], acks)
        new = rows_for(NOW, [("a", 16.0, 8.0, "main/L1"), ("b", 0.0, 6.0, "max")], [])
        assert store.record(old) == 1 and store.record(new) == 2 and store.record([]) == 0
        recent = store.recent(10)
        assert [r.charger_id for r in recent] == ["b", "a", "a"]
        assert recent[2].accepted is True and recent[2].latency_s == 0.012 and recent[2].reason.startswith("ev")
        assert recent[0].accepted is None  # nothing answered (yet)
        assert [r.new_a for r in store.recent(10, charger_id="a")] == [8.0, 16.0]
        assert store.prune(NOW - timedelta(days=90)) == 1
        assert len(store.recent(10)) == 2
        assert ven.registration().ven_id is None
    finally:
        store.close()
        ven.close()
