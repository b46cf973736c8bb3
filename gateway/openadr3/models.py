"""The OpenADR 3 objects the VEN reads, as pydantic models written from the OpenAPI files in `spec/`.

Only what the gateway uses is modelled, with the schema's constraints (id pattern, lengths, required
fields, date-time and ISO 8601 duration formats); unknown fields are ignored, so a VTN that adds some is
still read. 3.0.1 and 3.1.0 differ in targets (valuesMap objects in 3.0.1, plain strings in 3.1.0): both
shapes are accepted and read into names. A VTN answer that does not validate is refused as a whole.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ObjectId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_-]*$")]
# The schema's duration pattern (ISO 8601 with years, months, weeks or days and a time part).
DURATION = re.compile(r"^(-?)P(?=\d|T\d)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)([DW]))?"
                      r"(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")
# "P9999Y" means "no end" (User Guide); years and months are read as 365 and 30 days.
INFINITE_YEARS = 9999
NOW_YEAR = 1  # a start of 0001-01-01 means "now" (User Guide)


def parse_duration(text: str) -> timedelta | None:
    """An ISO 8601 duration as the schema allows it; None for P9999Y (infinity). ValueError otherwise."""
    m = DURATION.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not an ISO 8601 duration")
    sign, years, months, days, unit, hours, minutes, seconds = m.groups()
    if years is not None and int(years) >= INFINITE_YEARS:
        return None
    total = timedelta(days=365 * int(years or 0) + 30 * int(months or 0)
                      + int(days or 0) * (7 if unit == "W" else 1),
                      hours=int(hours or 0), minutes=int(minutes or 0), seconds=float(seconds or 0))
    return -total if sign else total


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    return f"PT{seconds:g}S" if seconds != int(seconds) else f"PT{int(seconds)}S"


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class ValuesMap(Model):
    type: str = Field(min_length=1, max_length=128)
    values: list[Any]


class IntervalPeriod(Model):
    start: datetime | None = None
    duration: str | None = None
    randomize_start: str | None = Field(default=None, alias="randomizeStart")

    @field_validator("duration", "randomize_start")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("start has no time zone")
        return value


class Interval(Model):
    id: int
    interval_period: IntervalPeriod | None = Field(default=None, alias="intervalPeriod")
    payloads: list[ValuesMap]


class EventPayloadDescriptor(Model):
    payload_type: str = Field(alias="payloadType", min_length=1, max_length=128)
    units: str | None = None
    currency: str | None = None


class ReportDescriptor(Model):
    payload_type: str = Field(alias="payloadType", min_length=1, max_length=128)
    reading_type: str | None = Field(default=None, alias="readingType")
    units: str | None = None
    targets: list[str | ValuesMap] | None = None
    aggregate: bool = False
    start_interval: int = Field(default=-1, alias="startInterval")
    num_intervals: int = Field(default=-1, alias="numIntervals")
    historical: bool = True
    frequency: int = -1
    repeat: int = 1


class Program(Model):
    id: ObjectId
    program_name: str = Field(alias="programName", min_length=1, max_length=128)
    modification_date_time: datetime | None = Field(default=None, alias="modificationDateTime")
    interval_period: IntervalPeriod | None = Field(default=None, alias="intervalPeriod")
    payload_descriptors: list[dict[str, Any]] | None = Field(default=None, alias="payloadDescriptors")
    targets: list[str | ValuesMap] | None = None


class Event(Model):
    id: ObjectId
    program_id: ObjectId = Field(alias="programID")
    created_date_time: datetime | None = Field(default=None, alias="createdDateTime")
    modification_date_time: datetime = Field(alias="modificationDateTime")
    object_type: Literal["EVENT"] | None = Field(default=None, alias="objectType")
    event_name: str | None = Field(default=None, alias="eventName")
    priority: int | None = Field(default=None, ge=0)
    duration: str | None = None
    targets: list[str | ValuesMap] | None = None
    report_descriptors: list[ReportDescriptor] | None = Field(default=None, alias="reportDescriptors")
    payload_descriptors: list[EventPayloadDescriptor] | None = Field(default=None, alias="payloadDescriptors")
    interval_period: IntervalPeriod | None = Field(default=None, alias="intervalPeriod")
    intervals: list[Interval] = Field(default_factory=list)


class Ven(Model):
    id: ObjectId
    ven_name: str = Field(alias="venName", min_length=1, max_length=128)


class Resource(Model):
    id: ObjectId
    resource_name: str = Field(alias="resourceName", min_length=1, max_length=128)
    ven_id: ObjectId | None = Field(default=None, alias="venID")


class Subscription(Model):
    id: ObjectId
    client_name: str = Field(alias="clientName")


class Notification(Model):
    object_type: Literal["PROGRAM", "EVENT", "REPORT", "SUBSCRIPTION", "VEN", "RESOURCE"] = Field(alias="objectType")
    operation: Literal["CREATE", "READ", "UPDATE", "DELETE", "GET", "POST", "PUT"]
    object: dict[str, Any]


class Token(Model):
    access_token: str = Field(min_length=1, max_length=4096)
    token_type: str
    expires_in: int | None = None


class AuthServer(Model):
    token_url: str = Field(alias="tokenURL", min_length=2, max_length=8000)


def target_names(targets: list[str | ValuesMap] | None) -> list[tuple[str, str]]:
    """(kind, name) of every target: 3.1.0's strings have no kind (""), 3.0.1's valuesMaps name theirs."""
    out: list[tuple[str, str]] = []
    for t in targets or []:
        if isinstance(t, str):
            out.append(("", t))
        else:
            out.extend((t.type, str(v)) for v in t.values)
    return out
