"""The OpenADR 3 VEN in process against the simulated VTN and a real SQLite file: what the webhook takes
at once (with polling slowed to a minute, only a notification can deliver), 3.0.1's operation names, and
what a restart of the VEN keeps."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.oadr3 import event
from support.waiting import until

from gateway.domain import Event, EventStatus, OptState
from gateway.openadr3.settings import Oadr3Settings
from gateway.openadr3.ven import Oadr3Ven
from gateway.sim.vtn3 import SimVtn3
from gateway.store.vtn3 import Oadr3Store


class Sink:
    """The runtime's side of the EventSink port: what it was last told."""

    def __init__(self) -> None:
        self.events: dict[str, Event] = {}
        self.calls = 0

    def events_changed(self, events: Sequence[Event], now: datetime) -> None:
        self.events = {e.event_id: e for e in events}
        self.calls += 1

    def opt_of(self, event_id: str) -> OptState:
        return self.events[event_id].opt if event_id in self.events else OptState.NONE


@pytest.fixture(params=["3.1.0", "3.0.1"])
async def vtn(request: pytest.FixtureRequest) -> AsyncIterator[SimVtn3]:
    sim = SimVtn3(version=request.param)
    await sim.start()
    yield sim
    await sim.stop()


def settings(vtn: SimVtn3, poll_s: float) -> Oadr3Settings:
    return Oadr3Settings(url=vtn.url, version=vtn.version, ven_name="site-1", client_id="ven-client",  # type: ignore[arg-type]
                         client_secret="ven-secret", poll_s=poll_s, backoff_initial_s=0.05, backoff_max_s=0.2,
                         request_timeout_s=2.0, token_url=f"{vtn.url}/auth/token" if vtn.version == "3.0.1" else None,
                         charger_ids=("cp-1", "cp-2"), resources={"cp-1": ("cp-1",), "cp-2": ("cp-2",)})


async def running(ven: Oadr3Ven) -> asyncio.Task[None]:
    task = asyncio.create_task(ven.run())
    await asyncio.wait_for(ven.enrolled.wait(), 10)
    return task


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_the_webhook_delivers_changes_at_once(tmp_path: Path, vtn: SimVtn3) -> None:
    program = vtn.create_program("dr-program")
    sink = Sink()
    ven = Oadr3Ven(settings(vtn, poll_s=60.0), Oadr3Store.open(tmp_path / "gw.sqlite"), sink=sink)
    task = await running(ven)
    try:
        await until(lambda: vtn.objects["subscriptions"], 10, "no subscription")
        polls = ven.polls
        ev = event(vtn, program["id"], [("SIMPLE", 2)], seconds=600)
        await until(lambda: ev["id"] in sink.events, 5, "the created event did not arrive by the webhook")
        vtn.update_event(ev["id"], intervals=[{"id": 0, "payloads": [{"type": "SIMPLE", "values": [3]}]}])
        await until(lambda: sink.events[ev["id"]].signals[0].intervals[0].value == 3.0, 5, "no update")
        vtn.delete_event(ev["id"])
        await until(lambda: sink.events[ev["id"]].status is EventStatus.CANCELLED, 5, "no delete")
        assert sink.events[ev["id"]].cancelled_at is not None, "it had started: it ends now, not never acted"
        assert ven.polls == polls, "all of it came by the webhook, none by polling"
        assert ven.notifications == 3 and all(code == 200 for _, code in vtn.notifications)
        assert vtn.schema_errors == []
    finally:
        await stopped(task)


async def test_a_restart_keeps_the_schedule_and_enrols_nothing_twice(tmp_path: Path, vtn: SimVtn3) -> None:
    program = vtn.create_program("dr-program")
    ev = event(vtn, program["id"], [("SIMPLE", 1)], seconds=600, randomize_s=30,
               start=datetime.now().astimezone() + timedelta(seconds=60))
    first = Sink()
    ven = Oadr3Ven(settings(vtn, poll_s=0.1), Oadr3Store.open(tmp_path / "gw.sqlite"), sink=first)
    task = await running(ven)
    await until(lambda: ev["id"] in first.events, 5)
    await stopped(task)
    offset = first.events[ev["id"]].start_offset
    assert timedelta(0) <= offset <= timedelta(seconds=30)

    second = Sink()
    again = Oadr3Ven(settings(vtn, poll_s=0.1), Oadr3Store.open(tmp_path / "gw.sqlite"), sink=second)
    task = await running(again)
    try:
        await until(lambda: again.polls >= 2, 5)
        stored = await again.events()
        assert stored[ev["id"]].start_offset == offset
        assert second.calls == 0, "nothing changed, so the runtime was not told anything new"
        assert len(vtn.objects["vens"]) == 1 and len(vtn.objects["resources"]) == 2
        assert again.ven_id == ven.ven_id
    finally:
        await stopped(task)


async def test_an_operator_opt_out_holds_through_polls_and_changes(tmp_path: Path, vtn: SimVtn3) -> None:
    program = vtn.create_program("dr-program")
    ev = event(vtn, program["id"], [("SIMPLE", 3)], seconds=600)
    sink = Sink()
    ven = Oadr3Ven(settings(vtn, poll_s=0.1), Oadr3Store.open(tmp_path / "gw.sqlite"), sink=sink)
    task = await running(ven)
    try:
        await until(lambda: ev["id"] in sink.events, 5)
        assert sink.events[ev["id"]].opt is OptState.OPT_IN
        await ven.set_opt(ev["id"], OptState.OPT_OUT, "site maintenance")
        assert sink.events[ev["id"]].opt is OptState.OPT_OUT and not sink.events[ev["id"]].acted_on
        polls = ven.polls
        vtn.update_event(ev["id"], intervals=[{"id": 0, "payloads": [{"type": "SIMPLE", "values": [2]}]}])
        await until(lambda: sink.events[ev["id"]].signals[0].intervals[0].value == 2.0 and ven.polls > polls + 2, 5)
        assert sink.events[ev["id"]].opt is OptState.OPT_OUT, "the operator's choice outlives the VTN's change"
        await ven.set_opt(ev["id"], None)
        assert sink.events[ev["id"]].opt is OptState.OPT_IN
    finally:
        await stopped(task)


async def test_a_program_created_between_the_reads_of_a_poll_is_read_before_its_events(
    tmp_path: Path, vtn: SimVtn3
) -> None:
    # A poll reads the programs, then the events. A program and its event created in between used to make
    # the event one of no program we are enrolled in: opted out, and never looked at again (CI once).
    sink = Sink()
    enrolled = dataclasses.replace(settings(vtn, poll_s=0.1), programs=("dr-program",))
    ven = Oadr3Ven(enrolled, Oadr3Store.open(tmp_path / "gw.sqlite"), sink=sink)
    created: dict[str, Any] = {}
    read = ven._paged

    async def racing(path: str, model: type[Any]) -> list[Any]:
        out = await read(path, model)
        if path == "programs" and not created:
            program = vtn.create_program("dr-program")
            created.update(event(vtn, program["id"], [("SIMPLE", 2)], seconds=600))
        return out

    ven._paged = racing  # type: ignore[method-assign]
    task = await running(ven)
    try:
        await until(lambda: created and created["id"] in sink.events, 5, "the event did not arrive")
        assert sink.opt_of(created["id"]) is OptState.OPT_IN
    finally:
        await stopped(task)


async def test_a_webhook_port_taken_leaves_polling(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    vtn = SimVtn3()
    await vtn.start()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        program = vtn.create_program("dr-program")
        ev = event(vtn, program["id"], [("SIMPLE", 1)])
        sink = Sink()
        busy = dataclasses.replace(settings(vtn, poll_s=0.1), callback_port=taken.getsockname()[1])
        ven = Oadr3Ven(busy, Oadr3Store.open(tmp_path / "gw.sqlite"), sink=sink)
        task = await running(ven)
        try:
            await until(lambda: ev["id"] in sink.events, 5, "polling did not bring the event")
            assert not vtn.objects["subscriptions"]
            assert [r.getMessage() for r in caplog.records if "cannot listen" in r.getMessage()]
        finally:
            await stopped(task)
    finally:
        taken.close()
        await vtn.stop()
