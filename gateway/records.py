"""What the adapters keep in the store, as plain records: what an OCPP charger holds, the VEN's registration,
the VTN's report requests, report samples and opts still to send.

The store (`gateway.store`) writes and reads them; the adapters use them through the ports
(`gateway.ports.ChargerRecords`, `gateway.ports.VenRecords`) and never name the store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from gateway.domain import OptState


def _time(text: object) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) else None


@dataclass(frozen=True, slots=True)
class ChargerRecord:
    charger_id: str
    strategy: str | None = None  # the label of the strategy that last worked
    units: tuple[str, ...] = ()  # rate units it said it takes (empty: never asked)
    max_stack_level: int | None = None
    base_purpose: str | None = None  # a base profile was accepted with this purpose (None: never)
    fallback_a: float | None = None  # what the base holds
    live_a: float | None = None  # the most the live profile may hold ...
    live_until: datetime | None = None  # ... until then (None with live_a: no end, an unleased slot)
    live_tx: str | None = None  # the transaction a TxProfile live limit is for
    status: str | None = None  # ChargerStatus value last reported
    transactions: dict[int, str] = field(default_factory=dict)  # connector/EVSE → transaction id
    session_started: datetime | None = None

    def may_draw(self, now: datetime, max_a: float) -> float:
        """The most the charger may be drawing on what it holds, as far as this record knows: its live
        limit while leased (a TxProfile's only while its transaction runs), or its base's fallback when
        that is more (a lease runs out by itself); else its base's fallback, else (no base known) its
        maximum. An unleased live limit is in the base's own slot: it alone holds."""
        base = self.fallback_a if self.base_purpose is not None and self.fallback_a is not None else max_a
        live = self.live_a if self.live_a is not None and (self.live_until is None or now < self.live_until) else None
        if live is not None and self.live_tx is not None and self.live_tx not in self.transactions.values():
            live = None  # a TxProfile ends with its session ("": none had begun): the base holds
        if live is not None and (self.strategy or "").endswith("/unleased"):
            return min(max_a, live)
        return min(max_a, base if live is None else max(live, base))

    def to_json(self) -> str:
        return json.dumps({
            "strategy": self.strategy, "units": list(self.units), "max_stack_level": self.max_stack_level,
            "base_purpose": self.base_purpose, "fallback_a": self.fallback_a, "live_a": self.live_a,
            "live_until": self.live_until.isoformat() if self.live_until else None, "live_tx": self.live_tx,
            "status": self.status, "transactions": {str(k): v for k, v in self.transactions.items()},
            "session_started": self.session_started.isoformat() if self.session_started else None,
        })

    @classmethod
    def from_json(cls, charger_id: str, text: str) -> ChargerRecord:
        data = json.loads(text)
        return cls(
            charger_id=charger_id, strategy=data.get("strategy"), units=tuple(data.get("units") or ()),
            max_stack_level=data.get("max_stack_level"), base_purpose=data.get("base_purpose"),
            fallback_a=data.get("fallback_a"), live_a=data.get("live_a"), live_until=_time(data.get("live_until")),
            live_tx=data.get("live_tx"), status=data.get("status"),
            transactions={int(k): str(v) for k, v in (data.get("transactions") or {}).items()},
            session_started=_time(data.get("session_started")),
        )


class StoreWriteError(RuntimeError):
    """An operator's change could not be stored, so it was not made; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class Registration:
    ven_id: str | None
    registration_id: str | None
    vtn_id: str | None
    poll_s: float | None


@dataclass(frozen=True, slots=True)
class ReportRequest:
    """An oadrReportRequest the VTN made, reduced to what we need to keep sampling after a restart."""

    report_request_id: str
    report_specifier_id: str
    granularity_s: float
    report_back_s: float
    r_ids: tuple[str, ...]
    next_sample_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    id: int
    report_request_id: str
    report_specifier_id: str
    r_id: str
    measured_at: datetime
    value: float


@dataclass(frozen=True, slots=True)
class PendingOpt:
    id: int
    event_id: str
    modification_number: int
    opt: OptState
    reason: str
    opt_id: str


