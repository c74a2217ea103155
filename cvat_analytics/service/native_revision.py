"""ClickHouse's Native format as a client of a given protocol revision reads it over HTTP.

A server answers `client_protocol_version=R` with Native blocks that carry a BlockInfo
header (R > 0) and, from revision 54454, a "custom serialization" byte per column; Go's
clickhouse-go (Grafana's plugin) and clickhouse-connect ask for it. chdb writes Native
for revision 0 only, so its blocks are rewritten here: the column data is copied as
it is, which needs its length, so the types are walked (the ones analysts' queries give;
another is refused with a message saying so).
"""
from __future__ import annotations

import re
import struct

CUSTOM_SERIALIZATION = 54454  # ClickHouse's DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION
BLOCK_INFO = b"\x01\x00\x02\xff\xff\xff\xff\x00"  # is_overflows = 0, bucket_num = -1, end

_FIXED = {
    **dict.fromkeys(("UInt8", "Int8", "Bool", "Enum8", "Nothing"), 1),
    **dict.fromkeys(("UInt16", "Int16", "Date", "Enum16", "BFloat16"), 2),
    **dict.fromkeys(("UInt32", "Int32", "Float32", "Date32", "DateTime", "IPv4", "Decimal32"), 4),
    **dict.fromkeys(("UInt64", "Int64", "Float64", "DateTime64", "Decimal64", "Time", "Time64"), 8),
    **dict.fromkeys(("UInt128", "Int128", "UUID", "IPv6", "Decimal128"), 16),
    **dict.fromkeys(("UInt256", "Int256", "Decimal256"), 32),
}
_NAMED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\s+(?=\S)")


class UnsupportedType(ValueError):
    """A column type this rewrite does not walk."""


def rewrite(native: bytes, revision: int) -> bytes:
    """`native` (revision 0, as chdb writes it) as a client of `revision` reads it."""
    out, pos = bytearray(), 0
    while pos < len(native):
        columns, pos = _leb(native, pos)
        rows, pos = _leb(native, pos)
        out += BLOCK_INFO + _uleb(columns) + _uleb(rows)
        for _ in range(columns):
            name, pos = _string(native, pos)
            type_name, pos = _string(native, pos)
            start = pos
            pos = _column(native, pos, type_name.decode(), rows, top=True)
            out += _uleb(len(name)) + name + _uleb(len(type_name)) + type_name
            if revision >= CUSTOM_SERIALIZATION:
                out += b"\x00"  # the default serialization: the data that follows is unchanged
            out += native[start:pos]
    return bytes(out)


def _column(data: bytes, pos: int, type_name: str, rows: int, top: bool = False) -> int:
    """Where the data of `rows` values of `type_name` starting at `pos` ends."""
    base, args = _split(type_name)
    if base in _FIXED or base == "Decimal":
        return pos + rows * (_decimal_size(args) if base == "Decimal" else _FIXED[base])
    if base == "FixedString":
        return pos + rows * int(args[0])
    if base == "String":
        for _ in range(rows):
            size, pos = _leb(data, pos)
            pos += size
        return pos
    if base == "Nullable":
        return _column(data, pos + rows, args[0], rows)
    if base in ("Array", "Map"):
        if rows == 0:
            return pos
        total = struct.unpack_from("<Q", data, pos + 8 * (rows - 1))[0]
        pos += 8 * rows
        elements = args if base == "Map" else args[:1]
        for element in elements:
            pos = _column(data, pos, element, total)
        return pos
    if base == "Tuple":
        for element in args:
            pos = _column(data, pos, element[_NAMED.match(element).end():] if _NAMED.match(element) else element, rows)
        return pos
    if base == "LowCardinality" and top:
        pos += 8  # the serialization version, written even for no rows
        if rows == 0:
            return pos
        flags = struct.unpack_from("<Q", data, pos)[0]
        keys = struct.unpack_from("<Q", data, pos + 8)[0]
        inner_base, inner_args = _split(args[0])
        pos = _column(data, pos + 16, inner_args[0] if inner_base == "Nullable" else args[0], keys)
        count = struct.unpack_from("<Q", data, pos)[0]
        return pos + 8 + count * (1 << (flags & 0xFF))
    raise UnsupportedType(f"{type_name} cannot be sent in Native format to a client that gives "
                          "client_protocol_version here; cast the column (e.g. toString) or use another FORMAT")


def _split(type_name: str) -> tuple[str, list[str]]:
    """'Map(String, Array(UInt8))' -> ('Map', ['String', 'Array(UInt8)'])."""
    if "(" not in type_name:
        return type_name.strip(), []
    base, inner = type_name.split("(", 1)
    args, depth, quoted, current = [], 0, False, ""
    for char in inner[:-1]:
        if char == "'" and not current.endswith("\\"):
            quoted = not quoted
        if not quoted:
            depth += char == "("
            depth -= char == ")"
            if char == "," and depth == 0:
                args.append(current.strip())
                current = ""
                continue
        current += char
    return base.strip(), args + [current.strip()]


def _decimal_size(args: list[str]) -> int:
    precision = int(args[0])
    return 4 if precision <= 9 else 8 if precision <= 18 else 16 if precision <= 38 else 32


def _leb(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    size, pos = _leb(data, pos)
    return data[pos:pos + size], pos + size
