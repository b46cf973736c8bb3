"""The surplus in the pure decision: its caps only ever lower a charger; DR, the operator's cap, breakers and
phase limits win over it, and the import cap's EV cap is named as the reason."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from gateway.assembly import site_of
from gateway.config import GatewayConfig, parse_config
from gateway.domain import ChargerReading, ChargerStatus, Segment
from gateway.runtime.decide import SOLAR, Inputs, MeterReading, decide

NOW = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)


def config() -> GatewayConfig:
    # 3 × 40 A service (32 A usable); a 25 A circuit on L1 (20 A usable) with two single-phase chargers; a
    # three-phase charger.
    return parse_config({
        "site": {"wiring": "three-phase-400/230", "service_breaker_a": 40},
        "circuits": [{"id": "carport", "breaker_a": 25, "phases": "L1"}],
        "chargers": [
            {"id": "one", "protocol": "ocpp1.6", "phases": "L1", "circuit": "carport", "max_a": 16, "mode": "pv"},
            {"id": "two", "protocol": "ocpp1.6", "phases": "L1", "circuit": "carport", "max_a": 16, "mode": "pv"},
            {"id": "three", "protocol": "ocpp1.6", "phases": "L1-L2-L3", "max_a": 32, "mode": "pv"},
        ],
        "meters": [{"id": "grid", "pv_kw": 20, "modbus": {"model": "eastron-sdm630", "host": "127.0.0.1"}}],
        "pv": {"grid_meter": "grid"},
        "control": {"min_on_time_s": 0, "deadband_a": 0.5, "ramp_a_per_s": 1000},
    })


def plugged(cid: str) -> ChargerReading:
    return ChargerReading(cid, NOW, ChargerStatus.SUSPENDED_EVSE, current_a={})


def inputs(**kwargs: object) -> Inputs:
    grid = MeterReading("grid", {"L1": 0.0, "L2": 0.0, "L3": 0.0}, NOW)
    return Inputs(NOW, readings={c: plugged(c) for c in ("one", "two", "three")}, meters={"grid": grid},
                  **kwargs)  # type: ignore[arg-type]


def kw_of(limits: Mapping[str, float]) -> float:
    return (limits["one"] + limits["two"]) * 0.23 * 0.99 + limits["three"] * 0.4 * 3**0.5 * 0.99


def test_a_surplus_cap_lowers_a_charger_and_zero_pauses_it() -> None:
    d = decide(site_of(config()), inputs(surplus_a={"one": 10.0, "two": 8.0, "three": 0.0}))
    assert d.limits == {"one": 10.0, "two": 8.0, "three": 0.0}
    assert d.reasons["one"] == SOLAR and d.reasons["three"] == SOLAR


def test_breakers_and_phase_limits_win_over_the_surplus() -> None:
    # surplus for all: the carport's 20 A usable holds its two cars, the service's 32 A per phase all on L1
    d = decide(site_of(config()), inputs(surplus_a={"one": 16.0, "two": 16.0, "three": 32.0}))
    assert d.limits["one"] + d.limits["two"] <= 20.0
    assert d.limits["one"] + d.limits["two"] + d.limits["three"] <= 32.0


def test_a_dr_limit_and_the_operators_cap_win_over_the_surplus() -> None:
    segment = Segment(NOW, None, site_kw=5.0, reasons=("ev-1:SIMPLE:level=2",))
    surplus = {"one": 16.0, "two": 16.0, "three": 32.0}
    d = decide(site_of(config()), inputs(surplus_a=surplus, segment=segment))
    assert kw_of(d.limits) <= 5.0 + 1e-6
    d = decide(site_of(config()), inputs(surplus_a=surplus, operator_cap_kw=2.0))
    assert kw_of(d.limits) <= 2.0 + 1e-6 and d.limits["three"] == 0.0


def test_the_import_cap_is_an_ev_cap_named_in_the_reason() -> None:
    d = decide(site_of(config()), inputs(import_cap_ev_kw=4.5))
    assert 0 < kw_of(d.limits) <= 4.5 + 1e-6
    assert any("grid import cap" in r for r in d.reasons.values()), d.reasons
    assert d.ev_limit_kw is None  # not a DR limit: the VEN does not report it as one
