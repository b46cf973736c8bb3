"""The session ledger over restarts of the gateway: one row per charging session, whatever happens to the
gateway in between. Real OCPP 1.6 and 2.0.1 charge points stay plugged in and charging while the runtime
is stopped and started again three times on the same store; they reconnect each time (first with nothing
said about the connector, then their status), and the ledger must go on with the same row: the 2.0.1
transaction id once, the 1.6 row keeping the id it had although the restarted gateway never saw its
StartTransaction, no zero-length rows. And the ledger alone, fed the readings a reconnect produces."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.gateway_process import Gateway, stored
from support.waiting import until

from gateway.domain import ChargerReading, ChargerStatus
from gateway.sim.ocpp_cp import SimChargePoint
from gateway.store.sessions import SessionLedger

# Subprocesses and real peers end to end: `pytest -m "not slow"` leaves these out.
pytestmark = pytest.mark.slow

S = ChargerStatus
T0 = datetime(2030, 5, 1, 8, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reading(t: float, status: ChargerStatus, kwh: float | None = None, session: str | None = None) -> ChargerReading:
    return ChargerReading("a", T0 + timedelta(seconds=t), status, energy_kwh=kwh, session_id=session)


def test_a_reconnect_after_a_restart_continues_the_session_in_the_same_row(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    ledger = SessionLedger.open(path)
    ledger.observe([reading(0, S.CHARGING, 10.0, "17"), reading(60, S.CHARGING, 11.0, "17")])
    ledger.close()
    for restart in range(3):  # killed and started again: the charger reconnects, says nothing, then charges
        ledger = SessionLedger.open(path)
        t = 100.0 * (restart + 1)
        ledger.observe([reading(t, S.UNAVAILABLE), reading(t + 1, S.CHARGING, 12.0 + restart),  # a 1.6 charger:
                        reading(t + 2, S.FAULTED), reading(t + 3, S.CHARGING, 12.5 + restart)])  # no id after a restart
        ledger.close()
    ledger = SessionLedger.open(path)
    try:
        (s,) = ledger.sessions()
        assert s.open and s.session_id == "17" and s.energy_kwh == 4.5
        ledger.observe([reading(500, S.UNAVAILABLE), reading(501, S.AVAILABLE)])  # it ended while the link was down
        (s,) = ledger.sessions()
        assert s.stopped_at == T0 + timedelta(seconds=303), "closed when it was last seen charging"
    finally:
        ledger.close()


def test_a_session_that_ended_while_the_gateway_was_down_closes_when_it_was_last_seen(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    ledger = SessionLedger.open(path)
    ledger.observe([reading(0, S.CHARGING, 1.0, "tx-1"), reading(30, S.CHARGING, 2.0, "tx-1")])
    ledger.close()
    ledger = SessionLedger.open(path)  # the gateway comes back after the car left
    try:
        ledger.observe([reading(900, S.AVAILABLE, 2.5)])
        (s,) = ledger.sessions()
        assert s.stopped_at == T0 + timedelta(seconds=30) and s.energy_kwh == 1.0
    finally:
        ledger.close()


@pytest.mark.slow
async def test_a_kill_storm_leaves_one_row_per_session_with_its_transaction_id(tmp_path: Path) -> None:
    """`gateway run` in a subprocess, SIGKILLed three times while both cars charge."""
    port = free_port()
    store = tmp_path / "gw.sqlite"
    config = tmp_path / "site.toml"
    config.write_text("\n".join([
        "[site]", 'wiring = "three-phase-400/230"', "service_breaker_a = 100", "",
        "[[chargers]]", 'id = "cp16"', 'protocol = "ocpp1.6"', 'phases = "L1-L2-L3"', "max_a = 32", "",
        "[[chargers]]", 'id = "cp201"', 'protocol = "ocpp2.0.1"', 'phases = "L1-L2-L3"', "max_a = 32", "",
        "[ocpp]", f"port = {port}", "meter_interval_s = 1", "",
        "[control]", "tick_s = 0.25", "min_on_time_s = 0", "charger_stale_s = 10", "",
        "[status]", "port = 0", "", "[store]", f'path = "{store}"', ""]))
    base = f"ws://127.0.0.1:{port}/ocpp"
    cps = [SimChargePoint(base, "cp16", "1.6", meter_interval_s=1.0),
           SimChargePoint(base, "cp201", "2.0.1", meter_interval_s=1.0)]

    def rows() -> list[tuple[str, str | None, str | None]]:
        return [(str(r[0]), r[1], r[2]) for r in stored(
            store, "SELECT charger_id, session_id, stopped_at FROM charging_sessions ORDER BY charger_id, id")]

    gateway = Gateway(config)
    try:
        await gateway.status_url()
        for cp in cps:
            await cp.start()
            await cp.plug_in()
        ids = {cp.cp_id: cp.transaction_id for cp in cps}
        assert all(ids.values())
        await until(lambda: rows() == [(c, ids[c], None) for c in sorted(ids)], 15, f"no sessions: {rows()}")
        for _ in range(3):
            await asyncio.sleep(1.5)  # meter values, written about once a second
            gateway.kill()
            gateway = Gateway(config)
            await gateway.status_url()
            await until(lambda: all(cp.connected.is_set() for cp in cps), 15, "the chargers did not reconnect")
        await asyncio.sleep(2.5)  # their status and a few meter values after the last reconnect
        for cp in cps:
            await cp.unplug()
        await until(lambda: all(stop is not None for _, _, stop in rows()), 15, f"not closed: {rows()}")
        await gateway.terminate()
    finally:
        gateway.close()
        for cp in cps:
            await cp.stop()
    assert [(c, sid) for c, sid, _ in rows()] == sorted(ids.items()), "one row per session, with its id"
    ledger = SessionLedger.open(store)
    try:
        assert all(s.stopped_at is not None and s.stopped_at > s.started_at for s in ledger.sessions())
    finally:
        ledger.close()
