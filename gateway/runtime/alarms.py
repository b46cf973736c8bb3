"""Faults the operator must see: raised when they start, cleared when they end, each logged exactly twice.

Any part of the runtime that notices a fault (the store cannot write, the meter lies, the clock jumped,
a charger ignores its limit) calls `raise_(key, ...)` every time it sees it and `clear(key)` every time
it sees it gone; only the transitions are logged (one WARNING or ERROR when it starts, one INFO when it
ends, with how long it lasted). The alarms in force go into `/api/status` (`alarms`), `/healthz` (503
while a `critical` one is in force, its body naming them) and `/metrics` (`gateway_alarm{key=...}`).
`now` is always a parameter: the clock is the caller's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

log = logging.getLogger("gateway.alarm")
Severity = Literal["warning", "critical"]


@dataclass(frozen=True, slots=True)
class Alarm:
    key: str  # stable id, e.g. "store.write", "meter.grid.frozen", "clock.jump"
    severity: Severity
    message: str  # one line: what is wrong and what the gateway does about it
    since: datetime
    action: str = ""  # what the operator should do (docs/operations.md has the long form)

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "severity": self.severity, "message": self.message,
                "since": self.since.isoformat(), "action": self.action}


class Alarms:
    """The faults in force, keyed; safe to call from the event loop at any rate."""

    def __init__(self) -> None:
        self._active: dict[str, Alarm] = {}

    def raise_(self, key: str, message: str, now: datetime, *, severity: Severity = "warning",
               action: str = "") -> bool:
        """Say the fault `key` is there now; True when it has just started (and was logged)."""
        old = self._active.get(key)
        if old is not None:
            if old.message != message or old.severity != severity or old.action != action:
                # the same fault, worded anew (a figure changed): kept quietly, not logged again
                self._active[key] = replace(old, message=message, severity=severity, action=action)
            return False
        self._active[key] = Alarm(key, severity, message, now, action)
        level = logging.ERROR if severity == "critical" else logging.WARNING
        log.log(level, "alarm raised key=%s severity=%s %s%s", key, severity, message,
                f" action={action!r}" if action else "")
        return True

    def clear(self, key: str, now: datetime, detail: str = "") -> bool:
        """Say the fault `key` is gone; True when it had been in force (and its end was logged)."""
        old = self._active.pop(key, None)
        if old is None:
            return False
        lasted = max(0.0, (now - old.since).total_seconds())
        log.info("alarm cleared key=%s after_s=%.1f%s", key, lasted, f" {detail}" if detail else "")
        return True

    def clear_prefix(self, prefix: str, now: datetime, keep: frozenset[str] = frozenset()) -> None:
        """Clear every alarm whose key starts with `prefix` except those in `keep`."""
        for key in [k for k in self._active if k.startswith(prefix) and k not in keep]:
            self.clear(key, now)

    def active(self, key: str) -> bool:
        return key in self._active

    def get(self, key: str) -> Alarm | None:
        return self._active.get(key)

    def in_force(self) -> list[Alarm]:
        return sorted(self._active.values(), key=lambda a: (a.severity != "critical", a.since, a.key))

    def critical(self) -> list[Alarm]:
        return [a for a in self.in_force() if a.severity == "critical"]

    def as_json(self) -> list[dict[str, Any]]:
        return [a.as_json() for a in self.in_force()]
