"""From config to the core's view: usable limits, inherited phases, charger voltages, capacity, broken trees."""

from __future__ import annotations

import math
from typing import Any

import pytest

from gateway.assembly import (
    ancestors,
    charger_kw_max,
    chargers_under,
    circuit_limits,
    ev_capacity_kw,
    parents_of,
    static_evse,
)
from gateway.config import GatewayConfig, parse_config


def workplace(**site: Any) -> GatewayConfig:
    return parse_config(
        {
            "site": {"wiring": "three-phase-208Y/120", "service_breaker_a": 200, **site},
            "circuits": [
                {"id": "panel-a", "breaker_a": 100},
                {"id": "panel-b", "breaker_a": 100, "continuous_factor": 1.0},
                {"id": "branch", "parent": "panel-a", "breaker_a": 50, "phases": "L2-L3"},
                {"id": "fixed", "parent": "panel-b", "breaker_a": 60, "limit_a": 45},
            ],
            "chargers": [
                {"id": "one-phase", "protocol": "ocpp1.6", "circuit": "panel-a", "phases": "L1", "max_a": 16},
                {"id": "two-phase", "protocol": "ocpp2.0.1", "circuit": "branch", "phases": "L2-L3", "max_a": 40},
                {"id": "three-phase", "protocol": "ocpp2.0.1", "circuit": "fixed", "phases": "L1-L2-L3",
                 "max_a": 32, "priority": 3, "step_a": 0.5, "min_a": 8},
                {"id": "on-service", "protocol": "ocpp1.6", "phases": "L1-L3", "max_a": 24},
            ],
        }
    )


def test_usable_limits_and_inherited_phases() -> None:
    limits = {c.id: c for c in circuit_limits(workplace())}
    assert [c for c in limits] == ["main", "panel-a", "panel-b", "branch", "fixed"]
    assert (limits["main"].limit_a, limits["main"].parent, limits["main"].phases) == (160, None, ("L1", "L2", "L3"))
    assert limits["panel-a"].limit_a == 80
    assert limits["panel-b"].limit_a == 100  # its own continuous factor
    assert (limits["branch"].limit_a, limits["branch"].phases) == (40, ("L2", "L3"))
    assert (limits["fixed"].limit_a, limits["fixed"].phases) == (45, ("L1", "L2", "L3"))
    assert limits["fixed"].parent == "panel-b"


def test_service_limit_and_factor_from_the_site() -> None:
    limits = circuit_limits(workplace(continuous_factor=1.0))
    assert limits[0].limit_a == 200
    assert circuit_limits(workplace(service_limit_a=150))[0].limit_a == 150


def test_parents_ancestors_and_chargers_under() -> None:
    config = workplace()
    assert parents_of(config) == {"main": None, "panel-a": "main", "panel-b": "main", "branch": "panel-a",
                                  "fixed": "panel-b"}
    assert ancestors(config, "branch") == ["branch", "panel-a", "main"]
    assert [ch.id for ch in chargers_under(config, "panel-a")] == ["one-phase", "two-phase"]
    assert [ch.id for ch in chargers_under(config, "main")] == ["one-phase", "two-phase", "three-phase", "on-service"]


def test_static_evse_voltage_is_across_the_load() -> None:
    config = workplace()
    evses = {ch.id: static_evse(config, ch) for ch in config.chargers}
    assert evses["one-phase"].voltage_v == 120
    assert evses["two-phase"].voltage_v == 208
    assert evses["three-phase"].voltage_v == 208
    assert evses["on-service"].circuit == "main"
    three = evses["three-phase"]
    assert (three.min_a, three.max_a, three.step_a, three.priority, three.power_factor) == (8, 32, 0.5, 3, 1.0)
    assert not three.connected


def test_ev_capacity_sums_the_chargers_or_takes_the_configured_value() -> None:
    config = workplace()
    # kW limits are enforced at PF 1 (V·A), whatever site.power_factor says: never under-count power.
    expected = 1.0 / 1000 * (120 * 16 + 208 * 40 + math.sqrt(3) * 208 * 32 + 208 * 24)
    assert ev_capacity_kw(config) == pytest.approx(expected)
    assert sum(charger_kw_max(config, ch) for ch in config.chargers) == pytest.approx(expected)
    configured = config.model_copy(update={"openadr": config.openadr.model_copy(update={"ev_capacity_kw": 50.0})})
    assert ev_capacity_kw(configured) == 50.0


def test_broken_trees_do_not_hang() -> None:
    # Built without validation, as the cross-checks see a config before reporting its cycle.
    config = GatewayConfig.model_validate(
        {
            "site": {"wiring": "three-phase-208Y/120", "service_breaker_a": 200},
            "circuits": [
                {"id": "a", "parent": "b", "breaker_a": 50},
                {"id": "b", "parent": "a", "breaker_a": 50},
                {"id": "c", "parent": "ghost", "breaker_a": 50},
            ],
        }
    )
    assert {c.id for c in circuit_limits(config)} == {"main", "a", "b", "c"}
    assert ancestors(config, "a") == ["a", "b"]
    assert ancestors(config, "c") == ["c", "ghost"]
    assert chargers_under(config, "a") == []


@pytest.mark.parametrize("name", ["example-home.toml", "example-workplace.toml", "example-depot.toml",
                                  "example-home-pv.toml", "example-depot-oadr3.toml"])
def test_the_allocator_accepts_what_the_config_describes(name: str) -> None:
    """The shipped sites, every charger plugged in and hungry: the core's limits hold on every conductor."""
    from dataclasses import replace
    from datetime import UTC, datetime
    from pathlib import Path

    from gateway.allocate import Problem, allocate
    from gateway.config import load_config

    config = load_config(Path(__file__).resolve().parent.parent / "config" / name)
    circuits = circuit_limits(config)
    evses = [replace(static_evse(config, ch), connected=True) for ch in config.chargers]
    result = allocate(Problem(circuits=circuits, evses=evses, now=datetime(2026, 11, 25, 18, tzinfo=UTC)))
    assert set(result.amps) == {e.id for e in evses}
    assert any(a > 0 for a in result.amps.values())
    for circuit in circuits:
        for phase in circuit.phases:
            load = sum(
                result.amps[ch.id]
                for ch in config.chargers
                if phase in ch.phases and circuit.id in ancestors(config, ch.circuit or config.site.service_id)
            )
            assert load <= circuit.limit_of(phase) + 1e-6, (circuit.id, phase, load)
