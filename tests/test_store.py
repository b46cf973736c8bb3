"""The SQLite store: WAL, synchronous per connection, versioned migrations, and the VTN adapter's tables."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.domain import Event, EventStatus, Interval, OptState, Signal, SignalName, SignalType
from gateway.store import db as store_db
from gateway.store.codec import event_from_json, event_to_json
from gateway.store.vtn import Registration, ReportRequest, VenStore

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)


def full_event(event_id: str = "e1") -> Event:
    return Event(
        event_id=event_id,
        modification_number=3,
        dtstart=NOW,
        duration=timedelta(hours=2),
        signals=(
            Signal(SignalName.LOAD_DISPATCH, SignalType.SETPOINT,
                   (Interval(timedelta(minutes=30), 40.0), Interval(timedelta(0), 35.5)),
                   signal_id="s1", unit="powerReal", targets=("fleet",)),
            Signal(SignalName.SIMPLE, SignalType.LEVEL, (Interval(timedelta(hours=2), 2.0),)),
        ),
        priority=1,
        status=EventStatus.CANCELLED,
        test_event=True,
        start_after=timedelta(minutes=10),
        start_offset=timedelta(seconds=123.456),
        cancelled_at=NOW + timedelta(minutes=5),
        opt=OptState.OPT_OUT,
        market_context="http://utility/ev",
        targets=("fleet", "visitors"),
        response_required=False,
        created_at=NOW - timedelta(days=1),
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VenStore]:
    s = VenStore.open(tmp_path / "gw.sqlite")
    yield s
    s.close()


def test_codec_round_trips_every_field() -> None:
    e = full_event()
    assert event_from_json(event_to_json(e)) == e


def test_wal_and_synchronous_are_set_on_every_connect(tmp_path: Path) -> None:
    db = store_db.open_db(tmp_path / "a.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    db.conn.close()
    db = store_db.open_db(tmp_path / "a.sqlite", synchronous="NORMAL")
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1
    assert store_db.schema_version(db) == len(store_db.MIGRATIONS)
    db.conn.close()


def test_a_failing_migration_leaves_the_previous_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store_db.open_db(tmp_path / "a.sqlite").conn.close()
    broken = [*store_db.MIGRATIONS, "CREATE TABLE half (x INTEGER); INSERT INTO nowhere VALUES (1)"]
    monkeypatch.setattr(store_db, "MIGRATIONS", broken)
    with pytest.raises(Exception, match="nowhere"):
        store_db.open_db(tmp_path / "a.sqlite")
    monkeypatch.undo()
    db = store_db.open_db(tmp_path / "a.sqlite")
    assert store_db.schema_version(db) == len(store_db.MIGRATIONS)
    assert "half" not in db.table_names()


def test_a_newer_file_is_refused(tmp_path: Path) -> None:
    db = store_db.open_db(tmp_path / "a.sqlite")
    db.execute("PRAGMA user_version = 99")
    db.conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        store_db.open_db(tmp_path / "a.sqlite")


def test_a_file_whose_tables_an_earlier_build_made_itself_migrates_to_the_newest(tmp_path: Path) -> None:
    # Builds at version 4 made `ocpp_chargers` themselves on open (and had no OpenADR 3 tables): such a
    # file must take migration 5 as it is, what it holds kept.
    path = tmp_path / "old.sqlite"
    conn = store_db.open_db(path).conn
    for table in ("oadr3_state", "oadr3_events", "oadr3_backlog"):
        conn.execute(f"DROP TABLE {table}")
    conn.execute("INSERT INTO ocpp_chargers VALUES ('cp-1', '{}', '2026-12-01T00:00:00+00:00')")
    conn.execute("PRAGMA user_version = 4")
    conn.close()
    db = store_db.open_db(path)
    assert store_db.schema_version(db) == len(store_db.MIGRATIONS) >= 5
    assert {"ocpp_chargers", "oadr3_state", "oadr3_events", "oadr3_backlog"} <= set(db.table_names())
    assert db.execute("SELECT charger_id FROM ocpp_chargers").fetchall() == [("cp-1",)]


def test_registration_survives_reopen_and_forgetting_keeps_the_ven_id(tmp_path: Path) -> None:
    s = VenStore.open(tmp_path / "gw.sqlite")
    assert s.registration() == Registration(None, None, None, None)
    s.save_registration(Registration("ven-1", "reg-1", "VTN", 10.0), NOW)
    s.close()
    s = VenStore.open(tmp_path / "gw.sqlite")
    assert s.registration() == Registration("ven-1", "reg-1", "VTN", 10.0)
    s.forget_registration(NOW)
    assert s.registration() == Registration("ven-1", None, "VTN", 10.0)
    s.close()


def test_events_of_one_message_are_stored_all_or_nothing(store: VenStore) -> None:
    store.save_events([full_event("a")], NOW)

    def half_then_crash() -> Iterator[Event]:
        yield full_event("b")
        raise RuntimeError("crash mid-message")

    with pytest.raises(RuntimeError):
        store.save_events(half_then_crash(), NOW)
    assert set(store.events()) == {"a"}
    assert store.events()["a"] == full_event("a")


def test_backlog_has_no_duplicates_and_is_pruned(store: VenStore) -> None:
    rr = ReportRequest("rr-1", "spec", 60.0, 120.0, ("p",))
    store.save_report_request(rr, NOW)
    store.add_readings(rr, [("p", 1.0)], NOW, NOW + timedelta(minutes=1))
    store.add_readings(rr, [("p", 9.0)], NOW, NOW + timedelta(minutes=1))  # same slot again: ignored
    store.add_readings(rr, [("p", 2.0)], NOW + timedelta(minutes=1), NOW + timedelta(minutes=2))
    rows = store.unsent_readings()
    assert [r.value for r in rows] == [1.0, 2.0]
    store.mark_readings_sent([rows[0].id], NOW)
    assert [r.value for r in store.unsent_readings()] == [2.0]
    assert store.prune_readings(NOW + timedelta(seconds=30)) == 1
    assert store.report_requests()[0].next_sample_at == NOW + timedelta(minutes=2)


def test_opt_outbox_keeps_only_the_latest_unsent_change(store: VenStore) -> None:
    e = full_event()
    store.queue_opt(e, "", "opt-1", NOW)
    store.queue_opt(e, "", "opt-2", NOW)
    (pending,) = store.pending_opts()
    assert pending.opt_id == "opt-2"
    store.mark_opt_sent(pending.id, NOW)
    assert store.last_sent_opt_id(e.event_id) == "opt-2" and store.pending_opts() == []


def test_old_finished_events_are_pruned_live_ones_kept(store: VenStore) -> None:
    live = dataclasses.replace(full_event("live"), status=EventStatus.ACTIVE)
    store.save_events([full_event("done"), live], NOW)
    assert store.prune_events(NOW + timedelta(days=8)) == 1
    assert set(store.events()) == {"live"}
