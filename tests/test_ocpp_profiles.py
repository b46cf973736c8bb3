"""Pure parts of the OCPP driver: profiles we build, strategies, meter parsing, what a charger may draw."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from ocpp.charge_point import snake_to_camel_case
from ocpp.messages import Call, _validate_payload
from support.ocpp import charger, section

from gateway.domain import ChargerStatus
from gateway.ocpp.control import Context, Control
from gateway.ocpp.profiles import (
    Abilities,
    base_spec,
    floor_tenth,
    live_spec,
    parse_units,
    strategies,
    v16_profile,
    v201_profile,
)
from gateway.ocpp.state import ChargerView, DrawWatch, parse_meter_values, to_conductors
from gateway.store.chargers import ChargerRecord

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=120)


def validate(version: str, action: str, payload: dict[str, object]) -> None:
    _validate_payload(Call("1", action, snake_to_camel_case(payload)), version)


@given(st.floats(min_value=0, max_value=80, allow_nan=False), st.sampled_from(["A", "W"]))
def test_every_limit_we_build_passes_both_schemas(amps: float, unit: str) -> None:
    for version in ("1.6", "2.0.1"):
        plan = [s for s in strategies(version, Abilities()) if s.unit == unit]
        for strategy in plan:
            spec = live_spec(strategy, amps, 690.0, 3, NOW, LEASE, "42")
            assert spec.limit <= (amps if unit == "A" else amps * 690.0) + 1e-9  # never more than decided
            if version == "1.6":
                validate("1.6", "SetChargingProfile", {"connector_id": 0, "cs_charging_profiles": v16_profile(spec)})
            else:
                validate("2.0.1", "SetChargingProfile", {"evse_id": 0, "charging_profile": v201_profile(spec)})


def test_limits_round_down_to_a_tenth() -> None:
    assert floor_tenth(6.25) == 6.2
    assert floor_tenth(16.0) == 16.0
    assert floor_tenth(15.99) == 15.9


def test_strategies_prefer_the_station_cap_in_amps_and_end_with_an_unleased_slot() -> None:
    plan = strategies("1.6", Abilities())
    assert [s.label for s in plan][:3] == [
        "ChargePointMaxProfile/A/sl1", "ChargePointMaxProfile/W/sl1", "TxDefaultProfile/A/sl1"]
    assert all(s.leased for s in plan[:-2]) and not any(s.leased for s in plan[-2:])
    watts_only = strategies("2.0.1", Abilities(units=("W",), max_stack_level=0))
    # a charger that stacks nothing is still leased: a TxProfile in a session or a station cap up to the
    # fallback, beside a TxDefault base at level 0; the unleased slot is the last resort, under the base's id
    assert [s.label for s in watts_only] == ["TxProfile/W/sl0", "ChargingStationMaxProfile/W/sl0",
                                             "ChargingStationMaxProfile/W/sl0/unleased"]
    assert all(s.base_purpose == "TxDefaultProfile" and s.leased for s in watts_only[:2])
    assert watts_only[1].up_to_fallback and not watts_only[1].holds(8.1, 8.0) and watts_only[1].holds(8.0, 8.0)
    assert watts_only[0].live_id == 2 and watts_only[2].live_id == 1
    assert all(s.live_level == s.base_level == 0 for s in watts_only)


def test_base_profile_has_no_end_and_the_live_one_a_lease() -> None:
    strategy = strategies("1.6", Abilities())[0]
    base = v16_profile(base_spec(strategy, 8.0, 690.0, 3, NOW))
    live = v16_profile(live_spec(strategy, 16.0, 690.0, 3, NOW, LEASE))
    assert "valid_to" not in base and base["stack_level"] == 0
    assert live["valid_to"] == "2026-06-01T12:02:00.000Z" and live["stack_level"] == 1
    # a day in the past: a charger whose clock is behind ours (up to a day) still applies both at once
    assert base["charging_schedule"]["start_schedule"] == "2026-05-31T12:00:00.000Z"


def test_units_from_both_versions() -> None:
    assert parse_units("Current,Power") == ("A", "W")
    assert parse_units("W") == ("W",)
    assert parse_units("nonsense") == ()


def test_meter_values_of_both_versions_and_bad_numbers() -> None:
    v16 = [{"timestamp": "2026-06-01T12:00:00Z", "sampled_value": [
        {"value": "16.1", "measurand": "Current.Import", "phase": "L1", "unit": "A"},
        {"value": "oops", "measurand": "Current.Import", "phase": "L2", "unit": "A"},
        {"value": "11.0", "measurand": "Power.Active.Import", "unit": "kW"},
        {"value": "1500"},  # the default measurand: energy register in Wh
    ]}]
    sample = parse_meter_values(v16, "cp1")
    assert sample is not None
    assert sample.current_a == {"L1": 16.1} and sample.power_kw == 11.0 and sample.energy_kwh == 1.5
    v201 = [{"timestamp": "2026-06-01T12:00:00Z", "sampled_value": [
        {"value": 7.2, "measurand": "Power.Active.Import", "unit_of_measure": {"unit": "W", "multiplier": 3}},
        {"value": 9.5, "measurand": "Current.Import", "phase": "L1-N"},
    ]}]
    sample = parse_meter_values(v201, "cp1")
    assert sample is not None and sample.power_kw == 7.2 and sample.current_a == {"L1": 9.5}


def test_charger_phases_land_on_the_conductors_it_is_wired_to() -> None:
    assert to_conductors({"L1": 10.0}, ("L2",)) == {"L2": 10.0}
    assert to_conductors({"L1": 10.0, "L2": 9.0}, ("L1", "L2")) == {"L1": 10.0, "L2": 10.0}  # one load
    assert to_conductors({"": 12.0}, ("L1", "L2", "L3")) == {"L1": 12.0, "L2": 12.0, "L3": 12.0}
    assert to_conductors({"L1": 1.0, "L2": 2.0, "L3": 3.0}, ("L1", "L2", "L3")) == {"L1": 1.0, "L2": 2.0, "L3": 3.0}


def test_what_a_charger_may_draw_is_its_maximum_until_confirmed() -> None:
    clock = [NOW]
    ctx = Context(section(), lambda: clock[0], deque(), lambda ctl: None)
    ctl = Control(charger("cp1"), 690.0, ctx, ChargerView("cp1", ("L1", "L2", "L3")), DrawWatch())
    assert ctl.applied_limit() == 32  # never heard from: no profile known, so unlimited
    ctl.base_known = "ChargePointMaxProfile"
    assert ctl.applied_limit() == 32  # a base, but the live slot may hold a profile from before
    ctl.confirmed = True  # the live slot was set or cleared by this process
    assert ctl.applied_limit() == 8  # its fallback
    ctl.acked_a, ctl.lease_until = 16.0, NOW + timedelta(seconds=2)
    assert ctl.applied_limit() == 16
    ctl.unanswered_a = 20.0
    assert ctl.applied_limit() == 20  # a raise on its way: could be either, so the higher
    ctl.unanswered_a = None
    clock[0] = NOW + timedelta(seconds=2)
    assert ctl.applied_limit() == 8  # the lease ran out
    ctl.over_draw_a = 30.0
    assert ctl.applied_limit() == 30  # measured above its limit: counted at what it draws
    # a restart: what the store says the previous process left on the charger
    fresh = Control(charger("cp1"), 690.0, ctx, ChargerView("cp1", ("L1", "L2", "L3")), DrawWatch())
    fresh.restore(ChargerRecord("cp1", base_purpose="ChargePointMaxProfile", fallback_a=8.0, live_a=20.0,
                                live_until=clock[0] + timedelta(seconds=5), status="charging",
                                transactions={1: "7"}))
    assert fresh.applied_limit() == 20  # its last lease, until it runs out ...
    assert fresh.view.transaction_id() == "7"
    clock[0] += timedelta(seconds=6)
    assert fresh.applied_limit() == 8  # ... then the base's fallback
    fresh.view.online = True
    assert fresh.view.status() is ChargerStatus.CHARGING  # charging until it says otherwise
    # a lease under the base's fallback: the charger goes back up to the fallback when it runs out, which
    # may be any instant (the store's horizon is the latest it can end, not the earliest)
    low = Control(charger("cp1"), 690.0, ctx, ChargerView("cp1", ("L1", "L2", "L3")), DrawWatch())
    low.restore(ChargerRecord("cp1", strategy="ChargePointMaxProfile/A/sl1", base_purpose="ChargePointMaxProfile",
                              fallback_a=8.0, live_a=0.0, live_until=clock[0] + timedelta(seconds=5)))
    assert low.applied_limit() == 8
    # unleased (the live limit is in the base's own slot): it holds until replaced
    slot = Control(charger("cp1"), 690.0, ctx, ChargerView("cp1", ("L1", "L2", "L3")), DrawWatch())
    slot.restore(ChargerRecord("cp1", strategy="ChargePointMaxProfile/A/sl0/unleased",
                               base_purpose="ChargePointMaxProfile", fallback_a=8.0, live_a=0.0, live_until=None))
    assert slot.applied_limit() == 0


def test_draw_watch_offers_a_cap_after_a_while_and_withdraws_it() -> None:
    watch = DrawWatch(window_s=60)
    watch.update(NOW, 10.0, 32.0)
    watch.update(NOW + timedelta(seconds=30), 10.4, 32.0)
    assert watch.capped_a is None
    watch.update(NOW + timedelta(seconds=61), 10.0, 32.0)
    assert watch.capped_a == 11.4
    watch.update(NOW + timedelta(seconds=70), 10.5, 11.4)
    assert watch.capped_a == 11.4
    watch.update(NOW + timedelta(seconds=80), 11.2, 11.4)  # the car wants more
    assert watch.capped_a is None


def test_a_tx_profile_limit_counts_only_for_its_own_session() -> None:
    ctx = Context(section(), lambda: NOW, deque(), lambda ctl: None)
    view = ChargerView("cp1", ("L1", "L2", "L3"))
    ctl = Control(charger("cp1"), 690.0, ctx, view, DrawWatch())
    ctl.strategies = strategies("1.6", Abilities(max_stack_level=0))
    ctl.station = object()  # type: ignore[assignment]
    ctl.base_purpose = ctl.base_known = "TxDefaultProfile"
    ctl.confirmed = True
    view.transactions[1] = "41"
    ctl.desired_a = ctl.acked_a = 4.0
    ctl.acked_tx, ctl.lease_until = "41", NOW + LEASE
    # its base still holds the 8 A fallback: the lease runs out, or the session ends, by itself
    assert ctl.applied_limit() == 8.0 and ctl.unchanged(4.0, NOW) and not ctl.session_changed()
    ctl.base_amps = 4.0  # its base lowered to the limit: the limit alone counts
    assert ctl.applied_limit() == 4.0
    ctl.base_amps = 8.0
    view.transactions[1] = "42"  # the next car: its session starts under the TxDefault base
    assert ctl.applied_limit() == 8.0  # the fallback, above the 4 A we had given: counted so
    assert ctl.session_changed() and not ctl.unchanged(4.0, NOW)
    view.transactions.clear()  # nobody there: the base holds a car that comes at its fallback
    assert ctl.applied_limit() == 8.0 and not ctl.session_changed()


@given(st.floats(min_value=0, max_value=80, allow_nan=False), st.sampled_from([110.0, 120.0, 220.0, 230.0, 240.0]),
       st.sampled_from([1, 3]))
def test_a_watt_limit_never_gives_the_charger_more_amps_than_decided(amps: float, volts: float, phases: int) -> None:
    """Both specs have the charger turn W back into A at its voltage per phase × numberPhases: the W we
    send, converted so, is never above the amps decided (6 A as 1380 W at 230 V single-phase was fine;
    as √3·400 V·6 A = 4156 W three-phase it came back as 6.02 A)."""
    strategy = strategies("1.6", Abilities(units=("W",)))[0]
    spec = live_spec(strategy, amps, volts * phases, phases, NOW, LEASE)
    assert spec.unit == "W" and spec.limit / (volts * phases) <= floor_tenth(amps) + 0.1 + 1e-9
    assert spec.limit / (volts * phases) <= amps + 1e-9
