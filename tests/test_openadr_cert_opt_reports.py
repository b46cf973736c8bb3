"""Certification cases P1_2010-2050 (opt), R1_3010-3190 (reports) and G1_4010-4015 (general) against the
hand-written XML VTN; and the TELEMETRY_STATUS report that tells the curtailment in force whatever its
source, as the standard oadrPayloadResourceStatus (issue 14 item 2), taken from a real Runtime. Where a
case's exact wording is not public it is written from the 2.0b profile's rules (see docs/openadr.md).
Every message the VEN sends is validated against the 2.0b XSD."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support.waiting import until
from support.xmlvtn import NSMAP, Ev, ReportAsk, Sig, Site, XmlVtn

from gateway.certs import DevPki, init_dev_pki
from gateway.config import parse_config
from gateway.config.openadr import OpenAdrSection
from gateway.domain import OptState
from gateway.openadr import reports
from gateway.ports import Curtailment
from gateway.runtime.loop import Runtime

STATUS_RIDS = [reports.ONLINE, reports.LOAD_CONTROL, reports.LIMIT]


class Telemetry:
    def __init__(self) -> None:
        self.n = 0
        self.cut = Curtailment()

    def site_power_kw(self) -> float | None:
        self.n += 1
        return 40.0 + self.n

    def site_energy_kwh(self) -> float | None:
        return 1000.0

    def ev_power_kw(self) -> float | None:
        return 22.0

    def charger_power_kw(self) -> dict[str, float]:
        return {"cp-1": 11.0, "cp-2": 11.0}

    def limit_kw(self) -> float | None:
        return self.cut.limit_kw

    def online(self) -> bool:
        return True

    def curtailment(self) -> Curtailment:
        return self.cut


@pytest.fixture
async def site(tmp_path: Path, vtn: XmlVtn) -> AsyncIterator[Site]:
    s = Site(tmp_path, vtn, OpenAdrSection(ev_capacity_kw=50.0, report_interval_s=1), telemetry=Telemetry())
    yield s
    await s.stop()


def intervals_of(vtn: XmlVtn, request_id: str, r_id: str | None = None) -> list[Any]:
    return [i for i in vtn.intervals if i.report_request_id == request_id and (r_id is None or i.r_id == r_id)]


# ------------------------------------------------------------------------------------------------- opt


async def opted_event(site: Site) -> None:
    await site.start()
    site.vtn.publish(Ev("ev-opt", [Sig("SIMPLE", "level", [2])], mod=2))
    await site.answered("ev-opt")


async def test_P1_2010_an_opt_out_is_sent_as_oadr_create_opt_and_acknowledged(site: Site) -> None:
    await opted_event(site)
    await site.ven.set_opt("ev-opt", OptState.OPT_OUT, "site open day")
    await until(lambda: site.vtn.opts)
    (sent,) = site.vtn.opts.values()
    assert sent.text("ei:optType") == "optOut" and sent.text("ei:optReason") == "overrideStatus"
    assert sent.text("ei:qualifiedEventID/ei:eventID") == "ev-opt"
    assert sent.text("ei:qualifiedEventID/ei:modificationNumber") == "2"
    assert sent.text("ei:venID") == "ven-1" and sent.text("emix:marketContext") == "http://utility.example/programs/ev"
    await until(lambda: site.store.pending_opts() == [])  # dequeued just after the answer (a worker thread)


async def test_P1_2020_an_opt_in_is_sent_as_oadr_create_opt(site: Site) -> None:
    await opted_event(site)
    await site.ven.set_opt("ev-opt", OptState.OPT_OUT, "x")
    await until(lambda: len(site.vtn.of("oadrCreateOpt")) == 1)
    await site.ven.set_opt("ev-opt", OptState.OPT_IN, "back in")
    await until(lambda: len(site.vtn.of("oadrCreateOpt")) == 2)
    assert site.vtn.of("oadrCreateOpt")[1].text("ei:optType") == "optIn"
    assert (await site.events())["ev-opt"].acted_on


async def test_P1_2030_lifting_an_opt_sends_oadr_cancel_opt_for_it(site: Site) -> None:
    await opted_event(site)
    await site.ven.set_opt("ev-opt", OptState.OPT_OUT, "x")
    await until(lambda: site.vtn.opts)
    (opt_id,) = site.vtn.opts
    await site.ven.set_opt("ev-opt", None)
    await until(lambda: site.vtn.of("oadrCancelOpt"))
    assert site.vtn.of("oadrCancelOpt")[0].text("ei:optID") == opt_id and site.vtn.opts == {}


async def test_P1_2040_an_opt_made_while_the_vtn_is_unreachable_is_delivered_when_it_is_back(site: Site) -> None:
    await opted_event(site)
    site.vtn.http_status = 503
    await site.ven.set_opt("ev-opt", OptState.OPT_OUT, "x")
    await until(lambda: site.ven.failures >= 2)
    assert not site.vtn.opts and len(site.store.pending_opts()) == 1
    site.vtn.http_status = None
    await until(lambda: site.vtn.opts)
    await until(lambda: site.store.pending_opts() == [])  # dequeued just after the answer (a worker thread)


@pytest.mark.skip(reason="not applicable: the gateway opts per event only; it never sends an availability "
                  "schedule (oadrCreateOpt with a vavailability and no eventID)")
async def test_P1_2050_an_opt_schedule_of_availability() -> None:
    raise AssertionError("not applicable")


# --------------------------------------------------------------------------------------------- reports


async def test_R1_3010_metadata_reports_are_offered_at_registration_with_their_units(site: Site) -> None:
    await site.start()
    offer = site.vtn.of("oadrRegisterReport")[0]
    assert offer.texts(".//ei:reportSpecifierID") == [reports.USAGE_ID, reports.STATUS_ID]
    assert offer.texts(".//ei:reportName") == ["METADATA_TELEMETRY_USAGE", "METADATA_TELEMETRY_STATUS"]
    assert set(site.vtn.offered) >= {reports.SITE_POWER, reports.SITE_ENERGY, *STATUS_RIDS,
                                     reports.CHARGER_POWER + "cp-1"}
    by_rid = {d.findtext("ei:rID", namespaces=NSMAP): d for d in offer.msg.iterfind(".//oadr:oadrReportDescription",
                                                                                     NSMAP)}
    limit = by_rid[reports.LIMIT]
    assert limit.findtext("ei:reportType", namespaces=NSMAP) == "setPoint"
    assert limit.findtext("power:powerReal/power:itemUnits", namespaces=NSMAP) == "W"
    assert limit.findtext("power:powerReal/scale:siScaleCode", namespaces=NSMAP) == "k"
    for r in (reports.ONLINE, reports.LOAD_CONTROL):
        assert by_rid[r].findtext("ei:reportType", namespaces=NSMAP) == "x-resourceStatus"


async def test_R1_3020_a_one_shot_request_gets_one_report_and_ends(site: Site) -> None:
    await site.start()
    site.vtn.outbox.append(site.vtn.create_report(ReportAsk("rr-once", reports.USAGE_ID, [reports.SITE_POWER], 0, 0)))
    await until(lambda: intervals_of(site.vtn, "rr-once"))
    await until(lambda: "rr-once" not in {r.report_request_id for r in site.store.report_requests()})
    n = len(site.vtn.of("oadrUpdateReport"))
    await until(lambda: len(site.vtn.of("oadrPoll")) > 20)
    assert len(intervals_of(site.vtn, "rr-once")) == 1 and len(site.vtn.of("oadrUpdateReport")) == n


async def test_R1_3030_a_periodic_report_every_report_back_duration_with_interval_durations(site: Site) -> None:
    await site.start()
    site.vtn.outbox.append(site.vtn.create_report(
        ReportAsk("rr-p", reports.USAGE_ID, [reports.SITE_POWER, reports.EV_POWER], 1, 2)))
    await until(lambda: len(intervals_of(site.vtn, "rr-p", reports.SITE_POWER)) >= 4, 8)
    got = intervals_of(site.vtn, "rr-p")
    assert {i.duration for i in got} == {"PT1S"}
    assert [i.value for i in got if i.r_id == reports.EV_POWER][:2] == [22.0, 22.0]
    stamps = [i.dtstart for i in got if i.r_id == reports.SITE_POWER]
    assert len(stamps) == len(set(stamps))  # no slot twice
    first = next(g for g in site.vtn.of("oadrUpdateReport") if g.texts(".//ei:reportRequestID") == ["rr-p"])
    assert len(first.msg.findall(".//ei:interval", NSMAP)) >= 2 * 2  # two samples of two rIDs per report back


async def test_R1_3040_oadr_cancel_report_is_answered_and_the_report_stops(site: Site) -> None:
    await site.start()
    site.vtn.outbox.append(site.vtn.create_report(ReportAsk("rr-c", reports.USAGE_ID, [reports.SITE_POWER], 1, 1)))
    await until(lambda: intervals_of(site.vtn, "rr-c"), 5)
    site.vtn.outbox.append(site.vtn.send(site.vtn.cancel_report("rr-c")))
    await until(lambda: site.vtn.of("oadrCanceledReport"))
    n = len(intervals_of(site.vtn, "rr-c"))
    await until(lambda: len(site.vtn.of("oadrPoll")) > 60, 8)
    assert len(intervals_of(site.vtn, "rr-c")) == n
    assert site.vtn.of("oadrCanceledReport")[0].text(".//ei:responseCode") == "200"


async def test_R1_3050_a_cancel_piggy_backed_on_oadr_updated_report_is_honoured(site: Site) -> None:
    await site.start()
    site.vtn.outbox.append(site.vtn.create_report(ReportAsk("rr-pb", reports.USAGE_ID, [reports.SITE_POWER], 1, 1)))
    await until(lambda: intervals_of(site.vtn, "rr-pb"), 5)
    site.vtn.cancel_on_update = ["rr-pb"]
    await until(lambda: site.vtn.of("oadrCanceledReport"), 5)
    assert "rr-pb" not in {r.report_request_id for r in site.store.report_requests()}


async def test_R1_3060_a_request_piggy_backed_on_oadr_registered_report_is_created_and_served(
    tmp_path: Path, vtn: XmlVtn
) -> None:
    vtn.report_asks = [ReportAsk("rr-reg", reports.STATUS_ID, [reports.ONLINE], 1, 1)]
    s = Site(tmp_path, vtn, OpenAdrSection(report_interval_s=1), telemetry=Telemetry())
    try:
        await s.start()
        await until(lambda: vtn.of("oadrCreatedReport"))
        assert vtn.of("oadrCreatedReport")[0].texts(".//ei:reportRequestID") == ["rr-reg"]
        await until(lambda: intervals_of(vtn, "rr-reg"), 5)
    finally:
        await s.stop()


async def test_R1_3070_telemetry_usage_carries_the_sampled_values(site: Site) -> None:
    await site.start()
    site.vtn.outbox.append(site.vtn.create_report(ReportAsk(
        "rr-u", reports.USAGE_ID, [reports.SITE_POWER, reports.SITE_ENERGY, reports.CHARGER_POWER + "cp-2"], 1, 1)))
    await until(lambda: len({i.r_id for i in intervals_of(site.vtn, "rr-u")}) == 3, 5)
    values = {i.r_id: i.value for i in intervals_of(site.vtn, "rr-u")}
    assert values[reports.SITE_ENERGY] == 1000.0 and values[reports.CHARGER_POWER + "cp-2"] == 11.0
    assert values[reports.SITE_POWER] is not None and values[reports.SITE_POWER] > 40


def runtime() -> Runtime:
    """A real runtime (two 32 A three-phase chargers) as the VEN's event sink and telemetry source."""
    config = parse_config({
        "site": {"wiring": "three-phase-400/230", "service_breaker_a": 200},
        "chargers": [{"id": "cp-1", "protocol": "ocpp2.0.1", "phases": "L1-L2-L3", "max_a": 32},
                     {"id": "cp-2", "protocol": "ocpp1.6", "phases": "L1-L2-L3", "max_a": 32}],
        "openadr": {"report_interval_s": 1},
    })
    return Runtime(config, serve_status=False)


def parts(status: Any) -> dict[str, tuple[float, float | None]]:
    out = {}
    for part in status.find("oadr:oadrLoadControlState", NSMAP):
        normal = part.findtext("oadr:oadrNormal", namespaces=NSMAP)
        out[part.tag.split("}")[1]] = (float(part.findtext("oadr:oadrCurrent", namespaces=NSMAP)),
                                       float(normal) if normal is not None else None)
    return out


async def status_during(tmp_path: Path, vtn: XmlVtn, signal: Sig) -> tuple[Any, float | None, float]:
    """The first resource status and limit the VTN receives while `signal` is in force; and normal EV kW."""
    rt = runtime()
    s = Site(tmp_path, vtn, rt.config.openadr, telemetry=rt, sink=rt)
    try:
        await s.start()
        vtn.publish(Ev("ev-cut", [signal]))
        await s.answered("ev-cut")
        await rt.decide_once()
        vtn.outbox.append(vtn.create_report(ReportAsk("rr-s", reports.STATUS_ID, STATUS_RIDS, 1, 1)))
        await until(lambda: intervals_of(vtn, "rr-s", reports.LIMIT) and intervals_of(vtn, "rr-s", reports.ONLINE), 6)
        (status,) = intervals_of(vtn, "rr-s", reports.LOAD_CONTROL)[:1]
        return status.status, intervals_of(vtn, "rr-s", reports.LIMIT)[0].value, rt.schedule_settings.ev_capacity_kw
    finally:
        await s.stop()


async def test_R1_3080_telemetry_status_tells_a_simple_curtailment_as_oadr_payload_resource_status(
    tmp_path: Path, vtn: XmlVtn
) -> None:
    status, limit, normal = await status_during(tmp_path, vtn, Sig("SIMPLE", "level", [2]))
    assert status is not None, "sent as oadrPayloadResourceStatus, not payloadFloat"
    assert status.findtext("oadr:oadrOnline", namespaces=NSMAP) == "true"
    assert status.findtext("oadr:oadrManualOverride", namespaces=NSMAP) == "false"
    p = parts(status)
    assert p["oadrLevelOffset"] == (2.0, 0.0) and p["oadrCapacity"] == (0.25, 1.0)
    assert p["oadrPercentOffset"] == (-75.0, 0.0)
    assert p["oadrSetPoint"][0] == pytest.approx(0.25 * normal, rel=1e-6)
    assert limit == pytest.approx(0.25 * normal, rel=1e-6)  # no other load measured here


async def test_R1_3090_a_metadata_request_is_answered_with_oadr_register_report(site: Site) -> None:
    await site.start()
    site.vtn.outbox.append(site.vtn.create_report(ReportAsk("rr-meta", "METADATA", ["x"], 0, 0)))
    await until(lambda: len(site.vtn.of("oadrRegisterReport")) == 2)
    assert site.vtn.of("oadrCreatedReport")[0].texts(".//ei:reportRequestID") == []


async def test_R1_3100_a_request_for_what_we_do_not_offer_is_answered_without_it(site: Site) -> None:
    await site.start()
    site.vtn.outbox.append(site.vtn.create_report(
        ReportAsk("rr-none", "someone-elses-report", [reports.SITE_POWER], 1, 1),
        ReportAsk("rr-part", reports.USAGE_ID, [reports.SITE_POWER, "no-such-rid"], 1, 1)))
    await until(lambda: site.vtn.of("oadrCreatedReport"))
    assert site.vtn.of("oadrCreatedReport")[0].texts(".//ei:reportRequestID") == ["rr-part"]
    await until(lambda: intervals_of(site.vtn, "rr-part"), 5)
    assert {i.r_id for i in intervals_of(site.vtn, "rr-part")} == {reports.SITE_POWER}


async def test_R1_3110_a_vtn_initiated_register_report_is_answered_with_registered_report(site: Site) -> None:
    await site.start()
    site.vtn.outbox.append(site.vtn.register_report_request())
    await until(lambda: site.vtn.of("oadrRegisteredReport"))
    assert site.vtn.of("oadrRegisteredReport")[0].text(".//ei:responseCode") == "200"


async def test_R1_3120_a_backlog_kept_through_an_outage_is_delivered_once_without_gaps(site: Site) -> None:
    await site.start()
    site.vtn.outbox.append(site.vtn.create_report(ReportAsk("rr-b", reports.USAGE_ID, [reports.SITE_POWER], 1, 1)))
    await until(lambda: intervals_of(site.vtn, "rr-b"), 5)
    site.vtn.http_status = 503
    await until(lambda: site.ven.failures >= 3 and len(site.store.unsent_readings()) >= 2, 8)
    site.vtn.http_status = None
    await until(lambda: site.store.unsent_readings() == [] and site.ven.failures == 0, 8)
    stamps = [i.dtstart for i in intervals_of(site.vtn, "rr-b")]
    assert len(stamps) == len(set(stamps)) >= 3


async def test_R1_3130_telemetry_status_tells_a_load_control_curtailment(tmp_path: Path, vtn: XmlVtn) -> None:
    status, limit, normal = await status_during(tmp_path, vtn, Sig("LOAD_CONTROL", "x-loadControlCapacity", [0.4]))
    p = parts(status)
    assert p["oadrCapacity"] == (pytest.approx(0.4), 1.0)  # type: ignore[comparison-overlap]  # pytest.approx equals a float at run time
    assert p["oadrLevelOffset"] == (0.0, 0.0)
    assert limit == pytest.approx(0.4 * normal, rel=1e-6)


async def test_R1_3140_telemetry_status_tells_a_load_dispatch_delta(tmp_path: Path, vtn: XmlVtn) -> None:
    status, limit, normal = await status_during(
        tmp_path, vtn, Sig("LOAD_DISPATCH", "delta", [-10], item='<power:powerReal><power:itemDescription>RealPower'
                           '</power:itemDescription><power:itemUnits>W</power:itemUnits><scale:siScaleCode>k'
                           '</scale:siScaleCode><power:powerAttributes><power:hertz>50</power:hertz><power:voltage>'
                           '230</power:voltage><power:ac>true</power:ac></power:powerAttributes></power:powerReal>'))
    p = parts(status)
    assert p["oadrSetPoint"] == (pytest.approx(normal - 10), pytest.approx(normal))  # type: ignore[comparison-overlap]  # pytest.approx equals a float at run time
    assert limit == pytest.approx(normal - 10)


async def test_R1_3150_a_cancel_with_report_to_follow_sends_what_was_sampled_first(site: Site) -> None:
    await site.start()
    site.vtn.outbox.append(site.vtn.create_report(ReportAsk("rr-f", reports.USAGE_ID, [reports.SITE_POWER], 1, 60)))
    await until(lambda: len(site.store.unsent_readings()) >= 2, 6)
    site.vtn.outbox.append(site.vtn.send(site.vtn.cancel_report("rr-f", follow=True)))
    await until(lambda: site.vtn.of("oadrCanceledReport"), 5)
    assert len(intervals_of(site.vtn, "rr-f")) >= 2  # the final report came although 60 s had not passed
    update = max(g.at for g in site.vtn.of("oadrUpdateReport"))
    assert update < site.vtn.of("oadrCanceledReport")[0].at


async def test_R1_3160_a_history_report_request_is_answered_without_it(site: Site) -> None:
    """We offer no HISTORY_USAGE report: a request for one is answered (oadrCreatedReport without it) and
    the VEN goes on as before."""
    await site.start()
    site.vtn.outbox.append(site.vtn.create_report(ReportAsk("rr-h", "HISTORY_USAGE", [reports.SITE_POWER], 1, 1)))
    await until(lambda: site.vtn.of("oadrCreatedReport"))
    assert site.vtn.of("oadrCreatedReport")[0].texts(".//ei:reportRequestID") == []
    n = len(site.vtn.of("oadrPoll"))
    await until(lambda: len(site.vtn.of("oadrPoll")) > n + 5)
    assert site.ven.failures == 0 and not intervals_of(site.vtn, "rr-h")


async def test_R1_3170_a_request_asked_again_under_a_new_id_takes_over_the_old_one(site: Site) -> None:
    await site.start()
    site.vtn.report_asks = [ReportAsk("rr-old", reports.USAGE_ID, [reports.SITE_POWER], 1, 60)]
    site.vtn.outbox.append(site.vtn.create_report(ReportAsk("rr-meta", "METADATA", ["x"], 0, 0)))
    await until(lambda: "rr-old" in {r.report_request_id for r in site.store.report_requests()})
    await until(lambda: len(site.store.unsent_readings()) >= 1, 5)
    site.vtn.report_asks = [ReportAsk("rr-new", reports.USAGE_ID, [reports.SITE_POWER], 1, 1)]
    site.vtn.outbox.append(site.vtn.create_report(ReportAsk("rr-meta2", "METADATA", ["x"], 0, 0)))
    await until(lambda: intervals_of(site.vtn, "rr-new"), 5)
    assert {r.report_request_id for r in site.store.report_requests()} == {"rr-new"}
    assert not intervals_of(site.vtn, "rr-old")  # its readings went out under the new id


async def test_R1_3180_created_and_canceled_report_list_the_requests_in_force(site: Site) -> None:
    await site.start()
    site.vtn.outbox.append(site.vtn.create_report(ReportAsk("rr-1", reports.USAGE_ID, [reports.SITE_POWER], 1, 1),
                                                  ReportAsk("rr-2", reports.STATUS_ID, [reports.ONLINE], 1, 1)))
    await until(lambda: site.vtn.of("oadrCreatedReport"))
    assert site.vtn.of("oadrCreatedReport")[0].texts(".//ei:reportRequestID") == ["rr-1", "rr-2"]
    site.vtn.outbox.append(site.vtn.send(site.vtn.cancel_report("rr-1")))
    await until(lambda: site.vtn.of("oadrCanceledReport"))
    assert site.vtn.of("oadrCanceledReport")[0].texts(".//ei:reportRequestID") == ["rr-2"]


async def test_R1_3190_a_granularity_below_the_offered_minimum_is_raised_to_it(tmp_path: Path, vtn: XmlVtn) -> None:
    s = Site(tmp_path, vtn, OpenAdrSection(report_interval_s=2), telemetry=Telemetry())
    try:
        await s.start()
        vtn.outbox.append(vtn.create_report(ReportAsk("rr-g", reports.USAGE_ID, [reports.SITE_POWER], 1, 1)))
        await until(lambda: any(r.report_request_id == "rr-g" for r in s.store.report_requests()))
        (rr,) = [r for r in s.store.report_requests() if r.report_request_id == "rr-g"]
        assert rr.granularity_s == 2.0
        await until(lambda: intervals_of(vtn, "rr-g"), 6)
        assert {i.duration for i in intervals_of(vtn, "rr-g")} == {"PT2S"}
    finally:
        await s.stop()


# --------------------------------------------------------------------------------------------- general


def tls_vtn(pki: DevPki, ciphers: str = "ECDHE-ECDSA-AES128-SHA256:AES128-SHA256") -> XmlVtn:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ciphers)
    ctx.load_cert_chain(pki.vtn_cert, pki.vtn_key)
    ctx.load_verify_locations(pki.ca_cert)
    ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: the VEN's X.509 certificate is required
    return XmlVtn(ssl_context=ctx)


async def test_G1_4010_tls_1_2_with_the_profile_cipher_suites_and_x509_on_both_sides(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path / "pki", ven_name="site-1")
    other = init_dev_pki(tmp_path / "other", ven_name="site-1")
    tls = {"cert": str(pki.ven_cert), "key": str(pki.ven_key), "ca_file": str(pki.ca_cert),
           "vtn_fingerprint": pki.vtn_fingerprint, "tls12_only": True, "allow_plain_http": False}
    vtn = tls_vtn(pki)
    await vtn.start()
    s = Site(tmp_path, vtn)
    try:
        await s.start(**tls)
        assert set(vtn.tls) == {("TLSv1.2", "ECDHE-ECDSA-AES128-SHA256", True)}
    finally:
        await s.stop()
        await vtn.stop()
    assert vtn.schema_failures == []
    # A VTN whose certificate another CA signed is refused before a byte goes out.
    rogue = tls_vtn(other)
    await rogue.start()
    s = Site(tmp_path / "b", rogue)
    (tmp_path / "b").mkdir()
    try:
        ven = s.make(**tls)
        s.task = asyncio.create_task(ven.run())
        await until(lambda: ven.failures >= 2, 5)
        assert rogue.got == [] and not ven.registered.is_set()
    finally:
        await s.stop()
        await rogue.stop()


async def test_G1_4012_an_empty_poll_answer_is_nothing_to_do(site: Site) -> None:
    await site.start()
    await until(lambda: len(site.vtn.of("oadrPoll")) >= 5)
    site.vtn.outbox.append(b"")  # an empty HTTP body: also "nothing queued"
    await until(lambda: len(site.vtn.of("oadrPoll")) >= 10)
    assert site.ven.failures == 0 and await site.events() == {}


async def test_G1_4015_what_the_vtn_queued_is_dequeued_poll_after_poll(site: Site) -> None:
    await site.start()
    vtn = site.vtn
    vtn.events = [Ev("ev-q", [Sig("SIMPLE", "level", [1])])]
    vtn.outbox += [vtn.distribute(), vtn.create_report(ReportAsk("rr-q", reports.USAGE_ID, [reports.EV_POWER], 1, 1)),
                   vtn.send(vtn.cancel_report("rr-q"))]
    await until(lambda: not vtn.outbox and vtn.of("oadrCanceledReport"))
    types = [g.type for g in vtn.got[-12:]]
    assert types.index("oadrCreatedEvent") < types.index("oadrCreatedReport") < types.index("oadrCanceledReport")
    assert "ev-q" in await site.events()


async def test_a_signed_status_report_is_signed_over_the_resource_status(tmp_path: Path, vtn: XmlVtn) -> None:
    """The resource status is written into openleadr's message before it is signed: the signature holds."""
    from lxml import etree
    from openleadr.messaging import validate_xml_signature

    pki = init_dev_pki(tmp_path / "pki", ven_name="site-1")
    telemetry = Telemetry()
    telemetry.cut = Curtailment(ev_kw=10.0, normal_ev_kw=50.0, level=2)
    s = Site(tmp_path, vtn, OpenAdrSection(report_interval_s=1), telemetry=telemetry)
    try:
        await s.start(cert=str(pki.ven_cert), key=str(pki.ven_key), ca_file=str(pki.ca_cert), sign_messages=True)
        vtn.outbox.append(vtn.create_report(ReportAsk("rr-sig", reports.STATUS_ID, STATUS_RIDS, 1, 1)))
        await until(lambda: intervals_of(vtn, "rr-sig", reports.LOAD_CONTROL), 6)
        update = next(g for g in vtn.of("oadrUpdateReport") if g.texts(".//ei:reportRequestID") == ["rr-sig"])
        validate_xml_signature(etree.fromstring(update.body), cert_fingerprint=pki.ven_fingerprint)
        tampered = update.body.replace(b"<oadr:oadrCurrent>0.2<", b"<oadr:oadrCurrent>0.9<")
        assert tampered != update.body
        with pytest.raises(Exception, match=r"(?i)digest|signature"):
            validate_xml_signature(etree.fromstring(tampered), cert_fingerprint=pki.ven_fingerprint)
        status = intervals_of(vtn, "rr-sig", reports.LOAD_CONTROL)[0].status
        assert parts(status)["oadrCapacity"] == (0.2, 1.0)
    finally:
        await s.stop()
