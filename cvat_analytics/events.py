"""The event contract (docs/architecture.md, The event contract) as code: one incoming event -> the row we insert.

This is the reference: `import` runs it on every event, and `serve` on any body the fast
path (events_fast.py) does not take; the fast path and Vector's copy of these rules in VRL
(generator/templates/vector/event_contract.vrl.jinja) must decide and store exactly as it
does (tests/test_events_fast.py, tests/test_vector_contract.py). A change to what ingest
accepts is made in all three. The columns and their types come from the spec's `events.columns`;
the rules below say how an incoming JSON value becomes a value of that type.

Decisions (see also docs/architecture.md):
- `timestamp`: epoch seconds (string or number, CVAT's server sends
  "1700000000.123456") or ISO-8601 (`Z`, an offset, or no zone = UTC). Stored as
  "YYYY-MM-DD HH:MM:SS.mmm" UTC, sub-millisecond digits truncated as ClickHouse
  does. Epoch values use decimal arithmetic, so .123456 is exactly .123. Rejected
  before 2000-01-01 or more than a day ahead: such values are nearly always epoch
  milliseconds sent as seconds (or zero), and they would land in the wrong partition.
  Also rejected when older than `clickhouse.retention_days`: the table's TTL would
  drop the row as soon as it is written, so an acknowledged event would be lost.
- ids: non-negative integers up to 2^64-1, or null. Strings of digits ("42") are
  accepted: ClickHouse's JSON input (the Docker path, through Vector) accepts them
  too, and CSV files carry nothing else. Fractional numbers and booleans are refused.
- `scope` must be listed in the spec's `events.scopes.<source>` when `source` is
  `server` or `client`: a misspelt scope would silently miss every dashboard and
  the working time, and CVAT's own /api/events refuses unlisted client scopes too.
  Add a new CVAT scope to analytics.yaml. Other sources take any scope.
- `source` missing or null -> "" (stored, but CVAT's export only reads
  server/client rows).
- `payload`: a JSON string (must parse), an object/array (serialised compactly),
  or null. NaN and Infinity (which Python's json reads) are refused: they are not JSON. `obj_val` may be a number or boolean: its JSON text is stored.
- `remote_addr` (CVAT 2.66+: the client's address, a string) is kept though no spec
  column lists it: CVAT's own later column (migration 0015), stored, never exported.
- Unknown fields are ignored.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
MAX_AHEAD = timedelta(days=1)

# Integer column types and their ranges.
INT_RANGES = {"UInt8": 2**8 - 1, "UInt16": 2**16 - 1, "UInt32": 2**32 - 1, "UInt64": 2**64 - 1}

# Checked by hand rather than datetime.fromisoformat: any number of fraction digits,
# and the fraction is cut to milliseconds as text, never through a float.
ISO_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?",
    re.ASCII,
)
EPOCH_RE = re.compile(r"\d{1,30}(?:\.\d{1,30})?", re.ASCII)
DIGITS_RE = re.compile(r"\d{1,20}", re.ASCII)  # 2^64-1 has 20 digits

# Fields CVAT sends beyond the spec's `events.columns`, stored after them: CVAT added the
# column itself later (its init.py; ours: migration 0015) and leaves it out of its CSV.
CVAT_EXTRA_COLUMNS = ({"name": "remote_addr", "type": "Nullable(String)"},)


class EventError(ValueError):
    """One event breaks the contract: where it is, which field, what was expected."""

    def __init__(self, index: int, field: str | None, problem: str, unit: str = "index"):
        self.index = index
        self.field = field
        self.problem = problem
        self.unit = unit
        where = f"{unit} {index}"
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")


class _FieldError(Exception):
    """Raised inside a converter; normalize() adds the index and field."""


def _got(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(value: str) -> str:
    """A string that can be written as UTF-8 (JSON allows lone surrogates; ClickHouse does not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _FieldError("expected valid Unicode text, got a lone surrogate escape") from None
    return value


def _integer(value: Any, maximum: int) -> int:
    if isinstance(value, bool):
        raise _FieldError(f"expected an integer 0..{maximum}, got {_got(value)}")
    if isinstance(value, str) and DIGITS_RE.fullmatch(value):
        number = int(value)
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        number = int(value)
    else:
        raise _FieldError(f"expected an integer 0..{maximum}, got {_got(value)}")
    if not 0 <= number <= maximum:
        raise _FieldError(f"expected an integer 0..{maximum}, got {number}")
    return number


def _epoch_ms(value: Any) -> int:
    """Milliseconds since the epoch from epoch seconds or ISO-8601, truncated like ClickHouse."""
    if isinstance(value, bool):
        raise _FieldError(f"expected epoch seconds or ISO-8601, got {_got(value)}")
    if isinstance(value, (int, Decimal)) or (isinstance(value, float) and value == value):
        # repr() of a float is the shortest text that reads back the same: the JSON text.
        seconds = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        if not seconds.is_finite():
            raise _FieldError(f"expected epoch seconds or ISO-8601, got {_got(value)}")
        return int((seconds * 1000).to_integral_value(rounding="ROUND_FLOOR"))
    if not isinstance(value, str):
        raise _FieldError(f"expected epoch seconds or ISO-8601, got {_got(value)}")
    text = value.strip()
    if EPOCH_RE.fullmatch(text):
        try:
            return int((Decimal(text) * 1000).to_integral_value(rounding="ROUND_FLOOR"))
        except InvalidOperation:  # absurdly long digit strings
            raise _FieldError(f"expected epoch seconds or ISO-8601, got {_got(value)}") from None
    match = ISO_RE.fullmatch(text)
    if not match:
        raise _FieldError(
            f'expected epoch seconds ("1700000000.123456") or ISO-8601 ("2024-01-01T12:00:00.123Z"), got {_got(value)}'
        )
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    offset = timedelta(0)
    if zone and zone not in ("Z", "z"):
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:] or 0)
        if hours > 23 or minutes > 59:
            raise _FieldError(f"expected a UTC offset up to ±23:59, got {zone!r}")
        offset = timedelta(hours=hours, minutes=minutes) * (1 if zone[0] == "+" else -1)
    try:
        local = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0),
                         tzinfo=timezone(offset))
    except ValueError as exc:
        raise _FieldError(f"expected a real date and time, got {value!r} ({exc})") from None
    millis = int((fraction or "0")[:3].ljust(3, "0"))
    return (local - EPOCH) // timedelta(milliseconds=1) + millis


def _timestamp(value: Any, retention_days: int = 0) -> str:
    if value is None:
        raise _FieldError("required; expected epoch seconds or ISO-8601")
    ms = _epoch_ms(value)
    now = datetime.now(UTC)
    earliest = (EARLIEST - EPOCH) // timedelta(milliseconds=1)
    latest = (now + MAX_AHEAD - EPOCH) // timedelta(milliseconds=1)
    if ms < earliest or ms > latest:
        hint = " (epoch milliseconds? send seconds)" if ms > latest * 100 else ""
        raise _FieldError(
            f"expected a time between 2000-01-01 and one day from now, got {_got(value)}{hint}"
        )
    if retention_days and ms < (now - timedelta(days=retention_days) - EPOCH) // timedelta(milliseconds=1):
        raise _FieldError(
            f"older than clickhouse.retention_days ({retention_days} days), so it would be deleted at once; "
            f"got {_got(value)}"
        )
    return format_ms(ms)


def format_ms(ms: int) -> str:
    """Epoch milliseconds as ClickHouse's DateTime64(3) text, UTC, exact."""
    moment = EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}"


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _FieldError(f"expected a string, got {_got(value)}")
    return _text(value)


def _string_or_scalar(value: Any) -> str:
    """obj_val: CVAT stores str(new value); a number or boolean arrives as its JSON text."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, (bool, int, float, Decimal)):
        return json.dumps(value) if not isinstance(value, Decimal) else str(value)
    raise _FieldError(f"expected a string or a number, got {_got(value)}")


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _payload(value: Any) -> str:
    # NaN and Infinity: Python's json reads and writes them, JSON (and ClickHouse's JSON
    # functions) has no such text, so a payload holding one would be stored unreadable.
    if isinstance(value, str):
        try:
            json.loads(value, parse_constant=_refuse_constant)
        except RecursionError:
            raise _FieldError("expected a JSON string, got JSON nested too deeply") from None
        except ValueError as exc:
            raise _FieldError(f"expected a JSON string, got text that is not JSON ({exc})") from None
        return _text(value)
    if isinstance(value, (dict, list)):
        try:
            return _text(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False))
        except RecursionError:
            raise _FieldError("expected a JSON object, got one nested too deeply") from None
        except ValueError:  # allow_nan=False
            raise _FieldError("expected a JSON object, got one holding NaN or Infinity (not JSON)") from None
    raise _FieldError(f"expected a JSON string or an object, got {_got(value)}")


def _base_type(column_type: str) -> tuple[str, bool]:
    """'LowCardinality(Nullable(String))' -> ('String', True)."""
    nullable = False
    while True:
        match = re.fullmatch(r"(LowCardinality|Nullable)\((.*)\)", column_type)
        if not match:
            return column_type, nullable
        nullable |= match.group(1) == "Nullable"
        column_type = match.group(2)


class EventContract:
    """The columns of <database>.events and how each incoming field becomes one."""

    def __init__(self, spec: dict):
        self.spec = spec
        events = spec["events"]
        self.scopes = {source: frozenset(names) for source, names in events["scopes"].items()}
        names = {column["name"] for column in events["columns"]}
        # What is stored: the spec's columns, then CVAT's later ones the spec does not list.
        self.stored_columns = events["columns"] + [c for c in CVAT_EXTRA_COLUMNS if c["name"] not in names]
        self.columns: list[tuple[str, Any, bool]] = []  # (name, converter, nullable)
        for column in self.stored_columns:
            name = column["name"]
            base, nullable = _base_type(column["type"])
            self.columns.append((name, self._converter(name, base), nullable))

    def _converter(self, name: str, base: str):
        if name == "timestamp" or base.startswith("DateTime64"):
            # Older than the retention would be acknowledged, then dropped by the TTL at once.
            retention_days = self.spec.get("clickhouse", {}).get("retention_days", 0)
            return lambda value: _timestamp(value, retention_days)
        if name == "payload":
            return _payload
        if name == "obj_val":
            return _string_or_scalar
        if base in INT_RANGES:
            maximum = INT_RANGES[base]
            return lambda value: _integer(value, maximum)
        if base == "String":
            return _string
        raise ValueError(f"events.columns: no ingest rule for column {name} of type {base}")

    def normalize(self, obj: Any, index: int, unit: str = "index") -> dict:
        """The row to insert for one incoming event, or EventError saying what is wrong."""
        if not isinstance(obj, dict):
            raise EventError(index, None, f"expected a JSON object (one event), got {_got(obj)}", unit)
        row: dict[str, Any] = {}
        for name, convert, nullable in self.columns:
            value = obj.get(name)
            if value is None:
                if name in ("scope", "timestamp"):
                    raise EventError(index, name, "required, missing", unit)
                # Non-nullable columns take their default: duration 0, source "".
                row[name] = None if nullable else ("" if convert is _string else 0)
                continue
            try:
                row[name] = convert(value)
            except _FieldError as exc:
                raise EventError(index, name, str(exc), unit) from None
        if not row.get("scope"):
            raise EventError(index, "scope", "expected a non-empty string", unit)
        allowed = self.scopes.get(row.get("source"))
        if allowed is not None and row["scope"] not in allowed:
            raise EventError(
                index, "scope",
                f"{row['scope']!r} is not a {row['source']} scope listed in the spec's "
                f"events.scopes.{row['source']} (add it to analytics.yaml if CVAT sends it)",
                unit,
            )
        return row

    @staticmethod
    def to_line(row: dict) -> bytes:
        """One JSONEachRow line, ready for store.insert_json_rows."""
        return json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


_default_contract: EventContract | None = None


def normalize(obj: Any, index: int, spec: dict | None = None, unit: str = "index") -> dict:
    """`EventContract(spec).normalize`, with the default spec when none is given."""
    global _default_contract
    if spec is not None:
        return EventContract(spec).normalize(obj, index, unit)
    if _default_contract is None:
        from cvat_analytics_generator.spec import load_spec
        _default_contract = EventContract(load_spec())
    return _default_contract.normalize(obj, index, unit)
