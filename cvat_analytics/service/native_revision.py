"""ClickHouse's Native format as a client of a given protocol revision reads it over HTTP.

A server answers `client_protocol_version=R` with Native blocks that carry a BlockInfo
header (R > 0) and, from revision 54454, a "custom serialization" byte per column; Go's
clickhouse-go (Grafana's plugin) and clickhouse-connect ask for it. chdb writes Native
for revision 0 only (no setting asks it for another), so its blocks are rewritten here,
one at a time as chdb streams them (one block a chunk), the column data copied as it is.

Walking values in Python holds the GIL that ingest needs (two answers of many Strings took
ingest from 4,200 to 500 events/s), so after the first block of an answer no value is
walked: below revision 54454 a block only gains its BlockInfo and is copied whole; from
it, a column's end is needed to place the next column's byte: the last column runs to the
block's end, and another ends where the next column's header (its name and type, the same
in every block) starts, found by bytes.find when it occurs once in the rest of the block.
Only when a value holds those bytes too is the column walked (bounded by the answer's
size, embedded.sql.max_answer_bytes). The first block (8192 rows at most) is walked whole,
to learn the headers, check every column's type (another is refused with a message saying
so) and that a chunk is one block.
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


class Rewriter:
    """The chunks of one answer, in order, rewritten for a client of `revision`. `streamed`:
    chdb's streamed chunks, one block each; else one chunk of any number of blocks, walked whole."""

    def __init__(self, revision: int, streamed: bool = True):
        self.revision, self.streamed = revision, streamed
        self.checked = False  # a first block was walked whole: its types are known to be walkable
        self.headers: list[bytes] = []  # each column's name and type, as a block holds them

    def __call__(self, chunk: bytes) -> bytes:
        if self.checked and self.revision < CUSTOM_SERIALIZATION:
            return BLOCK_INFO + chunk  # nothing inside a block changes below 54454
        out = bytearray()
        pos = self._block(chunk, 0, out)
        if pos != len(chunk) and self.streamed:
            raise ValueError(f"a streamed Native chunk holds {len(chunk) - pos} bytes after its block")
        while pos < len(chunk):
            pos = self._block(chunk, pos, out)
        self.checked = self.streamed
        return bytes(out)

    def _block(self, data: bytes, pos: int, out: bytearray) -> int:
        """The block at `pos` appended to `out`; where it ends."""
        columns, pos = _leb(data, pos)
        rows, pos = _leb(data, pos)
        out += BLOCK_INFO + _uleb(columns) + _uleb(rows)
        for i in range(columns):
            start = pos
            _, pos = _string(data, pos)
            type_name, pos = _string(data, pos)
            out += data[start:pos]
            if self.revision >= CUSTOM_SERIALIZATION:
                out += b"\x00"  # the default serialization: the data that follows is unchanged
            if not self.checked:
                self.headers.append(data[start:pos])
                end = _column(data, pos, type_name.decode(), rows, top=True)
            elif i == columns - 1:
                end = len(data)  # one block a chunk: the last column runs to the chunk's end
            else:
                end = self._next_header(data, pos, i + 1)
                if end < 0:
                    end = _column(data, pos, type_name.decode(), rows, top=True)
            out += data[pos:end]
            pos = end
        return pos

    def _next_header(self, data: bytes, pos: int, column: int) -> int:
        """Where column `column`'s header starts, found by searching (in C) from `pos` for its
        bytes, or -1: a value that holds them too makes two matches, and then the data is walked."""
        found = data.find(self.headers[column], pos)
        if found >= 0 and data.find(self.headers[column], found + 1) < 0:
            return found  # the header is in the block once: there
        return -1


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
        total = struct.unpack_from("<Q", data, pos + 8 * (rows - 1))[0] if rows else 0
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
        inner_base, inner_args = _split(args[0])
        inner = inner_args[0] if inner_base == "Nullable" else args[0]
        if rows == 0:
            _column(data, pos, inner, 0)  # its type is checked all the same
            return pos
        flags = struct.unpack_from("<Q", data, pos)[0]
        keys = struct.unpack_from("<Q", data, pos + 8)[0]
        pos = _column(data, pos + 16, inner, keys)
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
