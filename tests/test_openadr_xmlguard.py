"""The XML guard on its own: DOCTYPEs refused before any expansion, the byte limit, RFC 5545 durations,
date-times. (Whole hostile messages through the VEN are in test_openadr_hostile.py.)"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.openadr.xmlguard import RefusedPayload, check_raw, parse_date_time, parse_duration

BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i + 1} "{("&lol" + str(i) + ";") * 10}">' for i in range(9)).replace("&lol0;", "&lol;")
    + ']><oadr:oadrPayload xmlns:oadr="http://openadr.org/oadr-2.0b/2012/07">&lol9;</oadr:oadrPayload>'
)


def test_guard_refuses_doctype_before_any_expansion() -> None:
    with pytest.raises(RefusedPayload, match="DOCTYPE"):
        check_raw(BILLION_LAUGHS.encode(), 10_000_000)
    with pytest.raises(RefusedPayload, match="limit"):
        check_raw(b"<a/>" * 10, 8)


@pytest.mark.parametrize(("text", "seconds"), [("P", 0), ("PT0S", 0), ("PT15M", 900), ("P1DT1H", 90000),
                                                ("P2W", 1209600), ("+PT1S", 1)])
def test_rfc5545_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["P1M", "PT1.5S", "-PT1H", "PTXS", "PT", "P99999999D", "1H"])
def test_durations_that_are_not_rfc5545_or_absurd_are_refused(text: str) -> None:
    with pytest.raises(RefusedPayload):
        parse_duration(text)


def test_date_times_need_a_zone_and_come_back_in_utc() -> None:
    assert parse_date_time("2030-01-01T11:00:00+01:00") == datetime(2030, 1, 1, 10, tzinfo=UTC)
    with pytest.raises(RefusedPayload, match="no UTC designator"):
        parse_date_time("2030-01-01T10:00:00")
    with pytest.raises(RefusedPayload, match="not ISO 8601"):
        parse_date_time("yesterday")


def test_too_deep_a_body_is_refused() -> None:
    with pytest.raises(RefusedPayload, match="deeper"):
        check_raw(b"<a>" * 100 + b"</a>" * 100, 10_000)
