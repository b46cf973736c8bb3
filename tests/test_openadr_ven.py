"""VEN against a real openleadr VTN on 127.0.0.1: registration, every signal, lifecycle, restart, backoff.

Every test runs twice: over plain HTTP and over HTTPS with mutual TLS and pinned fingerprints, with
certificates made by `gateway certs init`."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import random
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.waiting import until

from gateway.certs import DevPki
from gateway.cli import main
from gateway.config.openadr import OpenAdrSection, VtnSection
from gateway.domain import Event, EventStatus, OptState, SignalName, SignalType
from gateway.openadr.ven import Ven
from gateway.schedule import ScheduleSettings, build_schedule, segment_at
from gateway.sim.vtn import SimVtn
from gateway.store.vtn import VenStore


class Sink:
    def __init__(self) -> None:
        self.calls: list[list[Event]] = []

    def events_changed(self, events: Sequence[Event], now: datetime) -> None:
        self.calls.append(list(events))

    def opt_of(self, event_id: str) -> OptState:
        return OptState.NONE


def cli_pki(directory: Path) -> DevPki:
    """Certificates made the way a user makes them: `gateway certs init DIR`, fingerprints read from its output."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["certs", "init", str(directory), "--ven-name", "site-1"]) == 0
    prints = dict(re.findall(r"(VTN|VEN) fingerprint: (\S+)", out.getvalue()))
    return DevPki(directory / "ca.crt", directory / "vtn.crt", directory / "vtn.key", directory / "ven.crt",
                  directory / "ven.key", prints["VTN"], prints["VEN"])


@dataclass(frozen=True)
class Transport:
    """Every flow runs once over plain HTTP (allowed explicitly) and once over HTTPS with mutual TLS."""

    name: str
    pki: DevPki | None

    def make_vtn(self, **kw: Any) -> SimVtn:
        if self.pki is None:
            return SimVtn(**kw)
        return SimVtn(http_cert=str(self.pki.vtn_cert), http_key=str(self.pki.vtn_key), ca_file=str(self.pki.ca_cert),
                      ven_fingerprints={"site-1": self.pki.ven_fingerprint}, **kw)

    def config(self, url: str, **kw: object) -> VtnSection:
        base: dict[str, object] = {"url": url, "ven_name": "site-1", "backoff_initial_s": 0.05,
                                   "backoff_max_s": 0.2, "request_timeout_s": 2.0, "poll_s": 0.05}
        if self.pki is None:
            base["allow_plain_http"] = True
        else:
            base.update(cert=str(self.pki.ven_cert), key=str(self.pki.ven_key), ca_file=str(self.pki.ca_cert),
                        vtn_fingerprint=self.pki.vtn_fingerprint)
        base.update(kw)
        return VtnSection.model_validate(base)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return cli_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(params=["http", "mtls"])
def transport(request: pytest.FixtureRequest, pki: DevPki) -> Transport:
    return Transport(request.param, pki if request.param == "mtls" else None)


class Harness:
    def __init__(self, tmp: Path, vtn: SimVtn, transport: Transport, config: OpenAdrSection | None = None,
                 seed: int = 1) -> None:
        self.tmp = tmp
        self.vtn = vtn
        self.transport = transport
        self.config = config or OpenAdrSection(resources={"fleet": ("panel-a",)}, ev_capacity_kw=50.0)
        self.sink = Sink()
        self.seed = seed
        self.ven: Ven | None = None
        self.task: asyncio.Task[None] | None = None
        self.store: VenStore | None = None

    def make_ven(self, **vtn_kw: object) -> Ven:
        self.store = VenStore.open(self.tmp / "gw.sqlite")
        self.ven = Ven(self.transport.config(self.vtn.url, **vtn_kw), self.config, self.store, sink=self.sink,
                       rng=random.Random(self.seed))
        return self.ven

    async def start(self, **vtn_kw: object) -> Ven:
        ven = self.make_ven(**vtn_kw)
        self.task = asyncio.create_task(ven.run())
        await asyncio.wait_for(ven.registered.wait(), 5)
        return ven

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        if self.store is not None:
            self.store.close()
            self.store = None

    @property
    def ven_id(self) -> str:
        assert self.ven is not None and self.ven.ven_id is not None
        return self.ven.ven_id

    async def events(self) -> dict[str, Event]:
        assert self.ven is not None
        return await self.ven.events()

    async def wait_event(self, event_id: str, check: Callable[[Event], bool] = lambda e: True) -> Event:
        async def ok() -> bool:
            e = (await self.events()).get(event_id)
            return e is not None and check(e)

        await until(ok)
        return (await self.events())[event_id]


@pytest.fixture
async def vtn(transport: Transport) -> AsyncIterator[SimVtn]:
    sim = transport.make_vtn()
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def h(tmp_path: Path, vtn: SimVtn, transport: Transport) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path, vtn, transport)
    yield harness
    await harness.stop()


async def test_registers_and_keeps_ven_id_and_registration_id_in_sqlite(h: Harness) -> None:
    await h.start()
    assert h.store is not None
    reg = h.store.registration()
    assert reg.ven_id == h.ven_id and reg.registration_id and reg.poll_s == pytest.approx(1.0)
    assert h.vtn.vens[h.ven_id].registration_id == reg.registration_id


SIGNALS: list[tuple[str, str, list[float], SignalName, SignalType]] = [
    ("SIMPLE", "level", [1, 3], SignalName.SIMPLE, SignalType.LEVEL),
    ("LOAD_CONTROL", "x-loadControlCapacity", [0.5], SignalName.LOAD_CONTROL, SignalType.X_LOAD_CONTROL_CAPACITY),
    ("LOAD_CONTROL", "x-loadControlLevelOffset", [2], SignalName.LOAD_CONTROL,
     SignalType.X_LOAD_CONTROL_LEVEL_OFFSET),
    ("LOAD_CONTROL", "x-loadControlPercentOffset", [-30], SignalName.LOAD_CONTROL,
     SignalType.X_LOAD_CONTROL_PERCENT_OFFSET),
    ("LOAD_CONTROL", "x-loadControlSetpoint", [11], SignalName.LOAD_CONTROL, SignalType.X_LOAD_CONTROL_SETPOINT),
    ("LOAD_DISPATCH", "setpoint", [40], SignalName.LOAD_DISPATCH, SignalType.SETPOINT),
    ("LOAD_DISPATCH", "delta", [-10], SignalName.LOAD_DISPATCH, SignalType.DELTA),
    ("LOAD_DISPATCH", "multiplier", [0.8], SignalName.LOAD_DISPATCH, SignalType.MULTIPLIER),
    ("ELECTRICITY_PRICE", "price", [0.31, 0.12], SignalName.ELECTRICITY_PRICE, SignalType.PRICE),
    ("ELECTRICITY_PRICE", "priceRelative", [0.05], SignalName.ELECTRICITY_PRICE, SignalType.PRICE_RELATIVE),
    ("ENERGY_PRICE", "priceMultiplier", [1.5], SignalName.ENERGY_PRICE, SignalType.PRICE_MULTIPLIER),
    ("DEMAND_CHARGE", "price", [12.0], SignalName.DEMAND_CHARGE, SignalType.PRICE),
]


async def test_every_signal_type_becomes_a_domain_signal_and_is_stored_before_the_answer(h: Harness) -> None:
    await h.start()
    start = datetime.now(UTC) + timedelta(hours=1)
    ids = {}
    for name, stype, values, _, _ in SIGNALS:
        ids[(name, stype)] = h.vtn.add_event(h.ven_id, [(name, stype, values)], start=start,
                                             unit="kW" if name == "LOAD_DISPATCH" else None)
    await until(lambda: len(h.vtn.opt_responses) >= len(SIGNALS))
    stored = await h.events()
    for name, stype, values, dname, dtype in SIGNALS:
        e = stored[ids[(name, stype)]]
        (signal,) = e.signals
        assert (signal.name, signal.type) == (dname, dtype)
        assert [i.value for i in signal.intervals] == pytest.approx(values)
        assert all(i.duration == timedelta(minutes=15) for i in signal.intervals)
        assert e.dtstart == start.replace(microsecond=start.microsecond)
        assert e.opt is OptState.OPT_IN
    assert {o for _, _, o in h.vtn.opt_responses} == {"optIn"}
    assert h.sink.calls, "the runtime was told"


async def test_what_the_vtn_sends_is_what_the_schedule_acts_on(h: Harness) -> None:
    await h.start()
    start = datetime.now(UTC) + timedelta(hours=1)
    h.vtn.add_event(h.ven_id, [("SIMPLE", "level", [1])], start=start, interval=timedelta(minutes=30))
    h.vtn.add_event(h.ven_id, [("LOAD_DISPATCH", "setpoint", [40])], start=start, interval=timedelta(minutes=30),
                    unit="kW")
    h.vtn.add_event(h.ven_id, [("ELECTRICITY_PRICE", "price", [0.31])], start=start,
                    interval=timedelta(minutes=30))
    h.vtn.add_event(h.ven_id, [("SIMPLE", "level", [3])], start=start, test_event=True)
    await until(lambda: len(h.vtn.opt_responses) >= 4)
    events = list((await h.events()).values())
    schedule = build_schedule(events, datetime.now(UTC), ScheduleSettings(ev_capacity_kw=50.0))
    during = segment_at(schedule, start + timedelta(minutes=10))
    assert during is not None
    assert (during.ev_kw, during.site_kw, during.price) == (25.0, 40.0, 0.31)  # the test event did nothing


async def test_modification_replaces_and_keeps_the_randomized_offset(h: Harness) -> None:
    await h.start()
    eid = h.vtn.add_event(h.ven_id, [("SIMPLE", "level", [1])], start_after=timedelta(minutes=10))
    first = await h.wait_event(eid)
    assert timedelta(0) <= first.start_offset <= timedelta(minutes=10)
    assert first.start_offset > timedelta(0)
    h.vtn.modify_event(h.ven_id, eid, values=[2])
    second = await h.wait_event(eid, lambda e: e.modification_number == 1)
    assert second.signals[0].intervals[0].value == 2
    assert second.start_offset == first.start_offset


async def test_cancel_of_an_active_event_ends_it_after_the_same_offset(h: Harness) -> None:
    await h.start()
    start = datetime.now(UTC) - timedelta(minutes=5)
    eid = h.vtn.add_event(h.ven_id, [("SIMPLE", "level", [2, 2, 2])], start=start)
    await h.wait_event(eid)
    h.vtn.cancel_event(h.ven_id, eid)
    e = await h.wait_event(eid, lambda e: e.status is EventStatus.CANCELLED)
    assert e.cancelled_at is not None and e.acted_on
    assert e.end is not None and e.end <= datetime.now(UTC) + timedelta(seconds=1)


async def test_cancel_before_start_means_never_acted_on(h: Harness) -> None:
    await h.start()
    eid = h.vtn.add_event(h.ven_id, [("SIMPLE", "level", [2])], start=datetime.now(UTC) + timedelta(hours=2))
    await h.wait_event(eid)
    h.vtn.cancel_event(h.ven_id, eid)
    e = await h.wait_event(eid, lambda e: e.status is EventStatus.CANCELLED)
    assert e.cancelled_at is None and not e.acted_on


async def test_event_the_vtn_stops_listing_is_cancelled_implicitly(h: Harness) -> None:
    await h.start()
    keep = h.vtn.add_event(h.ven_id, [("SIMPLE", "level", [1])])
    gone = h.vtn.add_event(h.ven_id, [("SIMPLE", "level", [3])])
    await h.wait_event(gone)
    h.vtn.drop_event(h.ven_id, gone)
    e = await h.wait_event(gone, lambda e: e.status is EventStatus.CANCELLED)
    assert not e.acted_on
    assert (await h.events())[keep].status is not EventStatus.CANCELLED


async def test_test_event_is_acknowledged_and_never_acted_on(h: Harness) -> None:
    await h.start()
    eid = h.vtn.add_event(h.ven_id, [("SIMPLE", "level", [3])], test_event=True)
    e = await h.wait_event(eid)
    assert e.test_event and not e.acted_on
    await until(lambda: (h.ven_id, eid, "optIn") in h.vtn.opt_responses)


async def test_response_required_never_is_stored_but_not_answered(h: Harness) -> None:
    await h.start()
    quiet = h.vtn.add_event(h.ven_id, [("SIMPLE", "level", [1])], response_required="never")
    loud = h.vtn.add_event(h.ven_id, [("SIMPLE", "level", [1])])
    await h.wait_event(quiet)
    await until(lambda: any(e == loud for _, e, _ in h.vtn.opt_responses))
    assert not any(e == quiet for _, e, _ in h.vtn.opt_responses)


async def test_priority_targets_and_market_context_are_kept(h: Harness) -> None:
    await h.start()
    eid = h.vtn.add_event(h.ven_id, [("SIMPLE", "level", [1])], priority=2, resource_ids=["fleet", "other"],
                          market_context="http://sim.example/programs/ev")
    e = await h.wait_event(eid)
    assert e.priority == 2 and e.targets == ("fleet",) and e.market_context == "http://sim.example/programs/ev"


async def test_event_outside_the_enrolled_program_is_opted_out(
    tmp_path: Path, vtn: SimVtn, transport: Transport
) -> None:
    h = Harness(tmp_path, vtn, transport, OpenAdrSection(market_contexts=("http://utility/ev",)))
    try:
        await h.start()
        eid = h.vtn.add_event(h.ven_id, [("SIMPLE", "level", [1])], market_context="http://utility/other")
        e = await h.wait_event(eid)
        assert e.opt is OptState.OPT_OUT and not e.acted_on
        await until(lambda: (h.ven_id, eid, "optOut") in h.vtn.opt_responses)
    finally:
        await h.stop()


async def test_randomized_offset_survives_a_restart_and_registration_is_reused(h: Harness) -> None:
    ven = await h.start()
    eid = h.vtn.add_event(h.ven_id, [("SIMPLE", "level", [1])], start_after=timedelta(minutes=30))
    before = await h.wait_event(eid)
    reg_before = ven.registration
    await h.stop()
    h.seed = 999  # a different generator would draw a different offset
    h2 = Harness(h.tmp, h.vtn, h.transport, seed=999)
    h2.task = asyncio.create_task(h2.make_ven().run())
    try:
        await until(lambda: h2.ven is not None and h2.ven.polls > 2)
        assert h2.ven is not None
        assert h2.ven.registration.registration_id == reg_before.registration_id  # no new registration
        h.vtn.modify_event(reg_before.ven_id or "", eid, values=[2])
        after = await h2.wait_event(eid, lambda e: e.modification_number == 1)
        assert after.start_offset == before.start_offset
    finally:
        await h2.stop()


async def test_events_changed_while_the_gateway_was_down_are_picked_up_at_start(h: Harness) -> None:
    await h.start()
    gone = h.vtn.add_event(h.ven_id, [("SIMPLE", "level", [1])])
    changed = h.vtn.add_event(h.ven_id, [("SIMPLE", "level", [1])])
    await h.wait_event(changed)
    await h.stop()
    h.vtn.drop_event(h.ven_id, gone)
    h.vtn.modify_event(h.ven_id, changed, values=[3])
    h.vtn.server.events_updated[h.ven_id] = False  # nothing queued for a poll: only a full sync sees it
    h.vtn.polls = 0
    await h.start()
    events = await h.events()
    assert events[gone].status is EventStatus.CANCELLED
    assert events[changed].signals[0].intervals[0].value == 3


async def test_lower_modification_number_is_refused_and_nothing_changes(h: Harness) -> None:
    await h.start()
    eid = h.vtn.add_event(h.ven_id, [("SIMPLE", "level", [1])])
    h.vtn.modify_event(h.ven_id, eid, values=[2])
    h.vtn.modify_event(h.ven_id, eid, values=[3])
    await h.wait_event(eid, lambda e: e.modification_number == 2)
    event = h.vtn._find(h.ven_id, eid)
    event.event_descriptor.modification_number = 1
    event.event_signals[0].intervals[0].signal_payload = 0.0
    h.vtn.server.events_updated[h.ven_id] = True
    polls = h.vtn.polls
    await until(lambda: h.vtn.polls > polls + 3)
    e = (await h.events())[eid]
    assert e.modification_number == 2 and e.signals[0].intervals[0].value == 3


async def test_reregisters_when_the_vtn_asks(h: Harness) -> None:
    ven = await h.start()
    first = ven.registration.registration_id
    ven.registered.clear()
    h.vtn.request_reregistration(h.ven_id)
    await asyncio.wait_for(ven.registered.wait(), 5)
    assert ven.registration.registration_id != first
    store = h.store
    assert store is not None
    await until(lambda: store.registration().registration_id == ven.registration.registration_id)


async def test_reregisters_after_the_vtn_cancels_the_registration(h: Harness) -> None:
    ven = await h.start()
    first = ven.registration.registration_id
    ven.registered.clear()
    h.vtn.cancel_registration(h.ven_id)
    await asyncio.wait_for(ven.registered.wait(), 5)
    assert ven.registration.registration_id not in (None, first)


async def test_vtn_restart_mid_event_reregisters_and_keeps_the_schedule(tmp_path: Path, transport: Transport) -> None:
    vtn = transport.make_vtn()
    await vtn.start()
    h = Harness(tmp_path, vtn, transport)
    try:
        ven = await h.start()
        eid = vtn.add_event(h.ven_id, [("SIMPLE", "level", [2, 2])], start=datetime.now(UTC) - timedelta(minutes=1),
                            start_after=timedelta(minutes=5))
        before = await h.wait_event(eid)
        port = vtn.port
        await vtn.stop()
        # The VTN comes back with its events (they are in its database) but without its VEN registrations.
        fresh = transport.make_vtn()
        fresh.server.events.update(vtn.server.events)
        await until(lambda: ven.failures > 0)
        assert (await h.events())[eid] == before, "the stored schedule stays in force while the VTN is away"
        ven.registered.clear()
        await fresh.start(port)
        await asyncio.wait_for(ven.registered.wait(), 5)
        assert ven.ven_id in fresh.vens
        after = (await h.events())[eid]
        assert after.status is before.status and after.start_offset == before.start_offset
        await fresh.stop()
    finally:
        await h.stop()


async def test_backoff_never_stops_and_recovers(
    tmp_path: Path, transport: Transport, caplog: pytest.LogCaptureFixture
) -> None:
    vtn = transport.make_vtn()
    await vtn.start()
    port = vtn.port
    await vtn.stop()  # nobody listening
    h = Harness(tmp_path, vtn, transport, seed=3)
    caplog.set_level(logging.DEBUG, logger="gateway.openadr")
    h.task = asyncio.create_task(h.make_ven().run())
    try:
        await until(lambda: h.ven is not None and h.ven.failures >= 4)
        warnings = [r for r in caplog.records if "vtn unreachable" in r.getMessage() and r.levelno >= logging.WARNING]
        assert len(warnings) == 1, "logged once when it starts"
        await vtn.start(port)
        assert h.ven is not None
        await asyncio.wait_for(h.ven.registered.wait(), 5)
        await until(lambda: h.ven is not None and h.ven.failures == 0)
        assert any("reachable again" in r.getMessage() for r in caplog.records)
    finally:
        await h.stop()
        await vtn.stop()


# What each signal does to the site once stored (normal EV capacity 50 kW; a constant price of 0.20 for
# the relative prices to modify): (name, type, value, unit, segment field, expected).
EFFECTS = [
    ("SIMPLE", "level", 1, None, "ev_kw", 25.0),
    ("LOAD_CONTROL", "x-loadControlCapacity", 0.4, None, "ev_kw", 20.0),
    ("LOAD_CONTROL", "x-loadControlLevelOffset", 2, None, "ev_kw", 12.5),
    ("LOAD_CONTROL", "x-loadControlPercentOffset", -30, None, "ev_kw", 35.0),
    ("LOAD_CONTROL", "x-loadControlSetpoint", 11, None, "ev_kw", 11.0),
    ("LOAD_DISPATCH", "setpoint", 40, "kW", "site_kw", 40.0),
    ("LOAD_DISPATCH", "delta", -10, "kW", "ev_kw", 40.0),
    ("LOAD_DISPATCH", "multiplier", 0.3, None, "ev_kw", 15.0),
    ("ELECTRICITY_PRICE", "price", 0.31, None, "price", 0.31),
    ("ELECTRICITY_PRICE", "priceRelative", 0.05, None, "price", 0.25),
    ("ENERGY_PRICE", "price", 0.12, None, "price", 0.12),
    ("ENERGY_PRICE", "priceMultiplier", 1.5, None, "price", 0.30),
    ("DEMAND_CHARGE", "price", 12.0, None, "demand_charge", 12.0),
]


@pytest.mark.parametrize(("name", "stype", "value", "unit", "field", "expected"), EFFECTS,
                         ids=[f"{n}/{t}" for n, t, *_ in EFFECTS])
async def test_each_signal_from_the_vtn_changes_the_schedule(
    h: Harness, name: str, stype: str, value: float, unit: str | None, field: str, expected: float
) -> None:
    await h.start()
    start = datetime.now(UTC) + timedelta(hours=1)
    eid = h.vtn.add_event(h.ven_id, [(name, stype, [value])], start=start, interval=timedelta(minutes=30),
                          unit=unit)
    await h.wait_event(eid)
    schedule = build_schedule(list((await h.events()).values()), datetime.now(UTC),
                              ScheduleSettings(ev_capacity_kw=50.0, base_price=0.20))
    before, during, after = (segment_at(schedule, start + timedelta(minutes=m)) for m in (-1, 10, 31))
    assert during is not None and getattr(during, field) == pytest.approx(expected)
    assert before is not None and after is not None
    assert getattr(before, field) is None and getattr(after, field) is None, "only while the event runs"


async def test_targeted_resource_caps_its_own_chargers_not_the_site(h: Harness) -> None:
    await h.start()
    start = datetime.now(UTC) + timedelta(hours=1)
    eid = h.vtn.add_event(h.ven_id, [("LOAD_CONTROL", "x-loadControlCapacity", [0.5])], start=start,
                          resource_ids=["fleet"])
    e = await h.wait_event(eid)
    assert e.targets == ("fleet",) and h.config.resources["fleet"] == ("panel-a",)
    schedule = build_schedule([e], datetime.now(UTC),
                              ScheduleSettings(ev_capacity_kw=50.0, resource_capacity_kw={"fleet": 22.0}))
    during = segment_at(schedule, start + timedelta(minutes=1))
    assert during is not None and during.ev_kw is None and during.group_kw == {"fleet": pytest.approx(11.0)}


async def test_event_leaving_less_than_the_critical_chargers_need_is_opted_out(
    tmp_path: Path, vtn: SimVtn, transport: Transport
) -> None:
    h = Harness(tmp_path, vtn, transport, OpenAdrSection(ev_capacity_kw=50.0, critical_kw=15.0))
    try:
        await h.start()
        mild = h.vtn.add_event(h.ven_id, [("SIMPLE", "level", [1])])  # 25 kW left
        deep = h.vtn.add_event(h.ven_id, [("LOAD_CONTROL", "x-loadControlSetpoint", [7])])  # 7 kW left
        await until(lambda: {(mild, "optIn"), (deep, "optOut")} <= {(e, o) for _, e, o in h.vtn.opt_responses})
        assert (await h.events())[deep].opt is OptState.OPT_OUT
    finally:
        await h.stop()


async def test_operator_changing_its_mind_sends_create_opt_then_cancel_opt(h: Harness) -> None:
    ven = await h.start()
    eid = h.vtn.add_event(h.ven_id, [("SIMPLE", "level", [2])])
    await until(lambda: (h.ven_id, eid, "optIn") in h.vtn.opt_responses)
    opts = h.vtn.opt_service
    out = await ven.set_opt(eid, OptState.OPT_OUT, "site open day")
    assert out is not None and out.opt is OptState.OPT_OUT and not out.acted_on
    await until(lambda: len(opts.log) == 1)
    ((kind, opt_id),) = opts.log
    sent = opts.opts[opt_id]
    assert kind == "create" and sent["opt_type"] == "optOut" and sent["event_id"] == eid
    # Answered, it leaves the store's queue just after (in a worker thread): a busy machine can look between.
    store = h.store
    assert store is not None
    await until(lambda: store.pending_opts() == [], 5, "the answered opt stayed queued")
    back = await ven.set_opt(eid, None)
    assert back is not None and back.opt is OptState.OPT_IN
    await until(lambda: len(opts.log) == 2)
    assert opts.log[1] == ("cancel", opt_id) and opts.opts == {}


async def test_polls_at_the_frequency_the_vtn_asks(tmp_path: Path, transport: Transport) -> None:
    vtn = transport.make_vtn(poll_s=7)
    await vtn.start()
    h = Harness(tmp_path, vtn, transport)
    try:
        ven = h.make_ven(poll_s=None)
        await ven.load()
        assert await ven.step() == 7.0
        assert h.store is not None and h.store.registration().poll_s == 7.0
    finally:
        await h.stop()
        await vtn.stop()


async def test_reregisters_when_the_vtn_forgot_us(h: Harness) -> None:
    ven = await h.start()
    eid = h.vtn.add_event(h.ven_id, [("SIMPLE", "level", [1])])
    before = await h.wait_event(eid)
    ven.registered.clear()
    h.vtn.forget(h.ven_id)  # it answers whatever we send with oadrRequestReregistration
    await asyncio.wait_for(ven.registered.wait(), 5)
    assert ven.ven_id in h.vtn.vens and h.vtn.vens[ven.ven_id].registration_id == ven.registration.registration_id
    assert (await h.events())[eid] == before


async def test_metadata_request_is_answered_with_our_reports_again(h: Harness) -> None:
    ven = await h.start()
    offered = h.vtn.report_registrations
    polls = h.vtn.polls
    h.vtn.create_report(h.ven_id, "METADATA", ["METADATA"], granularity=timedelta(0), report_back=timedelta(0))
    await until(lambda: h.vtn.report_registrations > offered)
    await until(lambda: h.vtn.polls > polls + 2)
    assert ven.failures == 0


async def test_an_event_with_several_signals_acts_on_each(h: Harness) -> None:
    await h.start()
    start = datetime.now(UTC) + timedelta(hours=1)
    eid = h.vtn.add_event(h.ven_id, [("SIMPLE", "level", [1, 2]), ("ELECTRICITY_PRICE", "price", [0.4, 0.1])],
                          start=start, interval=timedelta(minutes=30))
    e = await h.wait_event(eid)
    assert [s.name for s in e.signals] == [SignalName.SIMPLE, SignalName.ELECTRICITY_PRICE]
    schedule = build_schedule([e], datetime.now(UTC), ScheduleSettings(ev_capacity_kw=50.0))
    first, second = (segment_at(schedule, start + timedelta(minutes=m)) for m in (10, 40))
    assert first is not None and (first.ev_kw, first.price) == (25.0, 0.4)
    assert second is not None and (second.ev_kw, second.price) == (12.5, 0.1)
