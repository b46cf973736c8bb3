"""A short human summary of a valid site config, printed by `gateway check-config`."""

from __future__ import annotations

from collections import Counter

from gateway.config import GatewayConfig
from gateway.topology import circuit_limits, ev_capacity_kw


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
    chargers_on = Counter(ch.circuit or site.service_id for ch in config.chargers)

    def walk(node: str, depth: int) -> None:
        c = by_id[node]
        n = chargers_on.get(node, 0)
        extra = f", {n} charger(s)" if n else ""
        lines.append(f"{'  ' * (depth + 1)}{node}: {c.limit_a:g} A usable on {'-'.join(c.phases)}{extra}")
        for child in children.get(node, []):
            walk(child, depth + 1)

    lines.append("circuits:")
    walk(site.service_id, 0)
    protocols = Counter(ch.protocol for ch in config.chargers)
    proto = ", ".join(f"{n} {p}" for p, n in sorted(protocols.items())) or "none"
    lines.append(f"chargers: {len(config.chargers)} ({proto}); normal EV capacity {ev_capacity_kw(config):.1f} kW")
    lines.append(f"meters: {len(config.meters)}")
    if config.vtn is None:
        lines.append("vtn: none configured (the site runs on its own limits and tariff)")
    else:
        security = "mTLS" if config.vtn.cert else "plain HTTP" if config.vtn.allow_plain_http else "TLS"
        lines.append(f"vtn: {config.vtn.url} as {config.vtn.ven_name!r} ({security})")
    lines.append(
        f"control: tick {config.control.tick_s:g} s, deadband {config.control.deadband_a:g} A, "
        f"min on-time {config.control.min_on_time_s:g} s; status on {config.status.bind}:{config.status.port}"
    )
    return "\n".join(lines)
