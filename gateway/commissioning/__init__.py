"""Commissioning a site: the checklist run against the real installation (`checklist`), its results
(`results`: records, thresholds, pass or fail) and the Markdown report a commissioning engineer signs
(`report`). `gateway commission` (gateway.commands.commission) is its command line."""

from __future__ import annotations

from gateway.commissioning.checklist import Options, commission
from gateway.commissioning.report import render
from gateway.commissioning.results import (
    FOLLOW_FRACTION,
    PEAK_SHED_FRACTION,
    PEAK_TOLERANCE_FRACTION,
    PEAK_TOLERANCE_KW,
    STEP_MARGIN_A,
    ChargerResult,
    Check,
    Identity,
    MeterResult,
    Outcome,
    PeakResult,
    Report,
    StepResult,
    all_checks,
    moved,
    passed,
    peak_cap_kw,
    peak_tolerance_kw,
    phase_mean,
    step_check,
    step_measurable,
)

__all__ = [
    "FOLLOW_FRACTION",
    "PEAK_SHED_FRACTION",
    "PEAK_TOLERANCE_FRACTION",
    "PEAK_TOLERANCE_KW",
    "STEP_MARGIN_A",
    "ChargerResult",
    "Check",
    "Identity",
    "MeterResult",
    "Options",
    "Outcome",
    "PeakResult",
    "Report",
    "StepResult",
    "all_checks",
    "commission",
    "moved",
    "passed",
    "peak_cap_kw",
    "peak_tolerance_kw",
    "phase_mean",
    "render",
    "step_check",
    "step_measurable",
]
