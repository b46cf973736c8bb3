"""OpenADR 3 events → domain events: every payload type as its 2.0b counterpart, units, timing, targets, and
what is refused (one reason each, nothing half-taken)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.domain import SignalName, SignalType
from gateway.openadr3 import models
from gateway.openadr3.translate import BadEvent, Context, translate

NOW = datetime(2030, 6, 1, 12, tzinfo=UTC)
CTX = Context("site-1", frozenset({"cp-1", "cp-2", "panel-a"}), currency="USD", emergency_level=3)


def raw(payloads: list[dict[str, Any]] | None = None, **fields: Any) -> models.Event:
    body: dict[str, Any] = {
        "id": "ev-1", "programID": "prog-1", "modificationDateTime": "2030-06-01T11:00:00Z",
        "intervalPeriod": {"start": "2030-06-01T12:00:00Z", "duration": "PT1H"},
        "intervals": [{"id": 0, "payloads": payloads or []}],
    }
    body.update(fields)
    return models.Event.model_validate(body)


def one(ptype: str, value: Any, units: str | None = None, currency: str | None = None) -> list[tuple[str, str, float]]:
    descriptors = [{"payloadType": ptype, **({"units": units} if units else {}),
                    **({"currency": currency} if currency else {})}] if units or currency else None
    t = translate(raw([{"type": ptype, "values": [value]}], payloadDescriptors=descriptors), None, CTX, NOW)
    return [(s.name.value, s.type.value, s.intervals[0].value) for s in t.event.signals]


@pytest.mark.parametrize(("ptype", "value", "units", "want"), [
    ("SIMPLE", 2, None, ("SIMPLE", "level", 2.0)),
    ("IMPORT_CAPACITY_LIMIT", 30, "KW", ("LOAD_DISPATCH", "setpoint", 30.0)),
    ("IMPORT_CAPACITY_LIMIT", 30000, "W", ("LOAD_DISPATCH", "setpoint", 30.0)),
    ("DISPATCH_SETPOINT", 0.02, "MW", ("LOAD_DISPATCH", "setpoint", 20.0)),
    ("DISPATCH_SETPOINT_RELATIVE", 5, "KW", ("LOAD_DISPATCH", "delta", 5.0)),
    ("CONTROL_LEVEL_OFFSET", -2, None, ("LOAD_CONTROL", "x-loadControlLevelOffset", -2.0)),
    ("CONTROL_LEVEL_OFFSET_PERCENT", -0.3, "PERCENT", ("LOAD_CONTROL", "x-loadControlPercentOffset", -30.0)),
    ("ALERT_GRID_EMERGENCY", "load shed now", None, ("SIMPLE", "level", 3.0)),
])
def test_each_payload_type_maps_like_its_2_0b_counterpart(ptype: str, value: Any, units: str | None,
                                                          want: tuple[str, str, float]) -> None:
    assert one(ptype, value, units) == [want]


def test_a_price_keeps_its_unit_and_currency() -> None:
    t = translate(raw([{"type": "PRICE", "values": [0.31]}],
                      payloadDescriptors=[{"payloadType": "PRICE", "units": "KWH", "currency": "USD"}]), None, CTX, NOW)
    (signal,) = t.event.signals
    assert (signal.name, signal.type, signal.unit, signal.intervals[0].value) == (
        SignalName.ELECTRICITY_PRICE, SignalType.PRICE, "USD/kWh", 0.31)


@pytest.mark.parametrize(("payloads", "descriptors", "why"), [
    ([{"type": "IMPORT_CAPACITY_LIMIT", "values": [30]}], [{"payloadType": "IMPORT_CAPACITY_LIMIT", "units": "KVA"}],
     "not a real-power limit"),
    ([{"type": "PRICE", "values": [0.3]}], [{"payloadType": "PRICE", "units": "KWH", "currency": "EUR"}],
     "the site's tariff is in USD"),
    ([{"type": "PRICE", "values": [3]}], [{"payloadType": "PRICE", "units": "THERMS"}], "only prices per KWH"),
    ([{"type": "SIMPLE", "values": [4]}], None, "not 0, 1, 2 or 3"),
    ([{"type": "SIMPLE", "values": ["high"]}], None, "not a finite number"),
    ([{"type": "CONTROL_LEVEL_OFFSET_PERCENT", "values": [-30]}], None, "outside -1..1"),
    ([{"type": "X_PRIVATE", "values": [1]}], None, "no payload this gateway acts on"),
])
def test_what_cannot_be_read_in_our_units_refuses_the_event(payloads: list[dict[str, Any]],
                                                            descriptors: list[dict[str, Any]] | None, why: str) -> None:
    with pytest.raises(BadEvent, match=why):
        translate(raw(payloads, payloadDescriptors=descriptors), None, CTX, NOW)


def test_timing_priority_and_randomization() -> None:
    intervals = [{"id": n, "payloads": [{"type": "SIMPLE", "values": [v]}]} for n, v in enumerate((1, 2, 3))]
    t = translate(raw(intervals=intervals, priority=0, intervalPeriod={
        "start": "2030-06-01T13:00:00Z", "duration": "PT15M", "randomizeStart": "PT5M"}), None, CTX, NOW)
    e = t.event
    assert e.dtstart == datetime(2030, 6, 1, 13, tzinfo=UTC) and e.duration == timedelta(minutes=45)
    assert [i.value for i in e.signals[0].intervals] == [1.0, 2.0, 3.0]
    assert e.priority == 1 and e.start_after == timedelta(minutes=5)  # 3.x's 0 (highest) is the domain's 1
    assert e.modification_number == int(datetime(2030, 6, 1, 11, tzinfo=UTC).timestamp() * 1000)


def test_now_and_no_end() -> None:
    t = translate(raw([{"type": "SIMPLE", "values": [1]}], intervalPeriod={"start": "0001-01-01T00:00:00Z",
                                                                            "duration": "P9999Y"}), None, CTX, NOW)
    assert t.event.dtstart == NOW and t.event.duration == timedelta(0) and t.event.end is None


def test_gaps_and_a_limit_missing_from_an_interval_are_refused() -> None:
    gap = [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [1]}]},
           {"id": 1, "intervalPeriod": {"start": "2030-06-01T14:00:00Z", "duration": "PT1H"},
            "payloads": [{"type": "SIMPLE", "values": [1]}]}]
    with pytest.raises(BadEvent, match="does not follow"):
        translate(raw(intervals=gap), None, CTX, NOW)
    missing = [{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT", "values": [5]}]},
               {"id": 1, "payloads": [{"type": "SIMPLE", "values": [1]}]}]
    with pytest.raises(BadEvent, match="DISPATCH_SETPOINT is missing from interval"):
        translate(raw(intervals=missing), None, CTX, NOW)
    level_gap = [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [2]}]},
                 {"id": 1, "payloads": [{"type": "ALERT_GRID_EMERGENCY", "values": ["now"]}]}]
    t = translate(raw(intervals=level_gap), None, CTX, NOW)
    assert [i.value for s in t.event.signals for i in s.intervals] == [2.0, 0.0, 0.0, 3.0]


def test_alerts_and_ghg_are_shown_not_acted_on() -> None:
    t = translate(raw([{"type": "GHG", "values": [410]}, {"type": "ALERT_FIRE", "values": ["wildfire nearby"]}]),
                  None, CTX, NOW)
    assert t.event.signals == () and t.notes == ("GHG: 410 g/kWh", "ALERT_FIRE: wildfire nearby")


@pytest.mark.parametrize(("targets", "ours", "addressed"), [
    (None, (), True),
    (["cp-1", "group-north"], ("cp-1",), True),
    (["site-1"], (), True),
    ([{"type": "RESOURCE_NAME", "values": ["cp-2", "cp-9"]}], ("cp-2",), True),  # 3.0.1's valuesMap targets
    ([{"type": "VEN_NAME", "values": ["another-site"]}], (), False),
    ([{"type": "RESOURCE_NAME", "values": ["cp-9"]}], (), False),
])
def test_targets(targets: list[Any] | None, ours: tuple[str, ...], addressed: bool) -> None:
    t = translate(raw([{"type": "SIMPLE", "values": [1]}], targets=targets), None, CTX, NOW)
    assert (t.event.targets, t.targeted) == (ours, addressed)
