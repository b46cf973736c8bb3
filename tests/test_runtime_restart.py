"""SIGKILL mid-event: `gateway run` (a subprocess) against a real openleadr VTN in this process, killed
while a randomized (startafter) event is in force, then started again on the same store. It must act on
the same schedule with the same randomized offset, and the VTN must get every stored telemetry sample
exactly once: no duplicate timestamps, nothing the gateway sampled left out."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.gateway_process import Gateway, get_json, stored
from support.waiting import until

from gateway.openadr import reports
from gateway.sim.vtn import SimVtn

# Subprocesses and real peers end to end: `pytest -m "not slow"` leaves these out.
pytestmark = pytest.mark.slow

GRANULARITY = timedelta(seconds=1)


@pytest.fixture
async def vtn() -> AsyncIterator[SimVtn]:
    sim = SimVtn(poll_s=1.0, request_reports={reports.EV_POWER: (GRANULARITY, GRANULARITY)})
    await sim.start()
    yield sim
    await sim.stop()


def site_config(tmp_path: Path, vtn: SimVtn) -> Path:
    config = tmp_path / "site.toml"
    config.write_text("\n".join([
        "[site]", 'wiring = "three-phase-400/230"', "service_breaker_a = 63", "",
        # A charger that never dials in: the event's limit still has EV capacity to act on.
        "[[chargers]]", 'id = "cp-1"', 'protocol = "ocpp1.6"', 'phases = "L1-L2-L3"', "max_a = 32", "",
        "[vtn]", f'url = "{vtn.url}"', 'ven_name = "restart-ven"', "allow_plain_http = true", "poll_s = 1",
        "backoff_initial_s = 0.2", "backoff_max_s = 1", "",
        "[openadr]", "report_interval_s = 1", "",
        "[ocpp]", "port = 0", "",
        "[control]", "tick_s = 0.25", "",
        "[status]", "port = 0", "",
        "[store]", f'path = "{tmp_path / "gw.sqlite"}"', "",
    ]))
    return config


def sent_times(store: Path) -> list[datetime]:
    """The samples of the EV power report the store has marked sent, in order."""
    rows = stored(store, "SELECT measured_at FROM report_backlog WHERE r_id = ? AND sent_at IS NOT NULL "
                  "ORDER BY measured_at", (reports.EV_POWER,))
    return [datetime.fromisoformat(m) for (m,) in rows]


def received_times(vtn: SimVtn) -> list[datetime]:
    return [t for r_id, t, _ in list(vtn.received) if r_id == reports.EV_POWER]


async def test_sigkill_mid_event_resumes_the_same_schedule_and_sends_every_report_once(
        tmp_path: Path, vtn: SimVtn) -> None:
    config = site_config(tmp_path, vtn)
    store = tmp_path / "gw.sqlite"
    gateway = Gateway(config)
    try:
        url = await gateway.status_url()
        await until(lambda: bool(vtn.vens), 10, "the gateway never registered")
        ven_id = next(iter(vtn.vens))
        # In force now whatever offset is drawn: it began two minutes ago, randomized over a minute.
        event_id = vtn.add_event(ven_id, [("SIMPLE", "level", [2])], start=datetime.now(UTC) - timedelta(minutes=2),
                                 interval=timedelta(minutes=15), start_after=timedelta(minutes=1))
        await until(lambda: bool(stored(store, "SELECT 1 FROM events WHERE event_id = ?", (event_id,))), 10,
                    "the event never reached the store")
        (offset,) = stored(store, "SELECT start_offset_s FROM events WHERE event_id = ?", (event_id,))[0]
        before: dict[str, Any] = {}

        async def in_force() -> bool:
            before.update(await get_json(url + "api/status"))
            return before["site"]["ev_limit_kw"] is not None

        for _ in range(100):
            if await in_force():
                break
            await asyncio.sleep(0.1)
        assert before["site"]["ev_limit_kw"] is not None, "the event is not in force"
        (event_before,) = [e for e in before["events"] if e["id"] == event_id]
        assert event_before["active"]
        await until(lambda: len(received_times(vtn)) >= 3, 10, "no reports before the kill")
        gateway.kill()
        killed_at = datetime.now(UTC)

        gateway = Gateway(config)
        url = await gateway.status_url()
        await until(lambda: any(t > killed_at for t in received_times(vtn)), 15, "no reports after the restart")
        after = await get_json(url + "api/status")
        (event_after,) = [e for e in after["events"] if e["id"] == event_id]
        assert stored(store, "SELECT start_offset_s FROM events WHERE event_id = ?", (event_id,)) == [(offset,)]
        assert event_after["start"] == event_before["start"], "the same randomized start"
        assert event_after["end"] == event_before["end"] and event_after["active"]
        assert after["site"]["ev_limit_kw"] == before["site"]["ev_limit_kw"], "the same schedule"
        assert after["vtn"]["ven_id"] == before["vtn"]["ven_id"], "the registration was kept"
        await until(lambda: len([t for t in received_times(vtn) if t > killed_at]) >= 3, 10)
        # The VEN marks a report sent just after the VTN's answer: a clean stop in between leaves it to be
        # sent again at the next start (a duplicate, never a loss). What this test checks is the kill, so
        # the stop waits until the store has marked what the VTN got.
        await until(lambda: set(received_times(vtn)) <= set(sent_times(store)), 10,
                    "the store never marked what the VTN got")
        text = await gateway.terminate()
        assert "Traceback" not in text
    finally:
        gateway.close()

    times = received_times(vtn)
    # A kill between the VTN's answer and the store marking the report sent makes that one report go out
    # again after the restart: no delivery is exactly-once across a SIGKILL. Only samples of the report in
    # flight then (measured before the kill, one report's span) may come twice; nothing else, ever.
    twice = sorted({t for t in times if times.count(t) > 1})
    assert all(t < killed_at for t in twice), ("a report after the kill was sent twice", twice, killed_at)
    assert not twice or twice[-1] - twice[0] <= 3 * GRANULARITY, ("more than the report in flight came twice", twice)
    times = sorted(set(times))
    rows = stored(store, "SELECT measured_at, sent_at FROM report_backlog WHERE r_id = ? ORDER BY measured_at",
                  (reports.EV_POWER,))
    sent = sent_times(store)
    unsent = [datetime.fromisoformat(m) for m, s in rows if s is None]
    assert sorted(times) == sent, "what the VTN got is what the store marked sent"
    assert all(u > max(sent) for u in unsent), "nothing sampled before the last report was left out"
    # A sample about every second, except once: while the gateway was dead nothing was sampled (and none is
    # invented); that one gap spans the kill.
    measured = sorted(datetime.fromisoformat(m) for m, _ in rows)
    gaps = [(a, b) for a, b in itertools.pairwise(measured) if b - a > GRANULARITY * 1.5]
    assert len(measured) >= 6 and len(gaps) <= 1, gaps
    assert all(a < killed_at < b for a, b in gaps), (gaps, killed_at)
