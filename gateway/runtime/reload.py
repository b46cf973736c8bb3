"""SIGHUP (`systemctl reload`): read the config file again, check it, apply what can change while running and
refuse the rest, without stopping.

What can change live is what the decision reads afresh every tick and holds no connection or schedule:
how limits are smoothed (`control.deadband_a`, `ramp_a_per_s`, `min_on_time_s`, `charger_stale_s`), the
SIMPLE levels' fractions (`openadr.simple_levels`) and the telemetry retention (`store.telemetry_days`).
Everything else (the chargers, meters and circuits, ports, the VTN, certificates, the store's path, the
tick) is wired into open connections and running tasks: a change there is refused with one line naming
it, to be applied by a restart. A file that does not validate changes nothing (one line: its first problem).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.assembly import site_of
from gateway.config import ConfigError, GatewayConfig, load_config

if TYPE_CHECKING:
    from gateway.runtime.loop import Runtime

log = logging.getLogger("gateway.runtime")

LIVE = ("control.deadband_a", "control.ramp_a_per_s", "control.min_on_time_s", "control.charger_stale_s",
        "openadr.simple_levels", "store.telemetry_days")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    if isinstance(value, list | tuple):
        out = {}
        for i, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}[{i}]"))
        return out or {prefix: []}
    return {prefix: value}


def changed_paths(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """The dotted paths whose values differ (a list that grew or shrank shows as its extra items)."""
    a, b = _flatten(old.model_dump(mode="json")), _flatten(new.model_dump(mode="json"))
    return sorted(p for p in a.keys() | b.keys() if a.get(p, ...) != b.get(p, ...))


def _live(path: str) -> str | None:
    return next((live for live in LIVE if path == live or path.startswith(live + ".")), None)


def merge_live(old: GatewayConfig, new: GatewayConfig) -> GatewayConfig:
    """`old` with the live keys taken from `new`."""
    merged = old.model_dump()
    fresh = new.model_dump()
    for live in LIVE:
        section, key = live.split(".", 1)
        merged[section][key] = fresh[section][key]
    return GatewayConfig.model_validate(merged)


def reload(runtime: Runtime, path: str | Path) -> tuple[list[str], list[str]]:
    """Re-read `path` and apply its live changes to `runtime`; returns (applied, refused) paths. Logs one
    line for what was applied and one for what was refused (or one saying the file is not valid)."""
    try:
        new = load_config(path)
    except ConfigError as exc:
        more = f" (and {len(exc.problems) - 1} more; `gateway check-config {path}` lists them)" if len(
            exc.problems) > 1 else ""
        log.error("reload refused: %s%s; still running on the config it started with", exc.problems[0], more)
        return [], []
    changed = changed_paths(runtime.config, new)
    applied = [p for p in changed if _live(p) is not None]
    refused = [p for p in changed if _live(p) is None]
    if not changed:
        log.info("reload: %s unchanged", path)
        return [], []
    if applied:
        apply(runtime, merge_live(runtime.config, new))
        log.info("reload applied: %s", ", ".join(applied))
    if refused:
        shown = ", ".join(refused[:6]) + (f" and {len(refused) - 6} more" if len(refused) > 6 else "")
        log.warning("reload: not applied, a restart is needed for: %s (systemctl restart)", shown)
    return applied, refused


def apply(runtime: Runtime, config: GatewayConfig) -> None:
    """Swap in a config that differs from the running one only in `LIVE` keys."""
    runtime.config = config
    runtime.recorder.telemetry_days = config.store.telemetry_days
    runtime.site = site_of(config)
    levels = {int(k): v for k, v in config.openadr.simple_levels.items()}
    runtime.schedule_settings = dataclasses.replace(runtime.schedule_settings, simple_levels=levels)
    runtime.trigger("config reloaded")
