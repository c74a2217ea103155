"""Read CVAT's event CSV export (and ours) back into event dicts for the importer.

CVAT writes the file with Python's csv module: minimal quoting, None as an empty
field, timestamps as `str(datetime)` ("2024-01-01 12:00:00.123000+00:00", or
"2024-01-01 12:00:00+00:00" when the microseconds are 0). Our export writes
ClickHouse's CSV: every string quoted, NULL as an empty unquoted field, an empty
string as `""`, timestamps "2024-01-01 12:00:00.123". Both are RFC 4180.

An unquoted empty field is None; a quoted empty field is '' (Python's csv module
on 3.11 cannot tell the two apart, hence the small parser below), so our own
export comes back exactly. Ids and counts become ints, the timestamp becomes
"YYYY-MM-DD HH:MM:SS.mmm" UTC, and the payload stays text. A value that does
not convert is passed on as it is, for the event contract to report with its
line number.
"""
from __future__ import annotations

import re
from typing import Iterator, TextIO

from .times import parse_utc, sql_text


_FIELD = re.compile(r'"((?:[^"]|"")*)"|([^,"\r\n]*)')
_DIGITS = re.compile(r"[0-9]{1,20}", re.ASCII)
_TS = re.compile(
    r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?\s*(Z|[+-]\d{2}:?\d{2})?", re.ASCII)


class CsvError(ValueError):
    def __init__(self, line: int, problem: str):
        self.line = line
        super().__init__(f"line {line}: {problem}")


def header_names(spec: dict) -> list[str]:
    return [c["name"] for c in spec["events"]["columns"]]


def _split_header(line: str) -> list[str]:
    return [f.strip().strip('"') for f in line.strip().lstrip("\ufeff").split(",")]


def header_columns(first_line: str, spec: dict) -> list[str] | None:
    """The columns a CVAT export's header names, or None when it is not one. CVAT's own
    export before 2.66 is `SELECT *`: on a table that has remote_addr (migration 0015, or
    CVAT 2.66's init.py) its CSV ends with that column too."""
    names, got = header_names(spec), _split_header(first_line)
    return got if got in (names, names + ["remote_addr"]) else None


def is_cvat_csv(first_line: str, spec: dict | None = None) -> bool:
    """Whether a file's first line is the header of CVAT's export (the events column names).

    Without a spec, CVAT's 18 columns. Quoted names (ClickHouse's CSVWithNames) count too."""
    if spec is None:
        from cvat_analytics_generator.spec import DEFAULT_SPEC, load_spec
        spec = load_spec(DEFAULT_SPEC)
    return header_columns(first_line, spec) is not None


def parse_record(record: str, line: int) -> list[str | None]:
    """One CSV record (newline stripped): unquoted empty -> None, quoted -> its text."""
    fields: list[str | None] = []
    pos, end = 0, len(record)
    while True:
        m = _FIELD.match(record, pos)
        if m.group(1) is not None:
            fields.append(m.group(1).replace('""', '"'))
        else:
            text = m.group(2)
            fields.append(text if text != "" else None)
        pos = m.end()
        if pos >= end:
            return fields
        if record[pos] != ",":
            raise CsvError(line, f"malformed CSV near column {len(fields)}: {record[pos:pos + 20]!r}")
        pos += 1
        if pos == end:
            fields.append(None)
            return fields


def _records(stream: TextIO) -> Iterator[tuple[int, str]]:
    """(first line number, record text) with quoted newlines joined back."""
    lineno = 0
    pending: list[str] = []
    start = 0
    quotes = 0
    for raw in stream:
        lineno += 1
        if not pending:
            start = lineno
        pending.append(raw)
        quotes += raw.count('"')
        if quotes % 2:
            continue  # inside a quoted field: the newline is part of the value
        text = "".join(pending)
        pending, quotes = [], 0
        yield start, text.rstrip("\r\n")
    if pending:
        raise CsvError(start, "unterminated quoted field at the end of the file")


def to_timestamp(text: str) -> str:
    """CVAT's str(datetime) or our form -> 'YYYY-MM-DD HH:MM:SS.mmm' UTC; as-is when unparsable."""
    m = _TS.fullmatch(text.strip())
    if not m:
        return text
    day, clock, frac, zone = m.groups()
    ms = (frac or "").ljust(3, "0")[:3]
    if zone in (None, "Z", "+00:00", "+0000", "-00:00"):
        return f"{day} {clock}.{ms}"
    try:
        return sql_text(parse_utc(f"{day}T{clock}.{ms}{zone}"))
    except ValueError:
        return text


def _is_int_type(col_type: str) -> bool:
    return re.search(r"\bU?Int\d+\b", col_type) is not None


def read_cvat_csv(stream: TextIO, spec: dict) -> Iterator[tuple[int, dict]]:
    """(line number, event dict) for each row of a CVAT CSV export; the header is checked."""
    records = _records(stream)
    first = next(records, None)
    if first is None:
        return
    names = header_columns(first[1], spec)
    if names is None:
        raise CsvError(first[0], "the header is not CVAT's events columns: " + first[1][:200])
    types = {c["name"]: c["type"] for c in spec["events"]["columns"]} | {"remote_addr": "Nullable(String)"}
    columns = [{"name": name, "type": types[name]} for name in names]
    kinds = []
    for c in columns:
        if c["name"] == "timestamp":
            kinds.append("ts")
        elif _is_int_type(c["type"]):
            kinds.append("int")
        else:
            kinds.append("str")
    width = len(names)
    for line, text in records:
        if not text:
            continue  # a blank line (e.g. at the end)
        fields = parse_record(text, line)
        if len(fields) != width:
            raise CsvError(line, f"{len(fields)} fields, expected {width}")
        event = {}
        for name, kind, value in zip(names, kinds, fields):
            if value is not None:
                if kind == "int":
                    value = int(value) if _DIGITS.fullmatch(value) else value
                elif kind == "ts":
                    value = to_timestamp(value)
            event[name] = value
        yield line, event
