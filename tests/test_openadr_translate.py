"""openleadr event dicts to domain events: units, ids, targets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.openadr.translate import translate_event

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)


def test_load_dispatch_in_watts_becomes_kilowatts() -> None:
    raw = {
        "event_descriptor": {"event_id": 123, "modification_number": 0, "event_status": "far"},
        "active_period": {"dtstart": NOW, "duration": timedelta(hours=1)},
        "event_signals": [{"signal_name": "LOAD_DISPATCH", "signal_type": "setpoint", "signal_id": 7,
                           "powerReal": {"item_units": "W", "si_scale_code": "none"},
                           "intervals": [{"duration": timedelta(hours=1), "signal_payload": 40000, "uid": 0}]}],
        "targets": [{"resource_id": "fleet"}, {"ven_id": "ven-1"}],
    }
    t = translate_event(raw, ven_id="ven-1", resources={"fleet": ()}, now=NOW)
    assert t.event.event_id == "123" and t.targeted and t.event.targets == ("fleet",)
    assert t.event.signals[0].intervals[0].value == 40.0 and t.event.signals[0].unit == "kW"
    other = translate_event({**raw, "targets": [{"ven_id": "someone-else"}]}, ven_id="ven-1", resources={}, now=NOW)
    assert not other.targeted
