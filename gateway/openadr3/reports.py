"""OpenADR 3 reports, pure: what an event's reportDescriptors ask of which resources, the samples that
answer them from the site's telemetry, and the report objects that carry a backlog of samples.

Payload types answered (Definition, report payload enumerations): USAGE (kWh over the interval, from the
power then), DEMAND (kW), OPERATING_STATE (NORMAL/RUNNING_NORMAL/IDLE_NORMAL/RUNNING_CURTAILED/
IDLE_CURTAILED/ERROR), SETPOINT (the kW cap in force), SIMPLE_LEVEL (the level in force). A resource is a
charger, a circuit or a configured group: its power is its chargers' sum. Descriptors without targets ask
for every resource; `aggregate` gives one AGGREGATED_REPORT series for the site. Other payload types are
left out with one line; startInterval, numIntervals, frequency and repeat are not followed: a report goes
out at the end of each report interval while the event runs (see docs/openadr3.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.openadr3 import models
from gateway.ports import ReportSample, TelemetrySource

ANSWERED = ("USAGE", "DEMAND", "OPERATING_STATE", "SETPOINT", "SIMPLE_LEVEL")
UNITS = {"USAGE": "KWH", "DEMAND": "KW", "SETPOINT": "KW"}
READING_TYPES = {"USAGE": "DIRECT_READ", "DEMAND": "MEAN", "SETPOINT": "DIRECT_READ"}
AGGREGATED = "AGGREGATED_REPORT"
TIMESTAMP = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True, slots=True)
class Asked:
    """One payload type of one report, for these resources."""

    payload_type: str
    resources: tuple[str, ...]
    aggregate: bool


def asked(descriptors: Sequence[models.ReportDescriptor], resources: Sequence[str]) -> tuple[list[Asked], list[str]]:
    """What the descriptors ask that the gateway answers, and one line for each it does not."""
    out: list[Asked] = []
    problems: list[str] = []
    for d in descriptors:
        if d.payload_type not in ANSWERED:
            problems.append(f"report payload {d.payload_type}: not one this gateway reports ({', '.join(ANSWERED)})")
            continue
        named = [n for _, n in models.target_names(d.targets)]
        ours = [r for r in resources if r in named] if named else list(resources)
        if named and not ours:
            problems.append(f"report payload {d.payload_type}: targets none of our resources ({', '.join(named)})")
            continue
        out.append(Asked(d.payload_type, tuple(ours), d.aggregate))
    return out, problems


def _power(resource: str, members: Mapping[str, Sequence[str]], chargers: Mapping[str, float]) -> float:
    return sum(chargers.get(c, 0.0) for c in members.get(resource, (resource,)))


def sample(wanted: Sequence[Asked], telemetry: TelemetrySource, members: Mapping[str, Sequence[str]], *,
           event_id: str, program_id: str, start: datetime, duration: timedelta) -> list[ReportSample]:
    """One interval's values for every payload type and resource asked."""
    chargers = telemetry.charger_power_kw()
    curtailment = telemetry.curtailment()
    online = telemetry.online()
    hours = duration.total_seconds() / 3600.0
    out: list[ReportSample] = []
    for a in wanted:
        series: list[tuple[str, float]] = [(r, _power(r, members, chargers)) for r in a.resources]
        if a.aggregate:
            series = [(AGGREGATED, telemetry.ev_power_kw() or sum(kw for _, kw in series))]
        for name, kw in series:
            value: float | str
            if a.payload_type == "USAGE":
                value = round(max(0.0, kw) * hours, 6)
            elif a.payload_type == "DEMAND":
                value = round(max(0.0, kw), 3)
            elif a.payload_type == "SETPOINT":
                cap = telemetry.limit_kw()
                value = round(cap, 3) if cap is not None else -1.0
            elif a.payload_type == "SIMPLE_LEVEL":
                value = float(curtailment.level or 0)
            else:
                running = kw > 0.05
                if not online:
                    value = "ERROR"
                elif curtailment.in_force:
                    value = "RUNNING_CURTAILED" if running else "IDLE_CURTAILED"
                else:
                    value = "RUNNING_NORMAL" if running else "IDLE_NORMAL"
            out.append(ReportSample(event_id, program_id, a.payload_type, name, start, duration.total_seconds(), value))
    return out


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(TIMESTAMP)


def report_bodies(samples: Sequence[ReportSample], *, client_name: str, version: str) -> list[dict[str, Any]]:
    """One report object per event (its resources, each with its intervals and payloads), as the VTN's
    reportRequest schema wants it; 3.0.1 also names the program."""
    by_event: dict[str, list[ReportSample]] = {}
    for s in samples:
        by_event.setdefault(s.event_id, []).append(s)
    bodies: list[dict[str, Any]] = []
    for event_id, rows in by_event.items():
        types = list(dict.fromkeys(s.payload_type for s in rows))
        resources: dict[str, dict[tuple[datetime, float], list[ReportSample]]] = {}
        for s in rows:
            resources.setdefault(s.resource_name, {}).setdefault((s.start, s.duration_s), []).append(s)
        body: dict[str, Any] = {
            "eventID": event_id,
            "clientName": client_name,
            "reportName": f"{client_name} {event_id}",
            "payloadDescriptors": [
                {"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": t,
                 **({"units": UNITS[t]} if t in UNITS else {}),
                 **({"readingType": READING_TYPES[t]} if t in READING_TYPES else {})}
                for t in types
            ],
            "resources": [
                {"resourceName": name, "intervals": [
                    {"id": n, "intervalPeriod": {"start": stamp(start), "duration": models.format_duration(
                        timedelta(seconds=duration))},
                     "payloads": [{"type": s.payload_type, "values": [s.value]} for s in values]}
                    for n, ((start, duration), values) in enumerate(sorted(intervals.items()))
                ]}
                for name, intervals in resources.items()
            ],
        }
        if version == "3.0.1":
            body = {"programID": rows[0].program_id, **body}
        bodies.append(body)
    return bodies
