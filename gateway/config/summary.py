"""A short human summary of a valid site config, printed by `gateway check-config`.

It shows what the gateway will enforce, so a user can compare it with the panel schedule: the usable
limit of every circuit, which chargers load which conductors, what the chargers would draw together on
their own fail-safe currents, and how the site talks to the utility.
"""

from __future__ import annotations

from collections import Counter

from gateway.assembly import ancestors, circuit_limits, ev_capacity_kw, parents_of
from gateway.config import GatewayConfig


def summarise(config: GatewayConfig) -> str:
    site = config.site
    lines = [
        f"site {site.name!r}: {site.wiring.value}, {site.ln_v:g}/{site.ll_v:g} V, "
        f"service {site.service_breaker_a:g} A ({site.continuous_factor:.0%} continuous), PF {site.power_factor:g}",
    ]
    limits = circuit_limits(config)
    children: dict[str | None, list[str]] = {}
    for c in limits:
        children.setdefault(c.parent, []).append(c.id)
    by_id = {c.id: c for c in limits}
    on_circuit: dict[str, Counter[str]] = {}
    for ch in config.chargers:
        on_circuit.setdefault(ch.circuit or site.service_id, Counter())["-".join(ch.phases)] += 1

    def walk(node: str, depth: int) -> None:
        c = by_id[node]
        phasing = on_circuit.get(node)
        extra = ""
        if phasing:
            n = sum(phasing.values())
            spread = ", ".join(f"{p} ×{k}" for p, k in sorted(phasing.items()))
            extra = f", {n} charger{'s' if n != 1 else ''} ({spread})"
        lines.append(f"{'  ' * (depth + 1)}{node}: {c.limit_a:g} A usable on {'-'.join(c.phases)}{extra}")
        for child in children.get(node, []):
            walk(child, depth + 1)

    lines.append("circuits:")
    walk(site.service_id, 0)
    protocols = Counter(ch.protocol for ch in config.chargers)
    proto = ", ".join(f"{n} {p}" for p, n in sorted(protocols.items())) or "none"
    lines.append(f"chargers: {len(config.chargers)} ({proto}); normal EV capacity {ev_capacity_kw(config):.1f} kW")
    if config.chargers:
        lines.append(f"fail-safe: {_fallback(config)}")
    meters = ", ".join(_meter(config, m.id) for m in config.meters) or "none"
    lines.append(f"meters: {meters}")
    if config.vtn is None:
        lines.append("vtn: none configured (the site runs on its own limits and tariff)")
    else:
        vtn = config.vtn
        if vtn.protocol == "3" and vtn.oadr3 is not None:
            security = "plain HTTP" if vtn.allow_plain_http and vtn.url.startswith("http://") else "TLS"
            lines.append(f"vtn: OpenADR {vtn.oadr3.version} at {vtn.url} as {vtn.ven_name!r} ({security}, "
                         f"OAuth2 client {vtn.oadr3.client_id!r})")
        else:
            security = "mTLS" if vtn.cert else "plain HTTP" if vtn.allow_plain_http else "TLS"
            lines.append(f"vtn: OpenADR 2.0b at {vtn.url} as {vtn.ven_name!r} ({security})")
    pv = config.pv
    modes = Counter(ch.mode for ch in config.chargers)
    if pv.grid_meter is not None or pv.inverters or set(modes) - {"plan"}:
        cap = "none" if pv.import_cap_kw is None else f"{pv.import_cap_kw:g} kW"
        inverters = ", ".join(f"{i.id} ({i.host}:{i.port})" for i in pv.inverters) or "none"
        spread = ", ".join(f"{m} ×{n}" for m, n in sorted(modes.items()))
        lines.append(f"pv: grid meter {pv.grid_meter or 'none'}, import cap {cap}, inverters {inverters}; "
                     f"charge modes {spread}; start/stop after {pv.start_delay_s:g}/{pv.stop_delay_s:g} s")
    lines.append(f"tariff: {config.tariff.describe()}")
    lines.append(
        f"control: {config.control.sharing} sharing, tick {config.control.tick_s:g} s, "
        f"deadband {config.control.deadband_a:g} A, "
        f"min on-time {config.control.min_on_time_s:g} s; status on {config.status.bind}:{config.status.port}"
    )
    return "\n".join(lines)


def _fallback(config: GatewayConfig) -> str:
    """The conductor whose chargers' fallback currents come closest to its usable limit."""
    parents = parents_of(config)
    totals: dict[tuple[str, str], float] = {}
    for ch in config.chargers:
        if ch.fallback_a > 0:
            for node in ancestors(config, ch.circuit or config.site.service_id, parents):
                for phase in ch.phases:
                    totals[(node, phase)] = totals.get((node, phase), 0.0) + ch.fallback_a
    if not totals:
        return "every charger stops if the gateway stops (fallback_a 0)"
    limits = {c.id: c for c in circuit_limits(config)}
    (node, phase), amps = max(totals.items(), key=lambda kv: kv[1] / limits[kv[0][0]].limit_of(kv[0][1]))
    return f"fallback currents load {node}/{phase} most: {amps:g} A of {limits[node].limit_of(phase):g} A usable"


def _meter(config: GatewayConfig, meter_id: str) -> str:
    """Where a meter is, what may flow out through it, and what counts while it cannot be believed."""
    m = next(m for m in config.meters if m.id == meter_id)
    circuit = m.circuit or config.site.service_id
    limit = next(c.limit_a for c in circuit_limits(config) if c.id == circuit)
    export = f"PV {m.pv_kw:g} kW" if m.pv_kw > 0 else "no PV: negative current is a fault"
    faulty = limit if m.fault_non_ev_a is None else min(limit, m.fault_non_ev_a)
    return f"{m.id} on {circuit} ({export}; if it lies, non-EV load counted at {faulty:g} A)"
