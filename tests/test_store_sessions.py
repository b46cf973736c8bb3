"""The charging-session ledger and telemetry in SQLite: sessions open and close from readings and survive a
reopen, kWh come from the charger's register, a version-2 file is upgraded in place with its rows kept,
and telemetry is averaged per minute after a day and dropped after the retention (`now` a parameter)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.domain import ChargerReading, ChargerStatus
from gateway.store import db as store_db
from gateway.store.decisions import DecisionStore
from gateway.store.sessions import SessionLedger
from gateway.store.telemetry import ChargerSample, SiteSample, Telemetry

NOW = datetime(2030, 3, 1, 12, tzinfo=UTC)
S = ChargerStatus


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def reading(cid: str, t: float, status: ChargerStatus, kwh: float | None = None,
            session: str | None = None) -> ChargerReading:
    return ChargerReading(cid, at(t), status, {"L1": 16.0} if status is S.CHARGING else {},
                          energy_kwh=kwh, session_id=session)


def test_a_session_opens_on_plug_in_counts_the_register_and_closes_on_plug_out(tmp_path: Path) -> None:
    ledger = SessionLedger.open(tmp_path / "gw.sqlite")
    try:
        assert ledger.observe([reading("a", 0, S.AVAILABLE, 100.0)]) == 0
        ledger.observe([reading("a", 10, S.PREPARING, 100.0), reading("a", 20, S.CHARGING, 100.5, "tx-1")])
        ledger.observe([reading("a", 30, S.CHARGING, 103.25, "tx-1"), reading("b", 30, S.CHARGING, 7.0)])
        (open_a,) = [s for s in ledger.sessions() if s.charger_id == "a"]
        assert open_a.open and open_a.session_id == "tx-1"  # the transaction id, learnt after the plug-in
        assert open_a.meter_start_kwh == 100.0 and open_a.energy_kwh == pytest.approx(3.25)
        ledger.observe([reading("a", 40, S.FINISHING, 103.5, "tx-1"), reading("a", 50, S.AVAILABLE, 103.5)])
        a = ledger.sessions(charger_id="a")[0]
        assert a.started_at == at(10) and a.stopped_at == at(50)
        assert a.meter_stop_kwh == 103.5 and a.energy_kwh == pytest.approx(3.5)
        assert set(ledger.open_sessions()) == {"b"}
    finally:
        ledger.close()


def test_a_new_transaction_id_closes_the_old_session_and_a_register_reset_counts_nothing_twice(
        tmp_path: Path) -> None:
    ledger = SessionLedger.open(tmp_path / "gw.sqlite")
    try:
        ledger.observe([reading("a", 0, S.CHARGING, 10.0, "tx-1"), reading("a", 5, S.CHARGING, 12.0, "tx-1")])
        ledger.observe([reading("a", 6, S.CHARGING, 0.5, "tx-1"),  # the register reset: a new base
                        reading("a", 7, S.CHARGING, 1.5, "tx-1")])
        ledger.observe([reading("a", 8, S.CHARGING, 1.5, "tx-2"), reading("a", 9, S.CHARGING, 2.0, "tx-2")])
        first, second = ledger.sessions()
        assert (first.session_id, first.stopped_at) == ("tx-1", at(8)) and first.energy_kwh == pytest.approx(3.0)
        assert (second.session_id, second.open) == ("tx-2", True) and second.energy_kwh == pytest.approx(0.5)
    finally:
        ledger.close()


def test_offline_keeps_the_session_and_open_sessions_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    ledger = SessionLedger.open(path)
    ledger.observe([reading("a", 0, S.CHARGING, 1.0), reading("a", 60, S.CHARGING, 2.0),
                    reading("a", 70, S.OFFLINE)])
    assert ledger.sessions()[0].open
    ledger.close()
    ledger = SessionLedger.open(path)  # as after a restart (a SIGKILL leaves the same file)
    try:
        assert set(ledger.open_sessions()) == {"a"}
        ledger.observe([reading("a", 200, S.CHARGING, 4.0)])  # back, same session: it goes on
        assert [s.energy_kwh for s in ledger.sessions()] == [pytest.approx(3.0)]
        ledger.observe([reading("a", 300, S.OFFLINE), reading("a", 400, S.AVAILABLE)])
        (s,) = ledger.sessions()
        assert s.stopped_at == at(200), "closed when it was last seen connected, not when it came back"
    finally:
        ledger.close()


def test_a_failed_batch_leaves_the_ledger_as_it_was(tmp_path: Path) -> None:
    ledger = SessionLedger.open(tmp_path / "gw.sqlite")
    try:
        ledger.observe([reading("a", 0, S.CHARGING, 1.0)])

        def batch() -> Iterator[ChargerReading]:
            yield reading("a", 5, S.AVAILABLE)  # closes the session in the transaction that is then undone
            raise RuntimeError("crash mid-batch")

        with pytest.raises(RuntimeError):
            ledger.observe(batch())
        assert ledger.sessions()[0].open and set(ledger.open_sessions()) == {"a"}
    finally:
        ledger.close()


def test_sessions_are_chosen_by_their_start(tmp_path: Path) -> None:
    ledger = SessionLedger.open(tmp_path / "gw.sqlite")
    try:
        day = 86400.0
        ledger.observe([reading("a", 0, S.CHARGING, 1.0), reading("a", 100, S.AVAILABLE),
                        reading("a", day, S.CHARGING, 5.0), reading("a", day + 100, S.AVAILABLE)])
        assert len(ledger.sessions()) == 2
        assert [s.started_at for s in ledger.sessions(since=at(day))] == [at(day)]
        assert [s.started_at for s in ledger.sessions(until=at(day))] == [NOW]
    finally:
        ledger.close()


def version_2_file(path: Path) -> None:
    """A store as the previous gateway left it: schema version 2, with a limit sent and an event in it."""
    conn = sqlite3.connect(path, isolation_level=None)
    for script in store_db.MIGRATIONS[:2]:
        for statement in script.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    conn.execute("INSERT INTO limits_sent (decided_at, charger_id, old_a, new_a, reason, accepted, latency_s) "
                 "VALUES (?, 'a', 32, 16, 'ev (e1)', 1, 0.02)", (NOW.isoformat(),))
    conn.execute("INSERT INTO events (event_id, modification_number, status, opt, start_offset_s, body, updated_at) "
                 "VALUES ('e1', 0, 'active', 'optIn', 12.5, '{}', ?)", (NOW.isoformat(),))
    conn.close()


def test_a_version_2_store_is_upgraded_in_place_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    version_2_file(path)
    db = store_db.open_db(path)
    try:
        assert store_db.schema_version(db) == len(store_db.MIGRATIONS) >= 3
        assert {"charging_sessions", "telemetry_site", "telemetry_chargers"} <= set(db.table_names())
        assert db.execute("SELECT start_offset_s FROM events WHERE event_id = 'e1'").fetchone()[0] == 12.5
        (row,) = DecisionStore(db).recent(10)
        assert (row.accepted, row.latency_s) == (True, 0.02)
        ledger = SessionLedger(db)
        ledger.observe([reading("a", 0, S.CHARGING, 1.0)])
        assert len(ledger.sessions()) == 1
    finally:
        db.conn.close()


def test_telemetry_is_averaged_per_minute_after_a_day_and_dropped_after_the_retention(tmp_path: Path) -> None:
    tel = Telemetry.open(tmp_path / "gw.sqlite")
    try:
        base = datetime(2030, 3, 1, 0, 0, tzinfo=UTC)
        for s in range(120):  # two whole minutes of raw rows, one a second
            t = base + timedelta(seconds=s)
            tel.write(t, 1.0, SiteSample(10.0 + s, 5.0, 50.0),
                      {"a": ChargerSample(16.0, 3.7, 16.0), "b": ChargerSample(None, None, 32.0 if s < 60 else 0.0)})
        fresh = base + timedelta(days=3)
        tel.write(fresh, 1.0, SiteSample(1.0, 1.0, 1.0), {"a": ChargerSample(6.0, 1.4, 6.0)})

        # Less than a day after: everything stays raw.
        assert tel.compact(base + timedelta(hours=23), keep=timedelta(days=10)) == (0, 0)
        assert len(tel.site()) == 121
        averaged, dropped = tel.compact(fresh, keep=timedelta(days=10))
        assert (averaged, dropped) == (120 * 3, 0)
        minutes = tel.site(until=fresh)
        assert [(r.at, r.span_s) for r in minutes] == [(base, 60.0), (base + timedelta(minutes=1), 60.0)]
        assert minutes[0].site_kw == pytest.approx(10.0 + 29.5) and minutes[1].site_kw == pytest.approx(70.0 + 29.5)
        b = [r for r in tel.chargers(until=fresh) if r.charger_id == "b"]
        assert [r.limit_a for r in b] == [32.0, 0.0] and b[0].current_a is None
        assert tel.site(since=fresh)[0].span_s == 1.0, "the last day stays raw"
        # Compacting again changes nothing; past the retention every old row goes.
        assert tel.compact(fresh, keep=timedelta(days=10)) == (0, 0)
        averaged, dropped = tel.compact(base + timedelta(days=11), keep=timedelta(days=10))
        assert averaged == 2 and dropped == 2 + 4  # the fresh raw rows averaged; the old minutes dropped
        assert [(r.at, r.span_s) for r in tel.site()] == [(fresh, 60.0)]
    finally:
        tel.close()
