"""Site config: the shipped examples, every cross-check's line, file errors, `gateway check-config`, random trees."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.assembly import ancestors, circuit_limits
from gateway.certs import init_dev_pki
from gateway.cli import main
from gateway.commands.check_config import file_advisories
from gateway.config import ConfigError, GatewayConfig, load_config, parse_config
from gateway.config.checks import advisories
from gateway.config.site import Wiring

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "config"


def site(**changes: Any) -> dict[str, Any]:
    """A small valid 208Y/120 site: a 100 A panel with a 40 A branch, two chargers and a service meter."""
    data: dict[str, Any] = {
        "site": {"wiring": "three-phase-208Y/120", "service_breaker_a": 200},
        "circuits": [
            {"id": "panel", "breaker_a": 100},
            {"id": "branch", "parent": "panel", "breaker_a": 40, "phases": "L1-L2"},
        ],
        "chargers": [
            {"id": "cp-1", "protocol": "ocpp1.6", "circuit": "branch", "phases": "L1-L2", "max_a": 32},
            {"id": "cp-2", "protocol": "ocpp2.0.1", "circuit": "panel", "phases": "L2-L3", "max_a": 32},
        ],
        "meters": [{"id": "service", "modbus": {"model": "eastron-sdm630", "host": "192.0.2.1", "unit": 1}}],
    }
    for path, value in changes.items():
        _set(data, path, value)
    return data


def _set(data: Any, path: str, value: Any) -> None:
    """`_set(d, "chargers.0.max_a", 48)`; a value of DELETE removes the key."""
    *parents, last = path.split(".")
    for part in parents:
        data = data[int(part)] if part.isdigit() else data[part]
    if value is DELETE:
        del data[int(last) if last.isdigit() else last]
    elif last.isdigit():
        data[int(last)] = value
    else:
        data[last] = value


DELETE = "<delete this key>"


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.problems, "a ConfigError without problems"
    return info.value.problems


# ------------------------------------------------------------------------------------------- examples


def test_the_home_example_is_valid_and_matches_the_issue() -> None:
    config = load_config(EXAMPLES / "example-home.toml")
    assert config.site.wiring is Wiring.SPLIT_PHASE_240
    assert (config.site.ln_v, config.site.ll_v) == (120, 240)
    assert config.site.service_breaker_a == 100
    assert [(ch.max_a, ch.phases) for ch in config.chargers] == [(48, ("L1", "L2"))]
    assert advisories(config) == []


def test_the_workplace_example_is_valid_and_matches_the_issue() -> None:
    config = load_config(EXAMPLES / "example-workplace.toml")
    assert config.site.wiring is Wiring.THREE_PHASE_208
    assert config.site.service_breaker_a == 200
    assert len(config.chargers) == 20
    panels = [c for c in config.circuits if c.parent is None]
    assert len(panels) == 2
    assert {ch.circuit for ch in config.chargers} == {p.id for p in panels}
    assert all(len(ch.phases) == 2 for ch in config.chargers), "every charger line-to-line"
    pairs = Counter(ch.phases for ch in config.chargers)
    assert set(pairs) == {("L1", "L2"), ("L2", "L3"), ("L1", "L3")}
    assert max(pairs.values()) - min(pairs.values()) <= 1, f"phase pairs unbalanced: {pairs}"
    for panel in panels:
        on_panel = Counter(ch.phases for ch in config.chargers if ch.circuit == panel.id)
        assert len(on_panel) == 3, f"{panel.id} does not use all three phase pairs"
    assert advisories(config) == []


def test_the_examples_pass_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("example-home.toml", "example-workplace.toml", "example-depot.toml", "example-home-pv.toml",
                 "example-depot-oadr3.toml"):
        # The examples name certs/ven.crt, certs/ven.key and certs/ca.crt, made for their VEN name.
        vtn = load_config(EXAMPLES / name).vtn
        init_dev_pki(tmp_path / name / "certs", ven_name=vtn.ven_name if vtn else "ven")
        monkeypatch.chdir(tmp_path / name)
        assert main(["check-config", str(EXAMPLES / name)]) == 0
        captured = capsys.readouterr()
        assert captured.out.startswith("site ")
        assert captured.err == ""


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path: Path) -> None:
    assert isinstance(load_config(path), GatewayConfig)


def test_the_small_fixture_site_is_valid() -> None:
    config = parse_config(site())
    assert isinstance(config, GatewayConfig)


# ------------------------------------------------------------------------------- one line per problem


CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "unknown parent circuit",
        {"circuits.1.parent": "panle"},
        "circuits[1].parent: unknown circuit 'panle' (known: branch, main, panel)",
    ),
    ("unknown charger circuit", {"chargers.0.circuit": "nowhere"}, "chargers[0].circuit: unknown circuit 'nowhere'"),
    (
        "unknown meter circuit",
        {"meters.0.circuit": "nowhere"},
        "meters[0].circuit: unknown circuit 'nowhere'",
    ),
    ("duplicate circuit id", {"circuits.1.id": "panel"}, "circuits[1].id: duplicate id 'panel' (also circuits[0])"),
    ("duplicate charger id", {"chargers.1.id": "cp-1"}, "chargers[1].id: duplicate id 'cp-1' (also chargers[0])"),
    (
        "charger id equal to a circuit id",
        {"chargers.1.id": "panel"},
        "chargers[1].id: 'panel' is also a circuit's id (OpenADR resources could not tell them apart)",
    ),
    (
        "circuit named like the service",
        {"circuits.1.id": "main", "chargers.0.circuit": "main"},
        "circuits[1].id: 'main' is the service itself (site.service_id)",
    ),
    (
        "cycle",
        {"circuits.0.parent": "branch"},
        "circuits[0].parent: cycle in the circuit tree: panel → branch → panel",
    ),
    ("self-parent", {"circuits.0.parent": "panel"}, "circuits[0].parent: cycle in the circuit tree: panel → panel"),
    (
        "charger on a conductor its circuit lacks",
        {"chargers.0.phases": "L2-L3"},
        "chargers[0].phases: L3 not carried by its circuit 'branch' (L1-L2)",
    ),
    (
        "charger on a conductor the service lacks",
        {"site.wiring": "split-phase-120/240", "circuits.1.phases": "L1-L2", "chargers.1.phases": "L2-L3"},
        "chargers[1].phases: L3 not carried by its circuit 'panel' (L1-L2)",
    ),
    (
        "circuit with a conductor its parent lacks",
        {"circuits.0.phases": "L1-L3"},
        "circuits[1].phases: L2 not carried by its parent 'panel' (L1-L3)",
    ),
    ("min above max", {"chargers.0.min_a": 40}, "chargers[0].max_a: 32 A is below min_a (40 A)"),
    (
        "min below 6 A",
        {"chargers.0.min_a": 5},
        "chargers[0].min_a: 5 A is below 6 A, the J1772 minimum (a pilot under 6 A means stop)",
    ),
    (
        "not a number",
        {"chargers.0.max_a": float("nan")},
        "chargers[0].max_a: Input should be a finite number (got nan)",
    ),
    (
        "infinite capacity",
        {"openadr": {"ev_capacity_kw": float("inf")}},
        "openadr.ev_capacity_kw: Input should be a finite number (got inf)",
    ),
    ("not a number in a list", {"tariff": {"hourly": [float("nan")] + [0.1] * 23}},
     "tariff.hourly[0]: Input should be a finite number (got nan)"),
    ("a boolean for a current", {"chargers.0.fallback_a": True},
     "chargers[0].fallback_a: expected a number, got the boolean true"),
    (
        "a number in quotes",
        {"site.service_breaker_a": "200"},
        "site.service_breaker_a: expected a number, got the string '200' (write it without quotes)",
    ),
    ("a fraction for a whole number", {"status": {"port": 80.5}}, "status.port: expected a whole number, got 80.5"),
    ("a boolean for a whole number", {"chargers.0.priority": True},
     "chargers[0].priority: expected a whole number, got the boolean true"),
    (
        "a zero given where more is needed says what it got",
        {"site.continuous_factor": 0},
        "site.continuous_factor: Input should be greater than 0 (got 0)",
    ),
    (
        "max above its circuit",
        {"chargers.0.max_a": 48},
        "chargers[0].max_a: 48 A exceeds the usable limit of its circuit 'branch' (32 A: 40 A breaker × 0.8)",
    ),
    (
        "max above a circuit higher up",
        {"circuits.1.breaker_a": 125, "circuits.0.limit_a": 30},
        "chargers[0].max_a: 32 A exceeds the usable limit of circuit 'panel' (30 A: its limit_a)",
    ),
    (
        "max above the service",
        {"site.service_breaker_a": 30, "circuits.0.breaker_a": 30, "circuits.1.breaker_a": 30},
        "chargers[0].max_a: 32 A exceeds the usable limit of its circuit 'branch' (24 A: 30 A breaker × 0.8)",
    ),
    (
        "max above the service's own limit",
        {"site.service_limit_a": 30},
        "chargers[0].max_a: 32 A exceeds the usable limit of circuit 'main' (30 A: site.service_limit_a)",
    ),
    (
        "fallback sum above a circuit",
        {
            "chargers.0.fallback_a": 20,
            "chargers.1.circuit": "branch",
            "chargers.1.phases": "L1-L2",
            "chargers.1.max_a": 16,
            "chargers.1.fallback_a": 16,
        },
        "circuits[1].breaker_a: the chargers' fallback_a on branch/L1 add up to 36 A, above its usable 32 A "
        "(cp-1, cp-2) (also over on L2); if the gateway stops, they could trip it",
    ),
    ("fallback above max", {"chargers.0.fallback_a": 40}, "chargers[0].fallback_a: 40 A is above max_a (32 A)"),
    (
        "fallback between 0 and 6",
        {"chargers.0.fallback_a": 3},
        "chargers[0].fallback_a: 3 A: must be 0 (stop) or at least 6 A",
    ),
    (
        "no step fits between min and max",
        {"chargers.0.min_a": 7, "chargers.0.max_a": 9, "chargers.0.step_a": 5},
        "chargers[0].step_a: no multiple of 5 A lies between min_a (7 A) and max_a (9 A)",
    ),
    (
        "OCPP 1.6 step finer than 0.1 A",
        {"chargers.0.step_a": 0.25},
        "chargers[0].step_a: 0.25 A: OCPP 1.6 limits are multiples of 0.1 A",
    ),
    (
        "modbus charger without a table",
        {"chargers.0.protocol": "modbus"},
        "chargers[0].modbus: a modbus charger needs a modbus table (model, host, port, unit)",
    ),
    (
        "modbus table on an OCPP charger",
        {"chargers.0.modbus": {"model": "abb-terra-ac", "host": "192.0.2.5"}},
        'chargers[0].modbus: a modbus table on a ocpp1.6 charger (set protocol = "modbus" or remove it)',
    ),
    (
        "two devices at one Modbus address",
        {
            "chargers.1.protocol": "modbus",
            "chargers.1.modbus": {"model": "abb-terra-ac", "host": "192.0.2.1", "unit": 1},
        },
        "meters[0].modbus: same device address as chargers[1] (192.0.2.1:502 unit 1)",
    ),
    (
        "a meter's register map on a charger",
        {"chargers.1.protocol": "modbus", "chargers.1.modbus": {"model": "eastron-sdm630", "host": "192.0.2.9"}},
        "chargers[1].modbus.model: 'eastron-sdm630' is a meter's register map, not a charger's",
    ),
    (
        "two meters on one circuit",
        {"meters": [
            {"id": "m1", "circuit": "panel", "modbus": {"model": "eastron-sdm630", "host": "192.0.2.1"}},
            {"id": "m2", "circuit": "panel", "modbus": {"model": "eastron-sdm630", "host": "192.0.2.2"}},
        ]},
        "meters[1].circuit: 'panel' is already measured by meters[0] (one meter per circuit)",
    ),
    (
        "unknown OpenADR resource",
        {"openadr": {"resources": {"fleet": ["cp-1", "cp-9"]}}},
        "openadr.resources.fleet: unknown charger or circuit 'cp-9'",
    ),
    (
        "voltages that do not fit the wiring",
        {"site.voltage_ln_v": 120, "site.voltage_ll_v": 240},
        "site.voltage_ll_v: 240 V does not fit three-phase-208Y/120 with 120 V line-to-neutral (expected about 208 V)",
    ),
    (
        "service limit above its breaker",
        {"site.service_limit_a": 250},
        "site.service_limit_a: 250 A is above the service breaker (200 A)",
    ),
    (
        "circuit limit above its breaker",
        {"circuits.1.limit_a": 50},
        "circuits[1].limit_a: 50 A is above the circuit's breaker (40 A)",
    ),
    ("unknown time zone", {"site.timezone": "Mars/Olympus"}, "site.timezone: unknown time zone 'Mars/Olympus'"),
    ("unknown phase", {"chargers.0.phases": "L1-L4"}, "chargers[0].phases: unknown phase conductor 'L4'"),
    (
        "phases without a separator",
        {"chargers.0.phases": "L1L2"},
        "chargers[0].phases: unknown phase conductor 'L1L2' (use L1, L2, L3; write 'L1-L2')",
    ),
    ("typo in a key", {"chargers.0.max_amps": 32}, "chargers[0].max_amps: unknown key (did you mean 'max_a'?)"),
    ("typo in a section", {"charger": []}, "charger: unknown key (did you mean 'chargers'?)"),
    ("missing key", {"chargers.0.max_a": DELETE}, "chargers[0].max_a: required key is missing"),
    ("missing site", {"site": DELETE}, "site: required key is missing"),
    (
        "wrong type with its value",
        {"chargers.0.max_a": "lots"},
        "chargers[0].max_a: expected a number, got the string 'lots'",
    ),
    (
        "a table where an array of tables belongs",
        {"chargers": {"id": "cp-1"}},
        "chargers: expected [[chargers]] tables (an array of tables), got a table",
    ),
    ("bad protocol", {"chargers.0.protocol": "ocpp2.1"}, "chargers[0].protocol: Input should be 'ocpp1.6'"),
    (
        "bad id",
        {"chargers.0.id": "cp 1"},
        "chargers[0].id: 'cp 1' is not a usable id: letters, digits and _ . : - only, starting with a letter or digit",
    ),
    (
        "stale before a poll",
        {"meters.0.poll_s": 5, "meters.0.stale_after_s": 5},
        "meters[0].stale_after_s: 5 s is not longer than poll_s (5 s): every reading would be stale",
    ),
    ("bad status bind", {"status": {"bind": "not a host!"}}, "status.bind: 'not a host!' is not an IP address"),
]


@pytest.mark.parametrize(("changes", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_problem_is_one_line_with_its_path(changes: dict[str, Any], expected: str) -> None:
    problems = problems_of(site(**copy.deepcopy(changes)))
    assert any(p.startswith(expected) for p in problems), problems
    assert all("\n" not in p for p in problems)


def test_fallbacks_over_a_circuit_on_several_conductors_are_one_problem() -> None:
    changes = {"chargers.0.fallback_a": 20, "chargers.1.circuit": "branch", "chargers.1.phases": "L1-L2",
               "chargers.1.max_a": 16, "chargers.1.fallback_a": 16}
    problems = problems_of(site(**changes))
    assert [p for p in problems if "fallback_a on" in p] == [
        "circuits[1].breaker_a: the chargers' fallback_a on branch/L1 add up to 36 A, above its usable 32 A "
        "(cp-1, cp-2) (also over on L2); if the gateway stops, they could trip it"
    ]


def test_a_whole_number_may_be_written_with_a_zero_fraction() -> None:
    assert parse_config(site(status={"port": 8081.0})).status.port == 8081


def test_a_cycle_is_reported_once_and_circuits_below_it_not_at_all() -> None:
    data = site(**{"circuits.0.parent": "branch"})
    data["circuits"].append({"id": "leaf", "parent": "branch", "breaker_a": 20})
    assert problems_of(data) == ["circuits[0].parent: cycle in the circuit tree: panel → branch → panel"]


def test_duplicate_circuit_ids_stop_the_electrical_checks() -> None:
    problems = problems_of(site(**{"circuits.1.id": "panel", "chargers.0.max_a": 200}))
    assert problems == ["circuits[1].id: duplicate id 'panel' (also circuits[0])",
                        "chargers[0].circuit: unknown circuit 'branch' (known: main, panel)"]


def test_shape_and_cross_check_problems_come_in_one_run() -> None:
    data = site(**{"chargers.0.max_a": "lots", "chargers.1.phases": "L1-L3"})
    data["chargers"].append({"id": "cp-1", "protocol": "ocpp1.6", "circuit": "ghost", "phases": "L1", "max_a": 16})
    data["circuits"].append({"id": "bad", "breaker_a": -1})
    data["meters"][0]["circuit"] = "bad"  # refers to a refused circuit: not a second problem
    problems = problems_of(data)
    assert problems == [
        "circuits[2].breaker_a: Input should be greater than 0 (got -1)",
        "chargers[0].max_a: expected a number, got the string 'lots'",
        "chargers[2].id: duplicate id 'cp-1' (also chargers[0])",
        "chargers[2].circuit: unknown circuit 'ghost' (known: branch, main, panel)",
    ]


def test_a_resource_naming_a_refused_charger_is_not_a_second_problem() -> None:
    data = site(**{"chargers.1.max_a": "lots"})
    data["openadr"] = {"resources": {"fleet": ["cp-1", "cp-2"]}}
    assert problems_of(data) == [
        "chargers[1].max_a: expected a number, got the string 'lots'"
    ]


def test_cross_checks_still_run_when_an_unrelated_section_is_wrong() -> None:
    data = site(**{"chargers.0.max_a": 48})
    data["control"] = {"tick_s": -1}
    problems = problems_of(data)
    assert problems[0].startswith("control.tick_s: Input should be greater than or equal to 0.1")
    assert problems[1].startswith("chargers[0].max_a: 48 A exceeds the usable limit of its circuit 'branch'")


def test_a_bad_site_section_stops_before_cross_checks() -> None:
    problems = problems_of(site(**{"site.service_breaker_a": -5, "chargers.0.circuit": "ghost"}))
    assert problems == ["site.service_breaker_a: Input should be greater than 0 (got -5)"]


def test_protocol_and_phases_in_any_case() -> None:
    config = parse_config(site(**{"chargers.0.protocol": "OCPP1.6", "chargers.0.phases": "l1-l2"}))
    assert (config.chargers[0].protocol, config.chargers[0].phases) == ("ocpp1.6", ("L1", "L2"))


def test_voltages_follow_from_either_one() -> None:
    only_ln = parse_config(site(**{"site.voltage_ln_v": 127}))
    assert only_ln.site.ll_v == pytest.approx(220, abs=0.5)
    only_ll = parse_config(site(**{"site.wiring": "split-phase-120/240", "site.voltage_ll_v": 230,
                                   "chargers.1.phases": "L1-L2"}))
    assert only_ll.site.ln_v == pytest.approx(115)


def test_advisories_for_allowed_but_risky_settings(tmp_path: Path) -> None:
    # Every shipped charger map has a fail-safe current register; a user's map may not.
    generic = (REPO / "gateway" / "modbus" / "maps" / "generic-charger.toml").read_text()
    start = generic.index("[registers.failsafe_current]")
    end = generic.index("[registers.", start + 1)
    user_map = tmp_path / "no-failsafe.toml"
    user_map.write_text(generic[:start] + generic[end:])
    data = site()
    data["vtn"] = {"url": "http://vtn.test/OpenADR2/Simple/2.0b", "ven_name": "v", "allow_plain_http": True}
    data["status"] = {"bind": "0.0.0.0"}
    data["meters"][0]["circuit"] = "panel"
    data["chargers"][1] |= {"protocol": "modbus", "modbus": {"model": str(user_map), "host": "192.0.2.7"}}
    notes = advisories(parse_config(data))
    assert [n.split(":")[0] for n in notes] == ["vtn.url", "status.token", "meters", "chargers[1].fallback_a"]
    assert notes[-1] == (
        f"chargers[1].fallback_a: the {user_map} map has no fail-safe current register, so the gateway "
        "cannot program 6 A; set it with the charger's own setup tool"
    )


# ------------------------------------------------------------------------------------------ the file


def test_load_config_problems_with_the_file_itself(tmp_path: Path) -> None:
    def only_problem(path: Path) -> str:
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert len(info.value.problems) == 1
        return info.value.problems[0]

    missing = tmp_path / "missing.toml"
    assert only_problem(missing) == f"{missing}: cannot read (No such file or directory)"
    assert only_problem(tmp_path) == f"{tmp_path}: is a directory, not a config file"
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'[site]\nname = "caf\xe9"\n')
    assert only_problem(latin) == f"{latin}: not UTF-8 text (line 2); save the file as UTF-8"
    broken = tmp_path / "broken.toml"
    broken.write_text("[site]\nwiring = three\n")
    assert only_problem(broken).startswith(f"{broken}: not valid TOML: ")
    assert "line 2" in only_problem(broken)
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    assert only_problem(deep) == f"{deep}: arrays or tables nested too deeply, not a site config"
    long_value = tmp_path / "long.toml"
    long_value.write_text(f'[site]\nwiring = "split-phase-120/240"\nservice_breaker_a = "{"9" * 5000}"\n')
    assert len(only_problem(long_value)) < 200
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b'\xef\xbb\xbf[site]\nwiring = "split-phase-120/240"\nservice_breaker_a = 100\n')
    assert load_config(bom).site.service_breaker_a == 100
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert only_problem(empty) == "site: required key is missing"


# ------------------------------------------------------------------------------------------- the CLI


def test_check_config_prints_one_error_line_per_problem_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    text = (EXAMPLES / "example-home.toml").read_text()
    bad.write_text(text.replace("max_a = 48", "max_a = 64").replace("tick_s = 1.0", "tick_s = 1.0\ncolour = 3"))
    assert main(["check-config", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "error: control.colour: unknown key (a typo?)",
        "error: chargers[0].max_a: 64 A exceeds the usable limit of its circuit 'ev-circuit' "
        "(48 A: 60 A breaker × 0.8)",
    ]


def test_check_config_file_problems_are_one_line_never_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {
        "missing": tmp_path / "nope.toml",
        "directory": tmp_path,
        "binary": tmp_path / "binary.toml",
        "toml": tmp_path / "broken.toml",
    }
    cases["binary"].write_bytes(b"\x00\xff\xfe garbage")
    cases["toml"].write_text("[[chargers]\n")
    for name, path in cases.items():
        assert main(["check-config", str(path)]) == 2, name
        captured = capsys.readouterr()
        lines = captured.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), (name, captured.err)
        assert captured.out == ""


@pytest.mark.slow
def test_the_installed_command_exits_2_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[site]\nwiring = "three-phase-208Y/120"\nservice_breaker_a = "big"\n')
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(bad)],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "error: site.service_breaker_a: expected a number, got the string 'big'\n"
    )


@pytest.mark.slow
def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    """`gateway check-config site.toml | head -1`: the pipe closes before the summary is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "gateway", "check-config", str(EXAMPLES / "example-workplace.toml")],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, cwd=REPO, check=False,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 0
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_check_config_quiet_and_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "open.toml"
    path.write_text((EXAMPLES / "example-home.toml").read_text() + '\n[status]\nbind = "0.0.0.0"\n')
    assert main(["check-config", str(path)]) == 0
    captured = capsys.readouterr()
    assert "site 'home'" in captured.out
    assert captured.err.startswith("warning: status.token: ")
    assert main(["check-config", "-q", str(path)]) == 0
    assert capsys.readouterr() == ("", "")


def test_check_config_warns_about_certificate_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    home = (EXAMPLES / "example-home.toml").read_text()
    (tmp_path / "site.toml").write_text(home)
    assert main(["check-config", "site.toml"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "warning: vtn.cert: cannot read certs/ven.crt (No such file or directory) "
        "(development ones: gateway certs init DIR)",
        "warning: vtn.key: cannot read certs/ven.key (No such file or directory) "
        "(development ones: gateway certs init DIR)",
        "warning: vtn.ca_file: cannot read certs/ca.crt (No such file or directory) "
        "(development ones: gateway certs init DIR)",
    ]
    pki = init_dev_pki(tmp_path / "certs", ven_name="home-ven-0002", days=10)
    pki.ven_key.write_bytes(pki.vtn_key.read_bytes())  # a key from the wrong pair
    pki.ven_key.chmod(0o644)
    pki.ca_cert.write_text("not a certificate")
    assert main(["check-config", "site.toml"]) == 0
    expires = x509.load_pem_x509_certificate(pki.ven_cert.read_bytes()).not_valid_after_utc
    assert capsys.readouterr().err.splitlines() == [
        f"warning: vtn.cert: certs/ven.crt expires on {expires:%Y-%m-%d}, in 9 days",
        "warning: vtn.key: certs/ven.key can be read by other users (chmod 600 certs/ven.key)",
        "warning: vtn.ca_file: certs/ca.crt: not a PEM certificate (expected -----BEGIN CERTIFICATE-----)",
        "warning: vtn.key: not the private key of vtn.cert (or not a PEM key without a passphrase)",
        "warning: vtn.ven_name: 'home-ven-0001' is not the VEN certificate's name (home-ven-0002); "
        "VTNs that check the two will refuse it",
    ]
    later = expires + timedelta(days=1)
    assert file_advisories(load_config("site.toml"), now=later)[0] == (
        f"vtn.cert: certs/ven.crt expired on {expires:%Y-%m-%d}"
    )


# ---------------------------------------------------------------------------------- random trees


@st.composite
def random_sites(draw: st.DrawFn, broken: bool) -> dict[str, Any]:
    """Random trees; when `broken`, now and then an unknown parent, a cycle, a duplicate, an odd type.

    Unbroken trees still load conductors a circuit may not carry and draw more than a breaker allows, so
    the electrical checks meet both outcomes.
    """

    def rarely(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> Any:
        return draw(odd) if broken and draw(st.integers(0, 9)) == 0 else draw(usual)

    wiring = draw(st.sampled_from([w.value for w in Wiring]))
    names = [f"c{i}" for i in range(draw(st.integers(0, 6)))]
    odd_amps = st.one_of(st.floats(-10, 2000, allow_nan=False), st.just("x"), st.just(0))
    phases = st.sampled_from(["L1", "L2", "L3", "L1-L2", "L2-L3", "L1-L3", "L1-L2-L3"])
    circuits = []
    for k, name in enumerate(names):
        c: dict[str, Any] = {
            "id": rarely(st.just(name), st.sampled_from(names)),
            "breaker_a": rarely(st.sampled_from([20, 30, 40, 60, 100, 125, 200]), odd_amps),
        }
        parent = rarely(st.sampled_from([None, "main", *names[:k]]), st.sampled_from([*names, "ghost"]))
        if parent is not None:
            c["parent"] = parent
        if draw(st.integers(0, 3)) == 0:
            c["phases"] = draw(phases)
        circuits.append(c)
    chargers = []
    for i in range(draw(st.integers(0, 8))):
        ch: dict[str, Any] = {
            "id": rarely(st.just(f"cp{i}"), st.sampled_from(["cp0", *names[:1]])),
            "protocol": rarely(st.sampled_from(["ocpp1.6", "ocpp2.0.1"]), st.just("modbus")),
            "phases": draw(phases),
            "max_a": rarely(st.sampled_from([16, 24, 32, 40, 48]), odd_amps),
            "fallback_a": rarely(st.sampled_from([0, 6, 8, 16]), odd_amps),
        }
        if ch["protocol"] == "modbus" and draw(st.booleans()):
            ch["modbus"] = {"model": "abb-terra-ac", "host": draw(st.sampled_from(["192.0.2.1", "192.0.2.2"]))}
        circuit = rarely(st.sampled_from([None, *names]), st.just("ghost"))
        if circuit is not None:
            ch["circuit"] = circuit
        if draw(st.integers(0, 4)) == 0:
            ch["min_a"] = rarely(st.sampled_from([6, 8, 10]), odd_amps)
        if draw(st.integers(0, 4)) == 0:
            ch["step_a"] = rarely(st.sampled_from([0.1, 0.5, 1, 2]), odd_amps)
        chargers.append(ch)
    return {
        "site": {"wiring": wiring, "service_breaker_a": draw(st.sampled_from([100, 200, 400, 800]))},
        "circuits": circuits,
        "chargers": chargers,
    }


def _points_into(data: dict[str, Any], path: str) -> bool:
    """The entry a problem's path starts with (`chargers[3]`, `site`) exists in the document."""
    head = path.split(".")[0]
    if "[" not in head:
        return True
    kind, index = head[:-1].split("[")
    return kind in data and int(index) < len(data[kind])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans().flatmap(random_sites))
def test_random_trees_give_a_valid_config_or_clear_problems(data: dict[str, Any]) -> None:
    try:
        config = parse_config(data)
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            path, _, message = problem.partition(": ")
            assert path and message and "\n" not in problem
            assert path.split(".")[0].split("[")[0] in {"site", "circuits", "chargers", "meters"}
            assert _points_into(data, path), f"{problem!r} names no entry of the document"
        return
    # A valid config is one the allocator can run safely: what check-config promises.
    limits = {c.id: c for c in circuit_limits(config)}
    for ch in config.chargers:
        chain = ancestors(config, ch.circuit or config.site.service_id)
        assert chain[-1] == config.site.service_id
        for node in chain:
            for phase in ch.phases:
                assert phase in limits[node].phases
                assert ch.max_a <= limits[node].limit_of(phase) + 1e-9
        assert ch.min_a <= ch.max_a and (ch.fallback_a == 0 or 6 <= ch.fallback_a <= ch.max_a)
    for circuit in limits.values():
        for phase in circuit.phases:
            total = sum(
                ch.fallback_a
                for ch in config.chargers
                if phase in ch.phases and circuit.id in ancestors(config, ch.circuit or config.site.service_id)
            )
            assert total <= circuit.limit_of(phase) + 1e-9


def test_summary_shows_limits_phasing_and_fail_safe() -> None:
    from gateway.config.summary import summarise

    text = summarise(load_config(EXAMPLES / "example-workplace.toml"))
    assert "  main: 160 A usable on L1-L2-L3" in text
    assert "    panel-a: 80 A usable on L1-L2-L3, 10 chargers (L1-L2 ×4, L1-L3 ×3, L2-L3 ×3)" in text
    assert "fail-safe: fallback currents load panel-a/L1 most: 42 A of 80 A usable" in text
    assert "chargers: 20 (10 ocpp1.6, 10 ocpp2.0.1)" in text


def test_the_reference_documents_every_key_of_every_section() -> None:
    from pydantic import BaseModel

    from gateway.config.control import ControlSection, StatusSection, StoreSection
    from gateway.config.modbus import ModbusEndpoint
    from gateway.config.ocpp import OcppChargerSettings, OcppSection
    from gateway.config.openadr import OpenAdrSection, VtnSection
    from gateway.config.pv import PvSection
    from gateway.config.site import ChargerSection, CircuitSection, MeterSection, SiteSection
    from gateway.config.tariff import PeriodEntry, PlanSection, SeasonEntry, TariffSection

    text = (REPO / "docs" / "configuration.md").read_text()
    sections: list[tuple[str, type[BaseModel], str]] = [
        ("## `[site]`", SiteSection, ""),
        ("## `[[circuits]]`", CircuitSection, ""),
        ("## `[[chargers]]`", ChargerSection, ""),
        ("## `[[chargers]]`", OcppChargerSettings, "ocpp."),
        ("## `[[meters]]`", MeterSection, ""),
        ("### `modbus` tables", ModbusEndpoint, ""),
        ("## `[vtn]`", VtnSection, ""),
        ("## `[openadr]`", OpenAdrSection, ""),
        ("## `[control]`", ControlSection, ""),
        ("## `[status]`", StatusSection, ""),
        ("## `[store]`", StoreSection, ""),
        ("## `[ocpp]`", OcppSection, ""),
        ("## `[tariff]`", TariffSection, ""),
        ("### `[[tariff.periods]]`", PeriodEntry, ""),
        ("### `[[tariff.seasons]]`", SeasonEntry, ""),
        ("### `[tariff.plan]`", PlanSection, ""),
        ("## `[pv]`", PvSection, ""),
    ]
    top = set(GatewayConfig.model_fields)
    for heading, _, _ in sections:
        top.discard(heading.split("[")[-1].split("]")[0])
    assert top == set(), f"config sections without a heading in docs/configuration.md: {top}"
    for heading, model, prefix in sections:
        section = text.split(heading, 1)[1].split("\n## ", 1)[0]
        rows = [line for line in section.splitlines() if line.startswith("| `")]
        for name in model.model_fields:
            key = f"`{prefix}{name}"
            documented = any(f"{key}`" in row.split(" | ")[0] or f"{key}." in row.split(" | ")[0] for row in rows)
            sub_table = f"`[tariff.{name}]`" in section or f"`[[tariff.{name}]]`" in section
            assert documented or sub_table, f"{heading}: `{prefix}{name}` undocumented"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 500) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_any_value_anywhere_gives_problems_not_exceptions(data: st.DataObject) -> None:
    """Replace one value of a valid config with anything TOML-shaped: a ConfigError or a config, nothing else."""
    doc = site()
    node: Any = doc
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, dict | list) and child and data.draw(st.booleans()):
            node = child
            continue
        node[key] = data.draw(JSON)
        break
    try:
        parse_config(doc)
    except ConfigError as exc:
        assert exc.problems and all(": " in p and "\n" not in p for p in exc.problems)


def test_required_ocpp_passwords_are_checked_per_charger() -> None:
    data = site()
    data["ocpp"] = {"require_password": True}
    data["chargers"][1]["ocpp"] = {"password": "s3cret-passw0rd"}
    assert problems_of(data) == ["chargers[0].ocpp.password: required because ocpp.require_password is on"]
    data["chargers"][0]["ocpp"] = {"password": "another-passw0rd"}
    parse_config(data)


def test_a_broken_part_of_the_tree_does_not_hide_an_overloaded_panel_elsewhere() -> None:
    data = site(**{"chargers.1.max_a": 96})  # cp-2 on the panel: 80 A usable
    data["circuits"] += [{"id": "loop-a", "parent": "loop-b", "breaker_a": 20},
                         {"id": "loop-b", "parent": "loop-a", "breaker_a": 20},
                         {"id": "orphan", "parent": "ghost", "breaker_a": 20}]
    data["chargers"].append({"id": "cp-3", "protocol": "ocpp1.6", "circuit": "loop-a", "phases": "L1", "max_a": 40})
    problems = problems_of(data)
    assert "circuits[2].parent: cycle in the circuit tree: loop-a → loop-b → loop-a" in problems
    assert any(p.startswith("circuits[4].parent: unknown circuit 'ghost'") for p in problems)
    over = "chargers[1].max_a: 96 A exceeds the usable limit of its circuit 'panel'"
    assert any(p.startswith(over) for p in problems)
    assert not any(p.startswith("chargers[2].") for p in problems)  # under the cycle: nothing to say yet
