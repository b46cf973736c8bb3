"""What an operator set (a site cap with its expiry, paused chargers) is kept in the store and comes back
after a restart of the runtime on the same file; a lapsed cap and a charger no longer configured do not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from support.runtime import running
from support.waiting import stopped

from gateway.config import parse_config
from gateway.store.db import open_db
from gateway.store.decisions import DecisionStore
from gateway.store.operator import OperatorState, OperatorStore

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def store(path: Path) -> OperatorStore:
    decisions = DecisionStore(open_db(path))
    return OperatorStore(decisions.db, decisions.lock)


def test_nothing_saved_is_no_cap_and_no_pause(tmp_path: Path) -> None:
    assert store(tmp_path / "s.sqlite").load(NOW) == OperatorState()


def test_a_cap_and_pauses_round_trip_and_a_lapsed_cap_is_none(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    until = NOW + timedelta(minutes=30)
    store(path).save(OperatorState(11.5, until, frozenset({"cp-1", "gone"})), NOW)
    again = store(path)
    assert again.load(NOW, frozenset({"cp-1", "cp-2"})) == OperatorState(11.5, until, frozenset({"cp-1"}))
    assert again.load(until).cap_kw is None  # lapsed: the site is let go
    again.save(OperatorState(None, None, frozenset()), NOW)
    assert again.load(NOW) == OperatorState()


async def test_a_restart_keeps_the_operators_cap_and_pause(tmp_path: Path) -> None:
    config = parse_config({
        "site": {"wiring": "three-phase-400/230", "service_breaker_a": 63},
        "chargers": [{"id": "a", "protocol": "ocpp2.0.1", "phases": "L1-L2-L3", "max_a": 32},
                     {"id": "b", "protocol": "ocpp1.6", "phases": "L1-L2-L3", "max_a": 32}],
        "ocpp": {"port": 0},
        "store": {"path": str(tmp_path / "store.sqlite")},
    })

    first, task = await running(config)
    until = datetime.now(UTC) + timedelta(hours=1)
    first.set_operator_cap(7.0, until)
    assert first.set_paused("b", True)
    first.stop()
    await stopped(task, 15)

    second, task = await running(config)
    try:
        assert (second.operator_cap_kw, second.operator_cap_until, second.paused) == (7.0, until, {"b"})
        decision = await second.decide_once()
        assert decision.limits["b"] == 0 and decision.reasons["b"].startswith("paused by operator")
        second.set_operator_cap(None)
        assert second.set_paused("b", False)
    finally:
        second.stop()
        await stopped(task, 15)
    third, task = await running(config)
    try:
        assert (third.operator_cap_kw, third.paused) == (None, set())
    finally:
        third.stop()
        await stopped(task, 15)


def test_charge_modes_set_by_hand_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store(path).save(OperatorState(modes={"cp-1": ("pv", False), "cp-2": ("now", True), "gone": ("pv", True)}), NOW)
    kept = store(path).load(NOW, frozenset({"cp-1", "cp-2"}))
    assert kept.modes == {"cp-1": ("pv", False), "cp-2": ("now", True)}


async def test_a_restart_keeps_the_charge_modes_set_by_hand(tmp_path: Path) -> None:
    config = parse_config({
        "site": {"wiring": "three-phase-400/230", "service_breaker_a": 63},
        "chargers": [{"id": "a", "protocol": "ocpp2.0.1", "phases": "L1-L2-L3", "max_a": 32},
                     {"id": "b", "protocol": "ocpp1.6", "phases": "L1-L2-L3", "max_a": 32, "mode": "now"}],
        "ocpp": {"port": 0},
        "store": {"path": str(tmp_path / "store.sqlite")},
    })

    first, task = await running(config)
    assert first.set_charge_mode("a", "now", session=False)  # until changed
    assert first.set_charge_mode("b", "plan", session=True)  # for this car's session
    assert await first.operator_stored() is None
    first.stop()
    await stopped(task, 15)

    second, task = await running(config)
    try:
        assert second.solar.mode_of("a").value == "now"
        assert second.solar.mode_of("b").value == "plan"  # its car was not seen leaving
        assert second.set_charge_mode("a", None)  # back to the config's
        assert await second.operator_stored() is None
    finally:
        second.stop()
        await stopped(task, 15)

    third, task = await running(config)
    try:
        assert third.solar.mode_of("a").value == "plan"
    finally:
        third.stop()
        await stopped(task, 15)
