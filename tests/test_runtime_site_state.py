"""The site's state on its own: a status-only message keeps the current, sessions count from their start."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.domain import ChargerReading, ChargerStatus
from gateway.runtime.site_state import SiteState

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def reading(status: ChargerStatus, *, amps: float | None = None, kwh: float | None = None, session: str = "s1",
            requested: float | None = None) -> ChargerReading:
    return ChargerReading("cp1", NOW, status, current_a={"L1": amps} if amps is not None else {}, energy_kwh=kwh,
                          session_id=session, energy_requested_kwh=requested)


def test_a_status_only_message_keeps_the_last_measured_current() -> None:
    state = SiteState({})
    state.observe(reading(ChargerStatus.CHARGING, amps=16.0, kwh=1.0))
    kept, before = state.observe(reading(ChargerStatus.CHARGING))
    assert kept.current_a == {"L1": 16.0} and kept.energy_kwh == 1.0 and before is not None


def test_what_a_session_still_needs_counts_from_its_start_across_a_dropped_link() -> None:
    state = SiteState({})
    state.observe(reading(ChargerStatus.CHARGING, kwh=100.0, requested=10.0))
    state.observe(reading(ChargerStatus.CHARGING, kwh=104.0, requested=10.0))
    assert state.energy_needed() == {"cp1": 6.0}
    state.observe(reading(ChargerStatus.OFFLINE))  # the link drops: offline is not unplugged
    state.observe(reading(ChargerStatus.CHARGING, kwh=105.0, requested=10.0))
    assert state.energy_needed() == {"cp1": 5.0}
    state.observe(reading(ChargerStatus.AVAILABLE))  # unplugged: the session is over
    state.observe(reading(ChargerStatus.CHARGING, kwh=105.0, session="s2", requested=10.0))
    assert state.energy_needed() == {"cp1": 10.0}
