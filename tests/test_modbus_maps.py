"""Register maps as data: every shipped map loads, bad maps are refused with one clear line, the codec
round-trips every type and word order, and the config names only maps that exist."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.config.modbus import ModbusEndpoint
from gateway.modbus.codec import CodecError, decode, encode, implausible, read_plan
from gateway.modbus.maps import MapError, RegisterMap, load_map, parse_map, shipped_models

CHARGERS = ["abb-terra-ac", "alfen-ng9xx", "generic-charger", "keba-p30", "webasto-next"]
METERS = ["carlo-gavazzi-em24", "eastron-sdm630"]


def test_the_shipped_maps_are_four_real_chargers_a_generic_one_and_two_meters() -> None:
    assert shipped_models() == sorted(CHARGERS + METERS)
    for name in shipped_models():
        m = load_map(name)
        assert m.name == name
        assert m.source
        text = (Path(__file__).parents[1] / "gateway/modbus/maps" / f"{name}.toml").read_text()
        assert text.startswith("#"), f"{name}: the header names the source document"
    for name in CHARGERS:
        m = load_map(name)
        assert m.kind == "charger" and m.registers["setpoint"].writable
        assert m.refresh_every_s is not None and m.failsafe_timeout_s is not None
        assert m.refresh_every_s <= m.failsafe_timeout_s / 2
    for name in METERS:
        assert load_map(name).kind == "meter"


def test_every_map_reads_in_as_few_requests_as_its_device_takes() -> None:
    for name in shipped_models():
        m = load_map(name)
        plan = read_plan(m)
        assert all(b.count <= m.max_read for b in plan), name
        covered = sorted(n for b in plan for n in b.names)
        assert covered == sorted(n for n, r in m.registers.items() if r.readable), name
    assert len(read_plan(load_map("eastron-sdm630"))) == 1
    assert len(read_plan(load_map("alfen-ng9xx"))) == 2
    # the KEBA answers one 32-bit value per request; the EM24 a few registers at a time
    assert all(b.count == 2 for b in read_plan(load_map("keba-p30")))
    assert all(b.count <= 6 for b in read_plan(load_map("carlo-gavazzi-em24")))
    # write-only registers are never read
    names = {n for b in read_plan(load_map("webasto-next")) for n in b.names}
    assert "setpoint" not in names and "watchdog" not in names


# (map, register) -> (table, address, type, scale): what each map says, as checked against the vendor's
# document and a second source (see each file's header). A change here is a change of fact.
FACTS = {
    ("alfen-ng9xx", "voltage_l1"): ("holding", 306, "float32", 1.0),
    ("alfen-ng9xx", "current_l1"): ("holding", 320, "float32", 1.0),
    ("alfen-ng9xx", "power"): ("holding", 344, "float32", 0.001),
    ("alfen-ng9xx", "energy"): ("holding", 374, "float64", 0.001),
    ("alfen-ng9xx", "status"): ("holding", 1201, "string", 1.0),
    ("alfen-ng9xx", "applied_limit"): ("holding", 1206, "float32", 1.0),
    ("alfen-ng9xx", "setpoint"): ("holding", 1210, "float32", 1.0),
    ("alfen-ng9xx", "failsafe_current"): ("holding", 1212, "float32", 1.0),
    ("abb-terra-ac", "status"): ("holding", 0x400C, "uint32", 1.0),
    ("abb-terra-ac", "applied_limit"): ("holding", 0x400E, "uint32", 0.001),
    ("abb-terra-ac", "current_l1"): ("holding", 0x4010, "uint32", 0.001),
    ("abb-terra-ac", "voltage_l1"): ("holding", 0x4016, "uint32", 0.1),
    ("abb-terra-ac", "power"): ("holding", 0x401C, "uint32", 0.001),
    ("abb-terra-ac", "energy"): ("holding", 0x401E, "uint32", 0.001),
    ("abb-terra-ac", "setpoint"): ("holding", 0x4100, "uint32", 0.001),
    ("abb-terra-ac", "failsafe_timeout"): ("holding", 0x4106, "uint16", 1.0),
    ("abb-terra-ac", "failsafe_current"): ("holding", 0x4109, "uint16", 1.0),
    ("keba-p30", "status"): ("holding", 1000, "uint32", 1.0),
    ("keba-p30", "current_l1"): ("holding", 1008, "uint32", 0.001),
    ("keba-p30", "power"): ("holding", 1020, "uint32", 1e-6),
    ("keba-p30", "energy"): ("holding", 1036, "uint32", 1e-4),
    ("keba-p30", "voltage_l1"): ("holding", 1040, "uint32", 1.0),
    ("keba-p30", "setpoint"): ("holding", 5004, "uint16", 0.001),
    ("keba-p30", "enable"): ("holding", 5014, "uint16", 1.0),
    ("keba-p30", "failsafe_current"): ("holding", 5016, "uint16", 0.001),
    ("keba-p30", "failsafe_timeout"): ("holding", 5018, "uint16", 1.0),
    ("webasto-next", "status"): ("input", 1000, "uint16", 1.0),
    ("webasto-next", "current_l1"): ("input", 1008, "uint16", 0.001),
    ("webasto-next", "power"): ("input", 1020, "uint32", 0.001),
    ("webasto-next", "energy"): ("input", 1036, "uint32", 0.001),
    ("webasto-next", "failsafe_current"): ("holding", 2000, "uint16", 1.0),
    ("webasto-next", "failsafe_timeout"): ("holding", 2002, "uint16", 1.0),
    ("webasto-next", "setpoint"): ("holding", 5004, "uint16", 1.0),
    ("webasto-next", "watchdog"): ("holding", 6000, "uint16", 1.0),
    ("eastron-sdm630", "voltage_l1"): ("input", 0x00, "float32", 1.0),
    ("eastron-sdm630", "current_l1"): ("input", 0x06, "float32", 1.0),
    ("eastron-sdm630", "power_l1"): ("input", 0x0C, "float32", 0.001),
    ("eastron-sdm630", "power"): ("input", 0x34, "float32", 0.001),
    ("eastron-sdm630", "frequency"): ("input", 0x46, "float32", 1.0),
    ("eastron-sdm630", "import_energy"): ("input", 0x48, "float32", 1.0),
    ("eastron-sdm630", "export_energy"): ("input", 0x4A, "float32", 1.0),
    ("carlo-gavazzi-em24", "voltage_l1"): ("input", 0x00, "int32", 0.1),
    ("carlo-gavazzi-em24", "current_l1"): ("input", 0x0C, "int32", 0.001),
    ("carlo-gavazzi-em24", "power_l1"): ("input", 0x12, "int32", 0.0001),
    ("carlo-gavazzi-em24", "power"): ("input", 0x28, "int32", 0.0001),
    ("carlo-gavazzi-em24", "frequency"): ("input", 0x33, "int16", 0.1),
    ("carlo-gavazzi-em24", "import_energy"): ("input", 0x34, "int32", 0.1),
    ("carlo-gavazzi-em24", "export_energy"): ("input", 0x4E, "int32", 0.1),
}


@pytest.mark.parametrize(("where", "fact"), sorted(FACTS.items()))
def test_the_checked_facts_of_each_shipped_map(where: tuple[str, str], fact: tuple[str, int, str, float]) -> None:
    model, name = where
    r = load_map(model).registers[name]
    assert (r.table.value, r.address, r.type.value) == fact[:3]
    assert r.scale == pytest.approx(fact[3])


def test_word_order_and_status_tables_as_checked() -> None:
    assert load_map("carlo-gavazzi-em24").word_order == "little"
    assert all(load_map(n).word_order == "big" for n in shipped_models() if n != "carlo-gavazzi-em24")
    webasto = load_map("webasto-next").status
    assert webasto["3"] == "charging" and webasto["0"] == "available" and webasto["7"] == "faulted"
    assert load_map("abb-terra-ac").status["4"] == "charging"
    assert load_map("keba-p30").status["3"] == "charging" and load_map("keba-p30").refresh_failsafe_timeout


GOOD = """
name = "mine"
kind = "charger"
vendor = "x"
product = "y"
source = "z"
failsafe_timeout_s = 10
[registers.setpoint]
table = "holding"
address = 10
type = "uint16"
access = "w"
"""


def test_a_user_map_file_loads_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(GOOD)
    m = load_map(str(path))
    assert m.name == "mine" and m.refresh_every_s == 5


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('address = 10', 'address = 70000'), "registers.setpoint.address"),
        (('access = "w"', 'access = "r"'), "writable setpoint"),
        (('type = "uint16"', 'type = "uint17"'), "registers.setpoint.type"),
        (('kind = "charger"', 'kind = "meter"'), "not a meter register"),
        (('vendor = "x"', 'vendr = "x"'), "unknown key"),
        (('table = "holding"', 'table = "input"'), "input registers cannot be written"),
        (('[registers.setpoint]', '[registers.setpoint]\nscale = 0'), "scale must not be 0"),
        (('source = "z"', ''), "source: required key is missing"),
        (('failsafe_timeout_s = 10', 'failsafe_timeout_s = 10\nrefresh_s = 6'), "at most half of failsafe_timeout_s"),
        (('failsafe_timeout_s = 10', 'failsafe_timeout_s = 10\nrefresh_failsafe_timeout = true'),
         "needs a registers.failsafe_timeout"),
        (('failsafe_timeout_s = 10', 'failsafe_timeout_s = 10\nmax_read = 2\n'
          '[registers.energy]\ntable = "holding"\naddress = 20\ntype = "float64"'),
         "registers.energy: spans 4 registers, more than max_read = 2"),
        (('[registers.setpoint]', '[registers.curent_l1]'), "not a charger register"),
    ],
)
def test_a_bad_map_is_refused_with_one_line_naming_the_key(change: tuple[str, str], expected: str) -> None:
    text = GOOD.replace(*change)
    with pytest.raises(MapError) as caught:
        parse_map(text, "mine.toml")
    assert any(expected in p and p.startswith("mine.toml: ") for p in caught.value.problems), caught.value.problems


def test_overlapping_registers_and_bad_toml_are_refused() -> None:
    text = GOOD + (
        '[registers.watchdog]\ntable = "holding"\naddress = 10\ntype = "uint16"\naccess = "w"\nwrite_value = 1\n'
    )
    with pytest.raises(MapError, match="overlaps"):
        parse_map(text, "m.toml")
    with pytest.raises(MapError, match="not valid TOML"):
        parse_map("name = ", "m.toml")


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(MapError) as caught:
        load_map("abb-terra")
    (line,) = caught.value.problems
    assert "unknown model 'abb-terra'" in line and "abb-terra-ac" in line and "eastron-sdm630" in line


def test_config_endpoint_rejects_unknown_model_and_missing_file(tmp_path: Path) -> None:
    assert ModbusEndpoint(model="webasto-next", host="10.0.0.5").kind == "charger"
    with pytest.raises(ValidationError, match="known: abb-terra-ac"):
        ModbusEndpoint(model="tesla-wall-connector", host="10.0.0.5")
    with pytest.raises(ValidationError, match="cannot read register map"):
        ModbusEndpoint(model=str(tmp_path / "missing.toml"), host="10.0.0.5")
    good = tmp_path / "mine.toml"
    good.write_text(GOOD)
    assert ModbusEndpoint(model=str(good), host="h").model == str(good)


def _map(reg: str, word_order: str = "big") -> RegisterMap:
    return parse_map(
        f'name = "t"\nkind = "meter"\nvendor = "v"\nproduct = "p"\nsource = "s"\nword_order = "{word_order}"\n'
        f'[registers.current_l1]\ntable = "input"\naddress = 0\n{reg}\n',
        "t.toml",
    )


@pytest.mark.parametrize("word_order", ["big", "little"])
@pytest.mark.parametrize(
    ("reg", "value"),
    [
        ('type = "float32"', 16.5),
        ('type = "float64"', -1234.25),
        ('type = "int16"\nscale = 0.01', -12.34),
        ('type = "uint16"\nscale = 0.001', 32.0),
        ('type = "int32"\nscale = 0.001', -7.5),
        ('type = "uint32"', 4000000.0),
        ('type = "int64"', -3.0),
        ('type = "uint64"', 12.0),
    ],
)
def test_codec_round_trips_every_type_and_word_order(reg: str, value: float, word_order: str) -> None:
    m = _map(reg, word_order)
    r = m.registers["current_l1"]
    regs = encode(m, r, value)
    assert len(regs) == r.width
    assert decode(m, r, regs) == pytest.approx(value)


def test_codec_refuses_values_that_do_not_fit() -> None:
    m = _map('type = "uint16"\nscale = 0.001')
    with pytest.raises(CodecError, match="does not fit"):
        encode(m, m.registers["current_l1"], 70.0)  # 70000 mA > 65535
    with pytest.raises(CodecError, match="does not fit"):
        encode(m, m.registers["current_l1"], -1.0)


def test_word_order_is_what_the_map_says() -> None:
    big, little = _map('type = "int32"', "big"), _map('type = "int32"', "little")
    assert encode(big, big.registers["current_l1"], 0x10002) == [0x0001, 0x0002]
    assert encode(little, little.registers["current_l1"], 0x10002) == [0x0002, 0x0001]


def test_a_packed_field_is_shifted_and_masked() -> None:
    m = load_map("abb-terra-ac")
    r = m.registers["status"]
    assert decode(m, r, [0x0000, 0x0481]) == 4.0  # state in bits 8-14; the low byte is something else


def test_sanity_check_catches_swapped_words() -> None:
    m = load_map("eastron-sdm630")
    v = m.registers["voltage_l1"]
    regs = encode(m, v, 230.0)
    assert implausible(m, "voltage_l1", decode(m, v, regs)) is None
    why = implausible(m, "voltage_l1", decode(m, v, regs[::-1]))
    assert why is not None and "denormal" in why
    e = m.registers["import_energy"]
    small = decode(m, e, encode(m, e, 9.9e-7))  # a session a millisecond old: small, and real
    assert implausible(m, "import_energy", small) is None
    assert implausible(m, "frequency", 0.0) is not None  # a meter on a live grid reads 40-70 Hz


# values travel as floats, so 64-bit registers are exact up to 2**53 (an energy counter in Wh: 9e15 Wh)
INT_RANGES = {"int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1), "int32": (-(2**31), 2**31 - 1),
              "uint32": (0, 2**32 - 1), "int64": (-(2**53), 2**53), "uint64": (0, 2**53)}


# no per-example deadline: on a busy shared machine one slow example must not fail a pure function's test
@settings(deadline=None)
@given(data=st.data(), kind=st.sampled_from(sorted(INT_RANGES)), word_order=st.sampled_from(["big", "little"]))
def test_any_integer_that_fits_round_trips(data: st.DataObject, kind: str, word_order: str) -> None:
    lo, hi = INT_RANGES[kind]
    raw = data.draw(st.integers(lo, hi))
    m = _map(f'type = "{kind}"', word_order)
    r = m.registers["current_l1"]
    assert decode(m, r, encode(m, r, float(raw))) == float(raw)


@settings(deadline=None)
@given(value=st.floats(allow_nan=False, allow_infinity=False, width=32), word_order=st.sampled_from(["big", "little"]))
def test_any_float32_round_trips(value: float, word_order: str) -> None:
    m = _map('type = "float32"', word_order)
    r = m.registers["current_l1"]
    assert decode(m, r, encode(m, r, value)) == value
