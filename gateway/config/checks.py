"""Checks that relate one config entry to another: what pydantic's per-field validation cannot see.

Each problem is one line starting with the path of the field to fix. The electrical checks use the same
topology the allocator uses (`gateway.topology`), so what passes here is what the core will enforce.
The checks also run on a partial config (the entries pydantic refused left out, see `Omitted`), so that
one run of `check-config` reports both kinds of problem; they then stay quiet about anything that
depends on a refused entry rather than guessing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.assembly import ancestors, circuit_limits, parents_of
from gateway.config.site import ChargerSection
from gateway.domain import Circuit

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

# `at(kind, i)`: the path of an entry of a list section, numbered as in the user's file.
_At = Callable[[str, int], str]

# Usable limits and currents are floats (breaker × 0.8); don't report a rounding error as an overload.
EPS = 1e-9


@dataclass(frozen=True)
class Omitted:
    """What pydantic refused, for cross-checking the rest of a config that failed validation."""

    # The original index of each entry kept in a list section ("circuits", "chargers", "meters").
    positions: Mapping[str, Sequence[int]] = field(default_factory=dict)
    # Ids of refused circuits; None when the whole circuits section was refused (its ids are unknown).
    circuit_ids: frozenset[str] | None = frozenset()
    # (original index, id) of each refused entry that has a string id, per list section: still duplicates.
    refused_ids: Mapping[str, Sequence[tuple[int, str]]] = field(default_factory=dict)


def cross_check(config: GatewayConfig, omitted: Omitted | None = None) -> list[str]:
    """Every problem between entries of an otherwise valid config, one line each."""
    omitted = omitted or Omitted()

    def at(kind: str, i: int) -> str:
        positions = omitted.positions.get(kind)
        return f"{kind}[{positions[i] if positions is not None else i}]"

    problems = _ids(config, at, omitted)
    # Two circuits with one id (or one named like the service) make every path through the tree ambiguous.
    unique = len({c.id for c in config.circuits} | {config.site.service_id}) == len(config.circuits) + 1
    problems += _references(config, at, omitted)
    if unique:
        problems += _cycles(config, at)
        # The electrical checks run on the part of the tree that reaches the service: a cycle or an unknown
        # parent elsewhere must not hide an overloaded panel here (one run of check-config, every problem).
        problems += _electrical(config, at, _sound(config))
    problems += _meters(config, at)
    problems += _endpoints(config, at)
    problems += _resources(config, omitted)
    problems += _passwords(config, at)
    problems += _sharing(config)
    return problems


def _sharing(config: GatewayConfig) -> list[str]:
    """Optimising sharing solves with scipy's HiGHS: without scipy every decision would fall back."""
    if config.control.sharing != "optimise":
        return []
    try:
        from scipy.optimize import milp  # noqa: F401 (only whether it imports)
    except ImportError as exc:
        return [f"control.sharing: 'optimise' needs scipy ({exc}): pip install scipy, or set sharing = \"deadline\""]
    return []


def _passwords(config: GatewayConfig, at: _At) -> list[str]:
    """With ocpp.require_password on, an OCPP charger without a password could never connect."""
    if not config.ocpp.require_password:
        return []
    return [
        f"{at('chargers', i)}.ocpp.password: required because ocpp.require_password is on"
        for i, ch in enumerate(config.chargers)
        if ch.protocol != "modbus" and ch.ocpp.password is None
    ]


def advisories(config: GatewayConfig) -> list[str]:
    """Things that are allowed but worth a second look, one line each with the path (no exit code)."""
    notes = []
    if config.vtn is not None and config.vtn.plain_http:
        notes.append("vtn.url: plain HTTP: the utility's messages are neither encrypted nor authenticated")
    # A pinned fingerprint is a 2.0b (openleadr) check; an OpenADR 3 VEN trusts what its ca_file signed.
    if config.vtn is not None and config.vtn.protocol == "2.0b" and config.vtn.url.startswith("https://") \
            and config.vtn.vtn_fingerprint is None:
        notes.append("vtn.vtn_fingerprint: not set: any server certificate the CA signed is accepted")
    if not _loopback(config.status.bind) and config.status.token is None:
        notes.append(
            f"status.token: not set while the status endpoint listens on {config.status.bind}: "
            "anyone on that network can read the site's state"
        )
    notes += _ocpp_exposure(config)
    if config.chargers and not any(m.circuit in (None, config.site.service_id) for m in config.meters):
        notes.append("meters: no meter at the service entrance: the gateway cannot see the site's non-EV load")
    notes += _unenforced_fallbacks(config)
    return notes


def _ocpp_exposure(config: GatewayConfig) -> list[str]:
    """OCPP beyond loopback with chargers that need no password: anyone on that network can pose as one
    (and report a draw that steers the allocation) or take its connection over, TLS or not."""
    ocpp = [ch for ch in config.chargers if ch.protocol != "modbus"]
    if not ocpp or _loopback(config.ocpp.bind) or config.ocpp.require_password:
        return []
    without = [ch.id for ch in ocpp if ch.ocpp.password is None]
    if not without:
        return []
    shown = ", ".join(without[:5]) + (f" and {len(without) - 5} more" if len(without) > 5 else "")
    tls = "" if config.ocpp.tls_cert is not None else " and no TLS"
    return [f"ocpp.bind: OCPP listens on {config.ocpp.bind} with no password for {shown}{tls}: anyone on that "
            "network can connect as those chargers; give each chargers[].ocpp.password, set ocpp.require_password "
            "= true, and use TLS (ocpp.tls_cert) unless the charger network is isolated"]


def _unenforced_fallbacks(config: GatewayConfig) -> list[str]:
    """Modbus chargers whose register map cannot be told a fail-safe current: fallback_a is a promise."""
    from gateway.modbus.maps import load_map

    notes = []
    for i, ch in enumerate(config.chargers):
        if ch.modbus is not None and "failsafe_current" not in load_map(ch.modbus.model).registers:
            notes.append(
                f"chargers[{i}].fallback_a: the {ch.modbus.model} map has no fail-safe current register, so the "
                f"gateway cannot program {ch.fallback_a:g} A; set it with the charger's own setup tool"
            )
    return notes


# ------------------------------------------------------------------------------------------- identities


def _ids(config: GatewayConfig, at: _At, omitted: Omitted) -> list[str]:
    problems = []
    service = config.site.service_id
    for kind, ids in (
        ("circuits", [c.id for c in config.circuits]),
        ("chargers", [c.id for c in config.chargers]),
        ("meters", [m.id for m in config.meters]),
    ):
        # Paths as the user's file numbers the entries, refused ones included, in file order.
        entries = sorted([(at(kind, i), ident) for i, ident in enumerate(ids)], key=lambda e: _index(e[0]))
        entries += [(f"{kind}[{i}]", ident) for i, ident in omitted.refused_ids.get(kind, ())]
        entries.sort(key=lambda e: _index(e[0]))
        first: dict[str, str] = {}
        for where, ident in entries:
            if ident in first:
                problems.append(f"{where}.id: duplicate id {ident!r} (also {first[ident]})")
            else:
                first[ident] = where
    for i, c in enumerate(config.circuits):
        if c.id == service:
            problems.append(f"{at('circuits', i)}.id: {c.id!r} is the service itself (site.service_id)")
    # openadr.resources names chargers and circuits alike, so one id must not name both.
    circuit_ids = {c.id for c in config.circuits} | {service}
    for i, ch in enumerate(config.chargers):
        if ch.id in circuit_ids:
            problems.append(
                f"{at('chargers', i)}.id: {ch.id!r} is also a circuit's id "
                "(OpenADR resources could not tell them apart)"
            )
    return problems


def _index(path: str) -> int:
    return int(path[path.index("[") + 1 : -1])


def _references(config: GatewayConfig, at: _At, omitted: Omitted) -> list[str]:
    known = {c.id for c in config.circuits} | {config.site.service_id}

    def unknown(ref: str | None) -> bool:
        if ref is None or ref in known:
            return False
        # A reference to a circuit pydantic refused is not a second problem.
        return omitted.circuit_ids is not None and ref not in omitted.circuit_ids

    problems = []
    hint = f" (known: {', '.join(sorted(known))})" if len(known) <= 12 else ""
    for i, c in enumerate(config.circuits):
        if unknown(c.parent):
            problems.append(f"{at('circuits', i)}.parent: unknown circuit {c.parent!r}{hint}")
    for i, ch in enumerate(config.chargers):
        if unknown(ch.circuit):
            problems.append(f"{at('chargers', i)}.circuit: unknown circuit {ch.circuit!r}{hint}")
    for i, m in enumerate(config.meters):
        if unknown(m.circuit):
            problems.append(f"{at('meters', i)}.circuit: unknown circuit {m.circuit!r}{hint}")
    return problems


def _cycles(config: GatewayConfig, at: _At) -> list[str]:
    """One line per cycle in the parent links, at its first entry in the file."""
    index = {c.id: i for i, c in enumerate(config.circuits)}
    parent = {c.id: c.parent for c in config.circuits}
    problems = []
    reported: set[str] = set()
    for c in config.circuits:
        path: list[str] = []
        node: str | None = c.id
        while node is not None and node in parent and node not in path and node not in reported:
            path.append(node)
            node = parent[node]
        if node is not None and node in path:
            loop = path[path.index(node) :]
            reported.update(loop)
            first = min(loop, key=lambda n: index[n])
            start = loop.index(first)
            ring = [*loop[start:], *loop[:start], first]
            problems.append(f"{at('circuits', index[first])}.parent: cycle in the circuit tree: {' → '.join(ring)}")
        else:
            reported.update(path)
    return problems


# ----------------------------------------------------------------------------------------- electricity


def _sound(config: GatewayConfig) -> set[str]:
    """The circuits whose chain of parents reaches the service (no cycle, no unknown parent on the way)."""
    service = config.site.service_id
    parents = parents_of(config)
    return {service} | {c.id for c in config.circuits if ancestors(config, c.id, parents)[-1] == service}


def _electrical(config: GatewayConfig, at: _At, sound: set[str]) -> list[str]:
    problems = []
    service = config.site.service_id
    limits = {c.id: c for c in circuit_limits(config) if c.id in sound}
    parents = parents_of(config)
    for i, c in enumerate(config.circuits):
        if c.id not in sound:
            continue
        own, parent = limits[c.id], limits[parents[c.id] or service]
        missing = [p for p in own.phases if p not in parent.phases]
        if missing:
            problems.append(
                f"{at('circuits', i)}.phases: {'-'.join(missing)} not carried by its parent {parent.id!r} "
                f"({'-'.join(parent.phases)})"
            )
    if problems:
        return problems  # conductor mismatches above would make every check below misleading

    for i, ch in enumerate(config.chargers):
        if (ch.circuit or service) not in limits:
            continue  # its circuit is unknown or cut off from the service: reported as such
        circuit = limits[ch.circuit or service]
        missing = [p for p in ch.phases if p not in circuit.phases]
        if missing:
            problems.append(
                f"{at('chargers', i)}.phases: {'-'.join(missing)} not carried by its circuit {circuit.id!r} "
                f"({'-'.join(circuit.phases)})"
            )
            continue
        node: str | None = circuit.id
        while node is not None:
            usable = min(limits[node].limit_of(p) for p in ch.phases)
            if ch.max_a > usable + EPS:
                where = "its circuit" if node == circuit.id else "circuit"
                problems.append(
                    f"{at('chargers', i)}.max_a: {ch.max_a:g} A exceeds the usable limit of {where} {node!r} "
                    f"({_usable(config, node, usable)})"
                )
                break
            node = parents[node]

    # Fail-safe: if the gateway dies every charger falls back on its own; together they must still fit.
    fallback: dict[tuple[str, str], list[ChargerSection]] = {}
    for ch in config.chargers:
        if ch.fallback_a > 0 and (ch.circuit or service) in limits:
            for node in ancestors(config, ch.circuit or service, parents):
                for phase in ch.phases:
                    fallback.setdefault((node, phase), []).append(ch)
    for circuit in limits.values():
        # One line per circuit: the conductor most over, and the others over too (one problem, one fix).
        over = []
        for phase in circuit.phases:
            on_phase = fallback.get((circuit.id, phase), [])
            total = sum(ch.fallback_a for ch in on_phase)
            if total > circuit.limit_of(phase) + EPS:
                over.append((total - circuit.limit_of(phase), phase, total, on_phase))
        if not over:
            continue
        over.sort(key=lambda o: (-o[0], o[1]))
        _, phase, total, on_phase = over[0]
        names = ", ".join(ch.id for ch in on_phase[:6])
        names += f" and {len(on_phase) - 6} more" if len(on_phase) > 6 else ""
        also = f" (also over on {', '.join(o[1] for o in over[1:])})" if len(over) > 1 else ""
        problems.append(
            f"{_circuit_path(config, circuit, at)}: the chargers' fallback_a on {circuit.id}/{phase} add up "
            f"to {total:g} A, above its usable {circuit.limit_of(phase):g} A ({names}){also}; if the gateway "
            "stops, they could trip it"
        )
    return problems


def _usable(config: GatewayConfig, circuit_id: str, usable: float) -> str:
    site = config.site
    if circuit_id == site.service_id:
        if site.service_limit_a is not None:
            return f"{usable:g} A: site.service_limit_a"
        return f"{usable:g} A: {site.service_breaker_a:g} A breaker × {site.continuous_factor:g}"
    section = next(c for c in config.circuits if c.id == circuit_id)
    if section.limit_a is not None:
        return f"{usable:g} A: its limit_a"
    return f"{usable:g} A: {section.breaker_a:g} A breaker × {section.continuous_factor or site.continuous_factor:g}"


def _circuit_path(config: GatewayConfig, circuit: Circuit, at: _At) -> str:
    if circuit.id == config.site.service_id:
        return "site.service_limit_a" if config.site.service_limit_a is not None else "site.service_breaker_a"
    i = next(i for i, c in enumerate(config.circuits) if c.id == circuit.id)
    section = config.circuits[i]
    return f"{at('circuits', i)}.{'limit_a' if section.limit_a is not None else 'breaker_a'}"


# ---------------------------------------------------------------------------------- meters and devices


def _meters(config: GatewayConfig, at: _At) -> list[str]:
    problems = []
    first: dict[str, int] = {}
    for i, m in enumerate(config.meters):
        point = m.circuit or config.site.service_id
        if point in first:
            problems.append(
                f"{at('meters', i)}.circuit: {point!r} is already measured by {at('meters', first[point])} "
                "(one meter per circuit)"
            )
        else:
            first[point] = i
    return problems


def _endpoints(config: GatewayConfig, at: _At) -> list[str]:
    """A charger on a meter's register map (or the reverse), and two devices at one Modbus address."""
    from gateway.modbus.maps import RegisterMap, load_map

    problems = []
    seen: dict[tuple[str, int, int], str] = {}
    devices = [(at("chargers", i), "charger", ch.modbus) for i, ch in enumerate(config.chargers) if ch.modbus]
    devices += [(at("meters", i), "meter", m.modbus) for i, m in enumerate(config.meters)]
    maps: dict[str, RegisterMap] = {}
    for where, kind, endpoint in devices:
        if endpoint.model not in maps:  # the field's own validation has loaded it once: it loads
            maps[endpoint.model] = load_map(endpoint.model)
        register_map = maps[endpoint.model]
        if register_map.kind != kind:
            problems.append(
                f"{where}.modbus.model: {endpoint.model!r} is a {register_map.kind}'s register map, not a {kind}'s"
            )
        unit = endpoint.unit if endpoint.unit is not None else register_map.unit
        # The same host, port and unit is a copy-paste slip that would mix two devices' readings.
        key = (endpoint.host.lower(), endpoint.port, unit)
        if key in seen:
            problems.append(
                f"{where}.modbus: same device address as {seen[key]} ({endpoint.host}:{endpoint.port} unit {unit})"
            )
        else:
            seen[key] = where
    return problems


def _resources(config: GatewayConfig, omitted: Omitted) -> list[str]:
    if omitted.circuit_ids is None:
        return []  # the circuits section was refused: any name may be one of its circuits
    names = {c.id for c in config.chargers} | {c.id for c in config.circuits} | {config.site.service_id}
    names |= {ident for kind in ("chargers", "circuits") for _, ident in omitted.refused_ids.get(kind, ())}
    problems = []
    for resource, refs in config.openadr.resources.items():
        for ref in refs:
            if ref not in names:
                problems.append(f"openadr.resources.{resource}: unknown charger or circuit {ref!r}")
    return problems


def _loopback(bind: str) -> bool:
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False


__all__ = ["Omitted", "advisories", "cross_check"]
