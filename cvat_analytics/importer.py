"""`cvat-analytics import`: load a file of events into <database>.events.

Formats, told apart by the first non-blank byte:
- `[`  a JSON array of events (what CVAT's server POSTs), read as a stream;
- `{`  NDJSON (one event per line), a single object, or objects one after another;
- `scope,...`  CVAT's CSV export (cvat_csv.py).

All or nothing by default: every record is validated first and the valid rows are
spooled, normalized, to a temporary file; only when none is invalid are they
inserted (in batches of --batch-size rows, a batch also ending before it would span more
calendar months than the engine writes in one INSERT, max_partitions_per_insert_block:
a file of years, with retention_days 0, is stored, not refused over and over). With --skip-invalid the valid rows are
stored and each invalid record is reported on stderr. Memory stays flat whatever
the file size: the reader holds one chunk, the spool is on disk.

Imports merge: an event identical in every column CVAT's export has to one already
stored (from any file, or ingested) is not stored again; each batch is looked up in
its own time range only (imports.sql.j2). A restore, an overlapping CVAT export or a
run cut short and started again stores each event once.
"""
from __future__ import annotations

import codecs
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import IO, Any, Iterator

from cvat_analytics_generator.render import render_template
from cvat_analytics_generator.sql import parse

from .cvat_csv import CsvError
from .cvat_csv import read_cvat_csv as read_cvat_csv_rows
from .errors import first_line
from .events import EventContract, EventError
from .progress import Progress
from .store import INSERT_SECONDS, INSERT_SETTINGS, insert_json_rows

CHUNK = 1 << 20
IMPORTS_SQL = "clickhouse/runtime/imports.sql.j2"
MAX_REPORTED = 20  # invalid records listed when the import is refused; the rest are counted
WHITESPACE = " \t\r\n"


class ImportFailed(Exception):
    """The file cannot be read at all (not a format we know, broken JSON array)."""


@dataclass
class Record:
    """One record of the file: its place, and the parsed value or why it did not parse."""
    unit: str  # "index" (JSON array) or "line" (NDJSON, CSV)
    index: int
    line: int
    value: Any = None
    problem: str | None = None


class ByteSource:
    """A binary stream read in chunks, with the first bytes available before reading."""

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.pending = b""
        self.bytes_read = 0

    def start(self) -> bytes:
        """The first non-blank bytes (a UTF-8 byte order mark dropped), without consuming them."""
        while True:
            chunk = self.raw.read(CHUNK)
            self.pending += chunk
            if self.pending.startswith(codecs.BOM_UTF8):
                self.pending = self.pending[len(codecs.BOM_UTF8):]
            stripped = self.pending.lstrip(WHITESPACE.encode())
            if len(stripped) >= 64 or not chunk:
                return stripped[:64]

    def read(self) -> bytes:
        data, self.pending = (self.pending, b"") if self.pending else (self.raw.read(CHUNK), b"")
        self.bytes_read += len(data)
        return data


class JsonText:
    """Incremental JSON reading over a ByteSource: values one at a time, lines counted.

    json.JSONDecoder.raw_decode parses one value at a position; when a value runs
    past the end of what was read so far, read more and parse it again.
    """

    def __init__(self, source: ByteSource):
        self.source = source
        self.decoder = json.JSONDecoder()
        self.utf8 = codecs.getincrementaldecoder("utf-8")()
        self.buf = ""
        self.pos = 0
        self.line = 1
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        if self.pos > CHUNK:  # drop what was consumed, so the buffer stays about one chunk
            self.buf, self.pos = self.buf[self.pos:], 0
        data = self.source.read()
        try:
            self.buf += self.utf8.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise ImportFailed(f"line {self.line}: not UTF-8 text ({exc.reason})") from None
        self.eof = not data
        return True

    def peek(self) -> str:
        """The next non-blank character ('' at the end), counting the lines skipped."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in WHITESPACE:
                self.line += self.buf[self.pos] == "\n"
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return ""

    def take(self, char: str) -> None:
        self.peek()
        self.pos += 1
        assert self.buf[self.pos - 1] == char

    def value(self) -> Any:
        """Parse the value at the current position; json.JSONDecodeError if it is not JSON."""
        self.peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                # Running off the end of the buffer is not an error until the file ends. A cut
                # literal ("nu|ll", "-Infin|ity") fails a few characters before the end.
                incomplete = exc.pos >= len(self.buf) - 10 or exc.msg.startswith("Unterminated string")
                if incomplete and self._fill():
                    continue
                raise
            if end == len(self.buf) and not self.eof and self._fill():
                continue  # a number may go on in the next chunk
            self.line += self.buf.count("\n", self.pos, end)
            self.pos = end
            return value

    def skip_line(self) -> None:
        """Move past the next newline: where an NDJSON reader starts again after a bad line."""
        while True:
            newline = self.buf.find("\n", self.pos)
            if newline >= 0:
                self.pos = newline + 1
                self.line += 1
                return
            self.pos = len(self.buf)
            if not self._fill():
                return


def _syntax(exc: json.JSONDecodeError) -> str:
    return f"not valid JSON: {exc.msg}"


def read_json_array(source: ByteSource) -> Iterator[Record]:
    """A JSON array, one element at a time. Broken JSON syntax ends the file (ImportFailed):
    there is no telling where the next element starts."""
    text = JsonText(source)
    text.take("[")
    index = 0
    if text.peek() == "]":
        text.take("]")
    else:
        while True:
            text.peek()  # the element's own line, past the blank lines before it
            line = text.line
            try:
                yield Record("index", index, line, value=text.value())
            except json.JSONDecodeError as exc:
                raise ImportFailed(f"index {index} (line {text.line}): {_syntax(exc)}; "
                                   "the array cannot be read past this point") from None
            index += 1
            after = text.peek()
            if after == "]":
                text.take("]")
                break
            if after != ",":
                where = "the file ends" if after == "" else f"found {after!r}"
                raise ImportFailed(f"index {index - 1} (line {text.line}): expected ',' or ']' "
                                   f"after the element, {where}")
            text.take(",")
    if text.peek() != "":
        raise ImportFailed(f"line {text.line}: unexpected data after the end of the array")


def read_json_values(source: ByteSource) -> Iterator[Record]:
    """NDJSON, a single object, or objects one after another; a bad line is one bad record."""
    text = JsonText(source)
    while text.peek() != "":
        line = text.line
        try:
            yield Record("line", line, line, value=text.value())
        except json.JSONDecodeError as exc:
            yield Record("line", line, line, problem=_syntax(exc))
            text.skip_line()


def read_cvat_csv(source: ByteSource, spec: dict) -> Iterator[Record]:
    """CVAT's CSV export (ours too): cvat_csv parses the rows, normalize() checks each one."""
    stream = io.TextIOWrapper(io.BufferedReader(_SourceStream(source)), encoding="utf-8", newline="")
    try:
        for line, event in read_cvat_csv_rows(stream, spec):
            yield Record("line", line, line, value=event)
    except CsvError as exc:
        raise ImportFailed(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise ImportFailed(f"the file is not UTF-8 text ({exc.reason})") from None


class _SourceStream(io.RawIOBase):
    """A ByteSource as a raw binary stream, for io.TextIOWrapper."""

    def __init__(self, source: ByteSource):
        self.source = source
        self.buffered = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self.buffered:
            self.buffered = self.source.read()
        n = min(len(buffer), len(self.buffered))
        buffer[:n] = self.buffered[:n]
        self.buffered = self.buffered[n:]
        return n


READERS = {
    "json-array": lambda source, _spec: read_json_array(source),
    "json-values": lambda source, _spec: read_json_values(source),
    "cvat-csv": read_cvat_csv,
}


def detect_format(start: bytes) -> str:
    if start.startswith(b"["):
        return "json-array"
    if start.startswith(b"{"):
        return "json-values"
    if start.startswith((b"scope,", b'"scope",')):
        return "cvat-csv"
    if not start:
        raise ImportFailed("the file is empty")
    raise ImportFailed(f"not a JSON array, NDJSON or CVAT CSV file: it starts with {start[:20]!r}")


def _open(path_or_dash: str) -> tuple[IO[bytes], str, int | None]:
    raw = sys.stdin.buffer if path_or_dash == "-" else open(path_or_dash, "rb")
    try:
        size = os.fstat(raw.fileno()).st_size or None
    except (OSError, ValueError, AttributeError):
        size = None
    return raw, ("<stdin>" if path_or_dash == "-" else path_or_dash), size


def run_import(client, spec: dict, path_or_dash: str, skip_invalid: bool = False,
               batch_size: int = 50_000, out: IO[str] | None = None, err: IO[str] | None = None,
               again: bool = False) -> int:
    """Validate every record of the file, then store them; the exit code for the CLI.

    An event identical to one already stored (in every column CVAT's export has, whatever
    file it came from) is not stored again, and counted as already there; the same file
    imported before is recognised at once (the ledger). `again` stores everything anyway."""
    out, err = out or sys.stdout, err or sys.stderr
    database = spec["clickhouse"]["database"]
    contract = EventContract(spec)
    sql = parse(render_template(spec, IMPORTS_SQL, stored=[c["name"] for c in contract.stored_columns],
                                compared=[c["name"] for c in spec["events"]["columns"]]), IMPORTS_SQL)
    if batch_size < 1:
        print(f"cvat-analytics: --batch-size must be at least 1, got {batch_size}", file=err)
        return 2
    if not int(client.command(sql.named("events_table_exists"))):
        print(f"cvat-analytics: there is no table {database}.events yet: run `cvat-analytics migrate` "
              "with the same --dsn and --spec first", file=err)
        return 1
    try:
        raw, name, size = _open(path_or_dash)
    except OSError as exc:
        print(f"cvat-analytics: cannot read {path_or_dash}: {exc.strerror}", file=err)
        return 1
    reading = Progress("reading", total_bytes=size, stream=err)
    # stdin is left open: it is not ours to close.
    with raw if path_or_dash != "-" else nullcontext(), tempfile.TemporaryFile(prefix="cvat-import-") as spool:
        content = hashlib.sha256()
        try:
            valid, invalid = _validate(raw, name, contract, spool, skip_invalid, reading, err, content)
        except ImportFailed as exc:
            reading.close()
            print(f"cvat-analytics: {name}: {exc}; nothing imported", file=err)
            return 1
        reading.close()
        if invalid and not skip_invalid:
            print(f"cvat-analytics: {name}: nothing imported: {invalid} invalid record(s); "
                  "fix them, or pass --skip-invalid to store the valid ones", file=err)
            return 1
        sha = content.hexdigest()
        ledger = bool(int(client.command(sql.named("imports_table_exists"))))
        earlier = client.query(sql.named("earlier"), parameters={"sha": sha}).result_rows if ledger else []
        if earlier and not again:
            events, source, when = earlier[0]
            print(f"nothing stored: these {valid} events were imported on {when} UTC (from {source}, "
                  f"{events} events); pass --again to store them once more", file=out)
            return 0
        spool.seek(0)
        stored = already = 0
        storing = Progress("storing", total=valid, stream=err)
        storing.update(0)
        max_months = int(client.command(sql.named("max_partitions")))
        if not again:
            client.command(sql.named("create_batch"))
        try:
            for index, (body, rows) in enumerate(_batches(spool, batch_size, max_months)):
                if again:
                    # The token makes a retried batch (same rows, same batch size) count once.
                    insert_json_rows(client, database, body, token=f"import:{sha}:{batch_size}:{index}:{time.time_ns()}")
                    new = rows
                else:
                    new = store_new(client, sql, body, rows)
                stored += new
                already += rows - new
                storing.update(stored + already)
        except Exception as exc:
            storing.close()
            print(f"cvat-analytics: {name}: INSERT failed after {stored + already} of {valid} events were "
                  f"stored: {first_line(exc)}; run the same import again to store the rest once",
                  file=err)
            return 1
        storing.close()
        if ledger:
            client.command(sql.named("record"), parameters={"sha": sha, "events": valid, "source": name})
    if already:
        print(f"imported {stored} events, {already} were already stored ({invalid} skipped)", file=out)
    else:
        print(f"imported {stored} events ({invalid} skipped)", file=out)
    return 0


def store_new(client, sql, body: bytes, rows: int) -> int:
    """Store the events of one batch that are not stored yet (identical in every column
    CVAT exports to one in the batch's time range), each once; how many were new."""
    client.command(sql.named("clear_batch"))
    client.raw_insert("import_batch", None, body, settings=INSERT_SETTINGS, fmt="JSONEachRow")
    new = int(client.command(sql.named("count_new")))
    if new:
        with INSERT_SECONDS.time():
            client.command(sql.named("store_new"), settings={k: v for k, v in INSERT_SETTINGS.items()
                                                             if not k.startswith("input_")})
    return new


def _validate(raw, name, contract, spool, skip_invalid, progress, err, content) -> tuple[int, int]:
    """Read every record, write each valid one's row to the spool (and to the `content`
    hash); (valid, invalid) counts."""
    source = ByteSource(raw)
    records = READERS[detect_format(source.start())](source, contract.spec)
    valid = invalid = 0
    for record in records:
        problem = record.problem
        if problem is None:
            try:
                line = contract.to_line(contract.normalize(record.value, record.index, record.unit))
                spool.write(line)
                content.update(line)
                valid += 1
            except EventError as exc:
                problem = str(exc)
        else:
            problem = f"{record.unit} {record.index}: {problem}"
        if problem is not None:
            invalid += 1
            if record.unit == "index":
                problem += f" (line {record.line})"
            if skip_invalid:
                print(f"cvat-analytics: {name}: skipped {problem}", file=err)
            elif invalid <= MAX_REPORTED:
                print(f"cvat-analytics: {name}: {problem}", file=err)
            elif invalid == MAX_REPORTED + 1:
                print(f"cvat-analytics: {name}: ... (only the first {MAX_REPORTED} invalid records are listed)",
                      file=err)
        progress.update(valid + invalid, done_bytes=source.bytes_read)
    return valid, invalid


def _batches(spool: IO[bytes], batch_size: int, max_months: int = 0) -> Iterator[tuple[bytes, int]]:
    """The spooled JSONEachRow lines, batch_size rows at a time, a batch ending early where
    its next row would make it span more than `max_months` calendar months (0: no bound).
    The cuts depend on the rows alone, so a retried import makes the same batches."""
    lines: list[bytes] = []
    months: set[bytes] = set()
    for line in spool:
        month = _MONTH.search(line).group(1) if max_months else b""
        if lines and max_months and month not in months and len(months) == max_months:
            yield b"".join(lines), len(lines)
            lines, months = [], set()
        lines.append(line)
        months.add(month)
        if len(lines) == batch_size:
            yield b"".join(lines), len(lines)
            lines, months = [], set()
    if lines:
        yield b"".join(lines), len(lines)


# The month of a spooled row: EventContract.to_line writes "timestamp":"YYYY-MM-DD HH:MM:SS.fff".
_MONTH = re.compile(rb'"timestamp":"(\d{4}-\d{2})-')
