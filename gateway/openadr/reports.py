"""Reports: what we offer the VTN (METADATA registration), what it asks for, and the values we send.

We offer TELEMETRY_USAGE (site power kW, site energy kWh, EV power kW, power per charger kW) and
TELEMETRY_STATUS (online and load control state, sent as the standard oadrPayloadResourceStatus with the
curtailment in force whatever its source, and the cap in force in kW). r_ids and report specifier ids are
fixed names so a request stored before a restart still matches what we offer after it. Values come from
a `TelemetrySource`; samples are taken on the VTN's granularity whether or not the VTN is reachable, kept
in SQLite, and sent once (oldest first) when it answers. A request with a zero granularity or report-back
duration is a one-shot: one sample, one report, and the request ends.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from lxml import etree
from openleadr import enums, objects

from gateway.openadr.translate import as_list
from gateway.ports import TelemetrySource
from gateway.records import Reading, ReportRequest

log = logging.getLogger("gateway.openadr")

METADATA_ID = "METADATA"  # a request with this specifier asks for our oadrRegisterReport again
ONE_SHOT = 0.0  # ReportRequest.report_back_s of a request for a single report
USAGE_ID = "gateway-telemetry-usage"
STATUS_ID = "gateway-telemetry-status"
SITE_POWER = "site_power_kw"
SITE_ENERGY = "site_energy_kwh"
EV_POWER = "ev_power_kw"
CHARGER_POWER = "charger_power_kw:"  # + charger id
ONLINE = "online"
LOAD_CONTROL = "load_control_state"  # 1 while a curtailment (any source) is in force
LIMIT = "limit_kw"
RESOURCE_STATUS = (ONLINE, LOAD_CONTROL)  # sent as oadrPayloadResourceStatus
# Parts of a resource status, stored as readings beside the status rIDs (same request, same instant) and
# folded into their oadrPayloadResourceStatus when sent; never offered or sent as rIDs of their own.
PART = "~"
P_ONLINE, P_OVERRIDE, P_CAPACITY, P_LEVEL, P_PERCENT, P_SETPOINT, P_NORMAL = (
    f"{PART}online", f"{PART}override", f"{PART}capacity", f"{PART}level", f"{PART}percent", f"{PART}setpoint_kw",
    f"{PART}normal_kw")
STATUS_PARTS = (P_ONLINE, P_OVERRIDE, P_CAPACITY, P_LEVEL, P_PERCENT, P_SETPOINT, P_NORMAL)
OADR = "http://openadr.org/oadr-2.0b/2012/07"
EI = "http://docs.oasis-open.org/ns/energyinterop/201110"


def _measurement(base: objects.Measurement) -> objects.Measurement:
    m = copy.deepcopy(base)
    m.scale = "k"
    return m


def metadata_reports(charger_ids: Sequence[str], min_period: timedelta, now: datetime) -> list[objects.Report]:
    """The oadrRegisterReport body: one METADATA report per report name."""
    rate = objects.SamplingRate(min_period=min_period, max_period=timedelta(hours=1), on_change=False)

    def description(r_id: str, resource: str, measurement: objects.Measurement | None, rtype: str,
                    reading: str = enums.READING_TYPE.DIRECT_READ) -> Any:
        target = objects.Target(resource_id=resource)
        return objects.ReportDescription(
            r_id=r_id,
            market_context=None,
            reading_type=reading,
            report_subject=target,
            report_data_source=target,
            report_type=rtype,
            sampling_rate=rate,
            measurement=measurement,
        )

    power = enums.MEASUREMENTS.POWER_REAL
    energy = enums.MEASUREMENTS.ENERGY_REAL
    usage = [
        description(SITE_POWER, "site", _measurement(power), enums.REPORT_TYPE.USAGE),
        description(SITE_ENERGY, "site", _measurement(energy), enums.REPORT_TYPE.READING),
        description(EV_POWER, "ev", _measurement(power), enums.REPORT_TYPE.USAGE),
        *(
            description(CHARGER_POWER + cid, cid, _measurement(power), enums.REPORT_TYPE.USAGE)
            for cid in charger_ids
        ),
    ]
    status = [
        description(ONLINE, "site", None, enums.REPORT_TYPE.X_RESOURCE_STATUS, enums.READING_TYPE.X_NOT_APPLICABLE),
        description(LOAD_CONTROL, "site", None, enums.REPORT_TYPE.X_RESOURCE_STATUS,
                    enums.READING_TYPE.X_NOT_APPLICABLE),
        # The cap in force at the site meter, kW (absent while nothing is in force).
        description(LIMIT, "site", _measurement(power), enums.REPORT_TYPE.SET_POINT),
    ]
    return [
        objects.Report(report_specifier_id=USAGE_ID, report_name="METADATA_TELEMETRY_USAGE",
                       report_descriptions=usage, created_date_time=now, duration=timedelta(hours=1),
                       dtstart=now),
        objects.Report(report_specifier_id=STATUS_ID, report_name="METADATA_TELEMETRY_STATUS",
                       report_descriptions=status, created_date_time=now, duration=timedelta(hours=1),
                       dtstart=now),
    ]


def offered_r_ids(charger_ids: Sequence[str]) -> dict[str, set[str]]:
    return {
        USAGE_ID: {SITE_POWER, SITE_ENERGY, EV_POWER, *(CHARGER_POWER + c for c in charger_ids)},
        STATUS_ID: {ONLINE, LOAD_CONTROL, LIMIT},
    }


def parse_requests(
    raw_requests: Any, charger_ids: Sequence[str], min_period: timedelta
) -> tuple[list[ReportRequest], list[str]]:
    """oadrReportRequest dicts → what we will sample; plus one line per request we cannot honour."""
    offered = offered_r_ids(charger_ids)
    accepted: list[ReportRequest] = []
    problems: list[str] = []
    for raw in as_list(raw_requests):
        if not isinstance(raw, Mapping):
            continue
        request_id = str(raw.get("report_request_id", ""))
        spec = raw.get("report_specifier")
        if not request_id or not isinstance(spec, Mapping):
            problems.append(f"report request {request_id or '?'}: no reportSpecifier")
            continue
        spec_id = str(spec.get("report_specifier_id", ""))
        if spec_id not in offered:
            problems.append(f"report request {request_id}: we offer no report {spec_id!r}")
            continue
        r_ids = [str(p.get("r_id")) for p in as_list(spec.get("specifier_payloads")) if isinstance(p, Mapping)]
        unknown = [r for r in r_ids if r not in offered[spec_id]]
        r_ids = [r for r in r_ids if r in offered[spec_id]]
        if unknown:
            problems.append(f"report request {request_id}: unknown rIDs {','.join(unknown)} left out")
        if not r_ids:
            continue
        granularity = spec.get("granularity")
        back = spec.get("report_back_duration")
        # A zero granularity or report-back duration asks for one report, once (as openleadr's VEN reads it).
        one_shot = any(isinstance(v, timedelta) and v <= timedelta(0) for v in (granularity, back))
        gran = granularity if isinstance(granularity, timedelta) and granularity > timedelta(0) else min_period
        gran = max(gran, min_period)
        back_td = back if isinstance(back, timedelta) and back > timedelta(0) else gran
        if spec_id == STATUS_ID and any(r in RESOURCE_STATUS for r in r_ids):
            r_ids += [p for p in STATUS_PARTS if p not in r_ids]
        accepted.append(ReportRequest(request_id, spec_id, gran.total_seconds(),
                                      ONE_SHOT if one_shot else back_td.total_seconds(), tuple(r_ids)))
    return accepted, problems


def sample(source: TelemetrySource, r_ids: Sequence[str]) -> list[tuple[str, float]]:
    """Current value of each r_id; values the source does not know right now are skipped, not zeroed."""
    wanted = set(r_ids)
    chargers = source.charger_power_kw() if any(r.startswith(CHARGER_POWER) for r in wanted) else {}
    values: dict[str, float | None] = {}
    if wanted & {SITE_POWER, SITE_ENERGY, EV_POWER}:
        values.update({SITE_POWER: source.site_power_kw(), SITE_ENERGY: source.site_energy_kwh(),
                       EV_POWER: source.ev_power_kw()})
    if wanted & {ONLINE, LOAD_CONTROL, LIMIT, *STATUS_PARTS}:
        online = 1.0 if source.online() else 0.0
        c = source.curtailment()  # whatever its source: a site limit, an EV limit, a level, the operator
        capacity = c.capacity
        setpoint = None if capacity is None or c.normal_ev_kw is None else capacity * c.normal_ev_kw
        if setpoint is None and c.ev_kw is not None:
            setpoint = c.ev_kw
        values.update({
            ONLINE: online, LOAD_CONTROL: 1.0 if c.in_force else 0.0, LIMIT: c.limit_kw,
            P_ONLINE: online, P_OVERRIDE: 1.0 if c.manual_override else 0.0, P_CAPACITY: capacity,
            P_LEVEL: float(c.level or 0), P_PERCENT: None if capacity is None else (capacity - 1.0) * 100.0,
            P_SETPOINT: setpoint, P_NORMAL: c.normal_ev_kw,
        })
    out: list[tuple[str, float]] = []
    # Parts first: a batch cut at its size limit never sends a status without the parts stored before it.
    for r_id in sorted(r_ids, key=lambda r: not r.startswith(PART)):
        value = chargers.get(r_id[len(CHARGER_POWER):]) if r_id.startswith(CHARGER_POWER) else values.get(r_id)
        if value is not None:
            out.append((r_id, float(value)))
    return out


@dataclass(frozen=True, slots=True)
class Status:
    """One oadrPayloadResourceStatus, from a status reading and the parts stored with it."""

    online: bool
    manual_override: bool
    parts: Mapping[str, float]

    def element(self) -> Any:
        def el(parent: Any, tag: str, text: str | None = None) -> Any:
            child = etree.SubElement(parent, f"{{{OADR}}}{tag}")
            if text is not None:
                child.text = text
            return child

        root = etree.Element(f"{{{OADR}}}oadrPayloadResourceStatus")
        el(root, "oadrOnline", "true" if self.online else "false")
        el(root, "oadrManualOverride", "true" if self.manual_override else "false")
        state = el(root, "oadrLoadControlState")
        normal_kw = self.parts.get(P_NORMAL)
        for tag, key, normal in (("oadrCapacity", P_CAPACITY, 1.0), ("oadrLevelOffset", P_LEVEL, 0.0),
                                 ("oadrPercentOffset", P_PERCENT, 0.0), ("oadrSetPoint", P_SETPOINT, normal_kw)):
            if key in self.parts:
                part = el(state, tag)
                el(part, "oadrCurrent", f"{self.parts[key]:.10g}")
                if normal is not None:
                    el(part, "oadrNormal", f"{normal:.10g}")
        if len(state) == 0:
            root.remove(state)
        return root


def update_report_payload(
    readings: Sequence[Reading], now: datetime, granularity_s: Mapping[str, float] | None = None
) -> tuple[list[objects.Report], Callable[[Any], None]]:
    """oadrUpdateReport reports (one per report request, intervals in time order, each as long as the
    request's granularity), and the edit that writes resource statuses as oadrPayloadResourceStatus."""
    by_request: dict[str, list[Reading]] = {}
    for r in readings:
        by_request.setdefault(r.report_request_id, []).append(r)
    reports = []
    statuses: list[Status | None] = []  # one per interval, in the order the template writes them
    for request_id, rows in by_request.items():
        rows.sort(key=lambda r: (r.measured_at, r.r_id))
        parts: dict[datetime, dict[str, float]] = {}
        for r in rows:
            if r.r_id.startswith(PART):
                parts.setdefault(r.measured_at, {})[r.r_id] = r.value
        spec = rows[0].report_specifier_id
        name = "TELEMETRY_USAGE" if spec == USAGE_ID else "TELEMETRY_STATUS"
        step = (granularity_s or {}).get(request_id)
        intervals = []
        for r in rows:
            if r.r_id.startswith(PART):
                continue
            intervals.append(objects.ReportInterval(
                dtstart=r.measured_at, duration=timedelta(seconds=step) if step else None,
                report_payload=objects.ReportPayload(r_id=r.r_id, value=r.value)))
            if spec == STATUS_ID and r.r_id in RESOURCE_STATUS:
                p = parts.get(r.measured_at, {})
                online = p.get(P_ONLINE, r.value if r.r_id == ONLINE else 1.0)
                statuses.append(Status(online >= 0.5, p.get(P_OVERRIDE, 0.0) >= 0.5,
                                       {k: v for k, v in p.items() if k not in (P_ONLINE, P_OVERRIDE)}))
            else:
                statuses.append(None)
        if not intervals:
            continue
        reports.append(
            objects.Report(
                report_specifier_id=spec,
                report_name=name,
                report_request_id=request_id,
                created_date_time=now,
                intervals=intervals,
            )
        )

    def edit(signed_object: Any) -> None:
        payloads = list(signed_object.iter(f"{{{OADR}}}oadrReportPayload"))
        if len(payloads) != len(statuses):
            raise ValueError(f"{len(payloads)} report payloads written for {len(statuses)} intervals")
        for payload, status in zip(payloads, statuses, strict=True):
            if status is None:
                continue
            old = payload.find(f"{{{EI}}}payloadFloat")
            if old is not None:
                old.addprevious(status.element())
                payload.remove(old)

    return reports, edit
