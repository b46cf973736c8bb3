"""What the status side watches every tick: the faults no adapter raises itself, the site limit's changes,
and a day of history for the page's 24 h chart.

`Watch.tick(now)` reads the status document once and raises or clears (each logged once, by `Alarms`):
`vtn.unreachable` (a warning, critical after `VTN_FAILING_S`), `meter.<id>.stale` (critical: no good
reading within `stale_after_s`, or its link is down) and `charger.<id>.over_limit` (a warning: drawing
above an acknowledged limit for `OVER_LIMIT_AFTER_S`; the decision already counts it at its draw and sends
the limit again). It logs one line per change of the site limit in force with its cause, and keeps one
point a minute (the highest load and the lowest limit of that minute) for 24 hours.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from gateway.status.document import OVER_LIMIT_AFTER_S, VTN_FAILING_S

if TYPE_CHECKING:
    from gateway.runtime.loop import Runtime

log = logging.getLogger("gateway.runtime")
DAY_POINTS = 24 * 60


class Watch:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.over_since: dict[str, datetime] = {}
        self.limit_key: tuple[Any, ...] | None = None
        self.minutes: deque[tuple[datetime, float | None, float | None]] = deque(maxlen=DAY_POINTS)
        self._minute: tuple[datetime, float | None, float | None] | None = None
        self.doc: dict[str, Any] | None = None

    def tick(self, now: datetime) -> dict[str, Any]:
        rt = self.rt
        doc = rt.status()
        self._vtn(doc["vtn"], now)
        for meter in doc.get("meters") or []:
            self._meter(meter, now)
        for evse in doc.get("evses") or []:
            self._charger(evse, now)
        self._limit(doc, now)
        self._history(now, doc["site"]["load_kw"], doc["site"]["limit_kw"])
        doc = rt.status() if doc["alarms"] != rt.alarms.as_json() else doc  # the alarms just raised, in it
        self.doc = doc
        return doc

    def _vtn(self, vtn: dict[str, Any], now: datetime) -> None:
        alarms = self.rt.alarms
        if not vtn["configured"] or vtn["failing_since"] is None:
            alarms.clear("vtn.unreachable", now, "the VTN answers again")
            return
        since = datetime.fromisoformat(vtn["failing_since"])
        long = (now - since).total_seconds() >= VTN_FAILING_S
        alarms.raise_(
            "vtn.unreachable",
            f"the VTN does not answer ({vtn['last_error']}); last round that went through: "
            f"{vtn['last_poll'] or 'never'}; the stored schedule stays in force, new DR events cannot arrive",
            now, severity="critical" if long else "warning",
            action="check the gateway's network and DNS, the VTN's URL and certificates (gateway check-config), "
                   "and ask the utility whether its VTN is up (docs/operations.md: VTN unreachable)")

    def _meter(self, meter: dict[str, Any], now: datetime) -> None:
        key = f"meter.{meter['id']}.stale"
        if meter["state"] not in ("stale", "unreachable"):
            self.rt.alarms.clear(key, now, "readings again")
            return
        self.rt.alarms.raise_(
            key,
            f"meter {meter['id']} {meter['state']}: {meter['detail']}; the load on {meter['circuit']} is not "
            "seen: the chargers below it are held on the worst case (the site stays under its limits, "
            "the chargers get less)",
            now, severity="critical",
            action="check the meter's power and its Modbus link (gateway modbus read), the RS-485 gateway in "
                   "front of it and the network (docs/operations.md: Meter stale or unreachable)")

    def _charger(self, evse: dict[str, Any], now: datetime) -> None:
        cid, key = evse["id"], f"charger.{evse['id']}.over_limit"
        if not evse["over_limit"]:
            self.over_since.pop(cid, None)
            self.rt.alarms.clear(key, now, "back under its limit")
            return
        since = self.over_since.setdefault(cid, now)
        if (now - since).total_seconds() >= OVER_LIMIT_AFTER_S:
            self.rt.alarms.raise_(
                key, f"charger {cid} draws {evse['current_a']:g} A above its acknowledged limit of "
                     f"{evse['limit_a']:g} A; counted at its draw and the limit sent again",
                now, severity="warning",
                action="check the charger's firmware honours charging profiles / its current register "
                       "(gateway commission re-tests it); ask the vendor (docs/operations.md: Charger over limit)")

    def _limit(self, doc: dict[str, Any], now: datetime) -> None:
        """One line per change of the limits in force (not of the non-EV load they are added to)."""
        site = doc["site"]
        rt = self.rt
        last = rt.last
        if last is None:
            return
        key = (site["dr_site_limit_kw"], site["ev_limit_kw"], _r(last.peak_kw), site["limit_cause"])
        if key == self.limit_key:
            return
        first = self.limit_key is None
        self.limit_key = key
        why = sorted({m.group(1) for r in last.reasons.values()
                      if (m := re.fullmatch(r"(?:site|ev|group:\S+) \((.*)\)", r)) is not None})
        cause = site["limit_cause"] + (f": {'; '.join(why)}" if why else "")
        log.info("site limit%s kw=%s site_kw=%s ev_kw=%s peak_kw=%s cause=%r", " at start" if first else "",
                 site["limit_kw"], site["dr_site_limit_kw"], site["ev_limit_kw"], _r(last.peak_kw), cause)

    def _history(self, now: datetime, load: float | None, limit: float | None) -> None:
        minute = now.replace(second=0, microsecond=0)
        current = self._minute
        if current is not None and current[0] != minute:
            self.minutes.append(current)
            current = None
        if current is None:
            current = (minute, load, limit)
        else:
            _, hi, lo = current
            current = (minute, max(hi, load) if hi is not None and load is not None else (hi if load is None else load),
                       min(lo, limit) if lo is not None and limit is not None else (lo if limit is None else limit))
        self._minute = current

    def day_points(self) -> list[tuple[datetime, float | None, float | None]]:
        """One point a minute over the last 24 hours (the minute under way included)."""
        out = list(self.minutes)
        if self._minute is not None:
            out.append(self._minute)
        return out


def _r(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None


def within(points: list[tuple[datetime, float | None, float | None]], span: timedelta,
           now: datetime) -> list[tuple[datetime, float | None, float | None]]:
    return [p for p in points if p[0] >= now - span]
