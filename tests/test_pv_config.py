"""The `[pv]` section and the charger's `mode`: every mistake is one line naming its key."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import ConfigError, parse_config


def doc(**pv: Any) -> dict[str, Any]:
    return {
        "site": {"wiring": "three-phase-400/230", "service_breaker_a": 63},
        "circuits": [{"id": "garage", "breaker_a": 32}],
        "chargers": [{"id": "ev", "protocol": "ocpp1.6", "phases": "L1-L2-L3", "max_a": 16, "mode": "pv"}],
        "meters": [{"id": "grid", "pv_kw": 10, "modbus": {"model": "eastron-sdm630", "host": "192.0.2.1"}},
                   {"id": "sub", "circuit": "garage", "pv_kw": 10,
                    "modbus": {"model": "eastron-sdm630", "host": "192.0.2.2"}}],
        "pv": {"grid_meter": "grid", **pv},
    }


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.problems


def test_a_sound_pv_config_loads_with_its_defaults() -> None:
    config = parse_config(doc(inverters=[{"id": "roof", "host": "192.0.2.9"}], import_cap_kw=0))
    assert config.pv.import_cap_kw == 0 and config.pv.start_delay_s == 60 and config.pv.stop_delay_s == 180
    assert config.pv.inverters[0].port == 502 and config.pv.inverters[0].unit == 1
    assert config.chargers[0].mode == "pv"


def test_chargers_default_to_plan_and_need_no_pv_section() -> None:
    data = doc()
    del data["pv"]
    del data["chargers"][0]["mode"]
    assert parse_config(data).chargers[0].mode == "plan"


@pytest.mark.parametrize(("change", "line"), [
    ({"grid_meter": "gird"}, "pv.grid_meter: no meter 'gird' (meters: grid, sub)"),
    ({"grid_meter": "sub"}, "pv.grid_meter: meter 'sub' is on circuit 'garage', not at the service entrance"),
    ({"grid_meter": None}, "chargers[0].mode: 'pv' needs [pv] grid_meter"),
    ({"grid_meter": None, "import_cap_kw": 3}, "pv.import_cap_kw: needs [pv] grid_meter"),
    ({"inverters": [{"id": "a", "host": "h"}, {"id": "a", "host": "h2"}]}, "pv.inverters[1].id: 'a' is used twice"),
    ({"inverters": [{"id": "a", "host": "h", "poll_s": 5, "stale_after_s": 5}]},
     "pv.inverters[0].stale_after_s: 5 s is not longer than poll_s"),
    ({"start_delay": 30}, "pv.start_delay: unknown key (did you mean 'start_delay_s'?)"),
    ({"import_cap_kw": -1}, "pv.import_cap_kw:"),
])
def test_each_mistake_is_one_line_naming_its_key(change: dict[str, Any], line: str) -> None:
    data = doc()
    data["pv"].update(change)
    if data["pv"]["grid_meter"] is None:
        del data["pv"]["grid_meter"]
        if "import_cap_kw" in change:
            data["chargers"][0]["mode"] = "now"
    found = problems(data)
    assert any(p.startswith(line) for p in found), found
    assert len(found) == 1, found


def test_a_grid_meter_that_may_not_read_export_is_refused() -> None:
    data = doc()
    data["meters"][0]["pv_kw"] = 0
    assert problems(data) == ["pv.grid_meter: meter 'grid' has pv_kw = 0, so any export it reads is taken for a "
                              "fault (and gives no surplus); set its pv_kw to the PV's peak, kW"]


def test_an_unknown_mode_names_the_four() -> None:
    data = doc()
    data["chargers"][0]["mode"] = "solar"
    assert problems(data) == ["chargers[0].mode: Input should be 'now', 'pv', 'minpv' or 'plan' (got 'solar')"]
