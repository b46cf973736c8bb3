"""The commissioning report a commissioning engineer signs: the checklist's results as Markdown, pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from gateway.commissioning.results import (
    FOLLOW_FRACTION,
    PEAK_SHED_FRACTION,
    PEAK_TOLERANCE_FRACTION,
    PEAK_TOLERANCE_KW,
    Identity,
    Outcome,
    PeakResult,
    Report,
    _s,
    all_checks,
    passed,
)


def _a(amps: float | None) -> str:
    return "—" if amps is None else f"{amps:g} A"


def _kw(kw: float | None) -> str:
    return "—" if kw is None else f"{kw:.2f} kW"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _currents(current: Mapping[str, float]) -> str:
    return ", ".join(f"{p} {a:.1f} A" for p, a in sorted(current.items())) or "—"


def _identity(ident: Identity | None) -> tuple[str, str, str, str]:
    if ident is None:
        return ("—", "—", "—", "—")
    return (ident.vendor or "—", ident.model or "—", ident.firmware or "not reported", ident.serial or "—")


def render(report: Report) -> str:
    checks = all_checks(report)
    ok = sum(1 for _, c in checks if c.outcome is Outcome.PASS)
    verdict = "PASS" if passed(report) else "FAILED"
    lines = [
        f"# Commissioning report: {report.site}",
        "",
        f"**Result: {verdict}** ({ok} of {len(checks)} checks passed)",
        "",
        f"- Started {report.started:%Y-%m-%d %H:%M:%S} UTC, finished {report.finished:%H:%M:%S} UTC",
        f"- Config: `{report.config_path}`; gateway {report.version}",
        *(f"- {name}: {value}" for name, value in report.settings),
        "",
        "## Checks",
        "",
        *_table(["What", "Check", "Result", "Detail"], ((w, c.name, c.outcome.value, c.detail) for w, c in checks)),
        "## Site",
        "",
        *_table(["Setting", "Value"], report.site_rows),
        "## Chargers: setpoints",
        "",
        *_table(
            ["Charger", "Protocol", "Circuit", "Phases", "Min", "Max", "Step", "Priority", "Fail-safe current"],
            ((c.id, c.protocol, c.circuit, "-".join(c.phases), _a(c.min_a), _a(c.max_a), _a(c.step_size_a),
              c.priority, _a(c.fallback_a)) for c in report.chargers),
        ),
        "## Chargers: identity and readings",
        "",
        *_table(
            ["Charger", "Vendor", "Model", "Firmware", "Serial", "Status", "Current"],
            ((c.id, *_identity(c.identity), c.status or "—", _currents(c.current_a)) for c in report.chargers),
        ),
        "## Fail-safe settings",
        "",
        "What each charger does by itself when the gateway stops or loses it.",
        "",
        *_table(["Charger", "Setting", "Value"],
                ((c.id, name, value) for c in report.chargers for name, value in c.failsafe)),
        "## Step response",
        "",
        "Each charger in turn was stepped down from its limit to the step current and back, the gateway's "
        "decisions held meanwhile; the times run from sending the limit to the first reading that had moved "
        f"{FOLLOW_FRACTION:.0%} of the way (the charger's own meter, then the meter it is behind). They "
        "include the charger's meter interval, which is usually most of them.",
        "",
        *_table(
            ["Charger", "Drew", "Limit", "Step to", "Answer", "Down (charger)", "Up (charger)", "Meter",
             "Down (meter)", "Up (meter)"],
            ((c.id, f"{s.before_a:.1f} A", _a(s.limit_a), _a(s.step_a), s.ack_down, _s(s.down_s), _s(s.up_s),
              s.meter_id or "—", _s(s.meter_down_s) if s.meter_id else "—", _s(s.meter_up_s) if s.meter_id else "—")
             for c in report.chargers if (s := c.step) is not None),
        ),
        "## Meters",
        "",
        *_table(
            ["Meter", "Circuit", "Model", "Power", "Current", "Voltage", "Result"],
            ((m.id, m.circuit, m.model, _kw(m.power_kw), _currents(m.current_a),
              ", ".join(f"{p} {v:.0f} V" for p, v in sorted(m.voltage_v.items())) or "—", m.check.outcome.value)
             for m in report.meters),
        ),
    ]
    lines += _peak_lines(report.peak)
    if report.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in report.notes), ""]
    return "\n".join(lines).rstrip() + "\n"


def _peak_lines(peak: PeakResult | None) -> list[str]:
    if peak is None:
        return []
    lines = [
        "## Simulated peak",
        "",
        "The site limit was lowered for a while to what the site drew less "
        f"{PEAK_SHED_FRACTION:.0%} of what the EVs drew, as an operator cap (the same path a "
        "demand-response limit takes through the decision), and the measured site load was watched: the "
        "gateway passes when the load got under the lowered limit and stayed there "
        f"(within {PEAK_TOLERANCE_KW:g} kW or {PEAK_TOLERANCE_FRACTION:.0%}) for the whole hold. No load was "
        "added; the peak is simulated by lowering the limit.",
        "",
    ]
    rows = [
        ("Measured from", peak.source),
        ("Site load before", _kw(peak.before_kw)),
        ("EVs before", _kw(peak.ev_before_kw)),
        ("Lowered limit", _kw(peak.cap_kw)),
        ("Under it after", _s(peak.under_after_s)),
        ("Held for", f"{peak.hold_s:g} s ({peak.samples} readings)"),
        ("Highest reading while held", _kw(peak.max_kw)),
        ("Readings above the limit", str(peak.excursions)),
        ("Result", f"{peak.check.outcome.value}: {peak.check.detail}"),
    ]
    return lines + _table(["", "Value"], rows)
