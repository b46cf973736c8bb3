"""Leases end at different instants, so the chargers can be on any mix of their limits and their own
fallbacks: a charger held under its fallback by a full circuit (no curtailment in force) must not go back
up to its fallback while another still holds the room it gave up. Checked from the strict simulated
chargers' profiles (every mix the gateway's death could leave: `mix_overloads`) while the gateway runs,
and at every instant through its death until every lease ran out; with room to spare, the fallbacks are
the configured ones again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.conductors import mix_overloads, overloads
from support.ocpp import PASSWORD
from support.runtime import running
from support.waiting import stopped, until

from gateway.config import GatewayConfig, parse_config
from gateway.ocpp.driver import OcppDriver
from gateway.runtime.loop import Runtime
from gateway.sim.ocpp_cp import Ev, SimChargePoint

pytestmark = pytest.mark.slow
LEASE = timedelta(seconds=2)


def site(tmp_path: Path, ids: tuple[str, ...]) -> GatewayConfig:
    """Chargers on one row: 36 A usable, so the first (put first) taking 32 A leaves 4 A, too few for
    anyone's 6 A fallback."""
    return parse_config({
        "site": {"wiring": "three-phase-400/230", "service_breaker_a": 160},
        "circuits": [{"id": "row", "breaker_a": 45}],
        "chargers": [{"id": cid, "protocol": "ocpp1.6", "phases": "L1-L2-L3", "circuit": "row", "max_a": 32,
                      "fallback_a": 6, "priority": int(cid == "first"), "ocpp": {"password": PASSWORD}}
                     for cid in ids],
        "ocpp": {"port": 0, "lease_s": LEASE.total_seconds(), "meter_interval_s": 1, "ack_wait_s": 1,
                 "response_timeout_s": 2},
        "control": {"tick_s": 0.25},
        "store": {"path": str(tmp_path / "gw.sqlite")},
    })


@contextlib.asynccontextmanager
async def gateway_and_chargers(config: GatewayConfig
                               ) -> AsyncIterator[tuple[Runtime, OcppDriver, dict[str, SimChargePoint]]]:
    runtime, task = await running(config)
    ocpp = runtime.ocpp
    assert ocpp is not None
    base = f"ws://127.0.0.1:{ocpp.server.port}/ocpp"
    sims = {c.id: SimChargePoint(base, c.id, password=PASSWORD, ev=Ev(max_a=32), meter_interval_s=1)
            for c in config.chargers}
    try:
        await asyncio.gather(*(s.start() for s in sims.values()))
        yield runtime, ocpp, sims
    finally:
        runtime.stop()
        await stopped(task, 15)
        await asyncio.gather(*(s.stop() for s in sims.values()))


async def test_a_charger_held_under_its_fallback_keeps_the_circuit_through_any_mix_of_leases(tmp_path: Path) -> None:
    config = site(tmp_path, ("first", "second", "idle"))
    start = datetime.now(UTC)
    async with gateway_and_chargers(config) as (runtime, ocpp, sims):
        await until(lambda: all(c.base_amps == 6.0 for c in ocpp.controls.values()), 10, "no bases at first")
        # nobody charging: room for every fallback, and they stay as configured
        assert not mix_overloads(config, sims, datetime.now(UTC), LEASE * 2)
        await sims["first"].plug_in()
        await sims["second"].plug_in()
        await until(lambda: sims["first"].draw_a() == 32.0, 10, "the first car never got its 32 A")
        assert sims["second"].draw_a() == 0.0  # 4 A left: under the 6 A minimum
        for _ in range(12):  # 3 s, through lease renewals: every mix a death could leave keeps the circuit
            found = mix_overloads(config, sims, datetime.now(UTC), LEASE * 2)
            assert not found, "\n".join(str(o) for o in found)
            await asyncio.sleep(0.25)
        assert ocpp.controls["second"].base_amps == 0.0 and ocpp.controls["idle"].base_amps == 0.0
        # the operator sees it: what each falls back to if the gateway stops
        assert {e["id"]: e["fallback_a"] for e in runtime.status()["evses"]} == {"first": 6.0, "second": 0.0,
                                                                                  "idle": 0.0}
        # the gateway dies: nothing released, nothing renewed; every lease runs out by itself
        await ocpp.stop(release=False)
        await asyncio.sleep(LEASE.total_seconds() * 2)
        assert {cid: s.limit_a() for cid, s in sims.items()} == {"first": 6.0, "second": 0.0, "idle": 0.0}
    found = overloads(config, sims, start, datetime.now(UTC))
    assert not found, "\n".join(str(o) for o in found[:10])


async def test_the_fallbacks_come_back_when_the_room_does(tmp_path: Path) -> None:
    config = site(tmp_path, ("first", "second"))
    async with gateway_and_chargers(config) as (_, ocpp, sims):
        await sims["first"].plug_in()
        await until(lambda: ocpp.controls["second"].base_amps == 0.0, 10, "the idle one's fallback stayed up")
        await sims["first"].unplug()  # the room is back: so is the configured fallback, by the renewal task
        await until(lambda: all(c.base_amps == 6.0 for c in ocpp.controls.values()), 10,
                    "the fallbacks did not come back")
        assert not mix_overloads(config, sims, datetime.now(UTC), LEASE * 2)
