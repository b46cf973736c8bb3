"""Checks that relate one config entry to another: what pydantic's per-field validation cannot see.

Each problem is one line starting with the path of the field to fix. The electrical checks use the same
topology the allocator uses (`gateway.topology`), so what passes here is what the core will enforce.
"""

from __future__ import annotations

from collections import Counter

from gateway.config import GatewayConfig
from gateway.config.site import ChargerSection
from gateway.topology import circuit_limits, parents_of


def _duplicates(kind: str, ids: list[str]) -> list[str]:
    counts = Counter(ids)
    return [f"{kind}[{ids.index(i)}].id: duplicate id {i!r}" for i, n in counts.items() if n > 1]


def cross_check(config: GatewayConfig) -> list[str]:
    problems: list[str] = []
    service = config.site.service_id
    circuit_ids = [c.id for c in config.circuits]
    problems += _duplicates("circuits", circuit_ids)
    problems += _duplicates("chargers", [c.id for c in config.chargers])
    problems += _duplicates("meters", [m.id for m in config.meters])
    for i, c in enumerate(config.circuits):
        if c.id == service:
            problems.append(f"circuits[{i}].id: {c.id!r} is the service itself (site.service_id)")
    known = set(circuit_ids) | {service}
    for i, c in enumerate(config.circuits):
        if c.parent is not None and c.parent not in known:
            problems.append(f"circuits[{i}].parent: unknown circuit {c.parent!r}")
    for i, ch in enumerate(config.chargers):
        if ch.circuit is not None and ch.circuit not in known:
            problems.append(f"chargers[{i}].circuit: unknown circuit {ch.circuit!r}")
    for i, m in enumerate(config.meters):
        if m.circuit is not None and m.circuit not in known:
            problems.append(f"meters[{i}].circuit: unknown circuit {m.circuit!r}")
    if problems:
        return problems  # the tree is not usable yet: further checks would only repeat these

    parents = parents_of(config)
    for i, c in enumerate(config.circuits):
        seen = {c.id}
        node = parents[c.id]
        while node is not None:
            if node in seen:
                problems.append(f"circuits[{i}].parent: cycle in the circuit tree through {c.id!r}")
                break
            seen.add(node)
            node = parents[node]
    if problems:
        return problems

    limits = circuit_limits(config)
    by_id = {c.id: c for c in limits}
    for i, c in enumerate(config.circuits):
        own, parent = by_id[c.id], by_id[parents[c.id] or service]
        missing = [p for p in own.phases if p not in parent.phases]
        if missing:
            problems.append(
                f"circuits[{i}].phases: {'-'.join(missing)} not carried by its parent {parent.id!r}"
            )
    for i, ch in enumerate(config.chargers):
        circuit = by_id[ch.circuit or service]
        missing = [p for p in ch.phases if p not in circuit.phases]
        if missing:
            problems.append(
                f"chargers[{i}].phases: {'-'.join(missing)} not carried by circuit {circuit.id!r} "
                f"({'-'.join(circuit.phases)})"
            )
            continue
        upward: str | None = circuit.id
        while upward is not None:
            usable = min(by_id[upward].limit_of(p) for p in ch.phases)
            if ch.max_a > usable + 1e-9:
                problems.append(
                    f"chargers[{i}].max_a: {ch.max_a:g} exceeds the usable limit of circuit {upward!r} "
                    f"({usable:g} A)"
                )
                break
            upward = parents[upward]
    if problems:
        return problems

    # Fail-safe: if the gateway dies every charger falls back on its own; the sum must still fit.
    for circuit in limits:
        under = _chargers_under(config, circuit.id, parents)
        for phase in circuit.phases:
            total = sum(ch.fallback_a for ch in under if phase in ch.phases)
            if total > circuit.limit_of(phase) + 1e-9:
                names = ", ".join(ch.id for ch in under if phase in ch.phases and ch.fallback_a > 0)
                problems.append(
                    f"chargers.fallback_a: the fallback currents on {circuit.id}/{phase} add up to "
                    f"{total:g} A, above its usable {circuit.limit_of(phase):g} A ({names})"
                )
    for name, ids in config.openadr.resources.items():
        charger_ids = {c.id for c in config.chargers}
        for ref in ids:
            if ref not in charger_ids and ref not in by_id:
                problems.append(f"openadr.resources.{name}: unknown charger or circuit {ref!r}")
    return problems


def _chargers_under(
    config: GatewayConfig, circuit_id: str, parents: dict[str, str | None]
) -> list[ChargerSection]:
    out = []
    for ch in config.chargers:
        node: str | None = ch.circuit or config.site.service_id
        while node is not None:
            if node == circuit_id:
                out.append(ch)
                break
            node = parents[node]
    return out
