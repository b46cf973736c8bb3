"""End to end, in one process: the demo site's VTN, OCPP and Modbus chargers and meter against the runtime.

The curtailment arrives from the VTN, the chargers' limits drop under it, /api/status shows it, and a
clean stop leaves the OCPP chargers on their fallback. Also: the house load jumping cuts the chargers
within a tick.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.waiting import stopped
from support.waiting import until as wait_for

from gateway.config import load_config
from gateway.runtime.loop import Runtime
from gateway.sim.demo_site import DemoSite


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[DemoSite, Runtime, asyncio.Task[None]]]:
    demo = DemoSite(speed=20.0, curtail_after_s=60.0)  # the curtailment starts 3 s after registration
    await demo.start_peers()
    path = tmp_path / "demo.toml"
    path.write_text(demo.config_text(tmp_path / "demo.sqlite", tick_s=0.25))
    runtime = Runtime(load_config(path))
    task = asyncio.create_task(runtime.run())
    try:
        await asyncio.wait_for(runtime.started.wait(), 10)
        assert runtime.ocpp is not None
        await demo.start_chargers(f"ws://127.0.0.1:{runtime.ocpp.server.port}/ocpp")
        yield demo, runtime, task
    finally:
        runtime.stop()
        await stopped(task, 15)
        await demo.stop()


def total_kw(runtime: Runtime) -> float:
    last = runtime.last
    assert last is not None
    return sum(e.kw_per_a * last.limits[e.id] for e in last.evses if e.held_a is None)


async def test_curtailment_reaches_the_chargers_and_the_status(
    running: tuple[DemoSite, Runtime, asyncio.Task[None]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.runtime")
    demo, runtime, _ = running
    await wait_for(lambda: all(cp.ev.plugged for cp in demo.ocpp.values())
                   and all(s.plugged for s in demo.modbus.values()), 10)
    await wait_for(lambda: runtime.last is not None and runtime.last.ev_limit_kw is not None, 10)
    last = runtime.last
    assert last is not None and last.ev_limit_kw is not None
    cap = last.ev_limit_kw
    assert cap < 50  # level 2: a quarter of the eight chargers' ~177 kW

    def chargers_under_cap() -> bool:
        kw_per_a = runtime.site.evses[0].kw_per_a
        # A charger no profile limits may draw its maximum (32 A); one held at 0 A draws nothing.
        limits = [cp.limit_a() for cp in demo.ocpp.values() if cp.ev.plugged]
        drawn = sum(32.0 if limit is None else limit for limit in limits)
        drawn += sum(s.limit_a for s in demo.modbus.values() if s.plugged)
        return drawn * kw_per_a <= cap + 1e-6

    await wait_for(chargers_under_cap, 10)
    # The EV limit binds (once a burst of arrivals no longer makes the non-EV estimate the tighter one). The
    # demo runs with min_on_time_s = 0, so cars may take turns every tick while the conductor binds, and each
    # car starting is seen by the meter before its charger reports it: that can hold the estimate up for
    # longer than 10 s on a slow machine (seen once in CI). Being under the cap was checked just above.
    await wait_for(lambda: any("reason='ev (demo-curtail" in r.getMessage() for r in caplog.records), 30)
    assert runtime.status_url is not None
    status_url = runtime.status_url
    async with aiohttp.ClientSession() as http:
        status: dict[str, Any] = {}

        async def curtailment_binds_in_the_status() -> bool:
            # While cars take turns the non-EV estimate may for a moment make the service the tighter limit
            # again (see above): the status is read until it shows the curtailment binding.
            nonlocal status
            async with http.get(status_url + "api/status") as response:
                status = await response.json()
            return bool(status["site"]["limit_kw"] < 68)

        await wait_for(curtailment_binds_in_the_status, 30)
        async with http.get(runtime.status_url + "healthz") as response:
            assert response.status == 200
        async with http.get(runtime.status_url) as response:
            assert "<svg" in await response.text()
    assert status["vtn"]["registered"] is True
    assert {e["id"] for e in status["events"]} >= {"demo-curtail", "demo-price"}
    assert status["site"]["ev_limit_kw"] == pytest.approx(cap, abs=0.01)
    assert status["site"]["limit_kw"] < 68  # under the service's own ~68 kW: the curtailment binds
    assert {e["id"] for e in status["evses"]} == {"cp-1", "cp-2", "cp-3", "cp-4", "cp-5", "cp-6", "mb-1", "mb-2"}
    # the decisions are written by the store's writer just after they are sent: read until one is there
    store = runtime.decision_store
    assert store is not None
    await wait_for(lambda: any(r.accepted for r in store.recent(50)), 5, "no accepted decision stored")


async def test_a_house_load_jump_cuts_the_chargers_within_a_tick(
    running: tuple[DemoSite, Runtime, asyncio.Task[None]],
) -> None:
    demo, runtime, _ = running
    await wait_for(lambda: all(s.plugged for s in demo.modbus.values()), 10)
    await wait_for(lambda: runtime.last is not None and sum(runtime.last.limits.values()) > 40, 10)
    demo.house_a = 90.0  # of 100 A usable: almost nothing left for the EVs
    loop = asyncio.get_running_loop()
    began = loop.time()
    await wait_for(lambda: runtime.last is not None and runtime.last.non_ev[0].amps >= 80
                   and sum(runtime.last.limits.values()) <= 12, 5)
    # A meter poll (0.5 s) plus the sim's own update (0.2 s) plus one tick (0.25 s), with slack for a busy machine.
    assert loop.time() - began < 3.5


async def test_stop_leaves_the_chargers_on_their_fallback(
    running: tuple[DemoSite, Runtime, asyncio.Task[None]],
) -> None:
    demo, runtime, task = running
    await wait_for(lambda: all(cp.limit_a() is not None and cp.limit_a() != 6.0 for cp in demo.ocpp.values()
                               if cp.ev.plugged) and any(cp.ev.plugged for cp in demo.ocpp.values()), 10)
    runtime.stop()
    await stopped(task, 15)
    held = {cid: cp.limit_a() for cid, cp in demo.ocpp.items()}
    assert all(a in (None, 6.0) for a in held.values()), held
    assert runtime.store is not None
    with pytest.raises(Exception):  # noqa: B017 (sqlite3.ProgrammingError: the store is closed)
        runtime.store.db.execute("SELECT 1")
