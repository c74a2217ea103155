"""Print query results as CSV, JSON or an aligned table."""
from __future__ import annotations

import csv
import datetime as dt
import json
import sys
from typing import Iterable, Sequence

FORMATS = ("csv", "json", "pretty")


def cell(value) -> str:
    """A value as CSV and tables show it: NULL is empty, times are UTC with milliseconds."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _jsonable(value):
    if isinstance(value, (dt.datetime, dt.date)):
        return cell(value)
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    return value


def write_rows(columns: Sequence[str], rows: Iterable[Sequence], fmt: str, out=None) -> None:
    out = out or sys.stdout
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([cell(v) for v in row])
    elif fmt == "json":
        json.dump([{c: _jsonable(v) for c, v in zip(columns, row)} for row in rows], out,
                  ensure_ascii=False, indent=1)
        out.write("\n")
    elif fmt == "pretty":
        table = [[cell(v) for v in row] for row in rows]
        widths = [max([len(c)] + [len(r[i]) for r in table]) for i, c in enumerate(columns)]
        line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
        out.write(line.rstrip() + "\n" + "  ".join("-" * w for w in widths) + "\n")
        for r in table:
            out.write("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() + "\n")
        out.write(f"({len(table)} rows)\n")
    else:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
