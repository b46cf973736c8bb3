"""What openleadr's VTN cannot send: raw 2.0b payloads (other vendors' shapes) and hostile ones.

They come from a scripted VTN, a real aiohttp server on 127.0.0.1 port 0 that answers each service with
queued bodies (aioresponses 0.7.9 cannot build responses on aiohttp 3.14: ClientResponse now needs a
`stream_writer`). Each hostile body is refused with one log line; the stored events do not change."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from openleadr.messaging import create_message, parse_message

from gateway.config.openadr import OpenAdrSection, VtnSection
from gateway.domain import EventStatus, OptState, SignalName, SignalType
from gateway.openadr.ven import Ven
from gateway.store.vtn import Registration, ReportRequest, VenStore

PREFIX = "/OpenADR2/Simple/2.0b"
POLL = "OadrPoll"
EVENT = "EiEvent"
OPT = "EiOpt"


class ScriptedVtn:
    """Answers each service with the next queued (status, body), else its default; records what it got."""

    def __init__(self) -> None:
        self.queued: dict[str, list[tuple[int, bytes]]] = {}
        self.default: dict[str, tuple[int, bytes]] = {}
        self.got: list[tuple[str, bytes]] = []
        self.on_request: list[object] = []  # callables run when a request arrives (before the answer)
        self.delay_s = 0.0  # answer this late (a VTN that hangs)
        self.runner: web.AppRunner | None = None
        self.url = ""

    def post(self, service: str, body: str | bytes = b"", status: int = 200, repeat: bool = False) -> None:
        data = body.encode() if isinstance(body, str) else body
        if repeat:
            self.default[service] = (status, data)
        else:
            self.queued.setdefault(service, []).append((status, data))

    def reset(self) -> None:
        self.on_request.clear()
        self.delay_s = 0.0
        self.queued.clear()
        self.default.clear()
        self.got.clear()
        # What a start-up sync needs (oadrRegisterReport, oadrRequestEvent): a VTN with nothing to say.
        self.post("EiReport", registered_report(), repeat=True)
        self.post("EiEvent", empty_response(), repeat=True)
        self.post("OadrPoll", empty_response(), repeat=True)

    async def _handle(self, request: web.Request) -> web.Response:
        service = request.match_info["service"]
        self.got.append((service, await request.read()))
        for hook in self.on_request:
            hook(service)  # type: ignore[operator]
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        queue = self.queued.get(service)
        status, body = queue.pop(0) if queue else self.default.get(service, (404, b"no script"))
        return web.Response(status=status, body=body)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(PREFIX + "/{service}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}{PREFIX}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


CURRENT: list[ScriptedVtn] = []


@contextmanager
def scripted() -> Iterator[ScriptedVtn]:
    """The running scripted VTN with a clean script, for one exchange."""
    vtn = CURRENT[-1]
    vtn.reset()
    yield vtn


HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
NS = (
    'xmlns:oadr="http://openadr.org/oadr-2.0b/2012/07" xmlns:ei="http://docs.oasis-open.org/ns/energyinterop/201110" '
    'xmlns:pyld="http://docs.oasis-open.org/ns/energyinterop/201110/payloads" '
    'xmlns:xcal="urn:ietf:params:xml:ns:icalendar-2.0" xmlns:strm="urn:ietf:params:xml:ns:icalendar-2.0:stream" '
    'xmlns:emix="http://docs.oasis-open.org/ns/emix/2011/06"'
)


def distribute(
    event_id: str = "ev-raw",
    *,
    mod: int = 0,
    dtstart: str = "2030-01-01T10:00:00Z",
    duration: str = "PT1H",
    interval: str = "PT1H",
    signal_name: str = "SIMPLE",
    signal_type: str = "level",
    value: str = "2",
    startafter: str | None = None,
    test_event: str = "false",
    vtn_id: str = "UTILITY-VTN",
    status: str = "far",
) -> str:
    """An oadrDistributeEvent written from the 2.0b schema, in the prefix style some vendors use."""
    tolerance = (
        f"<xcal:tolerance><xcal:tolerate><xcal:startafter>{startafter}</xcal:startafter></xcal:tolerate>"
        "</xcal:tolerance>" if startafter else ""
    )
    return (
        f"{HEAD}<oadr:oadrPayload {NS}><oadr:oadrSignedObject><oadr:oadrDistributeEvent ei:schemaVersion=\"2.0b\">"
        "<ei:eiResponse><ei:responseCode>200</ei:responseCode><ei:responseDescription>OK</ei:responseDescription>"
        "<pyld:requestID/></ei:eiResponse><pyld:requestID>req-1</pyld:requestID>"
        f"<ei:vtnID>{vtn_id}</ei:vtnID><oadr:oadrEvent><ei:eiEvent><ei:eventDescriptor>"
        f"<ei:eventID>{event_id}</ei:eventID><ei:modificationNumber>{mod}</ei:modificationNumber>"
        "<ei:priority>1</ei:priority><ei:eiMarketContext><emix:marketContext>http://utility/ev</emix:marketContext>"
        "</ei:eiMarketContext><ei:createdDateTime>2029-12-31T10:00:00Z</ei:createdDateTime>"
        f"<ei:eventStatus>{status}</ei:eventStatus><ei:testEvent>{test_event}</ei:testEvent>"
        "</ei:eventDescriptor><ei:eiActivePeriod><xcal:properties>"
        f"<xcal:dtstart><xcal:date-time>{dtstart}</xcal:date-time></xcal:dtstart>"
        f"<xcal:duration><xcal:duration>{duration}</xcal:duration></xcal:duration>{tolerance}"
        "</xcal:properties><xcal:components xsi:nil=\"true\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"/>"
        "</ei:eiActivePeriod><ei:eiEventSignals><ei:eiEventSignal><strm:intervals><ei:interval>"
        f"<xcal:duration><xcal:duration>{interval}</xcal:duration></xcal:duration>"
        "<xcal:uid><xcal:text>0</xcal:text></xcal:uid>"
        f"<ei:signalPayload><ei:payloadFloat><ei:value>{value}</ei:value></ei:payloadFloat></ei:signalPayload>"
        f"</ei:interval></strm:intervals><ei:signalName>{signal_name}</ei:signalName>"
        f"<ei:signalType>{signal_type}</ei:signalType><ei:signalID>sig-1</ei:signalID>"
        "<ei:currentValue><ei:payloadFloat><ei:value>0</ei:value></ei:payloadFloat></ei:currentValue>"
        "</ei:eiEventSignal></ei:eiEventSignals><ei:eiTarget><ei:venID>ven-7</ei:venID></ei:eiTarget></ei:eiEvent>"
        "<oadr:oadrResponseRequired>always</oadr:oadrResponseRequired></oadr:oadrEvent>"
        "</oadr:oadrDistributeEvent></oadr:oadrSignedObject></oadr:oadrPayload>"
    )


def registered_report() -> str:
    return str(create_message("oadrRegisteredReport", ven_id="ven-7", report_requests=[],
                              response={"response_code": 200, "response_description": "OK", "request_id": None}))


def empty_response() -> str:
    return str(create_message("oadrResponse", ven_id="ven-7",
                              response={"response_code": 200, "response_description": "OK", "request_id": None}))


@pytest.fixture
async def ven(tmp_path: Path) -> AsyncIterator[Ven]:
    server = ScriptedVtn()
    await server.start()
    CURRENT.append(server)
    store = VenStore.open(tmp_path / "gw.sqlite")
    store.save_registration(Registration("ven-7", "reg-7", "UTILITY-VTN", 10.0), datetime.now(UTC))
    vtn = VtnSection(url=server.url, ven_name="site-1", allow_plain_http=True, max_body_bytes=20_000,
                     backoff_initial_s=0.01, backoff_max_s=0.02, request_timeout_s=0.5)
    v = Ven(vtn, OpenAdrSection(), store, rng=random.Random(5))
    await v.load()
    with scripted():
        await v.step()  # the start-up sync against a VTN with nothing to say
    yield v
    await v.link.close()
    store.close()
    await server.stop()


def sent_bodies(m: ScriptedVtn, service: str) -> list[tuple[str, dict[str, object]]]:
    return [parse_message(body) for s, body in m.got if s == service]


async def poll_with(ven: Ven, body: str | bytes) -> list[tuple[str, dict[str, object]]]:
    with scripted() as m:
        m.post(POLL, body=body)
        m.post(POLL, body=empty_response(), repeat=True)
        m.post(EVENT, body=empty_response(), repeat=True)
        await ven.step()
        return sent_bodies(m, EVENT)


async def test_a_raw_vendor_event_is_stored_and_answered(ven: Ven) -> None:
    sent = await poll_with(ven, distribute())
    e = (await ven.events())["ev-raw"]
    assert e.signals[0].name is SignalName.SIMPLE and e.signals[0].intervals[0].value == 2
    assert e.dtstart == datetime(2030, 1, 1, 10, tzinfo=UTC) and e.priority == 1
    ((mtype, payload),) = sent
    assert mtype == "oadrCreatedEvent"
    assert payload["event_responses"][0]["opt_type"] == "optIn"  # type: ignore[index]


async def test_days_fractions_of_seconds_in_times_and_a_lowercase_vtn_id_are_understood(ven: Ven) -> None:
    await poll_with(ven, distribute(dtstart="2030-01-01T10:00:00.250Z", duration="P7D", interval="P7D",
                                    vtn_id="utility-vtn", startafter="PT10M"))
    e = (await ven.events())["ev-raw"]
    assert e.dtstart == datetime(2030, 1, 1, 10, 0, 0, 250000, tzinfo=UTC)
    assert e.duration == timedelta(weeks=1) and e.signals[0].intervals[0].duration == timedelta(weeks=1)
    assert timedelta(0) < e.start_offset <= timedelta(minutes=10)


async def test_the_event_is_in_sqlite_before_the_answer_reaches_the_vtn(ven: Ven) -> None:
    seen_at_answer: list[set[str]] = []

    def check(service: str) -> None:
        if service == EVENT:
            seen_at_answer.append(set(ven.store.events()))

    with scripted() as m:
        m.on_request.append(check)
        m.post(POLL, distribute())
        m.post(POLL, empty_response(), repeat=True)
        m.post(EVENT, empty_response(), repeat=True)
        await ven.step()
    assert seen_at_answer == [{"ev-raw"}]


async def test_an_answer_the_vtn_did_not_get_is_sent_again(ven: Ven) -> None:
    with scripted() as m:
        m.post(POLL, distribute())
        m.post(EVENT, "down for maintenance", status=503)
        await ven.step()
        assert ven.failures == 1 and "ev-raw" in await ven.events()
        await ven.step()
        created = sent_bodies(m, EVENT)
    assert [t for t, _ in created] == ["oadrCreatedEvent", "oadrCreatedEvent"]
    assert created[1][1]["event_responses"][0]["event_id"] == "ev-raw"  # type: ignore[index]


async def test_any_test_event_value_but_false_is_a_test_event(ven: Ven) -> None:
    await poll_with(ven, distribute(test_event="yes"))
    assert (await ven.events())["ev-raw"].test_event


async def test_an_event_of_only_custom_or_invalid_signals_is_refused_460_opt_out(ven: Ven) -> None:
    sent = await poll_with(ven, distribute(signal_name="x-acmeSignal", signal_type="level"))
    assert "ev-raw" not in await ven.events()
    answer = sent[0][1]["event_responses"][0]  # type: ignore[index]
    assert (answer["response_code"], answer["opt_type"]) == (460, "optOut")
    await poll_with(ven, distribute(event_id="ev-2", signal_name="SIMPLE", signal_type="price"))
    assert "ev-2" not in await ven.events()


async def test_out_of_range_simple_level_is_dropped(ven: Ven) -> None:
    sent = await poll_with(ven, distribute(value="7"))
    assert "ev-raw" not in await ven.events()
    assert sent[0][1]["event_responses"][0]["response_code"] == 460  # type: ignore[index]


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i + 1} "{("&lol" + str(i) + ";") * 10}">' for i in range(9)).replace("&lol0;", "&lol;")
    + ']><oadr:oadrPayload xmlns:oadr="http://openadr.org/oadr-2.0b/2012/07">&lol9;</oadr:oadrPayload>'
)
XXE = (
    '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    '<oadr:oadrPayload xmlns:oadr="http://openadr.org/oadr-2.0b/2012/07">&xxe;</oadr:oadrPayload>'
)
INTERNAL_ENTITY = distribute().replace(HEAD, HEAD + '<!DOCTYPE p [<!ENTITY e "ev-raw">]>').replace(
    "<ei:eventID>ev-raw", "<ei:eventID>&e;"
)

HOSTILE: dict[str, tuple[str | bytes, str]] = {
    "malformed": ("<oadr:oadrPayload><unclosed>", "malformed XML"),
    "not xml": (b"\x00\xff\xfe garbage", "malformed XML"),
    "schema": (distribute().replace("<ei:eventID>", "<ei:eventIdentifier>").replace("</ei:eventID>",
                                                                                       "</ei:eventIdentifier>"),
               "schema"),
    "xxe": (XXE, "DOCTYPE"),
    "billion laughs": (BILLION_LAUGHS, "DOCTYPE"),
    "internal entity (crashes openleadr's parser)": (INTERNAL_ENTITY, "DOCTYPE"),
    "oversized": (distribute().replace("<ei:signalID>sig-1", "<ei:signalID>" + "x" * 30_000), "limit"),
    # The 2.0b schema's own duration pattern refuses these two; openleadr alone would read both as zero.
    "fractional seconds": (distribute(interval="PT1.5S"), "duration"),
    "weeks (the schema's pattern only takes a bare 1W)": (distribute(duration="P1W"), "duration"),
    "months": (distribute(duration="P1M"), "RFC 5545"),
    "negative": (distribute(duration="-PT1H"), "negative"),
    "garbage duration": (distribute(duration="PTXS"), "duration"),
    "absurd duration": (distribute(duration="P99999999D"), "duration"),
    "naive date-time": (distribute(dtstart="2030-01-01T10:00:00"), "date-time"),
    # The 2.0b schema's date-time pattern allows only Z: an offset fails validation (openleadr alone
    # would have kept it as a string and crashed later comparing it with datetimes).
    "offset date-time": (distribute(dtstart="2030-01-01T11:00:00+01:00"), "schema"),
    "bad number": (distribute(value="1.2.3"), ""),
}


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_payload_is_refused_with_one_line_and_nothing_changes(
    ven: Ven, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    await poll_with(ven, distribute(event_id="ev-keep", value="1"))
    before = await ven.events()
    body, words = HOSTILE[name]
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="gateway.openadr")
    sent = await poll_with(ven, body)
    assert await ven.events() == before
    assert sent == [], "nothing answered for a refused message"
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.openadr"]
    assert len(lines) == 1 and "refused" in lines[0] and words in lines[0], lines
    assert "\n" not in lines[0]


async def test_markup_in_an_echoed_id_is_not_injected_into_our_answer(
    ven: Ven, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.openadr")
    sent = await poll_with(ven, distribute(event_id="a&lt;/ei:eventID&gt;&lt;x&gt;"))
    assert sent == []
    assert any("would not be well-formed" in r.getMessage() for r in caplog.records)
    sent = await poll_with(ven, distribute(event_id="ev-next"))  # the unsendable answer does not block the VEN
    assert [t for t, _ in sent] == ["oadrCreatedEvent"] and "ev-next" in await ven.events()


async def test_new_event_that_arrives_cancelled_is_ignored(ven: Ven) -> None:
    sent = await poll_with(ven, distribute(status="cancelled", mod=1))
    assert "ev-raw" not in await ven.events()
    assert sent[0][1]["event_responses"][0]["response_code"] == 200  # type: ignore[index]


async def test_lower_modification_number_is_answered_450(ven: Ven) -> None:
    await poll_with(ven, distribute(mod=3, value="1"))
    sent = await poll_with(ven, distribute(mod=2, value="3"))
    assert sent[0][1]["event_responses"][0]["response_code"] == 450  # type: ignore[index]
    assert (await ven.events())["ev-raw"].signals[0].intervals[0].value == 1


async def test_http_500_and_garbage_status_back_off_and_keep_events(ven: Ven) -> None:
    await poll_with(ven, distribute())
    before = await ven.events()
    with scripted() as m:
        m.post(POLL, status=500, body="boom", repeat=True)
        delay = await ven.step()
    assert ven.failures == 1 and 0 < delay <= 0.02
    assert await ven.events() == before


async def test_operator_override_sends_create_opt_then_cancel_opt(ven: Ven) -> None:
    await poll_with(ven, distribute())
    updated = await ven.set_opt("ev-raw", OptState.OPT_OUT, "site event")
    assert updated is not None and updated.opt is OptState.OPT_OUT and not updated.acted_on
    created = create_message("oadrCreatedOpt", response={"response_code": 200, "response_description": "OK",
                                                          "request_id": None}, opt_id="x")
    with scripted() as m:
        m.post(POLL, body=empty_response(), repeat=True)
        m.post(OPT, body=created, repeat=True)
        await ven.step()
        ((mtype, payload),) = sent_bodies(m, OPT)
    first_opt_id = payload["opt_id"]
    assert mtype == "oadrCreateOpt" and payload["opt_type"] == "optOut"
    assert (payload["event_id"], payload["modification_number"]) == ("ev-raw", 0)
    assert ven.store.pending_opts() == []
    back = await ven.set_opt("ev-raw", None)
    assert back is not None and back.opt is OptState.OPT_IN
    with scripted() as m:
        m.post(POLL, body=empty_response(), repeat=True)
        m.post(OPT, body=created, repeat=True)
        await ven.step()
        ((mtype, payload),) = sent_bodies(m, OPT)
    assert mtype == "oadrCancelOpt" and payload["opt_id"] == first_opt_id


async def test_opt_made_while_vtn_is_down_is_sent_when_it_is_back(ven: Ven) -> None:
    await poll_with(ven, distribute())
    with scripted() as m:
        m.post(POLL, status=503, repeat=True)
        await ven.set_opt("ev-raw", OptState.OPT_OUT, "maintenance")
        await ven.step()
    assert len(ven.store.pending_opts()) == 1
    assert (await ven.events())["ev-raw"].opt is OptState.OPT_OUT
    created = create_message("oadrCreatedOpt", response={"response_code": 200, "response_description": "OK",
                                                          "request_id": None}, opt_id="x")
    with scripted() as m:
        m.post(POLL, body=empty_response(), repeat=True)
        m.post(OPT, body=created, repeat=True)
        await ven.step()
        assert len(sent_bodies(m, OPT)) == 1
    assert ven.store.pending_opts() == []


async def test_explicit_cancel_in_a_raw_payload(ven: Ven) -> None:
    await poll_with(ven, distribute(dtstart="2020-01-01T00:00:00Z", duration="P", interval="P"))
    e = (await ven.events())["ev-raw"]
    assert e.duration == timedelta(0) and e.end is None
    await poll_with(ven, distribute(dtstart="2020-01-01T00:00:00Z", duration="P", interval="P", mod=1,
                                    status="cancelled"))
    e = (await ven.events())["ev-raw"]
    assert e.status is EventStatus.CANCELLED and e.cancelled_at is not None and e.end is not None
    assert SignalType.LEVEL is e.signals[0].type


async def test_a_vtn_that_hangs_times_out_and_backs_off(ven: Ven, caplog: pytest.LogCaptureFixture) -> None:
    await poll_with(ven, distribute())
    before = await ven.events()
    caplog.set_level(logging.WARNING, logger="gateway.openadr")
    with scripted() as m:
        m.delay_s = 1.0  # over the 0.5 s request timeout
        delay = await ven.step()
    assert ven.failures == 1 and 0 < delay <= 0.02
    assert await ven.events() == before
    (line,) = [r.getMessage() for r in caplog.records if r.name == "gateway.openadr"]
    assert "unreachable" in line and "Timeout" in line


async def test_a_refused_payload_backs_off_with_jitter(ven: Ven) -> None:
    delays = []
    for _ in range(4):
        await poll_with(ven, "<oadr:oadrPayload><unclosed>")
        delays.append(ven.failures)
    assert delays == [1, 2, 3, 4], "each refusal counts as a failure and the next round waits longer"


def overflowing(event_id: str) -> str:
    return distribute(event_id=event_id, dtstart="9999-12-31T23:00:00Z", duration="PT2H", interval="PT2H")


async def test_an_event_past_the_calendar_is_refused_and_the_rest_of_the_message_answered(
    ven: Ven, caplog: pytest.LogCaptureFixture
) -> None:
    await poll_with(ven, distribute(event_id="ev-keep", value="1"))
    kept = (await ven.events())["ev-keep"]
    caplog.set_level(logging.WARNING, logger="gateway.openadr")
    # One message with the kept event, modified into nonsense, and a valid new one.
    bad = overflowing("ev-keep").replace("<ei:modificationNumber>0<", "<ei:modificationNumber>1<")
    good = distribute(event_id="ev-new")
    start = good.index("<oadr:oadrEvent>")
    body = bad.replace("</oadr:oadrDistributeEvent>",
                       good[start:good.index("</oadr:oadrDistributeEvent>")] + "</oadr:oadrDistributeEvent>")
    sent = await poll_with(ven, body)
    events = await ven.events()
    assert events["ev-keep"] == kept, "a refused modification neither changes nor implicitly cancels it"
    assert "ev-new" in events
    responses = sent[0][1]["event_responses"]
    assert isinstance(responses, list)
    codes = {r["event_id"]: r["response_code"] for r in responses}
    assert codes == {"ev-keep": 400, "ev-new": 200}
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1 and "9000" in lines[0]


async def test_readings_answered_with_request_reregistration_stay_unsent(ven: Ven) -> None:
    rr = ReportRequest("rr-1", "gateway-telemetry-usage", 60, 60, ("site_power_kw",))
    now = datetime.now(UTC)
    ven.store.save_report_request(rr, now)
    ven.store.add_readings(rr, [("site_power_kw", 42.0)], now - timedelta(minutes=5), now)
    rereg = create_message("oadrRequestReregistration", ven_id="ven-7")
    with scripted() as m:
        m.post("EiReport", rereg, repeat=True)
        await ven.step()
    assert [r.value for r in ven.store.unsent_readings()] == [42.0]
    assert ven.registration.registration_id is None, "it registers again on the next round"


async def test_changing_ones_mind_while_the_first_opt_is_in_flight_still_cancels_it(ven: Ven) -> None:
    await poll_with(ven, distribute())
    await ven.set_opt("ev-raw", OptState.OPT_OUT, "site event")
    created = create_message("oadrCreatedOpt", response={"response_code": 200, "response_description": "OK",
                                                          "request_id": None}, opt_id="x")
    changed: list[asyncio.Task[object]] = []

    def operator_lifts_it(service: str) -> None:  # while the VTN holds our oadrCreateOpt
        if service == OPT and not changed:
            changed.append(asyncio.create_task(ven.set_opt("ev-raw", None)))

    with scripted() as m:
        m.on_request.append(operator_lifts_it)
        m.delay_s = 0.1
        m.post(POLL, body=empty_response(), repeat=True)
        m.post(OPT, body=created, repeat=True)
        await ven.step()
        await changed[0]
        m.delay_s = 0.0
        await ven.step()
        sent = sent_bodies(m, OPT)
    assert [t for t, _ in sent] == ["oadrCreateOpt", "oadrCancelOpt"]
    assert sent[1][1]["opt_id"] == sent[0][1]["opt_id"]
    assert ven.store.pending_opts() == []


async def test_an_unsendable_opt_or_report_is_dropped_once_and_blocks_nothing(
    ven: Ven, caplog: pytest.LogCaptureFixture
) -> None:
    await poll_with(ven, distribute(event_id="a&lt;b"))  # stored; its answer cannot be built
    await ven.set_opt("a<b", OptState.OPT_OUT, "maintenance")
    rr = ReportRequest("rr&<", "gateway-telemetry-usage", 60, 60, ("site_power_kw",))
    now = datetime.now(UTC)
    ven.store.save_report_request(rr, now)
    ven.store.add_readings(rr, [("site_power_kw", 42.0)], now - timedelta(minutes=5), now)
    caplog.set_level(logging.WARNING, logger="gateway.openadr")
    caplog.clear()
    with scripted() as m:
        m.post(POLL, body=empty_response(), repeat=True)
        for _ in range(3):
            await ven.step()
        assert [s for s, _ in m.got].count(POLL) == 3, "every round still polls"
    assert ven.store.pending_opts() == [] and ven.store.unsent_readings() == []
    refused = [r.getMessage() for r in caplog.records if "would not be well-formed" in r.getMessage()]
    assert len(refused) == 2, refused  # the opt once, the report once
