"""Opt rules, pure: programs we are enrolled in, critical chargers, targets, the operator override on top."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from gateway.config.openadr import OpenAdrSection
from gateway.domain import Event, Interval, OptState, Signal, SignalName, SignalType
from gateway.openadr import opt

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)


def event(level: float = 1.0) -> Event:
    return Event("e", 0, NOW + timedelta(hours=1), timedelta(hours=1),
                 (Signal(SignalName.SIMPLE, SignalType.LEVEL, (Interval(timedelta(hours=1), level),)),))


def test_opt_rules_and_override() -> None:
    config = OpenAdrSection(market_contexts=("http://u/ev",), ev_capacity_kw=50, critical_kw=20)
    e = dataclasses.replace(event(level=1), market_context="http://u/ev")
    assert opt.decide(e, config).opt is OptState.OPT_IN  # level 1 → 25 kW left
    assert opt.decide(dataclasses.replace(e, market_context="x"), config).reason.startswith("not enrolled")
    tight = dataclasses.replace(event(level=2), market_context="http://u/ev")  # 12.5 kW < 20 kW
    assert opt.decide(tight, config).opt is OptState.OPT_OUT
    assert opt.decide(tight, config, override=(OptState.OPT_IN, "fleet can wait")).opt is OptState.OPT_IN
    assert opt.decide(e, config, targeted=False).opt is OptState.OPT_OUT


def one(name: SignalName, kind: SignalType, value: float) -> Event:
    return Event("e", 0, NOW, timedelta(hours=1), (Signal(name, kind, (Interval(timedelta(hours=1), value),)),))


L, LD = SignalName.LOAD_CONTROL, SignalName.LOAD_DISPATCH


@pytest.mark.parametrize(("name", "kind", "value", "left_kw"), [
    (SignalName.SIMPLE, SignalType.LEVEL, 3, 0.0),
    (L, SignalType.X_LOAD_CONTROL_CAPACITY, 0.2, 10.0),
    (L, SignalType.X_LOAD_CONTROL_LEVEL_OFFSET, 2, 12.5),
    (L, SignalType.X_LOAD_CONTROL_PERCENT_OFFSET, -90, 5.0),
    (L, SignalType.X_LOAD_CONTROL_SETPOINT, 7, 7.0),
    (LD, SignalType.SETPOINT, 11, 11.0),
    (LD, SignalType.DELTA, -45, 5.0),
    (LD, SignalType.MULTIPLIER, 0.1, 5.0),
])
def test_every_limiting_signal_below_the_critical_need_opts_out(
    name: SignalName, kind: SignalType, value: float, left_kw: float
) -> None:
    config = OpenAdrSection(ev_capacity_kw=50, critical_kw=15)
    e = one(name, kind, value)
    assert opt.lowest_ev_kw(e, config) == pytest.approx(left_kw)
    d = opt.decide(e, config)
    assert d.opt is OptState.OPT_OUT and "critical chargers need 15.0 kW" in d.reason
    assert opt.decide(e, OpenAdrSection(ev_capacity_kw=50, critical_kw=left_kw / 2)).opt is OptState.OPT_IN


def test_prices_and_test_events_never_opt_out() -> None:
    config = OpenAdrSection(ev_capacity_kw=50, critical_kw=15)
    assert opt.decide(one(SignalName.ELECTRICITY_PRICE, SignalType.PRICE, 9.99), config).opt is OptState.OPT_IN
    test = dataclasses.replace(one(SignalName.SIMPLE, SignalType.LEVEL, 3), test_event=True)
    assert opt.decide(test, config).opt is OptState.OPT_IN
