"""The pure decision step: meters, silent chargers, schedule limits and smoothing turned into limits to send."""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gateway.allocate import Sharing
from gateway.assembly import site_of
from gateway.config import ConfigError, GatewayConfig, parse_config
from gateway.config.checks import cross_check
from gateway.domain import ChargerReading, ChargerStatus, Segment
from gateway.runtime.decide import Inputs, MeterReading, decide, notes_to_say

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def site_config(includes_evs: bool = True) -> GatewayConfig:
    # 3 × 100 A service, 80 A usable per conductor; two 32 A three-phase chargers; a meter at the service.
    return parse_config({
        "site": {"wiring": "three-phase-400/230", "service_breaker_a": 100},
        "chargers": [
            {"id": "a", "protocol": "ocpp1.6", "phases": "L1-L2-L3", "max_a": 32},
            {"id": "b", "protocol": "ocpp2.0.1", "phases": "L1-L2-L3", "max_a": 32},
        ],
        "meters": [{"id": "grid", "includes_evs": includes_evs,
                    "modbus": {"model": "eastron-sdm630", "host": "127.0.0.1"}}],
        "control": {"min_on_time_s": 0, "deadband_a": 0.5},
    })


def charging(cid: str, amps: float, at: datetime = NOW) -> ChargerReading:
    return ChargerReading(cid, at, ChargerStatus.CHARGING, current_a={"L1": amps, "L2": amps, "L3": amps})


def meter(amps: float, at: datetime = NOW, worst: float | None = None) -> MeterReading:
    phases = {"L1": amps, "L2": amps, "L3": amps}
    worst_a = {p: worst for p in phases} if worst is not None else phases
    return MeterReading("grid", phases, at, worst_a)


def test_both_chargers_get_their_max_with_room() -> None:
    site = site_of(site_config())
    d = decide(site, Inputs(NOW, readings={"a": charging("a", 0), "b": charging("b", 0)},
                            meters={"grid": meter(10)}))
    assert d.limits == {"a": 32, "b": 32}
    assert {c.evse_id for c in d.changes} == {"a", "b"}
    assert all("charger=" in c.log_line() and "reason=" in c.log_line() for c in d.changes)


def test_non_ev_load_jump_cuts_the_chargers_in_that_very_decision() -> None:
    site = site_of(site_config())
    first = decide(site, Inputs(NOW, readings={"a": charging("a", 32), "b": charging("b", 32)},
                                meters={"grid": meter(74)}))  # 64 A of EVs + 10 A of house
    assert first.limits == {"a": 32, "b": 32}
    later = NOW + timedelta(seconds=1)
    # The house jumps by 40 A: the meter reads 114 A while the EVs still draw 64 A.
    second = decide(site, Inputs(later, readings={"a": charging("a", 32, later), "b": charging("b", 32, later)},
                                 meters={"grid": meter(114, later)}, memory=first.memory))
    assert second.non_ev[0].amps == 50
    assert sum(second.limits.values()) + 50 <= 80
    assert second.decreases == {"a": 15, "b": 15}
    assert all(c.reason.startswith("main/") for c in second.changes)


def test_a_stale_meter_counts_at_its_worst() -> None:
    site = site_of(site_config())
    old = NOW - timedelta(seconds=30)  # stale_after_s defaults to 10 s
    d = decide(site, Inputs(NOW, readings={"a": charging("a", 0), "b": charging("b", 0)},
                            meters={"grid": meter(10, at=old, worst=60)}))
    assert d.non_ev[0].amps == 60
    assert sum(d.limits.values()) <= 20


def test_a_meter_never_read_leaves_nothing_for_the_chargers() -> None:
    d = decide(site_of(site_config()), Inputs(NOW, readings={"a": charging("a", 0)}))
    assert d.limits["a"] == 0


def test_a_silent_charger_is_counted_at_its_max_and_not_sent_anything() -> None:
    site = site_of(site_config(includes_evs=False))
    d = decide(site, Inputs(NOW, readings={"a": charging("a", 0)}, meters={"grid": meter(30)}))
    assert "b" not in {c.evse_id for c in d.changes}
    assert d.reasons["b"].startswith("silent")
    assert d.limits["a"] == 18  # 80 - 30 house - 32 held for b


def test_an_unacknowledged_charger_keeps_its_old_limit_and_counts_at_max() -> None:
    site = site_of(site_config(includes_evs=False))
    first = decide(site, Inputs(NOW, readings={"a": charging("a", 0), "b": charging("b", 0)},
                                meters={"grid": meter(0)}))
    d = decide(site, Inputs(NOW, readings={"a": charging("a", 0), "b": charging("b", 0)},
                            meters={"grid": meter(30)}, unacked=frozenset({"b"}), memory=first.memory))
    assert d.limits == {"a": 18, "b": 32}
    assert [c.evse_id for c in d.changes] == ["a"]


def test_a_curtailment_segment_and_operator_cap_bind_with_their_reason() -> None:
    site = site_of(site_config(includes_evs=False))
    seg = Segment(NOW, None, ev_kw=11.0, price=0.3,
                  reasons=("ev-1:SIMPLE:level=2", "p-1:ELECTRICITY_PRICE:price=0.3"))
    readings = {"a": charging("a", 0), "b": charging("b", 0)}
    d = decide(site, Inputs(NOW, segment=seg, readings=readings, meters={"grid": meter(0)}))
    kw = sum(e.kw_per_a * d.limits[e.id] for e in d.evses)
    assert kw <= 11.0 + 1e-9
    assert all(c.reason == "ev (ev-1:SIMPLE:level=2)" for c in d.changes)
    capped = decide(site, Inputs(NOW, operator_cap_kw=5.0, readings=readings, meters={"grid": meter(0)}))
    assert sum(e.kw_per_a * capped.limits[e.id] for e in capped.evses) <= 5.0
    assert any("operator cap" in c.reason for c in capped.changes)


def test_increases_inside_the_deadband_are_not_sent() -> None:
    site = site_of(site_config(includes_evs=False))
    readings = {"a": charging("a", 0), "b": charging("b", 0)}
    first = decide(site, Inputs(NOW, readings=readings, meters={"grid": meter(50)}))
    assert first.limits == {"a": 15, "b": 15}
    again = decide(site, Inputs(NOW, readings=readings, meters={"grid": meter(50)}, memory=first.memory))
    assert again.changes == ()


def test_an_unplugged_charger_is_paused_with_its_reason() -> None:
    site = site_of(site_config())
    idle = ChargerReading("b", NOW, ChargerStatus.AVAILABLE)
    d = decide(site, Inputs(NOW, readings={"a": charging("a", 0), "b": idle}, meters={"grid": meter(0)}))
    assert d.limits["b"] == 0 and d.reasons["b"] == "not connected"


def test_a_drop_in_non_ev_load_is_held_by_the_recent_highest_a_rise_is_not() -> None:
    site = site_of(site_config(includes_evs=False))
    readings = {"a": charging("a", 0), "b": charging("b", 0)}
    recent = {("main", p): 40.0 for p in ("L1", "L2", "L3")}
    calm = decide(site, Inputs(NOW, readings=readings, meters={"grid": meter(10)}, non_ev_recent=recent))
    assert calm.non_ev_raw[0].amps == 10 and calm.non_ev[0].amps == 40
    assert sum(calm.limits.values()) == 40
    busy = decide(site, Inputs(NOW, readings=readings, meters={"grid": meter(60)}, non_ev_recent=recent))
    assert busy.non_ev[0].amps == 60 and sum(busy.limits.values()) <= 20


def test_a_meter_silent_longer_than_it_remembers_leaves_nothing() -> None:
    site = site_of(site_config())
    old = NOW - timedelta(minutes=5)
    silent = MeterReading("grid", {"L1": 10.0, "L2": 10.0, "L3": 10.0}, old, {})
    d = decide(site, Inputs(NOW, readings={"a": charging("a", 0)}, meters={"grid": silent}))
    assert d.non_ev[0].amps == 80 and d.limits["a"] == 0


def test_the_demand_peak_target_is_a_site_limit_and_the_lowest_limit_binds() -> None:
    site = site_of(site_config())
    readings = {"a": charging("a", 0), "b": charging("b", 0)}
    held = decide(site, Inputs(NOW, readings=readings, meters={"grid": meter(10)}, peak_kw=20.0))
    # 10 A of house on three phases at 230 V is 6.9 kW: 13.1 kW left for the two chargers under 20 kW.
    assert sum(e.kw_per_a * held.limits[e.id] for e in held.evses) + held.non_ev_kw <= 20.0 + 1e-6
    assert held.peak_kw == 20.0 and held.site_limit_kw is None
    assert all("demand peak target 20.0 kW" in held.reasons[c] for c in ("a", "b"))
    dr = Segment(NOW, None, site_kw=15.0, reasons=("ev-1:LOAD_CONTROL:x=15",))
    tighter = decide(site, Inputs(NOW, segment=dr, readings=readings, meters={"grid": meter(10)}, peak_kw=20.0))
    assert sum(e.kw_per_a * tighter.limits[e.id] for e in tighter.evses) + tighter.non_ev_kw <= 15.0 + 1e-6
    assert tighter.site_limit_kw == 15.0
    assert not any("demand peak" in r for r in tighter.reasons.values())


def test_a_paused_charger_gets_0_a_with_its_reason_and_its_room_goes_to_the_others() -> None:
    site = site_of(site_config(includes_evs=False))
    readings = {"a": charging("a", 16), "b": charging("b", 16)}
    first = decide(site, Inputs(NOW, readings=readings, meters={"grid": meter(30)}))
    assert first.limits == {"a": 25, "b": 25}
    paused = decide(site, Inputs(NOW, readings=readings, meters={"grid": meter(30)}, memory=first.memory,
                                 paused=frozenset({"b"})))
    assert paused.limits == {"a": 32, "b": 0}
    assert paused.reasons["b"] == "paused by operator"
    assert paused.decreases == {"b": 0}
    change = next(c for c in paused.changes if c.evse_id == "b")
    assert "reason='paused by operator'" in change.log_line()
    resumed = decide(site, Inputs(NOW, readings=readings, meters={"grid": meter(30)}, memory=paused.memory))
    assert resumed.limits["b"] > 0 and resumed.reasons["b"] != "paused by operator"


def test_a_paused_charger_that_has_not_acknowledged_is_sent_0_a_but_still_counted_at_max() -> None:
    site = site_of(site_config(includes_evs=False))
    readings = {"a": charging("a", 0), "b": charging("b", 0)}
    first = decide(site, Inputs(NOW, readings=readings, meters={"grid": meter(0)}))
    d = decide(site, Inputs(NOW, readings=readings, meters={"grid": meter(30)}, memory=first.memory,
                            unacked=frozenset({"b"}), paused=frozenset({"b"})))
    assert d.limits == {"a": 18, "b": 0}  # 80 - 30 house - 32 held for b, which may still draw it
    assert d.reasons["b"].startswith("paused by operator")


def test_an_ev_drawing_less_hands_the_rest_to_the_other_charger() -> None:
    site = site_of(site_config())
    # 80 A usable, 30 A of house: 50 A for two cars. Car a has drawn ~9 A for a while: its driver offers 10 A.
    readings = {"a": charging("a", 9), "b": charging("b", 25)}
    shared = decide(site, Inputs(NOW, readings=readings, meters={"grid": meter(64)}))
    assert shared.limits == {"a": 25, "b": 25}
    handed = decide(site, Inputs(NOW, readings=readings, meters={"grid": meter(64)}, unused_a={"a": 10.0}))
    assert handed.limits == {"a": 10, "b": 32}
    assert handed.reasons["a"] == "ev draws less: the rest handed to others"
    # The plan's lower target still wins; a hand-back cap under the minimum never pauses the car.
    planned = decide(site, Inputs(NOW, readings=readings, meters={"grid": meter(64)}, unused_a={"a": 10.0},
                                  want_a={"a": 8.0}))
    assert planned.limits["a"] == 8 and planned.reasons["a"] == "plan"
    trickle = decide(site, Inputs(NOW, readings=readings, meters={"grid": meter(64)}, unused_a={"a": 2.0}))
    assert trickle.limits["a"] == 6


def _sharing_config(sharing: str) -> GatewayConfig:
    config = site_config()
    return config.model_copy(update={"control": config.control.model_copy(update={"sharing": sharing})})


def test_optimised_sharing_is_the_default_and_each_mode_comes_from_the_config() -> None:
    assert site_of(site_config()).sharing is Sharing.OPTIMISE
    for mode in Sharing:
        assert site_of(_sharing_config(mode.value)).sharing is mode
    assert site_of(site_config()).optimise_time_s == 0.5  # half of the 1 s tick


def test_optimised_sharing_counts_the_limits_in_force_so_a_charging_car_is_not_moved_for_little() -> None:
    # 80 A usable, 40 A of house: 40 A for two cars. Car a charges alone at 32 A; then car b plugs in,
    # leaving half an hour before a. Deadline order hands b its 32 A and cuts a to 8 A; the optimiser,
    # told what a has in force, does not move a pilot for so little urgency.
    a = ChargerReading("a", NOW, ChargerStatus.CHARGING, current_a={p: 0.0 for p in ("L1", "L2", "L3")},
                       departure=NOW + timedelta(hours=5))
    b_leaves = NOW + timedelta(hours=4, minutes=30)
    later = NOW + timedelta(seconds=1)
    both = {"a": replace(charging("a", 32, later), departure=a.departure),
            "b": replace(charging("b", 0, later), departure=b_leaves)}
    answers = {}
    for mode in ("optimise", "deadline"):
        site = site_of(_sharing_config(mode))
        first = decide(site, Inputs(NOW, readings={"a": a, "b": ChargerReading("b", NOW, ChargerStatus.AVAILABLE)},
                                    meters={"grid": meter(40)}))
        assert first.limits["a"] == 32
        second = decide(site, Inputs(later, readings=both, meters={"grid": meter(72, later)}, memory=first.memory))
        answers[mode] = dict(second.limits)
    assert answers["deadline"] == {"a": 8, "b": 32}
    assert answers["optimise"] == {"a": 32, "b": 8}


def test_a_fallback_to_deadline_order_is_in_the_decision_and_said_once_while_it_lasts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site = site_of(site_config())
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)  # no solver: every decision falls back
    leaves = NOW + timedelta(hours=5)  # departures known (without any there is nothing to optimise)
    readings = {"a": replace(charging("a", 0), departure=leaves), "b": replace(charging("b", 0), departure=leaves)}
    said: frozenset[str] = frozenset()
    lines = []
    for tick in range(3):
        d = decide(site, Inputs(NOW + timedelta(seconds=tick), readings=readings, meters={"grid": meter(50)}))
        assert d.limits == {"a": 15, "b": 15}  # served in deadline order (no departures: an even split)
        assert len(d.allocation.notes) == 1 and "served in deadline order" in d.allocation.notes[0]
        new, said = notes_to_say(d, said)
        lines += new
    assert len(lines) == 1
    monkeypatch.undo()
    answered = decide(site_of(site_config()), Inputs(NOW, readings=readings, meters={"grid": meter(50)}))
    new, said = notes_to_say(answered, said)
    assert answered.allocation.notes == () and new == [] and said == frozenset()


def test_check_config_refuses_optimised_sharing_without_scipy_and_not_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def sharing_lines(config: GatewayConfig) -> list[str]:
        return [line for line in cross_check(config) if line.startswith("control.sharing")]

    optimised, deadline, fair = site_config(), _sharing_config("deadline"), _sharing_config("fair")
    assert sharing_lines(optimised) == []
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)
    [line] = sharing_lines(optimised)
    assert "'optimise' needs scipy" in line and 'sharing = "deadline"' in line
    assert sharing_lines(deadline) == sharing_lines(fair) == []
    with pytest.raises(ConfigError, match=r"control\.sharing: 'optimise' needs scipy"):
        site_config()  # loading the config says it too
