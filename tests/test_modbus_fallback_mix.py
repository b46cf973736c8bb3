"""Modbus chargers fall back when their own failsafe timeout runs out, each at its own instant: a charger
paused beside a full circuit must not fall back to more than the circuit has left while another still
holds its limit. The runtime lowers its failsafe current with the decreases, and puts it back when the room
is back. Real pymodbus servers on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.runtime import running
from support.waiting import stopped, until

from gateway.config import parse_config
from gateway.sim.modbus_charger import SimCharger

pytestmark = pytest.mark.slow


async def test_a_modbus_charger_paused_beside_a_full_circuit_falls_back_to_nothing(tmp_path: Path) -> None:
    sims = {cid: SimCharger("generic-charger", rating_a=32.0) for cid in ("first", "second")}
    ports = {cid: await sim.start() for cid, sim in sims.items()}
    config = parse_config({
        "site": {"wiring": "three-phase-400/230", "service_breaker_a": 160},
        # 36 A usable: the first charger (put first) takes 32 A, the 4 A left are too few for 6 A
        "circuits": [{"id": "row", "breaker_a": 45}],
        "chargers": [{"id": cid, "protocol": "modbus", "phases": "L1-L2-L3", "circuit": "row", "max_a": 32,
                      "fallback_a": 6, "priority": int(cid == "first"),
                      "modbus": {"model": "generic-charger", "host": "127.0.0.1", "port": port}}
                     for cid, port in ports.items()],
        "control": {"tick_s": 0.25},
        "store": {"path": str(tmp_path / "gw.sqlite")},
    })
    runtime, task = await running(config)
    try:
        await until(lambda: all(s.failsafe_a == 6.0 and s.setpoint_a is not None for s in sims.values()), 10,
                    "the failsafe was not programmed")
        for sim in sims.values():
            sim.plug_in(ev_max_a=32.0)
        await until(lambda: sims["first"].drawing_a == 32.0, 10, "the first car never got its 32 A")
        assert sims["second"].drawing_a == 0.0
        # the second falls back to nothing: 32 A and its 6 A would be 38 A on a 36 A row
        await until(lambda: sims["second"].failsafe_a == 0.0, 5, "the paused charger's failsafe stayed at 6 A")
        assert sims["first"].failsafe_a == 6.0  # under its limit: it falls back to less than it has
        sims["first"].unplug()  # the room is back, and so is the second's failsafe current
        await until(lambda: sims["second"].drawing_a == 32.0 and sims["second"].failsafe_a == 6.0, 10,
                    "the failsafe did not come back with the room")
    finally:
        runtime.stop()
        await stopped(task, 15)
        for sim in sims.values():
            await sim.stop()
