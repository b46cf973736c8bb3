"""Registers ⇄ values for one map entry: type, word order and scale, using pymodbus's converters.

Also the plan of reads (which registers one request can fetch together) and the sanity check on decoded
values that catches a map with the wrong word order before its numbers reach the allocator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pymodbus.client import AsyncModbusTcpClient

from gateway.modbus.maps import PLAUSIBLE, TINY, Register, RegisterMap, RegType, Table

_DT = AsyncModbusTcpClient.DATATYPE
_DATATYPE = {
    RegType.INT16: _DT.INT16,
    RegType.UINT16: _DT.UINT16,
    RegType.INT32: _DT.INT32,
    RegType.UINT32: _DT.UINT32,
    RegType.INT64: _DT.INT64,
    RegType.UINT64: _DT.UINT64,
    RegType.FLOAT32: _DT.FLOAT32,
    RegType.FLOAT64: _DT.FLOAT64,
    RegType.STRING: _DT.STRING,
}
MAX_READ = 120  # registers per request: under the protocol's 125 with room for devices that cap lower

Value = float | str


class CodecError(ValueError):
    """A value cannot be encoded for a register (out of its type's range)."""


def decode(m: RegisterMap, r: Register, regs: list[int]) -> Value:
    raw = AsyncModbusTcpClient.convert_from_registers(regs, _DATATYPE[r.type], word_order=m.word_order_of(r))
    if r.type is RegType.STRING:
        return str(raw).replace("\x00", "").strip()
    assert isinstance(raw, int | float)
    if isinstance(raw, int) and (r.shift or r.mask is not None):
        raw >>= r.shift
        if r.mask is not None:
            raw &= r.mask
    return float(raw) * r.scale


def encode(m: RegisterMap, r: Register, value: float) -> list[int]:
    if r.type is RegType.STRING:
        raise CodecError("cannot write a number to a string register")
    raw: float | int = value / r.scale
    if r.type not in (RegType.FLOAT32, RegType.FLOAT64):
        raw = round(raw) << r.shift
        bits = 16 * (r.width)
        signed = r.type.value.startswith("int")
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        if not lo <= raw <= hi:
            raise CodecError(f"{value:g} does not fit a {r.type.value} register with scale {r.scale:g}")
    elif not math.isfinite(raw):
        raise CodecError(f"{value!r} is not a finite number")
    return AsyncModbusTcpClient.convert_to_registers(raw, _DATATYPE[r.type], word_order=m.word_order_of(r))


def implausible(m: RegisterMap, name: str, value: Value) -> str | None:
    """Why a decoded value cannot be a real reading (None if it can)."""
    if isinstance(value, str):
        return None
    unit = m.quantity(name)
    if not math.isfinite(value):
        return f"{name} = {value} is not a number"
    if value != 0 and abs(value) < TINY:
        return f"{name} = {value:.3g} {unit} is denormal-tiny"
    lo, hi = PLAUSIBLE.get(unit, (-math.inf, math.inf))
    if not lo <= value <= hi:
        return f"{name} = {value:.6g} {unit} is outside {lo:g}..{hi:g}"
    return None


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: `count` registers of `table` from `address`, covering `names`."""

    table: Table
    address: int
    count: int
    names: tuple[str, ...]


def read_plan(m: RegisterMap, names: list[str] | None = None) -> list[Block]:
    """Group the readable registers (or just `names`) into as few requests as the map allows."""
    wanted = [
        (r.table, r.address, r.width, n)
        for n, r in m.registers.items()
        if r.readable and (names is None or n in names)
    ]
    wanted.sort()
    blocks: list[Block] = []
    for table, address, width, name in wanted:
        if blocks:
            last = blocks[-1]
            gap = address - (last.address + last.count)
            end = address + width
            if last.table is table and gap <= m.max_gap and end - last.address <= min(MAX_READ, m.max_read):
                blocks[-1] = Block(table, last.address, max(end, last.address + last.count) - last.address,
                                   (*last.names, name))
                continue
        blocks.append(Block(table, address, width, (name,)))
    return blocks


def decode_block(m: RegisterMap, block: Block, regs: list[int]) -> dict[str, Value]:
    out: dict[str, Value] = {}
    for name in block.names:
        r = m.registers[name]
        start = r.address - block.address
        out[name] = decode(m, r, regs[start : start + r.width])
    return out
