"""The limits-sent table: migration 2, one row per change joined with its acknowledgement, newest first,
pruned by age; the VEN's tables beside it are untouched. And the runtime feeding the session ledger and
telemetry from a real Modbus charger, flushed when it stops."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from support.waiting import stopped, until

from gateway.config import load_config
from gateway.domain import LimitAck
from gateway.runtime.loop import Runtime
from gateway.sim.modbus_charger import SimCharger
from gateway.store.db import MIGRATIONS, open_db, schema_version
from gateway.store.decisions import DecisionStore, rows_for
from gateway.store.sessions import Session, SessionLedger
from gateway.store.telemetry import Telemetry
from gateway.store.vtn import VenStore

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
NO_SESSION = Session(0, "", None, NOW, None, None, None, 0.0, NOW)


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


async def test_the_runtime_keeps_the_ledger_and_telemetry_of_a_real_modbus_charger(tmp_path: Path) -> None:
    sim = SimCharger("generic-charger", rating_a=32.0)
    await sim.start()
    store = tmp_path / "gw.sqlite"
    config = tmp_path / "site.toml"
    config.write_text(
        '[site]\nwiring = "three-phase-400/230"\nservice_breaker_a = 63\n\n'
        '[[chargers]]\nid = "mb-1"\nprotocol = "modbus"\nphases = "L1-L2-L3"\nmax_a = 32\nfallback_a = 6\n'
        f'modbus = {{ model = "generic-charger", host = "127.0.0.1", port = {sim.port} }}\n\n'
        '[control]\ntick_s = 0.25\nmin_on_time_s = 0\n\n'
        f'[store]\npath = "{store}"\n')
    runtime = Runtime(load_config(config), serve_status=False)
    task = asyncio.create_task(runtime.run())

    try:
        await asyncio.wait_for(runtime.started.wait(), 10)
        sim.plug_in(ev_max_a=16.0, phases=3)
        await until(lambda: runtime.ledger is not None and "mb-1" in runtime.ledger.open_sessions(), 10.0)
        await until(lambda: runtime.ledger is not None
                    and runtime.ledger.open_sessions().get("mb-1", NO_SESSION).energy_kwh > 0, 10.0)
        sim.unplug()
        await until(lambda: runtime.readings.get("mb-1") is not None
                    and not runtime.readings["mb-1"].status.connected, 10.0)
    finally:
        runtime.stop()
        await stopped(task, 15)
        await sim.stop()
    ledger = SessionLedger.open(store)  # what the stop left in the file
    try:
        (session,) = ledger.sessions()
        assert session.charger_id == "mb-1" and session.stopped_at is not None, "closed, and flushed at the stop"
        assert session.energy_kwh > 0 and session.meter_stop_kwh is not None
        telemetry = Telemetry(ledger.db)
        rows = [r for r in telemetry.chargers() if r.charger_id == "mb-1"]
        assert rows and any(r.current_a and r.current_a > 0 for r in rows)
        assert all(r.span_s == 1.0 for r in rows) and telemetry.site()
    finally:
        ledger.close()
