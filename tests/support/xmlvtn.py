"""A 2.0b VTN written by hand for the certification tests: aiohttp on 127.0.0.1 port 0, XML from string
templates, VEN messages read with lxml XPath. No openleadr code on this side (openleadr's server shares
the VEN's parser and templates, so a bug on both sides would be invisible); the only thing taken from the
installed openleadr package is the 2.0b XSD it ships. Every message the VEN sends is validated against it
(failures are kept in `schema_failures`, which the tests' fixtures assert empty); every message this VTN
sends is validated too, so a broken test message fails loudly here rather than as a VEN refusal.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openleadr
from aiohttp import web
from lxml import etree

from support.waiting import until

PREFIX = "/OpenADR2/Simple/2.0b"
OADR = "http://openadr.org/oadr-2.0b/2012/07"
EI = "http://docs.oasis-open.org/ns/energyinterop/201110"
PYLD = "http://docs.oasis-open.org/ns/energyinterop/201110/payloads"
XCAL = "urn:ietf:params:xml:ns:icalendar-2.0"
EMIX = "http://docs.oasis-open.org/ns/emix/2011/06"
POWER = "http://docs.oasis-open.org/ns/emix/2011/06/power"
SCALE = "http://docs.oasis-open.org/ns/emix/2011/06/siscale"
NSMAP = {"oadr": OADR, "ei": EI, "pyld": PYLD, "xcal": XCAL, "emix": EMIX, "power": POWER, "scale": SCALE}
NS_DECL = " ".join(f'xmlns:{p}="{u}"' for p, u in NSMAP.items()) + (
    ' xmlns:strm="urn:ietf:params:xml:ns:icalendar-2.0:stream"'
    ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"')

XSD_PATH = Path(openleadr.__file__).parent / "schema" / "oadr_20b.xsd"
SCHEMA = etree.XMLSchema(etree.parse(str(XSD_PATH)))


def schema_errors(body: bytes) -> str | None:
    """None when `body` is a 2.0b payload the XSD accepts, else the first error."""
    try:
        doc = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        return f"not well-formed: {exc}"
    if SCHEMA.validate(doc):
        return None
    return str(SCHEMA.error_log.last_error)


def dur(seconds: float) -> str:
    return f"PT{int(seconds)}S"


def dt(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def envelope(body: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<oadr:oadrPayload {NS_DECL}><oadr:oadrSignedObject>'
            f"{body}</oadr:oadrSignedObject></oadr:oadrPayload>").encode()


def ei_response(code: int = 200, description: str = "OK", request_id: str = "") -> str:
    return (f"<ei:eiResponse><ei:responseCode>{code}</ei:responseCode><ei:responseDescription>{description}"
            f"</ei:responseDescription><pyld:requestID>{request_id}</pyld:requestID></ei:eiResponse>")


# ------------------------------------------------------------------------------------------- item bases

ITEMS = {
    # name: (namespace prefix, itemDescription, itemUnits default, power attributes?)
    "powerReal": ("power", "RealPower", "W", True),
    "powerApparent": ("power", "ApparentPower", "VA", True),
    "powerReactive": ("power", "ReactivePower", "VAR", True),
    "energyReal": ("power", "RealEnergy", "Wh", False),
    "energyApparent": ("power", "ApparentEnergy", "VAh", False),
    "energyReactive": ("power", "ReactiveEnergy", "VARh", False),
    "voltage": ("power", "Voltage", "V", False),
    "current": ("oadr", "Current", "A", False),
    "frequency": ("oadr", "Frequency", "Hz", False),
    "currency": ("oadr", "currency", "USD", False),
    "currencyPerKWh": ("oadr", "currencyPerKWh", "USD", False),
    "currencyPerKW": ("oadr", "currencyPerKW", "USD", False),
    "temperature": ("oadr", "temperature", "celsius", False),
    "customUnit": ("oadr", "furlongs per fortnight", "fpf", False),
}


def item_base(name: str, scale: str = "none", units: str | None = None) -> str:
    prefix, description, default_units, power_attrs = ITEMS[name]
    attrs = ("<power:powerAttributes><power:hertz>50</power:hertz><power:voltage>230</power:voltage>"
             "<power:ac>true</power:ac></power:powerAttributes>") if power_attrs else ""
    return (f"<{prefix}:{name}><{prefix}:itemDescription>{description}</{prefix}:itemDescription>"
            f"<{prefix}:itemUnits>{units or default_units}</{prefix}:itemUnits>"
            f"<scale:siScaleCode>{scale}</scale:siScaleCode>{attrs}</{prefix}:{name}>")


# ---------------------------------------------------------------------------------------------- events


@dataclass
class Sig:
    name: str
    type: str
    values: list[float]
    interval_s: float = 600
    item: str = ""  # an item_base(...) string, or nothing
    signal_id: str = ""


@dataclass
class Ev:
    event_id: str
    signals: list[Sig]
    dtstart: datetime = field(default_factory=lambda: datetime.now(UTC) - timedelta(seconds=1))
    duration_s: float | None = None  # None: the intervals' total
    mod: int = 0
    status: str = "active"
    priority: int = 1
    test: str = "false"
    startafter_s: float | None = None
    market_context: str = "http://utility.example/programs/ev"
    targets: list[tuple[str, str]] | None = None  # (resourceID | venID | groupID, value); None: our venID
    response_required: str = "always"
    baseline: bool = False

    def xml(self, ven_id: str) -> str:
        total = self.duration_s if self.duration_s is not None else max(
            s.interval_s * len(s.values) for s in self.signals)
        tolerance = (f"<xcal:tolerance><xcal:tolerate><xcal:startafter>{dur(self.startafter_s)}</xcal:startafter>"
                     "</xcal:tolerate></xcal:tolerance>") if self.startafter_s else ""
        signals = ""
        for n, s in enumerate(self.signals):
            intervals = "".join(
                f"<ei:interval><xcal:duration><xcal:duration>{dur(s.interval_s)}</xcal:duration></xcal:duration>"
                f"<xcal:uid><xcal:text>{i}</xcal:text></xcal:uid><ei:signalPayload><ei:payloadFloat>"
                f"<ei:value>{v}</ei:value></ei:payloadFloat></ei:signalPayload></ei:interval>"
                for i, v in enumerate(s.values))
            signals += (f"<ei:eiEventSignal><strm:intervals>{intervals}</strm:intervals>"
                        f"<ei:signalName>{s.name}</ei:signalName><ei:signalType>{s.type}</ei:signalType>"
                        f"<ei:signalID>{s.signal_id or f'{self.event_id}-s{n}'}</ei:signalID>{s.item}"
                        f"<ei:currentValue><ei:payloadFloat><ei:value>0</ei:value></ei:payloadFloat>"
                        "</ei:currentValue></ei:eiEventSignal>")
        if self.baseline:
            signals += (f"<ei:eiEventBaseline><xcal:dtstart><xcal:date-time>{dt(self.dtstart)}</xcal:date-time>"
                        f"</xcal:dtstart><xcal:duration><xcal:duration>{dur(total)}</xcal:duration></xcal:duration>"
                        "<strm:intervals><ei:interval><xcal:duration><xcal:duration>"
                        f"{dur(total)}</xcal:duration></xcal:duration><xcal:uid><xcal:text>0</xcal:text></xcal:uid>"
                        "<ei:signalPayload><ei:payloadFloat><ei:value>80</ei:value></ei:payloadFloat>"
                        "</ei:signalPayload></ei:interval></strm:intervals><ei:baselineID>bl-1</ei:baselineID>"
                        f"<ei:baselineName>site baseline</ei:baselineName>{item_base('powerReal', 'k')}"
                        "</ei:eiEventBaseline>")
        order = {"resourceID": 0, "groupID": -1, "venID": 1}
        targets = sorted(self.targets if self.targets is not None else [("venID", ven_id)],
                         key=lambda t: order.get(t[0], 0))
        target = "".join(f"<ei:{kind}>{value}</ei:{kind}>" for kind, value in targets)
        return (
            "<oadr:oadrEvent><ei:eiEvent><ei:eventDescriptor>"
            f"<ei:eventID>{self.event_id}</ei:eventID><ei:modificationNumber>{self.mod}</ei:modificationNumber>"
            f"<ei:priority>{self.priority}</ei:priority><ei:eiMarketContext><emix:marketContext>"
            f"{self.market_context}</emix:marketContext></ei:eiMarketContext>"
            f"<ei:createdDateTime>{dt(self.dtstart - timedelta(minutes=5))}</ei:createdDateTime>"
            f"<ei:eventStatus>{self.status}</ei:eventStatus><ei:testEvent>{self.test}</ei:testEvent>"
            "</ei:eventDescriptor><ei:eiActivePeriod><xcal:properties>"
            f"<xcal:dtstart><xcal:date-time>{dt(self.dtstart)}</xcal:date-time></xcal:dtstart>"
            f"<xcal:duration><xcal:duration>{dur(total)}</xcal:duration></xcal:duration>{tolerance}"
            '</xcal:properties><xcal:components xsi:nil="true"/></ei:eiActivePeriod>'
            f"<ei:eiEventSignals>{signals}</ei:eiEventSignals><ei:eiTarget>{target}</ei:eiTarget></ei:eiEvent>"
            f"<oadr:oadrResponseRequired>{self.response_required}</oadr:oadrResponseRequired></oadr:oadrEvent>"
        )


@dataclass
class ReportAsk:
    """One oadrReportRequest this VTN makes."""

    request_id: str
    specifier_id: str
    r_ids: list[str]
    granularity_s: float = 1
    back_s: float = 1

    def xml(self) -> str:
        payloads = "".join(f"<ei:specifierPayload><ei:rID>{r}</ei:rID><ei:readingType>Direct Read</ei:readingType>"
                           "</ei:specifierPayload>" for r in self.r_ids)
        return (f"<oadr:oadrReportRequest><ei:reportRequestID>{self.request_id}</ei:reportRequestID>"
                f"<ei:reportSpecifier><ei:reportSpecifierID>{self.specifier_id}</ei:reportSpecifierID>"
                f"<xcal:granularity><xcal:duration>{dur(self.granularity_s)}</xcal:duration></xcal:granularity>"
                f"<ei:reportBackDuration><xcal:duration>{dur(self.back_s)}</xcal:duration></ei:reportBackDuration>"
                f"{payloads}</ei:reportSpecifier></oadr:oadrReportRequest>")


# ------------------------------------------------------------------------------------- what the VEN sent


@dataclass
class Got:
    service: str
    type: str
    body: bytes
    msg: Any  # the message element (child of oadrSignedObject)
    at: float
    refused: bool = False  # answered 452: the VTN did not know the venID or registration

    def text(self, path: str) -> str | None:
        el = self.msg.find(path, NSMAP)
        return None if el is None or el.text is None else el.text.strip()

    def texts(self, path: str) -> list[str]:
        return [(e.text or "").strip() for e in self.msg.findall(path, NSMAP)]


@dataclass
class Answer:
    """One eventResponse of an oadrCreatedEvent."""

    event_id: str
    mod: int
    code: int
    opt: str


@dataclass
class Interval:
    report_request_id: str
    r_id: str
    dtstart: str
    duration: str | None
    value: float | None
    status: Any  # the oadrPayloadResourceStatus element, or None


class XmlVtn:
    def __init__(self, *, poll_s: float = 1, vtn_id: str = "XML-VTN", ven_id: str = "ven-1",
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.poll_s = poll_s
        self.vtn_id = vtn_id
        self.assign_ven_id = ven_id
        self.ssl_context = ssl_context
        self.got: list[Got] = []
        self.schema_failures: list[str] = []
        self.events: list[Ev] = []
        self.outbox: list[bytes] = []
        self.answers: list[Answer] = []
        self.intervals: list[Interval] = []
        self.registrations: list[tuple[str | None, str | None]] = []  # (venID, registrationID) the VEN sent
        self.report_asks: list[ReportAsk] = []  # made in oadrRegisteredReport
        self.cancel_on_update: list[str] = []  # report request ids to cancel piggy-backed on oadrUpdatedReport
        self.opts: dict[str, Got] = {}
        self.tls: list[tuple[str, str, bool]] = []  # (version, cipher, client certificate seen) per request
        self.ven_id: str | None = None
        self.registration_id: str | None = None
        self.offered: list[str] = []  # rIDs in the last oadrRegisterReport
        self.refuse_registration: tuple[int, str] | None = None
        self.http_status: int | None = None  # answer every request with this HTTP status (an outage)
        self.pending = False  # the event list changed since the VEN last got it
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---------------------------------------------------------------------------------- server

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}{PREFIX}"

    async def start(self, port: int = 0) -> str:
        app = web.Application(client_max_size=4_000_000)
        app.router.add_post(PREFIX + "/{service}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=self.ssl_context, reuse_address=True)
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def of(self, mtype: str) -> list[Got]:
        return [g for g in self.got if g.type == mtype]

    def send(self, body: str) -> bytes:
        data = envelope(body)
        error = schema_errors(data)
        assert error is None, f"the test VTN wrote an invalid message: {error}\n{data.decode()[:2000]}"
        return data

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        error = schema_errors(body)
        root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
        signed = root.find(f"{{{OADR}}}oadrSignedObject")
        msg = signed[0] if signed is not None and len(signed) else root
        mtype = etree.QName(msg).localname
        if error is not None:
            self.schema_failures.append(f"{mtype}: {error}")
        got = Got(request.match_info["service"], mtype, body, msg, asyncio.get_running_loop().time())
        self.got.append(got)
        tls = request.transport.get_extra_info("ssl_object") if request.transport is not None else None
        if tls is not None:
            self.tls.append((tls.version(), tls.cipher()[0], tls.getpeercert() is not None))
        if self.http_status is not None:
            return web.Response(status=self.http_status, text="outage")
        answer = getattr(self, f"on_{mtype}", None)
        data = answer(got) if answer is not None else b""
        return web.Response(body=data, content_type="application/xml")

    # -------------------------------------------------------------------------------- messages

    def response(self, got: Got, code: int = 200, description: str = "OK") -> bytes:
        ven = f"<ei:venID>{self.ven_id}</ei:venID>" if self.ven_id else ""
        return self.send(f'<oadr:oadrResponse ei:schemaVersion="2.0b">'
                         f"{ei_response(code, description, got.text('.//pyld:requestID') or '')}{ven}"
                         "</oadr:oadrResponse>")

    def created_party_registration(self, request_id: str, code: int = 200, description: str = "OK") -> bytes:
        ids = ""
        if self.registration_id and self.ven_id and code == 200:
            ids = f"<ei:registrationID>{self.registration_id}</ei:registrationID><ei:venID>{self.ven_id}</ei:venID>"
        return self.send(
            f'<oadr:oadrCreatedPartyRegistration ei:schemaVersion="2.0b">{ei_response(code, description, request_id)}'
            f"{ids}<ei:vtnID>{self.vtn_id}</ei:vtnID><oadr:oadrProfiles><oadr:oadrProfile>"
            "<oadr:oadrProfileName>2.0a</oadr:oadrProfileName><oadr:oadrTransports><oadr:oadrTransport>"
            "<oadr:oadrTransportName>simpleHttp</oadr:oadrTransportName></oadr:oadrTransport></oadr:oadrTransports>"
            "</oadr:oadrProfile><oadr:oadrProfile><oadr:oadrProfileName>2.0b</oadr:oadrProfileName>"
            "<oadr:oadrTransports><oadr:oadrTransport><oadr:oadrTransportName>simpleHttp</oadr:oadrTransportName>"
            "</oadr:oadrTransport></oadr:oadrTransports></oadr:oadrProfile></oadr:oadrProfiles>"
            f"<oadr:oadrRequestedOadrPollFreq><xcal:duration>{dur(self.poll_s)}</xcal:duration>"
            "</oadr:oadrRequestedOadrPollFreq></oadr:oadrCreatedPartyRegistration>")

    def distribute(self, events: list[Ev] | None = None, request_id: str | None = None) -> bytes:
        events = self.events if events is None else events
        body = "".join(e.xml(self.ven_id or "") for e in events)
        return self.send(f'<oadr:oadrDistributeEvent ei:schemaVersion="2.0b">{ei_response()}'
                         f"<pyld:requestID>{request_id or self.new_id('dist')}</pyld:requestID>"
                         f"<ei:vtnID>{self.vtn_id}</ei:vtnID>{body}</oadr:oadrDistributeEvent>")

    def create_report(self, *asks: ReportAsk) -> bytes:
        return self.send(f'<oadr:oadrCreateReport ei:schemaVersion="2.0b"><pyld:requestID>{self.new_id("cr")}'
                         f"</pyld:requestID>{''.join(a.xml() for a in asks)}</oadr:oadrCreateReport>")

    def cancel_report(self, *request_ids: str, follow: bool = False) -> str:
        ids = "".join(f"<ei:reportRequestID>{r}</ei:reportRequestID>" for r in request_ids)
        return (f'<oadr:oadrCancelReport ei:schemaVersion="2.0b"><pyld:requestID>{self.new_id("xr")}</pyld:requestID>'
                f"{ids}<pyld:reportToFollow>{'true' if follow else 'false'}</pyld:reportToFollow>"
                "</oadr:oadrCancelReport>")

    def request_reregistration(self) -> bytes:
        return self.send(f'<oadr:oadrRequestReregistration ei:schemaVersion="2.0b"><ei:venID>{self.ven_id}'
                         "</ei:venID></oadr:oadrRequestReregistration>")

    def cancel_party_registration(self) -> bytes:
        return self.send(f'<oadr:oadrCancelPartyRegistration ei:schemaVersion="2.0b"><pyld:requestID>'
                         f"{self.new_id('cpr')}</pyld:requestID><ei:registrationID>{self.registration_id}"
                         f"</ei:registrationID><ei:venID>{self.ven_id}</ei:venID></oadr:oadrCancelPartyRegistration>")

    def register_report_request(self) -> bytes:
        """A VTN-initiated oadrRegisterReport (the VTN offering its own reports; none here)."""
        return self.send(f'<oadr:oadrRegisterReport ei:schemaVersion="2.0b"><pyld:requestID>{self.new_id("rr")}'
                         f"</pyld:requestID><ei:venID>{self.ven_id}</ei:venID></oadr:oadrRegisterReport>")

    # ------------------------------------------------------------------------- VEN → VTN handlers

    def on_oadrQueryRegistration(self, got: Got) -> bytes:
        return self.created_party_registration(got.text("pyld:requestID") or "")

    def on_oadrCreatePartyRegistration(self, got: Got) -> bytes:
        ven_id, registration_id = got.text("ei:venID"), got.text("ei:registrationID")
        self.registrations.append((ven_id, registration_id))
        if self.refuse_registration is not None:
            return self.created_party_registration(got.text("pyld:requestID") or "", *self.refuse_registration)
        if registration_id and registration_id == self.registration_id:
            pass  # a re-registration renewing the registration we know: it keeps its id
        else:
            self.registration_id = self.new_id("reg")
        self.ven_id = ven_id or self.ven_id or self.assign_ven_id
        self.pending = bool(self.events)
        return self.created_party_registration(got.text("pyld:requestID") or "")

    def on_oadrCancelPartyRegistration(self, got: Got) -> bytes:
        rid = got.text("ei:registrationID")
        self.registration_id = None
        return self.send(f'<oadr:oadrCanceledPartyRegistration ei:schemaVersion="2.0b">'
                         f"{ei_response(200, 'OK', got.text('pyld:requestID') or '')}"
                         f"<ei:registrationID>{rid}</ei:registrationID><ei:venID>{self.ven_id}</ei:venID>"
                         "</oadr:oadrCanceledPartyRegistration>")

    def on_oadrCanceledPartyRegistration(self, got: Got) -> bytes:
        return self.response(got)

    def known(self, got: Got) -> bool:
        return self.registration_id is not None and got.text("ei:venID") == self.ven_id

    def on_oadrPoll(self, got: Got) -> bytes:
        if not self.known(got):
            got.refused = True
            return self.response(got, 452, "INVALID ID")
        if self.outbox:
            return self.outbox.pop(0)
        if self.pending:
            self.pending = False
            return self.distribute()
        return self.response(got)

    def on_oadrRequestEvent(self, got: Got) -> bytes:
        if not self.known(got):
            got.refused = True
            return self.response(got, 452, "INVALID ID")
        self.pending = False
        return self.distribute(request_id=got.text(".//pyld:requestID"))

    def on_oadrCreatedEvent(self, got: Got) -> bytes:
        for r in got.msg.iterfind(".//ei:eventResponse", NSMAP):
            self.answers.append(Answer(
                event_id=(r.findtext("ei:qualifiedEventID/ei:eventID", namespaces=NSMAP) or "").strip(),
                mod=int(r.findtext("ei:qualifiedEventID/ei:modificationNumber", namespaces=NSMAP) or -1),
                code=int(r.findtext("ei:responseCode", namespaces=NSMAP) or 0),
                opt=(r.findtext("ei:optType", namespaces=NSMAP) or "").strip()))
        return self.response(got)

    def on_oadrRegisterReport(self, got: Got) -> bytes:
        self.offered = got.texts(".//oadr:oadrReportDescription/ei:rID")
        asks = "".join(a.xml() for a in self.report_asks)
        return self.send(f'<oadr:oadrRegisteredReport ei:schemaVersion="2.0b">'
                         f"{ei_response(200, 'OK', got.text('pyld:requestID') or '')}{asks}"
                         f"<ei:venID>{self.ven_id}</ei:venID></oadr:oadrRegisteredReport>")

    def on_oadrCreatedReport(self, got: Got) -> bytes:
        return self.response(got)

    def on_oadrCanceledReport(self, got: Got) -> bytes:
        return self.response(got)

    def on_oadrRegisteredReport(self, got: Got) -> bytes:
        return self.response(got)

    def on_oadrResponse(self, got: Got) -> bytes:
        return b""

    def on_oadrUpdateReport(self, got: Got) -> bytes:
        for report in got.msg.iterfind("oadr:oadrReport", NSMAP):
            request_id = (report.findtext("ei:reportRequestID", namespaces=NSMAP) or "").strip()
            for interval in report.iterfind(".//ei:interval", NSMAP):
                payload = interval.find("oadr:oadrReportPayload", NSMAP)
                value = payload.findtext("ei:payloadFloat/ei:value", namespaces=NSMAP)
                self.intervals.append(Interval(
                    request_id, (payload.findtext("ei:rID", namespaces=NSMAP) or "").strip(),
                    (interval.findtext("xcal:dtstart/xcal:date-time", namespaces=NSMAP) or "").strip(),
                    interval.findtext("xcal:duration/xcal:duration", namespaces=NSMAP),
                    float(value) if value is not None else None,
                    payload.find("oadr:oadrPayloadResourceStatus", NSMAP)))
        cancel = self.cancel_report(*self.cancel_on_update) if self.cancel_on_update else ""
        self.cancel_on_update = []
        return self.send(f'<oadr:oadrUpdatedReport ei:schemaVersion="2.0b">'
                         f"{ei_response(200, 'OK', got.text('pyld:requestID') or '')}{cancel}"
                         f"<ei:venID>{self.ven_id}</ei:venID></oadr:oadrUpdatedReport>")

    def on_oadrCreateOpt(self, got: Got) -> bytes:
        opt_id = got.text("ei:optID") or ""
        self.opts[opt_id] = got
        return self.send(f'<oadr:oadrCreatedOpt ei:schemaVersion="2.0b">'
                         f"{ei_response(200, 'OK', got.text('pyld:requestID') or '')}<ei:optID>{opt_id}</ei:optID>"
                         "</oadr:oadrCreatedOpt>")

    def on_oadrCancelOpt(self, got: Got) -> bytes:
        opt_id = got.text("ei:optID") or ""
        self.opts.pop(opt_id, None)
        return self.send(f'<oadr:oadrCanceledOpt ei:schemaVersion="2.0b">'
                         f"{ei_response(200, 'OK', got.text('pyld:requestID') or '')}<ei:optID>{opt_id}</ei:optID>"
                         "</oadr:oadrCanceledOpt>")

    # ------------------------------------------------------------------------------ test helpers

    def publish(self, *events: Ev) -> None:
        """Replace or add these events in the VTN's list; the VEN gets the whole list on its next poll."""
        for e in events:
            self.events = [x for x in self.events if x.event_id != e.event_id] + [e]
        self.pending = True

    def drop(self, event_id: str) -> None:
        self.events = [e for e in self.events if e.event_id != event_id]
        self.pending = True

    def answers_for(self, event_id: str) -> list[Answer]:
        return [a for a in self.answers if a.event_id == event_id]


# ------------------------------------------------------------------------------------ the VEN under test


class EventLog:
    """An EventSink that keeps the last event list the VEN handed over."""

    def __init__(self) -> None:
        self.events: dict[str, Any] = {}
        self.calls = 0

    def events_changed(self, events: Any, now: datetime) -> None:
        self.events = {e.event_id: e for e in events}
        self.calls += 1

    def opt_of(self, event_id: str) -> Any:
        from gateway.domain import OptState

        return OptState.NONE


class Site:
    """The VEN under test against an XmlVtn: plain HTTP on loopback, polling fast, backing off briefly."""

    def __init__(self, tmp: Path, vtn: XmlVtn, config: Any = None, telemetry: Any = None, seed: int = 1,
                 sink: Any = None) -> None:
        from gateway.config.openadr import OpenAdrSection

        self.tmp = tmp
        self.vtn = vtn
        self.config = config or OpenAdrSection(ev_capacity_kw=50.0, resources={"fleet": ("cp-1",)})
        self.telemetry = telemetry
        self.seed = seed
        self.sink = EventLog()
        self.events_to = sink or self.sink
        self.ven: Any = None
        self.store: Any = None
        self.task: asyncio.Task[None] | None = None

    def section(self, **kw: Any) -> Any:
        from gateway.config.openadr import VtnSection

        base: dict[str, Any] = {"url": self.vtn.url, "ven_name": "site-1", "allow_plain_http": True, "poll_s": 0.05,
                                "backoff_initial_s": 0.05, "backoff_max_s": 0.2, "request_timeout_s": 2.0}
        base.update(kw)
        return VtnSection.model_validate(base)

    def make(self, **kw: Any) -> Any:
        import random

        from gateway.openadr.ven import Ven
        from gateway.store.vtn import VenStore

        self.store = VenStore.open(self.tmp / "gw.sqlite")
        currency = kw.pop("currency", None)
        self.ven = Ven(self.section(**kw), self.config, self.store, sink=self.events_to, telemetry=self.telemetry,
                       charger_ids=("cp-1", "cp-2"), rng=random.Random(self.seed), currency=currency)
        return self.ven

    async def start(self, **kw: Any) -> Any:
        ven = self.make(**kw)
        self.task = asyncio.create_task(ven.run())
        await asyncio.wait_for(ven.registered.wait(), 10)
        return ven

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        if self.store is not None:
            self.store.close()
            self.store = None

    async def events(self) -> dict[str, Any]:
        return dict(await self.ven.events())

    async def answered(self, event_id: str, n: int = 1, timeout: float = 5.0) -> list[Answer]:
        """Wait until the VTN holds `n` answers for the event; returns them."""
        await until(lambda: len(self.vtn.answers_for(event_id)) >= n, timeout, f"{n} answers for {event_id}")
        return self.vtn.answers_for(event_id)
