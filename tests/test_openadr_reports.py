"""Reports against the real openleadr VTN: METADATA registration, oadrCreateReport honoured, values from a
fake TelemetrySource, a backlog kept in SQLite while the VTN is unreachable and delivered once."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.config.openadr import OpenAdrSection, VtnSection
from gateway.openadr import reports
from gateway.openadr.ven import Ven
from gateway.ports import Curtailment
from gateway.sim.vtn import SimVtn
from gateway.store.vtn import VenStore


class FakeTelemetry:
    def __init__(self) -> None:
        self.site_kw: float | None = 42.0
        self.n = 0
        self.fail = False

    def site_power_kw(self) -> float | None:
        self.n += 1
        if self.fail:
            raise RuntimeError("meter driver bug")
        return None if self.site_kw is None else self.site_kw + self.n

    def site_energy_kwh(self) -> float | None:
        return 1000.0 + self.n

    def ev_power_kw(self) -> float | None:
        return 22.0

    def charger_power_kw(self) -> dict[str, float]:
        return {"cp-1": 11.0, "cp-2": 11.0}

    def limit_kw(self) -> float | None:
        return 30.0

    def online(self) -> bool:
        return True

    def curtailment(self) -> Curtailment:
        return Curtailment(site_kw=30.0)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def vtn() -> AsyncIterator[SimVtn]:
    sim = SimVtn(request_reports={reports.SITE_POWER: (timedelta(seconds=60), timedelta(seconds=120))})
    await sim.start()
    yield sim
    await sim.stop()


def make_ven(tmp_path: Path, vtn: SimVtn, clock: Clock) -> tuple[Ven, VenStore]:
    store = VenStore.open(tmp_path / "gw.sqlite")
    config = VtnSection(url=vtn.url, ven_name="site-1", allow_plain_http=True, backoff_initial_s=0.01,
                        backoff_max_s=0.02, request_timeout_s=2.0)
    ven = Ven(config, OpenAdrSection(report_interval_s=10), store, telemetry=FakeTelemetry(),
              charger_ids=("cp-1", "cp-2"), clock=clock, rng=random.Random(1))
    return ven, store


async def test_metadata_offered_at_registration_and_vtn_request_honoured(tmp_path: Path, vtn: SimVtn) -> None:
    clock = Clock()
    ven, store = make_ven(tmp_path, vtn, clock)
    try:
        await ven.load()
        await ven.step()
        offered = vtn.server.registered_reports[ven.ven_id]
        names = {r["report_name"] for r in offered}
        assert names == {"TELEMETRY_USAGE", "TELEMETRY_STATUS"}
        r_ids = {str(d["r_id"]) for r in offered for d in r["report_descriptions"]}
        assert {reports.SITE_POWER, reports.EV_POWER, "charger_power_kw:cp-2", reports.LIMIT} <= r_ids
        (rr,) = store.report_requests()
        assert rr.r_ids == (reports.SITE_POWER,) and rr.granularity_s == 60 and rr.report_back_s == 120
        for _ in range(3):  # 12:00, 12:01, 12:02
            await ven.sample_once()
            clock.advance(60)
        await ven.step()
        assert [v for r, _, v in vtn.received if r == reports.SITE_POWER] == [43.0, 44.0, 45.0]
        assert store.unsent_readings() == []
    finally:
        await ven.link.close()
        store.close()


async def test_create_report_from_the_vtn_and_cancel(tmp_path: Path, vtn: SimVtn) -> None:
    clock = Clock()
    ven, store = make_ven(tmp_path, vtn, clock)
    try:
        await ven.load()
        await ven.step()
        request_id = vtn.create_report(ven.ven_id or "", reports.USAGE_ID,
                                       [reports.EV_POWER, "charger_power_kw:cp-1", "no-such-rid"],
                                       granularity=timedelta(seconds=30), report_back=timedelta(seconds=30))
        await ven.step()
        rr = {r.report_request_id: r for r in store.report_requests()}[request_id]
        assert rr.r_ids == (reports.EV_POWER, "charger_power_kw:cp-1") and rr.granularity_s == 30
        await ven.sample_once()
        clock.advance(30)
        await ven.step()
        got = sorted((r, v) for r, _, v in vtn.received if r != reports.SITE_POWER)
        assert got == [("charger_power_kw:cp-1", 11.0), (reports.EV_POWER, 22.0)]
        vtn.cancel_report(ven.ven_id or "", request_id)
        await ven.step()
        assert request_id not in {r.report_request_id for r in store.report_requests()}
    finally:
        await ven.link.close()
        store.close()


async def test_backlog_while_vtn_unreachable_is_delivered_once_without_gaps(tmp_path: Path, vtn: SimVtn) -> None:
    clock = Clock()
    ven, store = make_ven(tmp_path, vtn, clock)
    try:
        await ven.load()
        await ven.step()
        for _ in range(2):  # 12:00, 12:01; sent at 12:02, one report-back duration after the request
            await ven.sample_once()
            clock.advance(60)
            await ven.step()
        assert len([r for r, _, _ in vtn.received if r == reports.SITE_POWER]) == 2
        port = vtn.port
        await vtn.stop()
        for _ in range(10):  # ten minutes without the VTN: sampling goes on, sending fails
            await ven.sample_once()
            clock.advance(60)
            await ven.step()
        assert ven.failures >= 10
        assert len(store.unsent_readings()) == 10
        await vtn.start(port)
        clock.advance(120)
        await ven.step()
        await ven.step()
        times = [t for r, t, _ in vtn.received if r == reports.SITE_POWER]
        assert len(times) == 12 and len(set(times)) == 12, "every sample once"
        assert all(b - a == timedelta(seconds=60) for a, b in itertools.pairwise(times)), "no gap"
        assert store.unsent_readings() == []
    finally:
        await ven.link.close()
        store.close()


async def test_backlog_survives_a_gateway_restart(tmp_path: Path, vtn: SimVtn) -> None:
    clock = Clock()
    ven, store = make_ven(tmp_path, vtn, clock)
    await ven.load()
    await ven.step()
    port = vtn.port
    await vtn.stop()
    for _ in range(3):
        await ven.sample_once()
        clock.advance(60)
    await ven.link.close()
    store.close()
    await vtn.start(port)
    ven, store = make_ven(tmp_path, vtn, clock)
    try:
        await ven.load()
        await ven.step()
        assert len([r for r, _, _ in vtn.received if r == reports.SITE_POWER]) == 3
        assert store.unsent_readings() == []
    finally:
        await ven.link.close()
        store.close()


def test_unknown_values_are_skipped_not_zeroed() -> None:
    t = FakeTelemetry()
    t.site_kw = None
    assert reports.sample(t, [reports.SITE_POWER, reports.EV_POWER, "charger_power_kw:cp-9"]) == [
        (reports.EV_POWER, 22.0)
    ]


async def test_backlog_outlives_a_vtn_that_forgot_us(tmp_path: Path, vtn: SimVtn) -> None:
    clock = Clock()
    ven, store = make_ven(tmp_path, vtn, clock)
    try:
        await ven.load()
        await ven.step()
        (first,) = store.report_requests()
        for _ in range(2):
            await ven.sample_once()
            clock.advance(60)
            await ven.step()
        vtn.forget(ven.ven_id or "")  # it lost its database: it answers us with oadrRequestReregistration
        for _ in range(3):
            await ven.sample_once()
            clock.advance(60)
        await ven.step()  # registers again; the VTN asks for the same report under a new id
        await ven.step()
        (second,) = store.report_requests()
        assert second.report_request_id != first.report_request_id
        times = [t for r, t, _ in vtn.received if r == reports.SITE_POWER]
        assert len(times) == 5 and all(b - a == timedelta(seconds=60) for a, b in itertools.pairwise(times))
        assert store.unsent_readings() == []
    finally:
        await ven.link.close()
        store.close()


async def test_a_gateway_restart_does_not_double_the_report(tmp_path: Path, vtn: SimVtn) -> None:
    clock = Clock()
    ven, store = make_ven(tmp_path, vtn, clock)
    await ven.load()
    await ven.step()
    await ven.sample_once()
    await ven.link.close()
    store.close()
    ven, store = make_ven(tmp_path, vtn, clock)  # offers its reports again; the VTN asks again, new id
    try:
        await ven.load()
        await ven.step()
        assert len(store.report_requests()) == 1, "the request asked again replaces the old one"
        for _ in range(2):
            clock.advance(60)
            await ven.sample_once()
        clock.advance(60)
        await ven.step()
        times = [t for r, t, _ in vtn.received if r == reports.SITE_POWER]
        assert len(times) == 3 and len(set(times)) == 3
    finally:
        await ven.link.close()
        store.close()


async def test_a_failing_telemetry_source_is_logged_once_retried_and_recovers(
    tmp_path: Path, vtn: SimVtn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.openadr")
    store = VenStore.open(tmp_path / "gw.sqlite")
    source = FakeTelemetry()
    source.fail = True
    config = VtnSection(url=vtn.url, ven_name="site-1", allow_plain_http=True, backoff_initial_s=0.01,
                        backoff_max_s=0.05, poll_s=0.05)
    ven = Ven(config, OpenAdrSection(report_interval_s=10), store, telemetry=source, rng=random.Random(1))
    task = asyncio.create_task(ven.run())
    try:
        for _ in range(500):
            if source.n >= 4:
                break
            await asyncio.sleep(0.01)
        assert source.n >= 4, "the sampler keeps trying"
        failed = [r for r in caplog.records if "sampling failed" in r.getMessage()]
        assert len(failed) == 1 and store.unsent_readings() == []
        source.fail = False
        for _ in range(500):
            if any("sampling works again" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.01)
        assert [r.r_id for r in store.unsent_readings()] == [reports.SITE_POWER]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        store.close()


async def test_a_one_shot_request_gets_one_report_and_ends(tmp_path: Path, vtn: SimVtn) -> None:
    clock = Clock()
    ven, store = make_ven(tmp_path, vtn, clock)
    try:
        await ven.load()
        await ven.step()
        request_id = vtn.create_report(ven.ven_id or "", reports.STATUS_ID, [reports.LIMIT, reports.ONLINE],
                                       granularity=timedelta(0), report_back=timedelta(0))
        await ven.step()
        assert request_id in {r.report_request_id for r in store.report_requests()}
        for _ in range(3):
            await ven.sample_once()
            clock.advance(60)
            await ven.step()
        got = sorted((r, v) for r, _, v in vtn.received if r != reports.SITE_POWER)
        assert got == [(reports.LIMIT, 30.0), (reports.ONLINE, 1.0)]
        assert request_id not in {r.report_request_id for r in store.report_requests()}
    finally:
        await ven.link.close()
        store.close()


async def test_granularity_and_report_back_duration_are_honoured(tmp_path: Path, vtn: SimVtn) -> None:
    clock = Clock()
    ven, store = make_ven(tmp_path, vtn, clock)
    try:
        await ven.load()
        await ven.step()
        request_id = vtn.create_report(ven.ven_id or "", reports.USAGE_ID, [reports.EV_POWER],
                                       granularity=timedelta(minutes=1), report_back=timedelta(minutes=5))
        await ven.step()
        seen = []
        for _ in range(10):
            await ven.sample_once()  # a sample per minute: 12:00 .. 12:09
            clock.advance(60)
            await ven.step()
            seen.append(len([r for r, _, _ in vtn.received if r == reports.EV_POWER]))
        assert seen == [0, 0, 0, 0, 5, 5, 5, 5, 5, 10], "five one-minute intervals every five minutes"
        times = [t for r, t, _ in vtn.received if r == reports.EV_POWER]
        assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(times))
        assert request_id in {r.report_request_id for r in store.report_requests()}
    finally:
        await ven.link.close()
        store.close()
