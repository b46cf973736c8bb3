"""The operator's controls on their own: a cap with an expiry, pauses, what a restart restores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.runtime.operator import OperatorControls
from gateway.store.operator import OperatorState

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def controls() -> tuple[OperatorControls, list[str]]:
    asked: list[str] = []
    return OperatorControls(frozenset({"cp1", "cp2"}), asked.append, lambda: NOW), asked


async def test_a_cap_holds_until_it_expires_then_is_lifted_once() -> None:
    ops, asked = controls()
    ops.set_cap(20.0, NOW + timedelta(minutes=30))
    assert asked == ["operator cap 20.0"]
    assert ops.cap(NOW + timedelta(minutes=29)) == 20.0
    assert ops.cap(NOW + timedelta(minutes=30)) is None and ops.cap_until is None
    ops.set_cap(15.0)
    assert ops.cap(NOW + timedelta(days=30)) == 15.0  # no expiry: until lifted
    ops.set_cap(None, NOW + timedelta(minutes=5))
    assert ops.cap(NOW) is None and ops.cap_until is None  # lifting drops the expiry too


async def test_pausing_a_known_charger_asks_for_a_decision_an_unknown_one_is_refused() -> None:
    ops, asked = controls()
    assert ops.set_paused("cp1", True) and ops.paused == {"cp1"}
    assert not ops.set_paused("nope", True) and ops.paused == {"cp1"}
    assert ops.set_paused("cp1", False) and ops.paused == set()
    assert asked == ["charger=cp1 paused by operator", "charger=cp1 resumed by operator"]
    assert await ops.stored() is None  # no store attached: nothing waits


async def test_a_restart_restores_the_cap_and_the_pauses() -> None:
    ops, asked = controls()
    ops.restore(OperatorState(30.0, NOW + timedelta(hours=1), frozenset({"cp2"})))
    assert ops.cap(NOW) == 30.0 and ops.paused == {"cp2"} and asked == []
