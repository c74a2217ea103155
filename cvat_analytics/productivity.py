"""Productivity (docs/productivity.md): annotation speed, review cycles and timesheets, read
from the state ClickHouse keeps (productivity_objects, productivity_jobs, the user names and
the working-time totals; queries/productivity_state.jinja), or from `<db>.events` in the
cluster render.

The SQL lives in generator/templates/clickhouse/queries/productivity_*.sql.j2. This module
picks a template's shape (the level, the grouping) from a closed list, binds every value
the caller gives as a parameter, and passes the rendered statement through the SQL gate
(generator/sql_gate.py) before it runs, as every other statement served to a caller.
"""
from __future__ import annotations

import re
from datetime import date

from cvat_analytics_generator.render import render_template
from cvat_analytics_generator.sql_gate import check_statement

LEVELS = ("job", "task", "project", "org")
REVIEWS_PER = ("job", "annotator", "reviewer")
ID_FILTERS = ("org_id", "project_id", "task_id", "job_id", "user_id")
# The Date type's range: no day filter.
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(2149, 6, 6)
MAX_ID = 2**64 - 1


class ProductivityError(ValueError):
    """A request that cannot be served; `param` names the parameter, the text says why."""

    def __init__(self, param: str, reason: str):
        self.param, self.reason = param, reason
        super().__init__(f"{param}: {reason}")


def parse_day(param: str, text: str | None, default: date) -> date:
    """A UTC day, YYYY-MM-DD; `default` when not given."""
    if text is None or text == "":
        return default
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip(), re.ASCII):
        raise ProductivityError(param, f"a day is YYYY-MM-DD, got {text[:40]!r}")
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise ProductivityError(param, f"not a day: {text[:40]!r}") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ProductivityError(param, f"must be from {FIRST_DAY} to {LAST_DAY}")
    return day


def parse_id(param: str, text) -> int | None:
    if text is None or text == "":
        return None
    text = str(text).strip()
    if not re.fullmatch(r"[0-9]{1,20}", text, re.ASCII) or int(text) > MAX_ID:
        raise ProductivityError(param, f"must be an integer from 0 to {MAX_ID}, got {text[:40]!r}")
    return int(text)


def params(from_day: str | None = None, to_day: str | None = None, **ids) -> dict:
    """The bound parameters every productivity query takes (ids: ID_FILTERS -> text or int)."""
    unknown = set(ids) - set(ID_FILTERS)
    if unknown:
        raise ProductivityError(sorted(unknown)[0], f"not a filter; filters are {', '.join(ID_FILTERS)}")
    bound = {name: parse_id(name, ids.get(name)) for name in ID_FILTERS}
    bound["from_day"] = parse_day("from", from_day, FIRST_DAY)
    bound["to_day"] = parse_day("to", to_day, LAST_DAY)
    if bound["from_day"] > bound["to_day"]:
        raise ProductivityError("from", f"{bound['from_day']} is after to ({bound['to_day']})")
    return bound


def _run(client, spec: dict, template: str, bound: dict, settings: dict | None = None, **shape):
    sql = render_template(spec, f"clickhouse/queries/{template}.sql.j2", **shape)

    def ask(text: str, values: dict) -> str:
        return client.raw_query(text, parameters=values or None, fmt="TabSeparatedRaw").decode()

    check_statement(ask, sql, bound)
    result = client.query(sql, parameters=bound, settings=settings or {})
    return list(result.column_names), [tuple(r) for r in result.result_rows]


def speed(client, spec: dict, level: str = "job", **filters):
    """(columns, rows): objects created, changed, deleted per user, `level` and day, with
    the working time credited there and objects per working hour."""
    if level not in LEVELS:
        raise ProductivityError("level", f"one of {', '.join(LEVELS)}, got {str(level)[:40]!r}")
    return _run(client, spec, "productivity_speed", params(**filters), level=level)


def reviews(client, spec: dict, per: str = "job", **filters):
    """(columns, rows): review cycles per job, or first-pass acceptance per annotator or reviewer."""
    if per not in REVIEWS_PER:
        raise ProductivityError("per", f"one of {', '.join(REVIEWS_PER)}, got {str(per)[:40]!r}")
    return _run(client, spec, "productivity_reviews", params(**filters), per=per)


def timesheet(client, spec: dict, by_project: bool = False, limit: int = 0, settings: dict | None = None,
              **filters):
    """(columns, rows): working time per user and day (and project); at most `limit` rows
    (0: no limit). With working_time.duration_cap_s set, the capped figure beside CVAT's and
    the cap (capped_working_time_ms, capped_hours, duration_cap_s). Its memory is
    embedded.timesheet.max_memory_bytes (MEMORY_LIMIT_EXCEEDED past it: memory_limit_hit)."""
    bound = params(**filters)
    bound["limit"] = limit or 2**63
    settings = {"max_memory_usage": spec["embedded"]["timesheet"]["max_memory_bytes"], **(settings or {})}
    return _run(client, spec, "productivity_timesheet", bound, settings, by_project=bool(by_project))


MEMORY_LIMIT_EXCEEDED = 241  # ClickHouse's code


def memory_limit_hit(exc: Exception) -> bool:
    return getattr(exc, "code", None) == MEMORY_LIMIT_EXCEEDED or "MEMORY_LIMIT_EXCEEDED" in str(exc)


# A cell a spreadsheet would run as a formula (OWASP's CSV injection); user names are CVAT's.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def timesheet_csv(columns: list[str], rows: list[tuple]) -> bytes:
    """The timesheet as CSV (RFC 4180, CRLF, UTF-8): one row per user and day (and project),
    NULL as an empty field; a text cell that a spreadsheet would take for a formula gets a
    leading apostrophe."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else ("'" + v if isinstance(v, str) and v.startswith(_FORMULA_START) else v)
                         for v in row])
    return out.getvalue().encode()
