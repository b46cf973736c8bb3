"""A status document held still, with whatever alarms and component states a test gives it: the source
the status app's tests and the dashboards' test serve."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.domain import Event, OptState
from gateway.status.page import PlanPoint, Point

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


class Held:
    """A status document held still, with whatever alarms and component states a test gives it."""

    def __init__(self, *, alarms: Sequence[dict[str, Any]] = (), healthy: bool = True,
                 meter: str = "fresh", vtn_state: str = "ok") -> None:
        self.alarms, self.is_healthy, self.meter, self.vtn_state = list(alarms), healthy, meter, vtn_state
        self.caps: list[tuple[float | None, datetime | None]] = []
        self.modes: list[tuple[str, str | None, bool]] = []

    def status(self) -> dict[str, Any]:
        return {
            "now": NOW.isoformat(),
            "vtn": {"configured": True, "registered": self.vtn_state == "ok", "reachable": self.vtn_state == "ok",
                    "state": self.vtn_state, "ven_id": "ven-1", "last_poll": NOW.isoformat(), "last_error": None,
                    "failing_since": None if self.vtn_state == "ok" else NOW.isoformat(),
                    "polls": {"ok": 5, "unreachable": 2}},
            "events": [],
            "site": {"name": "held", "timezone": "Europe/Berlin", "limit_kw": 40.0, "limit_cause": "the service",
                     "ev_limit_kw": None, "load_kw": None if self.meter != "fresh" else 30.0,
                     "load_state": self.meter if self.meter != "fresh" else "measured", "ev_kw": 20.0,
                     "operator_cap_kw": None, "non_ev_counted_kw": 40.0},
            "circuits": [{"id": "main", "parent": None, "measured": True, "source": "meter",
                          "phases": [{"phase": "L1", "load_a": 50.0, "counted_a": 50.0, "limit_a": 63.0}]}],
            "meters": [{"id": "grid", "circuit": "main", "state": self.meter, "last_reading": NOW.isoformat(),
                        "stale_since": None, "age_s": 0.5, "power_kw": 30.0, "current_a": {}, "polls_failed": 0,
                        "detail": "no good reading for 12 s" if self.meter != "fresh" else ""}],
            "evses": [{"id": "cp-1", "protocol": "ocpp", "online": True, "last_seen": NOW.isoformat(),
                       "plugged": True, "connected": True, "state": "charging", "limit_a": 16.0, "current_a": 15.9,
                       "power_kw": 11.0, "session_kwh": 4.2, "vendor": "V", "model": "M", "firmware": "1.2",
                       "reason": "max", "reason_text": "full speed: its own maximum", "acknowledged": True,
                       "over_limit": False}],
            "store": {"writable": True, "state": "ok", "size_bytes": 1_000_000, "last_write": NOW.isoformat(),
                      "error": None},
            "clock": {"state": "ok", "stepped_s": 0.0},
            "alarms": self.alarms,
            "loop": {"decisions": 7, "last_decision": NOW.isoformat(), "tick_s": 1.0, "restarts": {"ocpp": 1}},
            "operator": {"cap_kw": None, "cap_until": None, "paused": []},
        }

    def healthy(self) -> bool:
        return self.is_healthy

    def history_points(self) -> Sequence[Point]:
        return [(NOW - timedelta(seconds=s), 30.0, 40.0) for s in range(60, -1, -1)]

    def day_points(self) -> Sequence[Point]:
        return [(NOW - timedelta(minutes=m), 30.0, 40.0) for m in range(600, -1, -10)]

    def plan_points(self) -> Sequence[PlanPoint]:
        return []

    def events_detail(self) -> list[dict[str, Any]]:
        return []

    def log_since(self, seq: int = 0, at: datetime | None = None) -> list[dict[str, object]]:
        return []

    # the Operator side
    def set_operator_cap(self, kw: float | None, until: datetime | None = None) -> None:
        self.caps.append((kw, until))

    def set_paused(self, charger_id: str, paused: bool) -> bool:
        return charger_id == "cp-1"

    def set_charge_mode(self, charger_id: str, mode: str | None, session: bool = True) -> bool:
        self.modes.append((charger_id, mode, session))
        return charger_id == "cp-1"

    async def set_event_opt(self, event_id: str, choice: OptState | None, reason: str) -> Event | None:
        return None
