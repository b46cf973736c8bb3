"""Tariffs: TOU by weekday and season, hourly and flat prices, OpenADR prices first, the demand peak, the
`[tariff]` section's one-line errors, the shipped tariff examples, and `gateway plan` end to end.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.assembly import tariff_of
from gateway.cli import main
from gateway.config import ConfigError, load_config, parse_config
from gateway.domain import Segment
from gateway.schedule import PriceChange
from gateway.tariff import (
    Tariff,
    TouPeriod,
    demand_charge_at,
    demand_peak_kw,
    energy_cost,
    month_start,
    price_timeline,
    tariff_steps,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "config"
LA = ZoneInfo("America/Los_Angeles")


def sce() -> Tariff:
    config = load_config(EXAMPLES / "example-tariff-tou.toml")
    return tariff_of(config.tariff, config.site.timezone)


def price_at(tariff: Tariff, local: datetime) -> float | None:
    moment = local.replace(tzinfo=LA)
    steps = tariff_steps(tariff, moment, moment + timedelta(minutes=1))
    assert len(steps) == 1
    return steps[0].price


# ------------------------------------------------------------------------------------------------ prices


def test_sce_tou_ev_4_by_season_weekday_and_hour() -> None:
    t = sce()
    assert t.demand_charge_kw == 15.51
    assert price_at(t, datetime(2026, 7, 15, 13, 0)) == 0.26668  # summer Wednesday, on-peak
    assert price_at(t, datetime(2026, 7, 15, 9, 0)) == 0.0925  # mid-peak
    assert price_at(t, datetime(2026, 7, 15, 23, 30)) == 0.05623  # off-peak
    assert price_at(t, datetime(2026, 7, 18, 13, 0)) == 0.05623  # summer Saturday
    assert price_at(t, datetime(2026, 11, 25, 13, 0)) == 0.0869  # winter Wednesday, on-peak
    assert price_at(t, datetime(2026, 1, 3, 13, 0)) == 0.06087  # winter Saturday (wraps over new year)
    assert price_at(t, datetime(2026, 9, 30, 13, 0)) == 0.26668  # the season's last day is included
    assert price_at(t, datetime(2026, 10, 1, 13, 0)) == 0.0869


def test_holidays_are_priced_like_sundays() -> None:
    t = sce()
    assert price_at(t, datetime(2026, 11, 26, 13, 0)) == 0.06087  # Thanksgiving, a Thursday
    assert price_at(t, datetime(2026, 7, 3, 13, 0)) == 0.26668  # the Friday before is a weekday
    assert price_at(t, datetime(2026, 7, 4, 13, 0)) == 0.05623
    assert price_at(t, datetime(2027, 12, 24, 13, 0)) == 0.0869
    assert price_at(t, datetime(2027, 12, 27, 13, 0)) == 0.0869  # a Monday; "12-25" is the date itself
    problems = problems_of({"flat_price": 0.1, "holidays": ["12-32", "2026-02-30", 7]})
    assert problems == ["tariff.holidays: '12-32' is not a day of the year"]
    assert problems_of({"flat_price": 0.1, "holidays": "12-25"}) == [
        "tariff.holidays: expected a list of days like ['12-25', '2026-11-26'] (got '12-25')"]


def test_steps_are_contiguous_across_a_dst_change() -> None:
    t = sce()
    start = datetime(2026, 10, 31, 12, 0, tzinfo=UTC)  # clocks go back in Los Angeles on Nov 1
    end = start + timedelta(days=3)
    steps = tariff_steps(t, start, end)
    assert steps[0].start == start and steps[-1].end == end
    assert all(a.end == b.start for a, b in itertools.pairwise(steps))
    on_peak = [s for s in steps if s.source == "tariff:winter-on-peak"]
    assert on_peak and all(s.start.astimezone(LA).hour == 12 and s.end.astimezone(LA).hour == 18 for s in on_peak)


def test_openadr_prices_take_precedence_over_the_tariff() -> None:
    t = Tariff(flat_price=0.2)
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    event = Segment(now + timedelta(hours=1), now + timedelta(hours=2), price=0.9, reasons=("ev1:ELECTRICITY_PRICE",))
    limit_only = Segment(now, now + timedelta(hours=1), ev_kw=5.0)
    steps = price_timeline(t, now, now + timedelta(hours=4), (limit_only, event))
    assert [(s.price, s.source.split(":")[0]) for s in steps] == [(0.2, "tariff"), (0.9, "openadr"), (0.2, "tariff")]
    assert demand_charge_at(Tariff(demand_charge_kw=10.0), (Segment(now, None, demand_charge=20.0),), now) == 20.0
    assert demand_charge_at(Tariff(demand_charge_kw=10.0), (), now) == 10.0


def test_hourly_flat_and_no_tariff() -> None:
    hourly = Tariff(timezone="America/Chicago", hourly=tuple(float(h) for h in range(24)))
    moment = datetime(2026, 11, 25, 17, 30, tzinfo=ZoneInfo("America/Chicago"))
    assert tariff_steps(hourly, moment, moment + timedelta(minutes=5))[0].price == 17.0
    assert tariff_steps(Tariff(flat_price=0.3), moment, moment + timedelta(days=2))[0].price == 0.3
    assert tariff_steps(None, moment, moment + timedelta(hours=1))[0].price is None


def test_the_dynamic_hourly_example_plans_into_the_cheapest_hours_and_price_events_win(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = {
        "now": "2026-11-25T18:00:00-06:00",
        "circuits": [{"id": "main", "limit_a": 80, "phases": "L1-L2"},
                     {"id": "ev-circuit", "parent": "main", "limit_a": 48, "phases": "L1-L2"}],
        "evses": [{"id": "garage", "circuit": "ev-circuit", "phases": "L1-L2", "voltage_v": 240, "max_a": 48,
                   "energy_needed_kwh": 20, "departure": "2026-11-26T07:00:00-06:00"}],
    }
    config = str(EXAMPLES / "example-tariff-hourly.toml")
    path = tmp_path / "in.json"
    path.write_text(json.dumps(home), encoding="utf-8")
    assert main(["plan", str(path), "--json", "--config", config]) == 0
    result = json.loads(capsys.readouterr().out)
    garage = result["sessions"][0]
    assert garage["planned_kwh"] == pytest.approx(20.0)
    # 20 kWh at 11.52 kW is 1.74 h: the 03:00 hour (0.025) and most of 02:00 (0.026, earliest of the equals).
    assert {p["price"] for p in garage["profile"]} == {0.025, 0.026}
    assert garage["want_a"] == 0.0
    # The day-ahead prices the VTN sends win over the typical day: now 23:00 is the cheap hour.
    day_ahead = [{"start": f"2026-11-{25 + (18 + h) // 24}T{(18 + h) % 24:02d}:00:00-06:00",
                  "end": f"2026-11-{25 + (19 + h) // 24}T{(19 + h) % 24:02d}:00:00-06:00",
                  "price": -0.01 if h == 5 else 0.08} for h in range(13)]
    path.write_text(json.dumps(dict(home, prices=day_ahead)), encoding="utf-8")
    assert main(["plan", str(path), "--json", "--config", config]) == 0
    profile = json.loads(capsys.readouterr().out)["sessions"][0]["profile"]
    cheap = [p for p in profile if p["price"] == -0.01]
    assert [(p["start"], p["end"], p["kw"]) for p in cheap] == [
        ("2026-11-25T23:00:00-06:00", "2026-11-26T00:00:00-06:00", 11.52)]  # the whole negative hour
    assert {p["price"] for p in profile} == {-0.01, 0.08}  # the rest where the VTN's price is 0.08


def test_the_hourly_example_plans_a_car_that_says_nothing_into_the_cheapest_hours(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quiet = {"now": "2026-11-25T18:00:00-06:00", "circuits": [{"id": "main", "limit_a": 48, "phases": "L1-L2"}],
             "evses": [{"id": "garage", "circuit": "main", "phases": "L1-L2", "voltage_v": 240, "max_a": 48}]}
    path = tmp_path / "in.json"
    path.write_text(json.dumps(quiet), encoding="utf-8")
    config = str(EXAMPLES / "example-tariff-hourly.toml")
    assert main(["plan", str(path), "--config", config]) == 0
    assert "garage: 15 kWh planned of 15 kWh (default) by Thu 04:00 (default)" in capsys.readouterr().out
    assert main(["plan", str(path), "--json", "--config", config]) == 0
    garage = json.loads(capsys.readouterr().out)["sessions"][0]
    assert garage["want_a"] == 0.0 and not garage["energy_given"]
    assert {p["price"] for p in garage["profile"]} == {0.025, 0.026}  # 03:00, then the 02:00 hour


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 400 * 24), st.integers(1, 72), st.lists(st.tuples(st.integers(0, 72), st.integers(1, 10)),
                                                                  max_size=4))
def test_price_timeline_covers_the_window_exactly(offset_h: int, hours: int, events: list[tuple[int, int]]) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=offset_h, minutes=7)
    end = start + timedelta(hours=hours)
    segments = []
    at = start
    for gap, length in events:  # consecutive like schedule's segments
        seg_start = at + timedelta(hours=gap)
        segments.append(Segment(seg_start, seg_start + timedelta(hours=length), price=1.0))
        at = seg_start + timedelta(hours=length)
    steps = price_timeline(sce(), start, end, segments)
    assert steps[0].start == start and steps[-1].end == end
    assert all(a.end == b.start and a.start < a.end for a, b in itertools.pairwise(steps))
    for s in steps:
        inside = any(seg.start <= s.start and seg.end is not None and s.end <= seg.end for seg in segments)
        assert (s.price == 1.0) == inside  # the tariff's own prices are all below 0.3


def test_demand_peak_is_the_highest_15_minute_average() -> None:
    t0 = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
    readings = [(t0, 10.0), (t0 + timedelta(minutes=5), 40.0), (t0 + timedelta(minutes=10), 10.0),
                (t0 + timedelta(minutes=15), 0.0), (t0 + timedelta(minutes=20), 100.0),
                (t0 + timedelta(minutes=21), 0.0)]
    assert demand_peak_kw(readings) == pytest.approx(20.0)  # a 1-minute spike of 100 kW averages 6.7
    assert demand_peak_kw(readings, since=t0 + timedelta(minutes=15)) == pytest.approx(100.0 / 15)
    assert demand_peak_kw([]) == 0.0
    assert month_start(sce(), datetime(2026, 11, 1, 5, tzinfo=UTC)) == datetime(2026, 10, 1, tzinfo=LA)


def test_energy_cost_of_a_profile() -> None:
    t0 = datetime(2026, 11, 25, tzinfo=UTC)
    steps = tariff_steps(Tariff(periods=(TouPeriod("a", 0.1, frozenset(range(7)), 0, 720),
                                         TouPeriod("b", 0.5, frozenset(range(7)), 720, 1440))), t0,
                         t0 + timedelta(days=1))
    assert energy_cost(steps, [(t0 + timedelta(hours=11), t0 + timedelta(hours=13), 10.0)]) == pytest.approx(6.0)


# ------------------------------------------------------------------------------------------------ config


def site(tariff: dict[str, Any]) -> dict[str, Any]:
    return {"site": {"wiring": "split-phase-120/240", "service_breaker_a": 100}, "tariff": tariff}


def problems_of(tariff: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(site(tariff))
    return info.value.problems


def period(name: str, start: str, end: str, price: float = 0.1, **more: Any) -> dict[str, Any]:
    return {"name": name, "start": start, "end": end, "price": price, **more}


def test_overlapping_and_missing_periods_are_one_line_each_with_the_path() -> None:
    problems = problems_of({"periods": [
        period("off-peak", "00:00", "16:00"),
        period("on-peak", "15:00", "21:00", 0.4, days="weekdays"),
        period("late", "21:00", "24:00"),
    ]})
    assert problems == [
        "tariff.periods[1]: 'on-peak' overlaps periods[0] ('off-peak') 15:00-16:00 on mon-fri",
        "tariff.periods: no period covers 16:00-21:00 on sat-sun",
    ]


def test_seasons_must_cover_the_year_once() -> None:
    problems = problems_of({
        "seasons": [{"name": "summer", "start": "06-01", "end": "09-30"},
                    {"name": "winter", "start": "09-15", "end": "04-30"}],
        "periods": [period("all", "00:00", "24:00", seasons=["summer", "fall"])],
    })
    assert "tariff.seasons: no season covers 05-01..05-31" in problems
    assert ("tariff.seasons[1]: overlaps: seasons[0] ('summer') and seasons[1] ('winter') both cover 09-15..09-30"
            in problems)
    assert "tariff.periods[0].seasons: unknown season 'fall' (known: summer, winter)" in problems
    assert len(problems) == 3


def test_a_season_without_its_periods_is_a_gap() -> None:
    problems = problems_of({
        "seasons": [{"name": "summer", "start": "06-01", "end": "09-30"},
                    {"name": "winter", "start": "10-01", "end": "05-31"}],
        "periods": [period("summer-all", "00:00", "24:00", seasons=["summer"])],
    })
    assert problems == ["tariff.periods: no period covers 00:00-24:00 on every day in winter"]


@pytest.mark.parametrize(("tariff", "expected"), [
    ({"flat_price": 0.2, "hourly": [0.1] * 24}, "tariff.hourly: give one of flat_price, hourly or periods, not "
                                                 "flat_price and hourly"),
    ({"hourly": [0.1] * 23}, "tariff.hourly: expected 24 prices (local hours 0 … 23), got 23"),
    ({"periods": [period("x", "23:00", "07:00")]},
     "tariff.periods[0].end: 07:00 is not after start 23:00; split a period that runs past midnight in two"),
    ({"periods": [period("x", "00:00", "24:00", days="mon-fr")]},
     "tariff.periods[0].days: unknown day range 'mon-fr' (use mon … sun, like 'mon-fri')"),
    ({"periods": [period("x", "25:00", "24:00")]}, "tariff.periods[0].start: '25:00' is not a time of day "
                                                    "(00:00 … 24:00)"),
    ({"periods": [period("x", "0:00", "24:00")], "seasons": [{"name": "s", "start": "02-30", "end": "01-01"}]},
     "tariff.seasons[0].start: '02-30' is not a day of the year"),
    ({"seasons": [{"name": "s", "start": "01-01", "end": "12-31"}]},
     "tariff.seasons: seasons only apply to periods: add [[tariff.periods]] or drop them"),
    ({"flat_price": 0.2, "plan": {"no_departure": "later"}},
     "tariff.plan.no_departure: Input should be 'charge-now' or 'dwell' (got 'later')"),
    ({"flat_prise": 0.2}, "tariff.flat_prise: unknown key (did you mean 'flat_price'?)"),
])
def test_each_mistake_is_one_clear_line(tariff: dict[str, Any], expected: str) -> None:
    assert expected in problems_of(tariff)


def test_describe_for_the_summary() -> None:
    config = load_config(EXAMPLES / "example-tariff-tou.toml")
    assert config.tariff.describe() == ("'SCE TOU-EV-4 (2019-03)': 12 time-of-use periods in 2 seasons, demand charge "
                                        "15.51 USD/kW; plans every 15 min over 48 h")
    assert parse_config(site({})).tariff.describe().startswith("none (OpenADR prices only")


def test_day_names_and_ranges() -> None:
    config = parse_config(site({"periods": [
        period("weekend", "00:00", "24:00", days=["sat", "sunday"]),
        period("fri-mon?", "00:00", "24:00", days="mon-fri"),
    ]}))
    days = [p.days for p in tariff_of(config.tariff).periods]
    assert days == [frozenset({5, 6}), frozenset(range(5))]
    wrapped = parse_config(site({"periods": [period("x", "00:00", "24:00", days="sat-mon"),
                                             period("y", "00:00", "24:00", days="tue-fri")]}))
    assert wrapped.tariff.periods[0].days == frozenset({5, 6, 0})


@pytest.mark.parametrize("name", ["example-tariff-tou.toml", "example-tariff-hourly.toml"])
def test_the_tariff_examples_pass_check_config(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLES / name)]) == 0
    assert "error" not in capsys.readouterr().err


def test_check_config_reports_a_bad_tariff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (EXAMPLES / "example-tariff-tou.toml").read_text(encoding="utf-8")
    path = tmp_path / "bad.toml"
    path.write_text(text.replace('end = "12:00"\nprice = 0.0925', 'end = "13:00"\nprice = 0.0925', 1),
                    encoding="utf-8")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: tariff.periods[2]: 'summer-on-peak' overlaps periods[1] ('summer-mid-peak-morning') "
                   "12:00-13:00 on mon-fri in summer"]


# ------------------------------------------------------------------------------------------------ gateway plan


def plan_input(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "now": "2026-11-25T16:40:00-08:00",
        "timezone": "America/Los_Angeles",
        "circuits": [{"id": "main", "limit_a": 80, "phases": "L1-L2"}],
        "evses": [
            {"id": "cp-1", "circuit": "main", "phases": "L1-L2", "voltage_v": 240, "max_a": 32,
             "energy_needed_kwh": 20, "departure": "2026-11-26T07:00:00-08:00"},
            {"id": "cp-2", "circuit": "main", "phases": "L1-L2", "voltage_v": 240, "max_a": 32,
             "energy_needed_kwh": 8, "departure": "2026-11-25T19:00:00-08:00"},
        ],
        "tariff": {"name": "two-period", "periods": [
            period("off-peak", "00:00", "16:00", 0.12), period("on-peak", "16:00", "21:00", 0.45),
            period("off-peak-late", "21:00", "24:00", 0.12)]},
        "prices": [{"start": "2026-11-26T02:00:00-08:00", "end": "2026-11-26T03:00:00-08:00", "price": 0.9}],
        "limits": [{"start": "2026-11-25T16:00:00-08:00", "end": "2026-11-25T18:00:00-08:00", "ev_kw": 10}],
        "ev_capacity_kw": 15,
    }
    data.update(changes)
    return data


def run_plan(data: dict[str, Any], tmp_path: Path, *flags: str) -> int:
    path = tmp_path / "in.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return main(["plan", str(path), *flags])


def test_gateway_plan_prints_profiles_and_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_plan(plan_input(), tmp_path) == 0
    out = capsys.readouterr().out
    assert "cp-1: 20 kWh planned of 20 kWh by Thu 07:00, cost 2.40 USD; now: plan 0 A" in out
    assert "planned: 28 kWh for 6.00 USD" in out
    assert "as fast as possible: 28 kWh for" in out
    assert run_plan(plan_input(), tmp_path, "--json") == 0
    result = json.loads(capsys.readouterr().out)
    one = result["sessions"][0]
    assert one["want_a"] == 0.0 and one["amps_now"] == 0.0
    assert all(p["price"] == 0.12 for p in one["profile"])  # neither on-peak nor the 0.9 spike
    assert result["planned"]["cost"] < result["as_fast_as_possible"]["cost"]
    assert all(s["ev_kw"] <= 10 + 1e-9 for s in result["site"] if s["start"] < "2026-11-25T18:00")


def test_gateway_plan_says_when_the_non_ev_load_alone_is_over_a_limit_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    over = plan_input(non_ev_kw=12.0, limits=[{"start": "2026-11-25T16:00:00-08:00", "site_kw": 10}],
                      evses=[dict(plan_input()["evses"][0], departure="2026-11-25T12:00:00-08:00")])
    assert run_plan(over, tmp_path) == 0
    out = capsys.readouterr().out
    assert "cp-1: charge-now" in out and "(default)" in out  # its departure has passed: the default applies
    assert out.splitlines()[-1] == (
        "overloaded now (every charger under it gets 0 A): site: non-EV load 12 kW over its limit 10 kW")


def test_gateway_plan_bad_input_is_one_line_per_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = plan_input(
        limits=[{"start": "2026-11-25T16:00:00-08:00", "end": "2026-11-25T18:00:00-08:00", "ev_kw": 10},
                {"start": "2026-11-25T17:00:00-08:00", "ev_kw": -1}],
        timezone="Mars/Olympus",
        tariff={"periods": [period("a", "00:00", "20:00")]},
    )
    assert run_plan(bad, tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: tariff.periods: no period covers 20:00-24:00 on every day",
        "error: timezone: unknown time zone 'Mars/Olympus' (like 'America/Los_Angeles')",
        "error: limits[1].ev_kw: Input should be greater than or equal to 0 (got -1)",
    ]
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    assert main(["plan", str(tmp_path / "broken.json")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert run_plan(plan_input(limits=[{"start": "2026-11-25T16:00:00-08:00", "ev_kw": 10},
                                       {"start": "2026-11-25T17:00:00-08:00", "ev_kw": 5}]), tmp_path) == 2
    assert capsys.readouterr().err.strip() == "error: limits[1].start: overlaps limits[0]"


def test_gateway_plan_takes_the_tariff_from_a_site_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = plan_input(now="2026-07-15T10:05:00-07:00", peak_kw=8)
    for key in ("tariff", "timezone", "prices", "limits", "ev_capacity_kw"):
        del data[key]
    data["evses"][0]["departure"] = "2026-07-16T08:00:00-07:00"
    data["evses"][1]["departure"] = "2026-07-15T19:00:00-07:00"
    path = tmp_path / "in.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert main(["plan", str(path), "--json", "--config", str(EXAMPLES / "example-tariff-tou.toml")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tariff"] == "SCE TOU-EV-4 (2019-03)"
    assert result["now"] == "2026-07-15T10:05:00-07:00"
    overnight = result["sessions"][0]
    assert {p["price"] for p in overnight["profile"]} == {0.05623}  # summer off-peak only
    assert result["planned"]["peak_target_kw"] == 8
    assert result["planned"]["peak_raise_cost"] == 0.0
    assert max(s["ev_kw"] for s in result["site"]) <= 8 + 1e-9
    data["peak_kw"] = 1.0  # too low for cp-2 to leave at 19:00 with its 8 kWh: raised, and its cost shown
    path.write_text(json.dumps(data), encoding="utf-8")
    assert main(["plan", str(path), "--json", "--config", str(EXAMPLES / "example-tariff-tou.toml")]) == 0
    planned = json.loads(capsys.readouterr().out)["planned"]
    assert planned["peak_target_kw"] > 1.0
    assert planned["peak_raise_cost"] == pytest.approx((planned["peak_target_kw"] - 1.0) * 15.51, abs=0.01)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 47), min_size=1, max_size=6, unique=True), st.sampled_from(["drop", "stretch", "none"]),
       st.data())
def test_random_day_partitions_pass_and_broken_ones_say_where(
    cuts: list[int], damage: str, data: st.DataObject
) -> None:
    """Periods that tile the day are valid and price every minute; one dropped or stretched is one line."""
    bounds = [0, *sorted(c * 30 for c in cuts), 1440]
    periods = [period(f"p{n}", f"{a // 60:02d}:{a % 60:02d}", f"{b // 60:02d}:{b % 60:02d}", 0.1 + n / 100)
               for n, (a, b) in enumerate(itertools.pairwise(bounds))]
    n = data.draw(st.integers(0, len(periods) - 1))
    if damage == "none":
        tariff = tariff_of(parse_config(site({"periods": periods})).tariff)
        start = datetime(2026, 3, 2, tzinfo=UTC)
        steps = tariff_steps(tariff, start, start + timedelta(days=7))
        assert all(s.price is not None for s in steps)
        return
    if damage == "drop":
        a, b = bounds[n], bounds[n + 1]
        del periods[n]
        gap = f"{a // 60:02d}:{a % 60:02d}-{b // 60:02d}:{b % 60:02d}"
        assert problems_of({"periods": periods}) == [f"tariff.periods: no period covers {gap} on every day"]
    else:
        if n == len(periods) - 1:
            n -= 1
        if n < 0:
            return
        periods[n] = {**periods[n], "end": periods[n + 1]["end"]}
        problems = problems_of({"periods": periods})
        assert len(problems) == 1
        assert problems[0].startswith(f"tariff.periods[{n + 1}]: 'p{n + 1}' overlaps periods[{n}]")


def test_relative_openadr_prices_modify_the_tou_price_at_each_moment() -> None:
    t = Tariff(periods=(TouPeriod("off", 0.12, frozenset(range(7)), 0, 16 * 60),
                        TouPeriod("on", 0.45, frozenset(range(7)), 16 * 60, 21 * 60),
                        TouPeriod("late", 0.12, frozenset(range(7)), 21 * 60, 24 * 60)))
    day = datetime(2026, 11, 25, tzinfo=UTC)
    plus = PriceChange(day + timedelta(hours=15), day + timedelta(hours=17), relative=0.05,
                       reasons=("r:ENERGY_PRICE:priceRelative=0.05",))
    double = PriceChange(day + timedelta(hours=20), None, multiplier=2.0)
    steps = price_timeline(t, day + timedelta(hours=14), day + timedelta(hours=23), (), (plus, double))
    assert [(s.start - day).total_seconds() / 3600 for s in steps] == [14, 15, 16, 17, 20, 21]
    assert [s.price for s in steps] == pytest.approx([0.12, 0.17, 0.50, 0.45, 0.90, 0.24])
    assert steps[1].source == "tariff:off+openadr:r:ENERGY_PRICE:priceRelative=0.05"
    assert steps[0].start == day + timedelta(hours=14) and steps[-1].end == day + timedelta(hours=23)
    assert all(a.end == b.start for a, b in itertools.pairwise(steps))
    # An absolute OpenADR price wins over the change; without a tariff there is nothing to modify.
    absolute = Segment(day + timedelta(hours=16), day + timedelta(hours=17), price=0.9, reasons=("a",))
    steps = price_timeline(t, day + timedelta(hours=15), day + timedelta(hours=17), (absolute,), (plus,))
    assert [s.price for s in steps] == pytest.approx([0.17, 0.9])
    assert [s.price for s in price_timeline(None, day, day + timedelta(hours=1), (), (double,))] == [None]
