"""The ACN benchmark's translation layer: acnportal's phasor constraints and sessions into allocator inputs.

Synthetic sessions only (the ACN-Data file is benchmark input, never test input). The geometry tests need
nothing but the gateway; the simulation tests need acnportal (the `bench` extra) and skip without it.
"""

from __future__ import annotations

import cmath
import math
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/ is not an installed package

from bench.acn_adapter import Piece, Rates, evse_state, pieces_of_row, snap_to_allowed

ANGLES = {"ab": 30.0, "bc": -90.0, "ca": 150.0}
# The Caltech transformer rows in terms of the three line-to-line groups (acnportal's caltech_acn).
ROWS = {
    "secondary": {"ab": 1.0, "ca": -1.0},
    "primary": {"ab": 0.25, "bc": 0.25, "ca": -0.5},
    "pod": {"ab": 1.0},
}


def phasor(coefs: dict[str, float], amps: dict[str, float]) -> float:
    return abs(sum(c * amps[s] * cmath.exp(1j * math.radians(ANGLES[s])) for s, c in coefs.items()))


def meets(pieces: list[Piece], amps: dict[str, float]) -> bool:
    return all(sum(c * amps[s] for s, c in p.coefs.items()) <= p.limit + 1e-9 for p in pieces)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(ROWS)),
    st.fixed_dictionaries({s: st.floats(0, 200) for s in ANGLES}),
    st.floats(1, 300),
    st.sampled_from([0.5, 2.0, 10.0]),
)
def test_currents_meeting_every_piece_meet_the_phasor_limit(row: str, amps: dict[str, float], limit: float,
                                                            arc: float) -> None:
    pieces = pieces_of_row(row, ROWS[row], ANGLES, limit, arc)
    assert all(c > 0 for p in pieces for c in p.coefs.values()), "negative coefficients would make pausing unsafe"
    if meets(pieces, amps):
        assert phasor(ROWS[row], amps) <= limit * (1 + 1e-9)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["secondary", "pod"]), st.fixed_dictionaries({s: st.floats(0, 1) for s in ANGLES}))
def test_the_pieces_give_up_almost_nothing_where_no_phase_cancels(row: str, mix: dict[str, float]) -> None:
    # Scale the mix onto the circle: the pieces must accept it once shrunk by cos(half an arc).
    size = phasor(ROWS[row], mix)
    if size < 1e-6:
        return
    pieces = pieces_of_row(row, ROWS[row], ANGLES, 100.0, 2.0)
    scaled = {s: a * 100.0 / size * math.cos(math.radians(1.0)) * (1 - 1e-9) for s, a in mix.items()}
    assert meets(pieces, scaled)


def test_a_row_with_every_station_at_one_angle_is_one_exact_sum() -> None:
    pieces = pieces_of_row("CC Pod", {"x": 1.0, "y": 1.0}, {"x": 30.0, "y": 30.0}, 80.0)
    assert len(pieces) == 1 and pieces[0].limit == 80.0 and pieces[0].coefs == {"x": 1.0, "y": 1.0}


def test_a_session_a_few_wh_short_still_gets_a_usable_pilot() -> None:
    now = datetime(2020, 1, 13, 9, tzinfo=UTC)
    rates = Rates(0.0, 32.0, 0.1, None)
    almost = evse_state("CA-1", rates, 208.0, 0.01, now + timedelta(hours=2), timedelta(minutes=5))
    assert almost.min_a == 6.0 and almost.want_a == 6.0
    thirsty = evse_state("CA-1", rates, 208.0, 30.0, now + timedelta(hours=2), timedelta(minutes=5))
    assert thirsty.want_a is None and thirsty.max_a == 32.0 and thirsty.energy_needed_kwh == 30.0


def test_pilots_are_snapped_down_to_what_a_finite_rate_charger_accepts() -> None:
    clipper = Rates(8.0, 32.0, 8.0, (8.0, 16.0, 24.0, 32.0))
    assert [snap_to_allowed(a, clipper) for a in (0.0, 7.9, 8.0, 23.5, 40.0)] == [0.0, 0.0, 8.0, 16.0, 32.0]
    basic = Rates(0.0, 32.0, 0.1, None)
    assert snap_to_allowed(12.3, basic) == 12.3 and snap_to_allowed(40.0, basic) == 32.0


# ------------------------------------------------------------------------------- against acnportal itself


def _synthetic_events(n: int, period_min: float) -> object:
    from acnportal.acnsim.events import EventQueue, PluginEvent
    from acnportal.acnsim.models.battery import Battery
    from acnportal.acnsim.models.ev import EV
    from acnportal.acnsim.network.sites import caltech_acn

    stations = caltech_acn(basic_evse=True).station_ids
    evs = []
    for k in range(n):
        arrival = k % 6
        departure = arrival + 12 + (7 * k) % 20
        kwh = 2.0 + (5 * k) % 7
        evs.append(EV(arrival, departure, kwh, stations[(k * 7) % len(stations)], f"s{k}",
                      Battery(kwh, 0, 6.656)))
    return EventQueue([PluginEvent(ev.arrival, ev) for ev in evs])


@pytest.mark.parametrize("basic", [True, False])
def test_on_acnportals_caltech_model_the_pilots_pass_its_own_check(basic: bool) -> None:
    pytest.importorskip("acnportal", reason="acnportal (the bench extra) is not installed")
    import numpy as np
    from acnportal.acnsim import Simulator, analysis
    from acnportal.acnsim.network.sites import caltech_acn

    from bench.acn import GatewayAlgorithm

    network = caltech_acn(basic_evse=basic, voltage=208, transformer_cap=30)
    start = datetime(2020, 1, 13, 8, tzinfo=UTC)
    sim = Simulator(network, GatewayAlgorithm(), _synthetic_events(16, 5), start, period=5, verbose=False)
    sim.run()
    pilots = sim.pilot_signals
    assert network.is_feasible(pilots)
    assert not np.any((pilots > 1e-9) & (pilots < 6.0 - 1e-9))
    if not basic:  # finite-rate chargers: every pilot is one they accept
        for s, _sid in enumerate(network.station_ids):
            allowed = set(network.allowable_rates[s]) | {0.0}
            assert all(any(abs(p - a) < 1e-6 for a in allowed) for p in pilots[s])
    from acnportal.algorithms import SortedSchedulingAlgo, earliest_deadline_first

    edf_network = caltech_acn(basic_evse=basic, voltage=208, transformer_cap=30)
    edf = Simulator(edf_network, SortedSchedulingAlgo(earliest_deadline_first), _synthetic_events(16, 5), start,
                    period=5, verbose=False)
    edf.run()
    ours, theirs = analysis.total_energy_delivered(sim), analysis.total_energy_delivered(edf)
    assert ours >= 0.95 * theirs, (ours, theirs)


def test_a_demand_response_derating_reaches_our_scheduler_through_the_constraint_set() -> None:
    pytest.importorskip("acnportal", reason="acnportal (the bench extra) is not installed")
    import numpy as np
    from acnportal.acnsim import Simulator
    from acnportal.acnsim.network.sites import caltech_acn

    from bench.acn import Derated, GatewayAlgorithm, cap_rows

    network = caltech_acn(basic_evse=True, voltage=208, transformer_cap=60)
    full = np.array(network.magnitudes, dtype=float)
    rows = cap_rows(60)
    assert rows and all(network.constraint_index[r].startswith(("Primary", "Secondary")) for r in rows)
    start = datetime(2020, 1, 13, 8, tzinfo=UTC)
    sim = Simulator(network, Derated(GatewayAlgorithm(), lambda _: 0.5, rows), _synthetic_events(16, 5), start,
                    period=5, verbose=False)
    sim.run()
    halved = full.copy()
    halved[rows] *= 0.5
    network.magnitudes = halved
    assert network.is_feasible(sim.pilot_signals)
    assert np.abs(network.constraint_current(sim.pilot_signals))[rows].max() > 0.9 * halved[rows].max()



def test_the_offline_bound_with_a_met_share() -> None:
    pytest.importorskip("acnportal", reason="acnportal (the bench extra) is not installed")
    from acnportal.acnsim.network.sites import caltech_acn

    from bench.acn_bound import energy_bound_kwh

    network = caltech_acn(basic_evse=True, voltage=208, transformer_cap=1000)  # only the 80 A pod binds
    pod = ["CA-322", "CA-493", "CA-496", "CA-320"]  # the CC pod, every station at one angle: exact
    # 12 periods of 5 min: 32 A carries 6.656 kWh per station, the pod's 80 A 16.64 kWh in all.
    sessions = [(pod[0], 0, 12, 9.0), (pod[1], 0, 12, 3.0), (pod[2], 0, 12, 3.0), (pod[3], 0, 12, 1.0)]
    full = 6.656 + 3.0 + 3.0 + 1.0
    plain = energy_bound_kwh(network, sessions, 5, 208, 32)
    assert plain == pytest.approx(full, abs=1e-3)
    assert energy_bound_kwh(network, sessions, 5, 208, 32, min_met=0.0) == pytest.approx(plain, abs=1e-3)
    assert energy_bound_kwh(network, sessions, 5, 208, 32, min_met=0.75) == pytest.approx(full, abs=1e-3)
    assert math.isnan(energy_bound_kwh(network, sessions, 5, 208, 32, min_met=1.0))  # 9 kWh cannot fit
    # Now the pod binds: 19 kWh asked of 16.64. All four cannot be met; three can (6 + 6 + 1), and the
    # fourth still takes the rest, so meeting three costs no energy here.
    tight = [(pod[0], 0, 12, 6.0), (pod[1], 0, 12, 6.0), (pod[2], 0, 12, 6.0), (pod[3], 0, 12, 1.0)]
    assert energy_bound_kwh(network, tight, 5, 208, 32) == pytest.approx(16.64, abs=1e-3)
    assert math.isnan(energy_bound_kwh(network, tight, 5, 208, 32, min_met=1.0))
    assert energy_bound_kwh(network, tight, 5, 208, 32, min_met=0.75) == pytest.approx(16.64, abs=1e-3)


def test_the_offline_bound_that_keeps_the_6_a_minimum() -> None:
    pytest.importorskip("acnportal", reason="acnportal (the bench extra) is not installed")
    from acnportal.acnsim.network.sites import caltech_acn

    from bench.acn_bound import energy_bound_kwh, j1772_bound_kwh

    network = caltech_acn(basic_evse=True, voltage=208, transformer_cap=1000)
    pod = ["CA-322", "CA-493", "CA-496", "CA-320"]
    # 6 A for one 5 min period is 0.104 kWh: a car asking 0.05 kWh cannot take any of it without going over
    # what it asked. The LP bound counts its 0.05 kWh (at 3 A); with the 6 A minimum nothing is deliverable.
    sip = [(pod[0], 0, 12, 0.05)]
    assert energy_bound_kwh(network, sip, 5, 208, 32) == pytest.approx(0.05, abs=1e-6)
    assert j1772_bound_kwh(network, sip, 5, 208, 32) == pytest.approx((0.0, 0.0), abs=1e-6)
    # Where the minimum costs nothing, both are the LP bound: the pod's 80 A over 12 periods.
    tight = [(pod[0], 0, 12, 6.0), (pod[1], 0, 12, 6.0), (pod[2], 0, 12, 6.0), (pod[3], 0, 12, 1.0)]
    assert j1772_bound_kwh(network, tight, 5, 208, 32) == pytest.approx((16.64, 16.64), abs=1e-2)
