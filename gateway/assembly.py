"""The config-to-domain assembly: from the config to the core's view of the site, circuits with usable
limits and chargers' electrical facts, and the site's normal EV capacity.

The service entrance is the root circuit (`site.service_id`); every configured circuit hangs below it.
A circuit's usable limit is `limit_a` when given, else breaker × continuous-load factor (its own, or the
site's); the service's is `site.service_limit_a` or service breaker × the site's factor. These functions
also accept a config whose tree is broken (unknown parents, cycles) without looping, so the cross-checks
can use them before they have reported what is wrong. A charger's voltage is the one across its load:
line-to-neutral on one conductor, line-to-line on two or three.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from gateway.allocate import Sharing
from gateway.domain import Circuit, EvseState
from gateway.ocpp.profiles import number_phases
from gateway.planner import PlanSettings
from gateway.runtime.decide import MeterSpec, Site
from gateway.runtime.plans import PlanKeeper
from gateway.schedule import ScheduleSettings
from gateway.smoothing import SmoothingSettings
from gateway.tariff import Tariff, TouPeriod

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.config.site import ChargerSection
    from gateway.config.tariff import TariffSection
    from gateway.openadr3.settings import Oadr3Settings


def parents_of(config: GatewayConfig) -> dict[str, str | None]:
    service = config.site.service_id
    parents: dict[str, str | None] = {service: None}
    for c in config.circuits:
        parents[c.id] = c.parent or service
    return parents


def circuit_limits(config: GatewayConfig) -> list[Circuit]:
    """Every circuit, the service first, parents before children where the tree allows."""
    site = config.site
    out = [
        Circuit(
            id=site.service_id,
            parent=None,
            limit_a=site.service_usable_a,
            phases=site.phases,
        )
    ]
    phases_of = {site.service_id: site.phases}
    pending = list(config.circuits)
    while pending:
        progressed = False
        for c in list(pending):
            parent = c.parent or site.service_id
            if parent in phases_of:
                phases = c.phases or phases_of[parent]
                phases_of[c.id] = phases
                limit = c.limit_a or c.breaker_a * (c.continuous_factor or site.continuous_factor)
                out.append(Circuit(id=c.id, parent=parent, limit_a=limit, phases=phases))
                pending.remove(c)
                progressed = True
        if not progressed:  # a cycle or an unknown parent: the cross-checks report it
            for c in pending:
                out.append(
                    Circuit(
                        id=c.id,
                        parent=c.parent or site.service_id,
                        limit_a=c.limit_a or c.breaker_a * (c.continuous_factor or site.continuous_factor),
                        phases=c.phases or site.phases,
                    )
                )
            break
    return out


def ancestors(
    config: GatewayConfig, circuit_id: str, parents: Mapping[str, str | None] | None = None
) -> list[str]:
    """`circuit_id` and every circuit above it up to the service, stopping at a cycle or an unknown id."""
    parents = parents if parents is not None else parents_of(config)
    out: list[str] = []
    node: str | None = circuit_id
    while node is not None and node not in out:
        out.append(node)
        node = parents.get(node)
    return out


def chargers_under(config: GatewayConfig, circuit_id: str) -> list[ChargerSection]:
    """The chargers whose current flows through `circuit_id` (on it or on a circuit below it)."""
    parents = parents_of(config)
    service = config.site.service_id
    return [ch for ch in config.chargers if circuit_id in ancestors(config, ch.circuit or service, parents)]


def charger_voltage(config: GatewayConfig, charger: ChargerSection) -> float:
    return config.site.ln_v if len(charger.phases) == 1 else config.site.ll_v


def charger_kw_max(config: GatewayConfig, charger: ChargerSection) -> float:
    return static_evse(config, charger).kw_per_a * charger.max_a


def static_evse(config: GatewayConfig, charger: ChargerSection) -> EvseState:
    """The charger as the allocator sees it before anything is known about its session."""
    return EvseState(
        id=charger.id,
        circuit=charger.circuit or config.site.service_id,
        phases=charger.phases,
        voltage_v=charger_voltage(config, charger),
        max_a=charger.max_a,
        min_a=charger.min_a,
        step_a=charger.step_a,
        priority=charger.priority,
        fallback_a=charger.fallback_a,
        # kW limits are enforced as if PF were 1: V·A is never below the real power drawn, so a measured
        # or configured PF below 1 can only ever make the gateway think it has more room than it has.
        power_factor=1.0,
    )


def ev_capacity_kw(config: GatewayConfig) -> float:
    """Normal EV capacity: configured, or what all chargers draw at their max."""
    if config.openadr.ev_capacity_kw is not None:
        return config.openadr.ev_capacity_kw
    return sum(charger_kw_max(config, ch) for ch in config.chargers)


def ocpp_watts_per_amp(config: GatewayConfig) -> dict[str, float]:
    """How each charger turns a W limit back into amps: its voltage per phase (its `ocpp.volts`, else the
    site's line-to-neutral voltage; line-to-line for a load across two conductors) times the schedule's
    numberPhases. Not the site's power formula: a charger converts with its own figures, and W sent by any
    other rule gives it more amps than decided."""
    out: dict[str, float] = {}
    for charger in config.chargers:
        if charger.ocpp.volts is not None:
            volts = charger.ocpp.volts
        else:
            volts = config.site.ll_v if len(charger.phases) == 2 else config.site.ln_v
        out[charger.id] = volts * number_phases(len(charger.phases))
    return out


def oadr3_settings(config: GatewayConfig, currency: str | None = None) -> Oadr3Settings:
    """What the OpenADR 3 VEN is told (`[vtn] protocol = "3"`): the link, the webhook, and one resource per
    charger, per circuit and per configured `[openadr] resources` group, each with its chargers and its most
    power (MAX_POWER_CONSUMPTION)."""
    from gateway.openadr3.settings import Oadr3Settings

    vtn, oadr = config.vtn, config.openadr
    assert vtn is not None and vtn.oadr3 is not None
    o3 = vtn.oadr3
    members: dict[str, tuple[str, ...]] = {ch.id: (ch.id,) for ch in config.chargers}
    for circuit in config.circuits:
        members[circuit.id] = tuple(ch.id for ch in chargers_under(config, circuit.id))
    circuit_ids = {c.id for c in config.circuits}
    for group, names in oadr.resources.items():
        ids: list[str] = []
        for name in names:
            ids.extend(ch.id for ch in chargers_under(config, name)) if name in circuit_ids else ids.append(name)
        members[group] = tuple(dict.fromkeys(ids))
    kw_of = {ch.id: charger_kw_max(config, ch) for ch in config.chargers}
    return Oadr3Settings(
        url=vtn.url, version=o3.version, ven_name=vtn.ven_name, client_id=o3.client_id,
        client_secret=o3.client_secret, token_url=o3.token_url, scope=o3.scope, ca_file=vtn.ca_file,
        check_hostname=vtn.check_hostname, request_timeout_s=vtn.request_timeout_s,
        backoff_initial_s=vtn.backoff_initial_s, backoff_max_s=vtn.backoff_max_s, max_body_bytes=vtn.max_body_bytes,
        poll_s=vtn.poll_s or 10.0, subscribe=o3.subscribe, callback_bind=o3.callback_bind,
        callback_port=o3.callback_port, callback_url=o3.callback_url, emergency_level=o3.emergency_level,
        programs=oadr.market_contexts, charger_ids=tuple(ch.id for ch in config.chargers), resources=members,
        resource_kw={name: sum(kw_of.get(c, 0.0) for c in ids) for name, ids in members.items()},
        report_interval_s=oadr.report_interval_s, backlog_days=oadr.backlog_days, currency=currency,
    )


def site_of(config: GatewayConfig) -> Site:
    """The core's view of the site: circuits with usable limits, chargers' electrical facts, meters, the
    control settings, and each OpenADR resource's chargers (a circuit stands for every charger below it)."""
    service = config.site.service_id
    circuit_ids = {c.id for c in config.circuits} | {service}
    resources: dict[str, frozenset[str]] = {}
    for resource, members in config.openadr.resources.items():
        ids: set[str] = set()
        for member in members:
            if member in circuit_ids:  # a circuit stands for every charger below it
                ids |= {ch.id for ch in chargers_under(config, member)}
            else:
                ids.add(member)
        resources[resource] = frozenset(ids)
    if config.vtn is not None and config.vtn.protocol == "3":  # an OpenADR 3 VEN announces each charger and circuit
        for ch in config.chargers:
            resources.setdefault(ch.id, frozenset({ch.id}))
        for c in config.circuits:
            resources.setdefault(c.id, frozenset(x.id for x in chargers_under(config, c.id)))
    control = config.control
    return Site(
        circuits=tuple(circuit_limits(config)),
        evses=tuple(static_evse(config, ch) for ch in config.chargers),
        meters=tuple(
            MeterSpec(m.id, m.circuit or service, m.includes_evs, timedelta(seconds=m.stale_after_s))
            for m in config.meters
        ),
        service_id=service,
        ln_v=config.site.ln_v,
        power_factor=config.site.power_factor,
        smoothing=SmoothingSettings(control.deadband_a, control.ramp_a_per_s),
        min_on_time=timedelta(seconds=control.min_on_time_s),
        charger_stale=timedelta(seconds=control.charger_stale_s),
        resources=resources,
        sharing=Sharing(control.sharing),
        optimise_time_s=control.tick_s / 2,  # half a tick: the rest is for pushing the limits
    )


def tariff_of(section: TariffSection, timezone: str = "UTC") -> Tariff:
    """The core's `Tariff` (in the site's time zone) from a validated `[tariff]` section."""
    return Tariff(
        name=section.name, currency=section.currency, timezone=timezone, flat_price=section.flat_price,
        hourly=section.hourly or (),
        periods=tuple(TouPeriod(p.name, p.price, p.days, p.start, p.end, frozenset(p.seasons))
                      for p in section.periods),
        seasons=section.core_seasons(), demand_charge_kw=section.demand_charge_kw,
        holidays=frozenset(section.holidays),
    )


def plan_settings_of(section: TariffSection, ev_capacity_kw: float | None = None) -> PlanSettings:
    """The planner's settings from the `[tariff.plan]` section."""
    plan = section.plan
    return PlanSettings(
        interval=timedelta(minutes=plan.interval_min), horizon=timedelta(hours=plan.horizon_h),
        ev_capacity_kw=ev_capacity_kw, no_departure=plan.no_departure,
        default_dwell=timedelta(hours=plan.default_dwell_h), default_energy_kwh=plan.default_energy_kwh,
    )


def schedule_settings_of(config: GatewayConfig) -> ScheduleSettings:
    """How OpenADR signals become limits: the site's normal EV capacity and the SIMPLE levels' fractions."""
    levels = {int(k): v for k, v in config.openadr.simple_levels.items()}
    # A targeted resource's share of the EV capacity (a level or fraction aimed at it scales with it).
    kw_of = {ch.id: charger_kw_max(config, ch) for ch in config.chargers}
    capacity = {rid: sum(kw_of.get(c, 0.0) for c in ids) for rid, ids in site_of(config).resources.items()}
    return ScheduleSettings(ev_capacity_kw=ev_capacity_kw(config), simple_levels=levels,
                            resource_capacity_kw=capacity)


def plan_keeper_of(config: GatewayConfig) -> PlanKeeper:
    """The charging plan's keeper: the site's tariff, the planner's settings and the service's power."""
    site = config.site
    service_kw = site.service_usable_a * len(site.phases) * site.ln_v * site.power_factor / 1000.0
    return PlanKeeper(settings=plan_settings_of(config.tariff, ev_capacity_kw(config)),
                      tariff=tariff_of(config.tariff, site.timezone), service_kw=service_kw)
