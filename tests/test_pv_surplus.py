"""The surplus core alone: thresholds, hysteresis (a cloud shorter than the delay changes nothing), battery
discharge not counted, a stale grid meter, the import cap and the order among solar chargers."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from gateway.domain import power_kw_per_amp
from gateway.surplus import GridPoint, Hold, Mode, PvCharger, PvSettings, SurplusDecision, decide_surplus, surplus_kw

T0 = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)
ONE_PHASE = power_kw_per_amp(1, 230.0)
THREE_PHASE = power_kw_per_amp(3, 400.0)
SETTINGS = PvSettings(start_delay=timedelta(seconds=60), stop_delay=timedelta(seconds=180))


def car(mode: Mode = Mode.PV, kw_per_a: float = ONE_PHASE, draw_kw: float = 0.0, cid: str = "ev1",
        priority: int = 0) -> PvCharger:
    return PvCharger(cid, mode, 6.0, 32.0, kw_per_a, priority=priority, connected=True, draw_kw=draw_kw)


def run(settings: PvSettings, chargers: list[PvCharger], grid_kw: float | None, seconds: int,
        memory: dict[str, Hold] | None = None, start: datetime = T0, battery_kw: float = 0.0) -> SurplusDecision:
    """Decide once a second for `seconds` with the same readings; the last decision."""
    mem = dict(memory or {})
    decision = None
    for s in range(seconds + 1):
        decision = decide_surplus(settings, chargers, GridPoint(grid_kw, battery_kw), mem, start + timedelta(seconds=s))
        mem = dict(decision.memory)
    assert decision is not None
    return decision


def test_the_6_a_floor_sets_the_start_threshold_per_phase_count() -> None:
    assert math.isclose(6 * ONE_PHASE, 1.38, abs_tol=0.01)
    assert math.isclose(6 * THREE_PHASE, 4.16, abs_tol=0.01)
    # 1.5 kW exported: enough for one phase, not for three
    assert run(SETTINGS, [car()], -1.5, 60).caps_a["ev1"] >= 6.0
    assert run(SETTINGS, [car(kw_per_a=THREE_PHASE)], -1.5, 600).caps_a["ev1"] == 0.0
    assert run(SETTINGS, [car(kw_per_a=THREE_PHASE)], -4.3, 60).caps_a["ev1"] >= 6.0


def test_a_pv_charger_starts_only_after_the_start_delay() -> None:
    assert run(SETTINGS, [car()], -3.0, 59).caps_a["ev1"] == 0.0
    on = run(SETTINGS, [car()], -3.0, 60)
    assert math.isclose(on.caps_a["ev1"], 3.0 / ONE_PHASE)
    assert on.reasons["ev1"] == "pv: surplus"


def test_a_cloud_shorter_than_the_stop_delay_changes_nothing() -> None:
    charging = car(draw_kw=2.3)  # 10 A
    mem = {"ev1": Hold(on=True)}
    # the cloud: the grid goes from 0 to importing 1.5 kW (surplus 0.8 kW, under the 1.38 kW minimum) for 179 s
    cloudy = run(SETTINGS, [charging], 1.5, 179, mem)
    assert cloudy.caps_a["ev1"] == 6.0 and cloudy.memory["ev1"].on
    assert "stopping after delay" in cloudy.reasons["ev1"]
    # the sun is back before the delay ran out: no switching, the pending stop forgotten
    after = decide_surplus(SETTINGS, [charging], GridPoint(0.0), cloudy.memory, T0 + timedelta(seconds=180))
    assert after.memory["ev1"] == Hold(on=True)
    assert math.isclose(after.caps_a["ev1"], 10.0)


def test_a_long_cloud_stops_the_charger_after_the_delay() -> None:
    stopped = run(SETTINGS, [car(draw_kw=1.38)], 1.0, 180, {"ev1": Hold(on=True)})
    assert stopped.caps_a["ev1"] == 0.0 and not stopped.memory["ev1"].on


def test_surplus_ramps_the_cap_up_and_down_while_on() -> None:
    mem = {"ev1": Hold(on=True)}
    caps = []
    for export in (1.5, 3.0, 5.0, 3.0, 1.5):
        d = decide_surplus(SETTINGS, [car()], GridPoint(-export), mem, T0)
        caps.append(round(d.caps_a["ev1"], 1))
    assert caps == [6.5, 13.0, 21.7, 13.0, 6.5]


def test_battery_discharge_is_not_surplus() -> None:
    # the grid shows 2 kW of export, but a battery discharges 2 kW of it: no sunshine to take
    assert surplus_kw(GridPoint(-2.0, battery_discharge_kw=2.0), 0.0) == 0.0
    assert run(SETTINGS, [car()], -2.0, 120, battery_kw=2.0).caps_a["ev1"] == 0.0
    # a charging battery is left to its own control (it counts as nothing)
    assert surplus_kw(GridPoint(-2.0, battery_discharge_kw=-1.0), 0.0) == 2.0


def test_a_stale_grid_meter_means_no_surplus_at_once() -> None:
    d = run(SETTINGS, [car(), car(Mode.MINPV, cid="ev2")], None, 0, {"ev1": Hold(on=True)})
    assert d.caps_a == {"ev1": 0.0, "ev2": 6.0}
    assert d.surplus_kw is None and "stale" in d.reasons["ev1"]
    assert decide_surplus(PvSettings(import_cap_kw=5.0), [car(Mode.NOW)], GridPoint(None), {}, T0).ev_cap_kw == 0.0


def test_minpv_always_takes_its_minimum_plus_surplus() -> None:
    d = run(SETTINGS, [car(Mode.MINPV)], 2.0, 0)
    assert d.caps_a["ev1"] == 6.0
    d = run(SETTINGS, [car(Mode.MINPV, draw_kw=1.38)], -2.3, 0)
    assert math.isclose(d.caps_a["ev1"], 16.0)


def test_now_chargers_take_what_they_draw_first() -> None:
    now_car = car(Mode.NOW, draw_kw=3.0, cid="a")
    # 3 kW exported while the `now` car draws 3 kW: 3 kW of surplus, for the pv car
    d = run(SETTINGS, [now_car, car(cid="b")], -3.0, 60)
    assert math.isclose(d.caps_a["b"], 3.0 / ONE_PHASE)
    assert "a" not in d.caps_a


def test_the_export_target_is_kept() -> None:
    d = run(PvSettings(export_target_kw=1.0), [car()], -3.0, 60)
    assert math.isclose(d.caps_a["ev1"], 2.0 / ONE_PHASE)


def test_the_import_cap_becomes_an_ev_cap() -> None:
    # 2 kW imported while the EVs draw 7 kW: the house and PV net to -5 kW; a 0 kW cap leaves 5 kW for EVs
    d = decide_surplus(PvSettings(import_cap_kw=0.0), [car(Mode.NOW, draw_kw=7.0)], GridPoint(2.0), {}, T0)
    assert d.ev_cap_kw is not None and math.isclose(d.ev_cap_kw, 5.0)
    d = decide_surplus(PvSettings(import_cap_kw=3.0), [car(Mode.NOW, draw_kw=7.0)], GridPoint(2.0), {}, T0)
    assert d.ev_cap_kw is not None and math.isclose(d.ev_cap_kw, 8.0)


def test_a_charger_already_on_keeps_its_surplus_before_one_that_waits() -> None:
    first = car(cid="b", draw_kw=2.0)
    second = car(cid="a")
    d = decide_surplus(SETTINGS, [first, second], GridPoint(-1.0), {"b": Hold(on=True)}, T0)
    assert math.isclose(d.caps_a["b"], 3.0 / ONE_PHASE)
    assert d.caps_a["a"] == 0.0


def test_self_consumption_is_what_the_grid_does_not_supply() -> None:
    d = decide_surplus(SETTINGS, [car(draw_kw=3.0)], GridPoint(1.0), {"ev1": Hold(on=True)}, T0)
    assert math.isclose(d.handed_kw, 2.0)
    d = decide_surplus(SETTINGS, [car(draw_kw=3.0)], GridPoint(-1.0), {"ev1": Hold(on=True)}, T0)
    assert math.isclose(d.handed_kw, 3.0)


@given(
    grid=st.one_of(st.none(), st.floats(-30, 30)),
    draws=st.lists(st.tuples(st.sampled_from(list(Mode)), st.floats(0, 20), st.booleans()), min_size=1, max_size=5),
    on=st.lists(st.booleans(), min_size=5, max_size=5),
    elapsed=st.integers(0, 400),
)
def test_caps_are_zero_or_within_the_chargers_range(
    grid: float | None, draws: list[tuple[Mode, float, bool]], on: list[bool], elapsed: int
) -> None:
    chargers = [PvCharger(f"c{i}", m, 6.0, 32.0, ONE_PHASE, connected=True, draw_kw=kw)
                for i, (m, kw, _) in enumerate(draws)]
    memory = {f"c{i}": Hold(on[i], T0 if pending else None) for i, (_, _, pending) in enumerate(draws)}
    d = decide_surplus(SETTINGS, chargers, GridPoint(grid), memory, T0 + timedelta(seconds=elapsed))
    for c in chargers:
        if c.mode in (Mode.NOW, Mode.PLAN):
            assert c.id not in d.caps_a
            continue
        cap = d.caps_a[c.id]
        assert cap == 0.0 or 6.0 <= cap <= 32.0
        if c.mode is Mode.MINPV:
            assert cap >= 6.0
        if grid is None and c.mode is Mode.PV:
            assert cap == 0.0
    # no solar charger is offered more than the surplus left for the solar chargers (beyond its minimum)
    if grid is not None and d.surplus_kw is not None:
        others = sum(c.draw_kw for c in chargers if c.mode in (Mode.NOW, Mode.PLAN))
        minpv = sum(6.0 * c.kw_per_a for c in chargers if c.mode is Mode.MINPV)
        left = max(0.0, d.surplus_kw - others - minpv)
        for c in chargers:
            if c.mode in (Mode.PV, Mode.MINPV):
                assert d.caps_a[c.id] * c.kw_per_a <= left + 6.0 * c.kw_per_a + 1e-6


def test_a_finished_car_does_not_sit_on_the_surplus() -> None:
    full = car(cid="a", draw_kw=0.0)  # on, its car full: it draws nothing
    waiting = car(cid="b")
    d = run(SETTINGS, [full, waiting], -5.0, 60, {"a": Hold(on=True)})
    assert d.caps_a["b"] > 6.0, "the surplus was kept for a car that takes none of it"
    # one just switched on is counted at its whole cap while its car ramps up
    fresh = decide_surplus(SETTINGS, [full, waiting], GridPoint(-5.0), {"a": Hold(on=True, on_at=T0)}, T0)
    assert fresh.caps_a["b"] == 0.0
