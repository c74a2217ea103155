"""CVAT's CSV export over HTTP (see docs/cvat-compatibility.md, Export):

- the legacy flow, GET /api/events: 202 {query_id} -> 202 running / 201 ready ->
  the same call with action=download gets the file (200);
- the newer flow: POST /api/events/export -> 202 {rq_id}; GET /api/requests/<rq_id>
  (CVAT's request object, result_url once finished); GET /api/events/download?rq_id=.

The caller's forced filters are set in the query (403 on a conflict), and an export is
visible only to the principal that started it (CVAT: only the owner downloads).
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, BinaryIO, Callable
from urllib.parse import parse_qs, urlsplit

from ..export import ExportJobs, FilterError, Job, parse_filters, sanitize_filename
from ..export.filters import UTC, one
from .access import Forbidden, apply_forced_filters
from .http import Response, json_response

if TYPE_CHECKING:
    from .http import RequestHandler

# CVAT marked GET /api/events deprecated on 2025-03-17 (RFC 9745 header).
LEGACY_DEPRECATION = "@1742169600"
_RQ_STATUS = {"queued": "queued", "running": "started", "finished": "finished", "failed": "failed"}


def _json(status: int, data: dict, headers: dict | None = None) -> Response:
    return json_response(status, data, **(headers or {}))


def _bad(param: str, reason: str, headers: dict | None = None) -> Response:
    return _json(400, {"detail": f"{param}: {reason}", "parameter": param}, headers)


def _attachment(fh: BinaryIO, filename: str, headers: dict | None = None) -> Response:
    return Response(200, fh, "text/csv; charset=utf-8",
                    {"Content-Disposition": f'attachment; filename="{filename}"', **(headers or {})})


def _start(jobs: ExportJobs, query: dict) -> Job | Response:
    """Validate and submit; a Response when the request is refused."""
    try:
        filters = parse_filters(query)
    except FilterError as exc:
        return _bad(exc.param, exc.reason)
    location = one(query, "location")
    if location not in (None, "", "local"):
        return _bad("location", "only 'local' is available here (no cloud storage)")
    if one(query, "cloud_storage_id") is not None:
        return _bad("cloud_storage_id", "cloud storage is not available here")
    return jobs.submit(filters, sanitize_filename(one(query, "filename")))


def handle_legacy_get(jobs: ExportJobs, query: dict) -> Response:
    """GET /api/events: 202 {query_id} -> 202 running / 201 ready -> action=download 200."""
    dep = {"Deprecation": LEGACY_DEPRECATION, "Link": '</api/events/export>; rel="successor-version"'}
    action = one(query, "action")
    if action not in (None, "", "download"):
        return _bad("action", f"unknown action {action[:40]!r}; the only action is 'download'", dep)
    query_id = one(query, "query_id")
    if not query_id:
        if action:
            return _bad("query_id", "action=download needs the query_id of a started export", dep)
        started = _start(jobs, query)
        if isinstance(started, Response):
            started.headers.update(dep)
            return started
        return _json(202, {"query_id": started.id}, dep)
    try:
        parse_filters(query)  # the same parameters are repeated on every call; still check them
    except FilterError as exc:
        return _bad(exc.param, exc.reason, dep)
    job = jobs.get(query_id)
    if job is None:
        return _json(404, {"detail": f"unknown query_id {query_id[:64]!r} (expired or already downloaded)"}, dep)
    if job.status == "failed":
        return _json(500, {"detail": f"the export failed: {job.reason}"}, dep)
    if job.status != "finished":
        return _json(202, {"query_id": job.id, "status": job.status}, dep)
    if action == "download":
        filename = sanitize_filename(one(query, "filename")) or job.filename
        fh = jobs.take(job.id)
        if fh is None:  # downloaded by a concurrent request
            return _json(404, {"detail": f"unknown query_id {query_id[:64]!r}"}, dep)
        return _attachment(fh, filename, dep)
    return _json(201, {"query_id": job.id, "status": "finished"}, dep)


def handle_export_post(jobs: ExportJobs, query: dict) -> Response:
    """POST /api/events/export (filters in the query string): 202 {rq_id}."""
    started = _start(jobs, query)
    if isinstance(started, Response):
        return started
    return _json(202, {"rq_id": started.id})


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts else None


def handle_request_status(jobs: ExportJobs, rq_id: str, base_url: str = "") -> Response:
    """GET /api/requests/{rq_id}: CVAT's request object, result_url once finished."""
    job = jobs.get(rq_id)
    if job is None:
        return _json(404, {"detail": f"unknown request {rq_id[:64]!r}"})
    status = _RQ_STATUS[job.status]
    body = {
        "id": job.id,
        "status": status,
        "message": job.reason or "",
        "progress": (job.rows / job.rows_total) if job.rows_total else (1.0 if status == "finished" else 0.0),
        "created_date": _iso(job.created),
        "started_date": _iso(job.started),
        "finished_date": _iso(job.finished),
        "expiry_date": _iso(job.expires) if job.finished else None,
        "operation": {"type": "export:events", "target": "events", "format": "CSV"},
        "result_url": f"{base_url}/api/events/download?rq_id={job.id}" if status == "finished" else None,
        "result_id": None,
    }
    return _json(200, body)


def handle_download(jobs: ExportJobs, query: dict) -> Response:
    """GET /api/events/download?rq_id=: the file (once), 404 unknown, 400 not ready, 500 failed."""
    rq_id = one(query, "rq_id")
    if not rq_id:
        return _bad("rq_id", "required")
    job = jobs.get(rq_id)
    if job is None:
        return _json(404, {"detail": f"unknown rq_id {rq_id[:64]!r} (expired or already downloaded)"})
    if job.status == "failed":
        return _json(500, {"detail": f"the export failed: {job.reason}"})
    if job.status != "finished":
        return _bad("rq_id", f"the export is {job.status}, not finished yet")
    filename = sanitize_filename(one(query, "filename")) or job.filename
    fh = jobs.take(job.id)
    if fh is None:
        return _json(404, {"detail": f"unknown rq_id {rq_id[:64]!r}"})
    return _attachment(fh, filename)


class ExportRoutes:
    """The route handlers: forced filters applied, each export kept to its owner."""

    def __init__(self, jobs: ExportJobs):
        self.jobs = jobs
        self.owners: dict[str, str] = {}  # export id -> name of the principal that started it

    def legacy(self, request: "RequestHandler") -> Response:
        return self._guarded(request, lambda query: handle_legacy_get(self.jobs, query))

    def start(self, request: "RequestHandler") -> Response:
        return self._guarded(request, lambda query: handle_export_post(self.jobs, query))

    def download(self, request: "RequestHandler") -> Response:
        return self._guarded(request, lambda query: handle_download(self.jobs, query))

    def status(self, request: "RequestHandler") -> Response:
        rq_id = urlsplit(request.path).path.rsplit("/", 1)[-1]
        return self._guarded(request, lambda query: handle_request_status(self.jobs, rq_id, request.server.url))

    def _guarded(self, request: "RequestHandler", handle: Callable[[dict], Response]) -> Response:
        # Blank values are kept, so `?job_id=` answers 400 instead of being ignored.
        query = parse_qs(urlsplit(request.path).query, keep_blank_values=True)
        try:
            query = apply_forced_filters(request.principal, query)
        except Forbidden as exc:
            return json_response(403, {"detail": str(exc)})
        path_id = urlsplit(request.path).path.rsplit("/", 1)[-1]
        for job_id in (*query.get("query_id", []), *query.get("rq_id", []), path_id):
            if self.owners.get(job_id, request.principal.name) != request.principal.name:
                return json_response(404, {"detail": f"unknown export {job_id[:64]!r}"})
        result = handle(query)
        if result.status == 202 and isinstance(result.body, bytes):
            started = json.loads(result.body)
            job_id = started.get("rq_id") or started.get("query_id")
            if job_id:
                self.owners.setdefault(job_id, request.principal.name)
        return result
