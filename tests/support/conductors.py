"""The physical truth of a simulated site: every conductor of every circuit at every instant, read from
the simulated chargers' own record of what they held and drew (`SimChargePoint.trace`), never from the
gateway's opinion. Draws are piecewise constant between the instants a charger was told or did
something, or one of its profiles began, ended or stepped, so checking at each of those instants checks
every instant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.assembly import circuit_limits
from gateway.config import GatewayConfig
from gateway.sim.charging_profiles import limit_a
from gateway.sim.ocpp_cp import SimChargePoint


@dataclass(frozen=True)
class Overload:
    at: datetime
    where: str  # "circuit/phase" or "site kW"
    value: float
    limit: float

    def __str__(self) -> str:
        return f"{self.at.isoformat()} {self.where}: {self.value:.2f} over {self.limit:.2f}"


def instants(sims: Sequence[SimChargePoint], start: datetime, end: datetime) -> list[datetime]:
    out: set[datetime] = set()
    for sim in sims:
        out.update(sim.breakpoints(start, end))
    return sorted(out)


def conductor_loads(config: GatewayConfig, sims: Mapping[str, SimChargePoint], at: datetime
                    ) -> dict[tuple[str, str], float]:
    """Amps on each (circuit, phase) at `at`: every charger below a circuit counts on it."""
    return _loads(config, {cid: sim.draw_at(at) for cid, sim in sims.items()})


def _loads(config: GatewayConfig, amps_of: Mapping[str, float]) -> dict[tuple[str, str], float]:
    """Amps on each (circuit, phase) with each charger at `amps_of[id]` (none: 0 A), on every conductor
    from its circuit up to the service."""
    circuits = {c.id: c for c in circuit_limits(config)}
    loads: dict[tuple[str, str], float] = {(c.id, p): 0.0 for c in circuits.values() for p in c.phases}
    for charger in config.chargers:
        amps = amps_of.get(charger.id, 0.0)
        if not amps:
            continue
        node: str | None = charger.circuit or config.site.service_id
        hops = 0
        while node is not None and hops <= len(circuits):
            for phase in charger.phases:
                if (node, phase) in loads:
                    loads[(node, phase)] += amps
            node, hops = circuits[node].parent if node in circuits else None, hops + 1
    return loads


def may_draw_later(sim: SimChargePoint, now: datetime, horizon: timedelta) -> float:
    """The most the charger may let a car draw at some instant from `now` on, told nothing more: on what it
    holds now, once every profile with an end has ended (`horizon` on), and for a session that starts anew
    (a TxProfile ends with its session)."""
    profiles, phases = sim.book.snapshot(), 1 if sim.phases < 3 else 3
    at = now + sim.clock_offset  # its profiles run on its own clock
    out = 0.0
    for when in (at, at + horizon):
        for tx, began in ((sim.transaction_id, sim.tx_started), (None, None)):
            limit = limit_a(profiles, sim.version, 1, when, tx, began, sim.volts, phases)
            allowed = sim.max_a if limit is None else min(limit, sim.max_a)
            out = max(out, allowed if allowed >= 6.0 else 0.0)
    return out


def mix_overloads(config: GatewayConfig, sims: Mapping[str, SimChargePoint], now: datetime,
                  horizon: timedelta) -> list[Overload]:
    """Conductors that some mix of the chargers on their limits and on their fallbacks would overload, were
    the gateway to stop at `now` (every charger counted at `may_draw_later`): leases end at different
    instants, so any mix can happen."""
    circuits = {c.id: c for c in circuit_limits(config)}
    loads = _loads(config, {cid: may_draw_later(sim, now, horizon) for cid, sim in sims.items()})
    return [Overload(now, f"{cid}/{phase}", amps, circuits[cid].limit_of(phase))
            for (cid, phase), amps in loads.items() if amps > circuits[cid].limit_of(phase) + 1e-6]


def overloads(config: GatewayConfig, sims: Mapping[str, SimChargePoint], start: datetime, end: datetime,
              cap_kw: Sequence[tuple[datetime, datetime, float]] = (), slack_a: float = 1e-6) -> list[Overload]:
    """Every instant in [start, end] at which a conductor carried more than its limit, or the site drew
    more than an operator cap in force then (`cap_kw`: (from, to, kW) windows)."""
    circuits = {c.id: c for c in circuit_limits(config)}
    ln_v = config.site.ln_v
    found: list[Overload] = []
    for at in instants(list(sims.values()), start, end):
        loads = conductor_loads(config, sims, at)
        for (cid, phase), amps in loads.items():
            limit = circuits[cid].limit_of(phase)
            if amps > limit + slack_a:
                found.append(Overload(at, f"{cid}/{phase}", amps, limit))
        service = config.site.service_id
        site_kw = sum(a for (cid, _), a in loads.items() if cid == service) * ln_v / 1000.0
        for begin, until, kw in cap_kw:
            if begin <= at < until and site_kw > kw + 1e-6:
                found.append(Overload(at, "site kW", site_kw, kw))
    return found


def zero_spans(sim: SimChargePoint, start: datetime, end: datetime) -> list[datetime]:
    """Instants in [start, end] at which a plugged-in EV drew nothing."""
    out = []
    for at in sim.breakpoints(start, end):
        moment = sim._moment(at)
        if moment is not None and moment.plugged and sim.draw_at(at) == 0.0:
            out.append(at)
    return out
