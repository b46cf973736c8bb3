"""The meter check, pure: a lying meter is never believed, a steady house load is never under-counted
through a lie, an honest meter whose chargers report late raises no alarm, each fault starts and ends
once; and the runtime's glue turning faults into alarms and distrusted readings."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.assembly import site_of
from gateway.cli import main
from gateway.config import GatewayConfig, parse_config
from gateway.runtime.alarms import Alarms
from gateway.runtime.decide import Inputs, MeterReading, non_ev_loads
from gateway.runtime.meter_check import (
    CheckSettings,
    MeterState,
    Poll,
    counted_non_ev,
    judge,
    step,
)
from gateway.runtime.meter_watch import MeterWatch

LIMIT = 64.0
S = CheckSettings(limit_a={"L1": LIMIT}, confirm_s=5.0, clear_s=5.0)
DT = 0.5  # seconds between polls
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def poll(at: float, amps: float, ev: float, n: int = 0, rejected: str | None = None) -> Poll:
    # `n` stands for the energy counter and voltage noise of a live meter: every poll reads differently
    return Poll(at, {} if rejected else {"L1": amps}, {"L1": ev}, (amps, float(n)), rejected)


def counted(state: MeterState, p: Poll, s: CheckSettings = S) -> float:
    """The non-EV load the decision counts after this poll."""
    instead = counted_non_ev(state, s)
    if instead is not None:
        return instead["L1"]
    return max(0.0, p.current_a["L1"] - (p.ev_a["L1"] if s.includes_evs else 0.0))


def run(polls: list[Poll], s: CheckSettings = S) -> list[MeterState]:
    state, out = MeterState(), []
    for p in polls:
        state = step(state, p, s)
        out.append(state)
    return out


# ------------------------------------------------------------------------------------ single polls


@pytest.mark.parametrize(("amps", "ev", "export", "kind"), [
    (-50.0, 0.0, 0.0, "implausible"),  # export with no PV
    (-0.5, 0.0, 0.0, None),  # inside the tolerance
    (0.0, 49.0, 0.0, "implausible"),  # a stuck zero while the chargers draw 49 A
    (40.0, 49.0, 0.0, "implausible"),  # less than the chargers behind it
    (47.0, 49.0, 0.0, None),  # within 2 A + 5 %
    (-10.0, 0.0, 14.5, None),  # PV exporting within its capacity
    (-30.0, 0.0, 14.5, "implausible"),  # more than the PV can make
    (1e9, 0.0, 0.0, "absurd"),
    (math.nan, 0.0, 0.0, "absurd"),
    (-700.0, 0.0, 1000.0, "absurd"),  # over ten times the circuit, whatever the PV
])
def test_one_poll_is_judged_on_its_own(amps: float, ev: float, export: float, kind: str | None) -> None:
    s = CheckSettings(limit_a={"L1": LIMIT}, export_a=export)
    verdict = judge(poll(0.0, amps, ev), s)
    assert (verdict[0] if verdict else None) == kind, verdict
    if verdict is not None:
        assert "L1" in verdict[1]


def test_a_meter_not_seeing_the_chargers_is_not_judged_against_them() -> None:
    s = CheckSettings(limit_a={"L1": LIMIT}, includes_evs=False)
    assert judge(poll(0.0, 5.0, 49.0), s) is None
    assert judge(poll(0.0, -5.0, 0.0), s) is not None


def test_the_poller_refusing_values_is_absurd_at_once_and_counts_the_limit() -> None:
    states = run([poll(0.0, 20.0, 5.0, 0), poll(0.5, 0.0, 5.0, 1, rejected="current_l1 = 1e+09 A")])
    assert states[-1].started is not None and states[-1].fault is not None
    assert states[-1].fault.kind == "absurd" and "1e+09" in states[-1].fault.why
    assert counted_non_ev(states[-1], S) == {"L1": LIMIT}


def test_a_configured_fault_load_is_counted_but_never_below_what_was_believed() -> None:
    s = CheckSettings(limit_a={"L1": LIMIT}, fault_non_ev_a=20.0)
    states = run([poll(0.0, 55.0, 25.0, 0), poll(0.5, 0.0, 0.0, 1, rejected="nan")], s)
    assert counted_non_ev(states[-1], s) == {"L1": 30.0}  # 55 - 25 believed a moment ago
    states = run([poll(0.0, 30.0, 25.0, 0), poll(0.5, 0.0, 0.0, 1, rejected="nan")], s)
    assert counted_non_ev(states[-1], s) == {"L1": 20.0}


def test_a_dip_below_the_chargers_is_held_then_a_fault_then_cleared() -> None:
    polls = [poll(0.0, 64.0, 49.0, 0)]  # 15 A of house
    polls += [poll(DT * i, -50.0, 49.0, i) for i in range(1, 14)]  # lies for 6.5 s
    polls += [poll(DT * i, 64.0, 49.0, i) for i in range(14, 30)]  # honest again for 8 s
    states = run(polls)
    held = states[1]
    assert held.suspect is not None and held.fault is None and counted_non_ev(held, S) == {"L1": 15.0}
    starts = [i for i, st_ in enumerate(states) if st_.started]
    ends = [i for i, st_ in enumerate(states) if st_.ended]
    assert len(starts) == 1 and len(ends) == 1
    assert polls[starts[0]].at - polls[1].at >= S.confirm_s
    assert counted_non_ev(states[starts[0]], S) == {"L1": LIMIT}
    assert polls[ends[0]].at - polls[14].at >= S.clear_s
    assert all(counted_non_ev(s, S) == {"L1": LIMIT} for s in states[starts[0]:ends[0]])
    assert counted_non_ev(states[-1], S) is None


def test_a_stuck_zero_is_not_believed_again_when_the_chargers_it_stopped_draw_nothing() -> None:
    stuck = (0.0, 0.0, 230.0, 1234.5)  # currents, power, voltage and energy all standing still
    polls = [Poll(DT * i, {"L1": 0.0}, {"L1": 49.0}, stuck) for i in range(12)]  # the chargers draw 49 A
    polls += [Poll(DT * i, {"L1": 0.0}, {"L1": 0.0}, stuck) for i in range(12, 60)]  # stopped by the fault
    states = run(polls)
    assert sum(1 for st_ in states if st_.started) == 1 and not any(st_.ended for st_ in states)
    assert states[-1].fault is not None and states[-1].fault.kind == "implausible", "one alarm, not a second kind"
    assert counted_non_ev(states[-1], S) == {"L1": LIMIT}
    live = [Poll(DT * i, {"L1": 15.0}, {"L1": 0.0}, (15.0, float(i))) for i in range(60, 80)]  # it reads again
    after = run(polls + live)
    assert sum(1 for st_ in after if st_.ended) == 1 and after[-1].fault is None


def test_a_meter_standing_bit_still_while_every_charger_behind_it_stops_is_taken_for_stuck() -> None:
    """The price of catching a stuck 0 A: an honest meter that does not move by a milliamp while all the
    chargers it was caught under (their reports late) stop, is suspect until it moves or sees a draw."""
    polls = [poll(0.0, 40.0, 30.0, 0), poll(DT, 10.0, 30.0, 1)]  # every car stopped; reports are late
    polls += [Poll(DT * i, {"L1": 10.0}, {"L1": 0.0}, (10.0, float(i))) for i in range(2, 14)]
    states = run(polls)
    assert states[-1].fault is not None
    jitter = [Poll(DT * i, {"L1": 10.0 + 0.01 * (i % 2)}, {"L1": 0.0}, (10.0, float(i))) for i in range(2, 14)]
    assert all(st_.fault is None for st_ in run(polls[:2] + jitter)), "a live meter's jitter shows it live"


def test_identical_readings_while_the_chargers_move_are_a_frozen_meter() -> None:
    frozen = (64.0, 1234.5)
    polls = [Poll(DT * i, {"L1": 64.0}, {"L1": 49.0}, frozen) for i in range(4)]
    polls += [Poll(DT * i, {"L1": 64.0}, {"L1": 30.0}, frozen) for i in range(4, 12)]  # a car drew less
    states = run(polls)
    start = next(i for i, s in enumerate(states) if s.started)
    fault = states[start].fault
    assert fault is not None and fault.kind == "frozen"
    assert polls[start].at - polls[4].at >= S.frozen_settle_s
    assert "49.0 A to 30.0 A" in fault.why
    assert all(s.fault is None for s in states[:start])
    thawed = step(states[-1], Poll(6.0, {"L1": 45.0}, {"L1": 30.0}, (45.0, 1234.6)), S)
    assert thawed.fault is not None and thawed.ended is None, "not cleared before clear_s"


def test_identical_readings_with_current_flowing_for_long_are_frozen_even_if_nothing_moves() -> None:
    s = CheckSettings(limit_a={"L1": LIMIT}, frozen_after_s=10.0)
    steady = [Poll(DT * i, {"L1": 30.0}, {"L1": 10.0}, (30.0, 99.0)) for i in range(25)]
    states = run(steady, s)
    assert states[19].fault is None and states[20].fault is not None
    idle = [Poll(DT * i, {"L1": 0.0}, {}, (0.0, 99.0)) for i in range(40)]  # nothing flows: nothing to tell
    assert all(st_.fault is None for st_ in run(idle, s))


# ------------------------------------------------------------------------------------ properties

amps = st.floats(min_value=0.0, max_value=60.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(house=st.floats(min_value=0.0, max_value=30.0), ev=st.lists(amps, min_size=1, max_size=60),
       lies=st.lists(st.one_of(st.none(), st.floats(min_value=-500.0, max_value=500.0),
                               st.just(math.nan), st.just(1e9)), min_size=1, max_size=60))
def test_a_lie_never_makes_a_steady_house_load_count_less(house: float, ev: list[float],
                                                          lies: list[float | None]) -> None:
    """A meter that reads less than the house load plus the chargers (a lie the check can tell: below the
    chargers less the tolerance, or absurd) never makes the decision count less than the house load."""
    state = MeterState()
    for i, (e, lie) in enumerate(zip(ev, lies, strict=False)):
        truth = house + e
        detectable = lie is not None and (not math.isfinite(lie) or abs(lie) > 640 or lie < e - 2.0 - 0.05 * e)
        if lie is None or not detectable:
            reading = truth
            p = poll(DT * i, reading, e, i)
        elif math.isfinite(lie) and abs(lie) <= 2000:
            p = poll(DT * i, lie, e, i)
        else:
            p = poll(DT * i, 0.0, e, i, rejected=f"current_l1 = {lie}")
        state = step(state, p, S)
        if detectable:
            assert not state.believed
        assert counted(state, p) >= house - 1e-6, (i, lie, state)


@settings(max_examples=300, deadline=None)
@given(house=st.floats(min_value=0.0, max_value=30.0), draws=st.lists(amps, min_size=2, max_size=80),
       lag=st.integers(min_value=0, max_value=8), pv=st.floats(min_value=0.0, max_value=20.0))
def test_an_honest_meter_whose_chargers_report_late_raises_no_alarm(house: float, draws: list[float], lag: int,
                                                                  pv: float) -> None:
    """The meter sees a car's new draw at once, its charger says so up to `lag` polls later (under
    `confirm_s`); PV exports within its capacity; like any live meter its reading jitters by a few mA.
    No fault, ever."""
    s = CheckSettings(limit_a={"L1": LIMIT}, export_a=pv)
    state = MeterState()
    for i, actual in enumerate(draws):
        reported = draws[max(0, i - lag)]
        reading = house + actual - pv + 0.01 * (i % 3)
        state = step(state, poll(DT * i, reading, reported, i), s)
        assert state.fault is None and state.started is None, (i, state.suspect)


@settings(max_examples=300, deadline=None)
@given(readings=st.lists(st.tuples(st.floats(min_value=-100.0, max_value=100.0), amps, st.booleans(),
                                   st.booleans()), min_size=1, max_size=80))
def test_each_fault_starts_once_and_ends_once(readings: list[tuple[float, float, bool, bool]]) -> None:
    state, open_fault = MeterState(), None
    for i, (r, e, same, refused) in enumerate(readings):
        values = (r, 0.0) if same else (r, float(i))
        p = Poll(DT * i, {} if refused else {"L1": r}, {"L1": e}, values, "refused" if refused else None)
        state = step(state, p, S)
        if state.ended is not None:
            assert open_fault is not None and state.ended.kind == open_fault.kind
            open_fault = None
        if state.started is not None:
            assert open_fault is None
            open_fault = state.started
        assert (open_fault is None) == (state.fault is None)
        if state.fault is not None:
            assert (counted_non_ev(state, S) or {})["L1"] >= LIMIT


# ------------------------------------------------------------------------------------ the runtime's glue


def site_config(**meter: object) -> GatewayConfig:
    return parse_config({
        "site": {"wiring": "three-phase-400/230", "service_breaker_a": 80},
        "chargers": [{"id": "a", "protocol": "ocpp1.6", "phases": "L1-L2-L3", "max_a": 32}],
        "meters": [{"id": "grid", "modbus": {"model": "eastron-sdm630", "host": "127.0.0.1"}, **meter}],
    })


def test_the_watch_raises_one_critical_alarm_and_the_decision_counts_the_limit() -> None:
    config = site_config()
    site = site_of(config)
    alarms = Alarms()
    watch = MeterWatch(config, site, alarms)
    three = {"L1": -50.0, "L2": -50.0, "L3": -50.0}
    for i in range(20):
        watch.observe("grid", Poll(DT * i, three, {}, (float(i),)), NOW)
    alarm = alarms.get("meter.grid.implausible")
    assert alarm is not None and alarm.severity == "critical"
    assert "no PV configured" in alarm.message and "counts at 64 A" in alarm.message and alarm.action
    reading = watch.reading(MeterReading("grid", three, NOW))
    assert reading.distrusted is not None
    loads, fresh = non_ev_loads(site, Inputs(NOW, meters={"grid": reading}), [], set())
    assert {load.amps for load in loads} == {64.0} and not fresh
    for i in range(20, 40):
        watch.observe("grid", Poll(DT * i, {"L1": 10.0, "L2": 10.0, "L3": 10.0}, {}, (float(i),)), NOW)
    assert not alarms.active("meter.grid.implausible")
    assert watch.reading(MeterReading("grid", {"L1": 10.0}, NOW)).distrusted is None


def test_pv_makes_export_plausible_up_to_its_capacity() -> None:
    config = site_config(pv_kw=10.0)  # 43 A if all on one phase
    watch = MeterWatch(config, site_of(config), Alarms())
    for i in range(20):
        watch.observe("grid", Poll(DT * i, {"L1": -40.0, "L2": -5.0, "L3": 0.0}, {}, (float(i),)), NOW)
    assert watch.fault("grid") is None
    for i in range(20, 40):
        watch.observe("grid", Poll(DT * i, {"L1": -60.0, "L2": -5.0, "L3": 0.0}, {}, (float(i),)), NOW)
    fault = watch.fault("grid")
    assert fault is not None and "43.5 A its PV" in fault.why


def test_a_stale_and_distrusted_meter_counts_the_higher_of_both() -> None:
    config = site_config()
    site = site_of(config)
    old = NOW - timedelta(seconds=30)
    worst = {"L1": 70.0, "L2": 70.0, "L3": 70.0}
    reading = MeterReading("grid", {"L1": 5.0}, old, worst, "held", {"L1": 20.0, "L2": 20.0, "L3": 20.0})
    loads, _ = non_ev_loads(site, Inputs(NOW, meters={"grid": reading}), [], set())
    assert {load.amps for load in loads} == {70.0}


def test_check_config_shows_the_meter_settings_and_refuses_bad_ones_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = ('[site]\nwiring = "three-phase-400/230"\nservice_breaker_a = 80\n\n'
            '[[meters]]\nid = "grid"\npv_kw = 10\nfault_non_ev_a = 25\n'
            'modbus = { model = "eastron-sdm630", host = "127.0.0.1" }\n')
    good = tmp_path / "good.toml"
    good.write_text(text)
    assert main(["check-config", str(good)]) == 0
    assert "meters: grid on main (PV 10 kW; if it lies, non-EV load counted at 25 A)" in capsys.readouterr().out
    good.write_text(text.replace("pv_kw = 10\nfault_non_ev_a = 25\n", ""))
    assert main(["check-config", str(good)]) == 0
    assert "(no PV: negative current is a fault; if it lies, non-EV load counted at 64 A)" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("pv_kw = 10", "pv_kw = -3").replace("fault_non_ev_a = 25", "implausible_after_s = 0"))
    assert main(["check-config", str(bad)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: meters[0].pv_kw:")
    assert lines[1].startswith("error: meters[0].implausible_after_s:")


@settings(max_examples=150, deadline=None)
@given(house=st.floats(min_value=0.0, max_value=40.0),
       lies=st.lists(st.one_of(st.none(), st.floats(min_value=-200.0, max_value=200.0), st.just(math.nan),
                               st.just(1e9)), min_size=1, max_size=40))
def test_through_the_decision_a_lying_meter_never_puts_a_steady_site_over_its_limit(
    house: float, lies: list[float | None]
) -> None:
    """The meter check and `decide` together, poll by poll: two 32 A cars draw what they were last given,
    the house stays at `house`, and the meter either tells the truth or lies in a way the check can tell
    (a refused poll leaves the decision the last reading the poller took). The house plus what the cars
    are given never exceeds the 64 A a phase may carry."""
    from gateway.domain import ChargerReading, ChargerStatus
    from gateway.runtime.decide import decide
    from gateway.smoothing import ChargerMemory

    config = parse_config({
        "site": {"wiring": "three-phase-400/230", "service_breaker_a": 80},
        "chargers": [{"id": c, "protocol": "ocpp1.6", "phases": "L1-L2-L3", "max_a": 32} for c in ("a", "b")],
        "meters": [{"id": "grid", "modbus": {"model": "eastron-sdm630", "host": "127.0.0.1"}}],
        "control": {"min_on_time_s": 0, "deadband_a": 0},
    })
    site = site_of(config)
    watch = MeterWatch(config, site, Alarms())
    phases = ("L1", "L2", "L3")
    limits = {"a": 0.0, "b": 0.0}
    memory: dict[str, ChargerMemory] = {}
    last_good: dict[str, float] = {}
    for i, lie in enumerate(lies):
        now = NOW + timedelta(seconds=DT * i)
        draw = sum(limits.values())
        truth = house + draw
        readings = {c: ChargerReading(c, now, ChargerStatus.CHARGING, current_a=dict.fromkeys(phases, a))
                    for c, a in limits.items()}
        ev = watch.ev_draw("grid", readings, now)
        shown = truth if lie is None else lie
        absurd = not math.isfinite(shown) or abs(shown) > 2000
        if absurd:
            watch.observe("grid", Poll(DT * i, {}, ev, (float(i),), f"current_l1 = {shown}"), now)
        else:
            if shown >= draw - 2.0 - 0.05 * draw and abs(shown) <= 640:
                shown = truth  # a lie the check cannot tell is not part of this property
            last_good = dict.fromkeys(phases, shown)
            watch.observe("grid", Poll(DT * i, last_good, ev, (float(i),)), now)
        if not last_good:
            continue
        reading = watch.reading(MeterReading("grid", last_good, now))
        d = decide(site, Inputs(now, readings=readings, meters={"grid": reading}, memory=memory))
        memory = dict(d.memory)
        limits = {c: d.limits[c] for c in limits}
        assert house + sum(limits.values()) <= LIMIT + 1e-6, (i, lie, limits, reading)
