"""A DR event in force and the gateway dies: the chargers' own fallbacks together still keep the event's
limit (issue: the fallbacks summed to 20.7 kW against a 10 kW event). Checked at every instant from the
strict simulated chargers' records, through the gateway's death and after every lease ran out."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.conductors import overloads
from support.ocpp import PASSWORD
from support.runtime import running
from support.waiting import stopped, until

from gateway.config import parse_config
from gateway.domain import Event, EventStatus, Interval, Signal, SignalName, SignalType
from gateway.sim.ocpp_cp import Ev, SimChargePoint

pytestmark = pytest.mark.slow
IDS = ("cp1", "cp2", "cp3", "cp4")
KW_PER_A = 3 * 230.0 / 1000.0  # three-phase, counted at PF 1 per conductor


async def test_a_dr_limit_holds_through_the_gateways_death_on_the_chargers_fallbacks(tmp_path: Path) -> None:
    config = parse_config({
        "site": {"wiring": "three-phase-400/230", "service_breaker_a": 160},
        "chargers": [{"id": cid, "protocol": "ocpp1.6", "phases": "L1-L2-L3", "max_a": 32, "fallback_a": 10,
                      "ocpp": {"password": PASSWORD}} for cid in IDS],
        "openadr": {"simple_levels": {"0": 1.0, "1": 0.5, "2": 0.25, "3": 0.125}},
        "ocpp": {"port": 0, "lease_s": 2, "meter_interval_s": 1, "ack_wait_s": 1, "response_timeout_s": 2},
        "control": {"tick_s": 0.25},
        "store": {"path": str(tmp_path / "gw.sqlite")},
    })
    ev_kw = 4 * 32 * KW_PER_A * 0.125  # level 3: an eighth of the EV capacity, 11.0 kW
    assert ev_kw < 4 * 10 * KW_PER_A  # the configured fallbacks alone would break it (27.6 kW)
    runtime, task = await running(config)
    ocpp = runtime.ocpp
    assert ocpp is not None
    base = f"ws://127.0.0.1:{ocpp.server.port}/ocpp"
    sims = {cid: SimChargePoint(base, cid, password=PASSWORD, ev=Ev(max_a=32), meter_interval_s=1) for cid in IDS}
    start = datetime.now(UTC)
    try:
        await asyncio.gather(*(s.start() for s in sims.values()))
        for sim in sims.values():
            await sim.plug_in()
        await until(lambda: all(s.draw_a() > 6 for s in sims.values()), 10, "the EVs never charged")
        now = datetime.now(UTC)
        runtime.events_changed([Event(
            "dr-1", 0, now - timedelta(minutes=1), timedelta(hours=1),
            (Signal(SignalName.SIMPLE, SignalType.LEVEL, (Interval(timedelta(hours=1), 3.0),)),),
            status=EventStatus.ACTIVE)], now)
        in_force = datetime.now(UTC) + timedelta(seconds=2)  # the decreases take a tick and their answers
        await until(lambda: sum(s.draw_a() for s in sims.values()) * KW_PER_A <= ev_kw, 10, "not curtailed")
        # the bases follow the limits down, so that what the chargers fall back to keeps the event too
        # (both start at the configured fallback: equal alone is not lowered, and on a busy machine the
        # gateway could die before the curtailed bases were worked out at all)
        await until(lambda: all(c.base_amps == c.base_wanted for c in ocpp.controls.values())
                    and sum(c.base_amps for c in ocpp.controls.values()) * KW_PER_A <= ev_kw, 10,
                    "the fallbacks were not lowered")
        await ocpp.stop(release=False)  # the gateway dies: nothing released, nothing renewed
        await asyncio.sleep(2.5)  # every lease runs out: each charger is on its own fallback now
        fallbacks = {cid: s.limit_a() for cid, s in sims.items()}
        assert sum(min(a or 0.0, 32.0) for a in fallbacks.values()) * KW_PER_A <= ev_kw + 1e-6, fallbacks
    finally:
        runtime.stop()
        await stopped(task, 15)
        await asyncio.gather(*(s.stop() for s in sims.values()))
    found = overloads(config, sims, start, datetime.now(UTC), [(in_force, datetime.now(UTC), ev_kw)])
    assert not found, "\n".join(str(o) for o in found[:10])
