"""The export's CSV, written window by window.

The rows: `<database>.events` with `source` in ('server', 'client'), without
`send:exception` rows (CVAT leaves them out too: exceptions are for the Monitoring
dashboard, not for the activity log a user downloads); a header of the spec's
`events.columns` names but `remote_addr` (CVAT 2.66+ stores the client's address and
leaves it out of its CSV: `SELECT * EXCEPT(remote_addr)`, cvat/apps/events/export.py), rows in timestamp order (ties broken by every other column,
so an export is byte-for-byte reproducible), timestamps UTC "YYYY-MM-DD HH:MM:SS.mmm",
NULL an empty field. The SQL is clickhouse/queries/export_*.sql.j2.

Memory. ORDER BY timestamp over a table sorted by (user_id, timestamp) is a full
sort, and a sort holds its input: measured on chdb, one ORDER BY over 1M rows
grows the process by ~430 MB. So `write_csv` first counts rows per hour
(a few hundred numbers), cuts the range into windows of at most `chunk_rows`
rows (an hour that is too heavy is cut by minute), and exports window after
window, each sorted on its own. The concatenation is exactly the global order,
and memory is bounded by the window, not by the export. ClickHouse formats the
CSV (`raw_stream`, format CSV, streamed block by block): ~10x faster than
formatting rows in Python. Its CSV quotes every string and writes an empty
string as `""` and NULL as nothing, so NULL and '' stay apart and an import of
the file restores exactly the same rows.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Callable

from cvat_analytics_generator.render import context, environment

from ..store import ENGINE_MEMORY_MESSAGE, memory_exceeded
from .filters import UTC, ExportFilters, fmt_time

CHUNK_ROWS = 100_000
_UNITS = {"hour": "Hour", "minute": "Minute"}


class LimitExceeded(Exception):
    """An export passed one of embedded.export's bounds; the message names it (fit for the caller)."""


# Stored, never exported, as in CVAT's own export: even where a spec lists it as a column.
NOT_EXPORTED = ("remote_addr",)


def render(spec: dict, template: str, **extra) -> str:
    """The text of clickhouse/queries/<template>.sql.j2 for this spec; its columns are the CSV's."""
    return (environment().get_template(f"clickhouse/queries/{template}.sql.j2")
            .render({**context(spec), "column_names": column_names(spec), **extra}))


def column_names(spec: dict) -> list[str]:
    """The CSV's columns, in the table's order."""
    return [c["name"] for c in spec["events"]["columns"] if c["name"] not in NOT_EXPORTED]


def _settings(spec: dict, time_left: Callable[[], float] | None) -> dict:
    """Every export query is capped in memory (embedded.export.max_memory_mb) and stops at the
    export's deadline (max_execution_time)."""
    settings = {"max_memory_usage": spec["embedded"]["export"]["max_memory_mb"] * 1048576}
    if time_left is not None:
        settings["max_execution_time"] = max(1, math.ceil(time_left()))
    return settings


def memory_limit(exc: Exception, spec: dict) -> LimitExceeded | None:
    """The engine's MEMORY_LIMIT_EXCEEDED as the spec key that set the limit, else None."""
    bound = memory_exceeded(exc)
    if bound is None:
        return None
    if bound == "total":  # the whole engine, not this query
        return LimitExceeded(ENGINE_MEMORY_MESSAGE)
    return LimitExceeded(f"an export query needed more than {spec['embedded']['export']['max_memory_mb']} MiB "
                         "(embedded.export.max_memory_mb): narrow the filters or raise the limit")


def _buckets(client, spec: dict, filters: ExportFilters, unit: str,
             lo: datetime, hi: datetime, time_left: Callable[[], float] | None = None) -> list[tuple[int, int]]:
    sql = render(spec, "export_buckets", unit=_UNITS[unit])
    params = dict(filters.params(), lo=fmt_time(lo), hi=fmt_time(hi))
    return [(int(b), int(n)) for b, n in client.query(sql, parameters=params,
                                                      settings=_settings(spec, time_left)).result_rows]


def plan_windows(client, spec: dict, filters: ExportFilters,
                 chunk_rows: int = CHUNK_ROWS,
                 time_left: Callable[[], float] | None = None) -> list[tuple[datetime, datetime, int]]:
    """[lo, hi) windows of at most `chunk_rows` rows each (one minute may hold more)."""
    start = filters.from_
    end = filters.to + timedelta(milliseconds=1)  # `to` is inclusive
    pieces: list[tuple[datetime, datetime, int]] = []
    for bucket, n in _buckets(client, spec, filters, "hour", start, end, time_left):
        lo = max(datetime.fromtimestamp(bucket, UTC), start)
        hi = min(datetime.fromtimestamp(bucket, UTC) + timedelta(hours=1), end)
        if n <= chunk_rows:
            pieces.append((lo, hi, n))
            continue
        for mb, mn in _buckets(client, spec, filters, "minute", lo, hi, time_left):
            mlo = max(datetime.fromtimestamp(mb, UTC), lo)
            mhi = min(datetime.fromtimestamp(mb, UTC) + timedelta(minutes=1), hi)
            pieces.append((mlo, mhi, mn))
    windows: list[tuple[datetime, datetime, int]] = []
    for lo, hi, n in pieces:
        if windows and windows[-1][2] + n <= chunk_rows:
            wlo, _, wn = windows[-1]
            windows[-1] = (wlo, hi, wn + n)
        else:
            windows.append((lo, hi, n))
    return windows


def write_csv(client, spec: dict, filters: ExportFilters, fileobj: BinaryIO,
              progress: Callable[[int, int], None] | None = None,
              chunk_rows: int = CHUNK_ROWS, max_rows: int | None = None,
              time_left: Callable[[], float] | None = None) -> int:
    """Write the export to a binary file object; returns the number of rows.

    `progress(rows_done, rows_total)` is called after each window; more than `max_rows`
    rows is LimitExceeded before any row is written; `time_left()` (seconds) bounds each query;
    a query past embedded.export.max_memory_mb is LimitExceeded naming it."""
    try:
        return _write_csv(client, spec, filters, fileobj, progress, chunk_rows, max_rows, time_left)
    except Exception as exc:
        named = memory_limit(exc, spec)
        if named is None:
            raise
        raise named from exc


def _write_csv(client, spec, filters, fileobj, progress, chunk_rows, max_rows, time_left) -> int:
    windows = plan_windows(client, spec, filters, chunk_rows, time_left)
    total = sum(n for _, _, n in windows)
    if max_rows is not None and total > max_rows:
        raise LimitExceeded(f"the export would hold {total} rows; at most {max_rows} are allowed "
                            "(embedded.export.max_rows): narrow the filters or the from/to window")
    fileobj.write((",".join(column_names(spec)) + "\n").encode())
    done = 0
    if progress:
        progress(0, total)
    for lo, hi, n in windows:
        params = dict(filters.params(), lo=fmt_time(lo), hi=fmt_time(hi))
        # The limits in the query's own SETTINGS, not as the call's settings: clickhouse-connect's
        # chdb backend reads a call with settings into one buffer before it returns (its
        # execute_raw_stream), so each window's CSV (~26 MB at 100,000 rows) was held whole, twice.
        sql = render(spec, "export_window", limits=_settings(spec, time_left))
        stream = client.raw_stream(sql, parameters=params, fmt="CSV")
        try:
            shutil.copyfileobj(stream, fileobj, 1 << 16)
        finally:
            stream.close()
        done += n
        if progress:
            progress(done, total)
    return done


def unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def export_to_path(client, spec: dict, filters: ExportFilters, path: str | Path | None,
                   out: BinaryIO | None = None, progress: Callable[[int, int], None] | None = None) -> int:
    """The CLI's export: to `path` through a temporary file renamed at the end
    (nothing half-written), or to `out` (stdout) when path is None or '-'.
    `progress` as for write_csv."""
    if path in (None, "-"):
        return write_csv(client, spec, filters, out, progress)
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            rows = write_csv(client, spec, filters, fh, progress)
        os.replace(tmp, target)
    except BaseException:
        unlink(Path(tmp))
        raise
    return rows
