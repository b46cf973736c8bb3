"""A session that was charging when the gateway stopped goes on after the restart: the energy it still asks
for counts what it had before the stop (from the ledger's meter at its start), not only what came after."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from support.runtime import running
from support.waiting import stopped

from gateway.config import parse_config
from gateway.domain import ChargerReading, ChargerStatus


def reading(energy_kwh: float, session: str = "tx-1") -> ChargerReading:
    return ChargerReading("a", datetime.now(UTC), ChargerStatus.CHARGING, current_a={"L1": 16.0},
                          energy_kwh=energy_kwh, energy_requested_kwh=20.0, session_id=session)


async def test_the_energy_still_wanted_counts_from_the_sessions_start_across_a_restart(tmp_path: Path) -> None:
    config = parse_config({
        "site": {"wiring": "three-phase-400/230", "service_breaker_a": 63},
        "chargers": [{"id": "a", "protocol": "ocpp2.0.1", "phases": "L1-L2-L3", "max_a": 32}],
        "ocpp": {"port": 0},
        "store": {"path": str(tmp_path / "store.sqlite")},
    })

    first, task = await running(config)
    first.on_reading(reading(100.0))  # the register at the session's start
    first.on_reading(reading(106.0))
    assert first.energy_needed() == {"a": 14.0}
    first.stop()
    await stopped(task, 15)  # the ledger is written on the way out

    second, task = await running(config)
    try:
        second.on_reading(reading(107.0))
        assert second.energy_needed() == {"a": 13.0}  # 7 kWh of the 20 since the session began
        second.on_reading(reading(2.0, session="tx-2"))  # another car: its own start
        assert second.energy_needed() == {"a": 20.0}
    finally:
        second.stop()
        await stopped(task, 15)
