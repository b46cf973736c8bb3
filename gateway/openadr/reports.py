"""Reports: what we offer the VTN (METADATA registration), what it asks for, and the values we send.

We offer TELEMETRY_USAGE (site power kW, site energy kWh, EV power kW, power per charger kW) and
TELEMETRY_STATUS (online, load control state, current limit kW). r_ids and report specifier ids are
fixed names so a request stored before a restart still matches what we offer after it. Values come from
a `TelemetrySource`; samples are taken on the VTN's granularity whether or not the VTN is reachable, kept
in SQLite, and sent once (oldest first) when it answers. A request with a zero granularity or report-back
duration is a one-shot: one sample, one report, and the request ends.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from openleadr import enums, objects

from gateway.openadr.translate import as_list
from gateway.ports import TelemetrySource
from gateway.store.vtn import Reading, ReportRequest

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
LOAD_CONTROL = "load_control_state"  # 1 while a limit from an event is in force
LIMIT = "limit_kw"


def _measurement(base: objects.Measurement) -> objects.Measurement:
    m = copy.deepcopy(base)
    m.scale = "k"
    return m


def metadata_reports(charger_ids: Sequence[str], min_period: timedelta, now: datetime) -> list[objects.Report]:
    """The oadrRegisterReport body: one METADATA report per report name."""
    rate = objects.SamplingRate(min_period=min_period, max_period=timedelta(hours=1), on_change=False)

    def description(r_id: str, resource: str, measurement: objects.Measurement | None, rtype: str) -> Any:
        target = objects.Target(resource_id=resource)
        return objects.ReportDescription(
            r_id=r_id,
            market_context=None,
            reading_type=enums.READING_TYPE.DIRECT_READ,
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
        description(ONLINE, "site", None, enums.REPORT_TYPE.X_RESOURCE_STATUS),
        description(LOAD_CONTROL, "site", None, enums.REPORT_TYPE.X_RESOURCE_STATUS),
        description(LIMIT, "site", None, enums.REPORT_TYPE.X_RESOURCE_STATUS),
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
        accepted.append(ReportRequest(request_id, spec_id, gran.total_seconds(),
                                      ONE_SHOT if one_shot else back_td.total_seconds(), tuple(r_ids)))
    return accepted, problems


def sample(source: TelemetrySource, r_ids: Sequence[str]) -> list[tuple[str, float]]:
    """Current value of each r_id; values the source does not know right now are skipped, not zeroed."""
    chargers = source.charger_power_kw()
    limit = source.limit_kw()
    values: dict[str, float | None] = {
        SITE_POWER: source.site_power_kw(),
        SITE_ENERGY: source.site_energy_kwh(),
        EV_POWER: source.ev_power_kw(),
        ONLINE: 1.0 if source.online() else 0.0,
        LOAD_CONTROL: 1.0 if limit is not None else 0.0,
        LIMIT: limit,
    }
    out: list[tuple[str, float]] = []
    for r_id in r_ids:
        value = chargers.get(r_id[len(CHARGER_POWER):]) if r_id.startswith(CHARGER_POWER) else values.get(r_id)
        if value is not None:
            out.append((r_id, float(value)))
    return out


def update_report_payload(readings: Sequence[Reading], now: datetime) -> list[objects.Report]:
    """oadrUpdateReport reports: one per report request, intervals in time order."""
    by_request: dict[str, list[Reading]] = {}
    for r in readings:
        by_request.setdefault(r.report_request_id, []).append(r)
    reports = []
    for request_id, rows in by_request.items():
        rows.sort(key=lambda r: (r.measured_at, r.r_id))
        spec = rows[0].report_specifier_id
        name = "TELEMETRY_USAGE" if spec == USAGE_ID else "TELEMETRY_STATUS"
        reports.append(
            objects.Report(
                report_specifier_id=spec,
                report_name=name,
                report_request_id=request_id,
                created_date_time=now,
                intervals=[
                    objects.ReportInterval(dtstart=r.measured_at,
                                           report_payload=objects.ReportPayload(r_id=r.r_id, value=r.value))
                    for r in rows
                ],
            )
        )
    return reports
