"""GET /api/timesheet: working time per user and day (and project) as CSV, the file a team
lead sends to payroll (docs/productivity.md, Timesheets).

The export's permission and forced filters: a caller forced to an org or a user gets only
that org's or user's time, and asking for another is 403 (access.apply_forced_filters).
Every request is bounded by embedded.timesheet: its rows (max_rows), the bytes of its CSV
(max_bytes), the seconds its query runs (max_seconds) and its memory (max_memory_bytes); past any of them the answer is an
error naming the limit, never a cut file. The query runs on a handle of its own, so ingest
never waits behind it; one timesheet runs at a time, and a request that finds one running is
answered 429 at once (waiting, each would hold a connection of embedded.max_connections for up
to max_seconds per timesheet ahead of it, and enough of them would leave none for ingest).
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from .. import store
from ..export.filters import one
from ..productivity import ProductivityError, memory_limit_hit, timesheet, timesheet_csv
from .access import Forbidden, apply_forced_filters
from .responses import Response, json_response

if TYPE_CHECKING:
    from .http import RequestHandler

PARAMS = ("from", "to", "user_id", "org_id", "project_id", "by")
TIMEOUT = 159  # ClickHouse's TIMEOUT_EXCEEDED


class Timesheet:
    def __init__(self, dsn: str, spec: dict):
        self.dsn, self.spec = dsn, spec
        self.limits = spec["embedded"]["timesheet"]
        self._client = None
        self._lock = threading.Lock()  # one handle runs one query at a time

    def __call__(self, request: "RequestHandler") -> Response:
        query = parse_qs(urlsplit(request.path).query, keep_blank_values=True)
        unknown = sorted(set(query) - set(PARAMS))
        if unknown:
            return _bad(unknown[0][:40], f"not a parameter; the parameters are {', '.join(PARAMS)}")
        try:
            query = apply_forced_filters(request.principal, query)
        except Forbidden as exc:
            return json_response(403, {"detail": str(exc)})
        by = one(query, "by") or ""
        if by not in ("", "project"):
            return _bad("by", "only 'project' (a row per user, day and project)")
        limits = self.limits
        try:
            columns, rows = self._query(by == "project", limits["max_rows"] + 1, limits["max_seconds"], query)
        except ProductivityError as exc:
            return _bad(exc.param, exc.reason)
        except Busy:
            response = _limit(429, "another timesheet is running (one at a time); retry when it is done, "
                                   f"at most embedded.timesheet.max_seconds ({limits['max_seconds']} s)",
                              "embedded.timesheet.max_seconds")
            response.headers["Retry-After"] = "1"
            return response
        except Exception as exc:  # the engine stopped it at max_seconds or max_memory_bytes
            if memory_limit_hit(exc):
                return _limit(400, f"the timesheet needed more memory than embedded.timesheet.max_memory_bytes "
                                   f"({limits['max_memory_bytes']}); narrow the days or the filters",
                              "embedded.timesheet.max_memory_bytes")
            if getattr(exc, "code", None) == TIMEOUT or "TIMEOUT_EXCEEDED" in str(exc):
                return _limit(408, f"the timesheet took longer than embedded.timesheet.max_seconds "
                                   f"({limits['max_seconds']} s); narrow the days or the filters",
                              "embedded.timesheet.max_seconds")
            raise
        if len(rows) > limits["max_rows"]:
            return _limit(400, f"the timesheet has more than embedded.timesheet.max_rows ({limits['max_rows']}) "
                               "rows; narrow the days or the filters", "embedded.timesheet.max_rows")
        body = timesheet_csv(columns, rows)
        if len(body) > limits["max_bytes"]:
            return _limit(400, f"the timesheet's CSV is larger than embedded.timesheet.max_bytes "
                               f"({limits['max_bytes']}); narrow the days or the filters",
                          "embedded.timesheet.max_bytes")
        name = f"timesheet_{one(query, 'from') or 'start'}_{one(query, 'to') or 'end'}.csv"
        name = "".join(c for c in name if c.isalnum() or c in "-_.")  # days and digits only
        return Response(200, body, "text/csv; charset=utf-8",
                        {"Content-Disposition": f'attachment; filename="{name}"'})

    def _query(self, by_project: bool, limit: int, seconds: int, query: dict):
        filters = {k: one(query, k) for k in ("user_id", "org_id", "project_id")}
        settings = {"max_execution_time": seconds, "timeout_overflow_mode": "throw", "readonly": 1}
        if not self._lock.acquire(blocking=False):
            raise Busy()
        try:
            if self._client is None:
                self._client = store.open_handle(self.dsn)
            return timesheet(self._client, self.spec, by_project, limit=limit, settings=settings,
                             from_day=one(query, "from"), to_day=one(query, "to"), **filters)
        finally:
            self._lock.release()


class Busy(Exception):
    """Another timesheet holds the handle."""


def _bad(param: str, reason: str) -> Response:
    return json_response(400, {"detail": f"{param}: {reason}", "parameter": param})


def _limit(status: int, detail: str, limit: str) -> Response:
    return json_response(status, {"detail": detail, "limit": limit})
