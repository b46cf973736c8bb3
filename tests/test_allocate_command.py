"""`gateway allocate`: the dry run a user can check by hand, and its answers to bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main

ISSUE_EXAMPLE = {
    "site_limit_kw": 50.0,
    "non_ev_kw": 3.0,
    "circuits": [
        {"id": "main", "parent": None, "limit_a": 160},
        {"id": "panel-1", "parent": "main", "limit_a": 80},
    ],
    "non_ev_load_a": {"main": {"L1": 20, "L2": 15, "L3": 18}},
    "evses": [
        {"id": "cp-01", "circuit": "panel-1", "phases": ["L1", "L2"], "voltage_v": 208, "min_a": 6, "max_a": 32,
         "step_a": 1, "connected": True, "priority": 0, "energy_needed_kwh": 12.0,
         "departure": "2026-11-25T20:00:00+00:00"},
    ],
    "now": "2026-11-25T18:00:00+00:00",
}


def run(tmp_path: Path, data: object, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    path = tmp_path / "in.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    code = main(["allocate", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_issue_example_gives_the_full_32_a(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(tmp_path, ISSUE_EXAMPLE, capsys)
    assert code == 0, err
    assert json.loads(out) == {"allocations": {"cp-01": 32.0}, "binding": {"cp-01": "max"}}
    assert '"cp-01": 32\n' in out  # whole amps as the issue shows them, not 32.0


def test_a_stale_reading_without_a_worst_case_leaves_nothing_for_the_chargers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = {"a": 3, "measured_at": "2026-11-25T17:00:00+00:00"}  # an hour before `now`
    code, out, _ = run(tmp_path, dict(ISSUE_EXAMPLE, non_ev_load_a={"main": {"L1": old}}), capsys)
    assert code == 0
    assert json.loads(out)["allocations"] == {"cp-01": 0}
    fresh = dict(old, measured_at="2026-11-25T17:59:58+00:00")
    code, out, _ = run(tmp_path, dict(ISSUE_EXAMPLE, non_ev_load_a={"main": {"L1": fresh}}), capsys)
    assert json.loads(out)["allocations"] == {"cp-01": 32}


def test_many_chargers_share_the_panel_and_say_what_bound_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = dict(ISSUE_EXAMPLE)
    data["evses"] = [
        {"id": f"cp-{n}", "circuit": "panel-1", "phases": "L1-L2", "voltage_v": 208, "max_a": 32} for n in range(4)
    ]
    code, out, _ = run(tmp_path, data, capsys)
    result = json.loads(out)
    assert code == 0
    assert result["allocations"] == {f"cp-{n}": 20.0 for n in range(4)}
    assert set(result["binding"].values()) == {"panel-1/L1"}


def test_a_site_kw_limit_binds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = dict(ISSUE_EXAMPLE, site_limit_kw=7.0)  # 4 kW left for the car: 19 A at 208 V
    code, out, _ = run(tmp_path, data, capsys)
    assert code == 0
    assert json.loads(out) == {"allocations": {"cp-01": 19.0}, "binding": {"cp-01": "site"}}


def test_non_ev_load_over_a_limit_zeroes_the_chargers_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = dict(ISSUE_EXAMPLE, non_ev_load_a={"panel-1": {"L1": 85}})
    code, out, _ = run(tmp_path, data, capsys)
    result = json.loads(out)
    assert code == 0
    assert result["allocations"] == {"cp-01": 0.0}
    assert result["binding"] == {"cp-01": "panel-1/L1"}
    assert result["overloaded"] == ["panel-1/L1: non-EV load 85 A over its limit 80 A"]


def test_non_ev_power_over_the_site_limit_zeroes_the_chargers_and_says_so_in_kw(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(tmp_path, dict(ISSUE_EXAMPLE, non_ev_kw=60.0), capsys)
    result = json.loads(out)
    assert code == 0
    assert result == {"allocations": {"cp-01": 0}, "binding": {"cp-01": "site"},
                      "overloaded": ["site: non-EV load 60 kW over its limit 50 kW"]}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("{not json", "not valid JSON"),
        ([1, 2], "(top level): expected a JSON object"),
        (dict(ISSUE_EXAMPLE, circuits=[{"id": "main", "parent": None, "limit_a": -5}]),
         "circuits[0].limit_a: Input should be greater than or equal to 0"),
        (dict(ISSUE_EXAMPLE, evses=[dict(ISSUE_EXAMPLE["evses"][0], circuit="nowhere")]),  # type: ignore[index]
         "evses[0].circuit: unknown circuit 'nowhere'"),
        (dict(ISSUE_EXAMPLE, evses=[dict(ISSUE_EXAMPLE["evses"][0], phases="L1-L4")]),  # type: ignore[index]
         "evses[0].phases: Value error, unknown phase conductor 'L4'"),
        (dict(ISSUE_EXAMPLE, now="2026-11-25T18:00:00"), "now: Input should have timezone info"),
        (dict(ISSUE_EXAMPLE, site_limit=3), "site_limit: unknown key (a typo?)"),
        (dict(ISSUE_EXAMPLE, non_ev_load_a={"ghost": {"L1": 3}}), "non_ev_load_a.ghost: unknown circuit"),
        # Python's json reads NaN and Infinity; a limit or a load that is not a number must not be acted on.
        (dict(ISSUE_EXAMPLE, non_ev_kw=float("nan")), "non_ev_kw: Input should be a finite number"),
        (dict(ISSUE_EXAMPLE, non_ev_load_a={"main": {"L1": float("nan")}}),
         "non_ev_load_a.main.L1.a: Input should be a finite number"),
        (dict(ISSUE_EXAMPLE, circuits=[{"id": "main", "parent": None, "limit_a": float("inf")}]),
         "circuits[0].limit_a: Input should be a finite number"),
        (dict(ISSUE_EXAMPLE, non_ev_load_a={"main": {"L1": True}}),
         'non_ev_load_a.main.L1: expected amps (a number) or {"a": …'),
        (dict(ISSUE_EXAMPLE, evses=[dict(ISSUE_EXAMPLE["evses"][0], max_a=-32)]),  # type: ignore[index]
         "evses[0].max_a: Input should be greater than or equal to 0 (got -32)"),
        (dict(ISSUE_EXAMPLE, site_limit_kw=-1), "site_limit_kw: Input should be greater than or equal to 0 (got -1)"),
        (dict(ISSUE_EXAMPLE, site_limit_kw="50"),
         "site_limit_kw: expected a number, got the string '50' (write it without quotes)"),
        (dict(ISSUE_EXAMPLE, evses=[dict(ISSUE_EXAMPLE["evses"][0], max_a=True)]),  # type: ignore[index]
         "evses[0].max_a: expected a number, got the boolean true"),
        (dict(ISSUE_EXAMPLE, evses=[dict(ISSUE_EXAMPLE["evses"][0], priority=1.5)]),  # type: ignore[index]
         "evses[0].priority: expected a whole number, got 1.5"),
    ],
)
def test_bad_input_gets_one_clear_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: object, expected: str
) -> None:
    code, out, err = run(tmp_path, data, capsys)
    assert code == 2
    assert out == ""
    assert expected.replace("Value error, ", "") in err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


@pytest.mark.slow
def test_reads_standard_input_through_the_installed_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "allocate", "-"],
        input=json.dumps(ISSUE_EXAMPLE), capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["allocations"] == {"cp-01": 32.0}


@pytest.mark.slow
def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # `gateway allocate - | head -0`: nobody reads the answer
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "gateway", "allocate", "-"], input=json.dumps(ISSUE_EXAMPLE).encode(),
            stdout=write_end, stderr=subprocess.PIPE, timeout=60, check=False,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 0
    assert b"Traceback" not in proc.stderr


def test_a_missing_file_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["allocate", str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read" in err
