"""The optimiser's fallbacks as the operator sees them: one log line while they last, the
`allocate.fallback` alarm, and a rest in deadline order when they keep coming (a site where the optimiser
never answers in time must not spend half of every tick on it)."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gateway.allocate import Sharing, milp
from gateway.assembly import site_of
from gateway.config import parse_config
from gateway.domain import ChargerReading, ChargerStatus
from gateway.runtime.alarms import Alarms
from gateway.runtime.decide import Inputs, MeterReading, decide
from gateway.runtime.optimiser_watch import ALARM, FALLBACKS_TO_REST, REST_S, OptimiserWatch

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
CONFIG = {
    "site": {"wiring": "three-phase-400/230", "service_breaker_a": 63},
    "meters": [{"id": "grid", "modbus": {"model": "eastron-sdm630", "host": "127.0.0.1"}}],
    "chargers": [{"id": cid, "protocol": "ocpp1.6", "phases": "L1-L2-L3", "max_a": 32} for cid in ("a", "b")],
}


def inputs(at: datetime) -> Inputs:
    leaves = at + timedelta(hours=5)  # departures known: without any there is nothing to optimise
    readings = {cid: ChargerReading(cid, at, ChargerStatus.CHARGING, current_a={"L1": 0.0, "L2": 0.0, "L3": 0.0},
                                    departure=leaves) for cid in ("a", "b")}
    grid = {p: 50.0 for p in ("L1", "L2", "L3")}
    return Inputs(at, readings=readings, meters={"grid": MeterReading("grid", grid, at, grid)})


def test_fallbacks_are_said_once_alarmed_and_rested_then_the_optimiser_is_tried_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.runtime")
    site = site_of(parse_config(CONFIG))
    assert site.sharing is Sharing.OPTIMISE
    alarms = Alarms()
    watch = OptimiserWatch(alarms)
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)  # no solver: every optimised decision falls back
    at = NOW
    for _ in range(FALLBACKS_TO_REST):
        decision = decide(watch.site_for(site, at), inputs(at))
        watch.after(site, decision, at)
        assert alarms.active(ALARM)
        at += timedelta(seconds=1)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("allocation ")]
    assert len(said) == 1 and "served in deadline order" in said[0]  # once while it lasts
    rested_at = at - timedelta(seconds=1)  # the third fallback in a row
    # resting: deadline order at once, without the optimiser's budget spent first
    resting = watch.site_for(site, at)
    assert resting.sharing is Sharing.DEADLINE
    assert decide(resting, inputs(at)).allocation.notes == ()
    assert watch.site_for(site, rested_at + timedelta(seconds=REST_S - 1)).sharing is Sharing.DEADLINE
    # after the rest the optimiser is tried again, and once it answers the alarm clears
    monkeypatch.undo()
    later = rested_at + timedelta(seconds=REST_S)
    tried = watch.site_for(site, later)
    assert tried.sharing is Sharing.OPTIMISE
    decision = decide(tried, inputs(later))
    assert decision.allocation.notes == ()
    watch.after(site, decision, later)
    assert not alarms.active(ALARM)


def test_a_site_configured_for_deadline_order_is_left_alone() -> None:
    site = replace(site_of(parse_config(CONFIG)), sharing=Sharing.DEADLINE)
    alarms = Alarms()
    watch = OptimiserWatch(alarms)
    decision = decide(watch.site_for(site, NOW), inputs(NOW))
    watch.after(site, decision, NOW)
    assert watch.site_for(site, NOW) is site and not alarms.active(ALARM)


def test_a_class_optimised_without_its_plan_is_said_once_but_is_no_fallback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.runtime")
    site = site_of(parse_config(CONFIG))
    alarms = Alarms()
    watch = OptimiserWatch(alarms)

    def no_plan(*_: object) -> None:
        raise milp.OptimiseError("planner: no plan in 0.125 s (test)")

    monkeypatch.setattr(milp, "plan", no_plan)
    at = NOW
    for _ in range(FALLBACKS_TO_REST + 1):
        asked = replace(inputs(at), energy_needed_kwh={"a": 20.0, "b": 30.0})  # the plan needs energy needs
        decision = decide(watch.site_for(site, at), asked)
        assert any("served without the plan" in note for note in decision.allocation.notes)
        watch.after(site, decision, at)
        at += timedelta(seconds=1)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("allocation ")]
    assert len(said) == 1 and "served without the plan" in said[0]
    assert not alarms.active(ALARM)  # the program answered: nothing decided in deadline order
    assert watch.site_for(site, at).sharing is Sharing.OPTIMISE  # and no rest
