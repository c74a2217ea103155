"""CVAT's CSV export over HTTP (see docs/cvat-compatibility.md, Export):

- the legacy flow, GET /api/events: 202 {query_id} -> 202 running / 201 ready ->
  the same call with action=download gets the file (200);
- the newer flow: POST /api/events/export -> 202 {rq_id}; GET /api/requests/<rq_id>
  (CVAT's request object, result_url once finished); GET /api/events/download?rq_id=,
  which can be repeated until the request's expiry_date; GET /api/requests (the
  caller's own, paginated as CVAT's) and POST /api/requests/<rq_id>/cancel.

The caller's forced filters are set in the query (403 on a conflict), and an export is
visible only to the principal that started it (CVAT: only the owner downloads). A new
export beyond embedded.export's bounds is 429 (or 507, disk) with Retry-After; a failed
export's 500 names the request, never ClickHouse's text (that goes to the log).
"""
from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import TYPE_CHECKING, BinaryIO, Callable
from urllib.parse import parse_qs, urlsplit

from ..export import ExportJobs, ExportRefused, FilterError, Job, parse_filters, sanitize_filename
from ..export.filters import UTC, one
from .access import Forbidden, apply_forced_filters
from .responses import Response, json_response

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


def _start(jobs: ExportJobs, query: dict, owner: str) -> Job | Response:
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
    try:
        return jobs.submit(filters, sanitize_filename(one(query, "filename")), owner=owner)
    except ExportRefused as exc:
        return _json(exc.status, {"detail": str(exc), "limit": exc.limit}, {"Retry-After": str(exc.retry_after)})


def _failed(job: Job, headers: dict | None = None) -> Response:
    return _json(500, {"detail": _failure_message(job), "rq_id": job.id}, headers)


def _failure_message(job: Job) -> str:
    if job.reason:
        return f"the export {job.id} failed: {job.reason}"
    return f"the export {job.id} failed; the service log has the reason"


def handle_legacy_get(jobs: ExportJobs, query: dict, owner: str = "local") -> Response:
    """GET /api/events: 202 {query_id} -> 202 running / 201 ready -> action=download 200."""
    dep = {"Deprecation": LEGACY_DEPRECATION, "Link": '</api/events/export>; rel="successor-version"'}
    action = one(query, "action")
    if action not in (None, "", "download"):
        return _bad("action", f"unknown action {action[:40]!r}; the only action is 'download'", dep)
    query_id = one(query, "query_id")
    if not query_id:
        if action:
            return _bad("query_id", "action=download needs the query_id of a started export", dep)
        started = _start(jobs, query, owner)
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
        return _failed(job, dep)
    if job.status != "finished":
        return _json(202, {"query_id": job.id, "status": job.status}, dep)
    if action == "download":
        filename = sanitize_filename(one(query, "filename")) or job.filename
        fh = jobs.take(job.id)  # CVAT's legacy flow forgets the export once downloaded
        if fh is None:  # downloaded by a concurrent request
            return _json(404, {"detail": f"unknown query_id {query_id[:64]!r}"}, dep)
        return _attachment(fh, filename, dep)
    return _json(201, {"query_id": job.id, "status": "finished"}, dep)


def handle_export_post(jobs: ExportJobs, query: dict, owner: str = "local") -> Response:
    """POST /api/events/export (filters in the query string): 202 {rq_id}."""
    started = _start(jobs, query, owner)
    if isinstance(started, Response):
        return started
    return _json(202, {"rq_id": started.id})


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts else None


def request_object(job: Job, base_url: str) -> dict:
    """CVAT's Request (engine/serializers.py RequestSerializer) for an export job."""
    status = _RQ_STATUS[job.status]
    f = job.filters
    return {
        "id": job.id,
        "status": status,
        "message": _failure_message(job) if status == "failed" else "",
        "progress": (job.rows / job.rows_total) if job.rows_total else (1.0 if status == "finished" else 0.0),
        "created_date": _iso(job.created),
        "started_date": _iso(job.started),
        "finished_date": _iso(job.finished),
        "expiry_date": _iso(job.expires),
        "owner": {"id": 0, "username": job.owner},  # tokens have names, not CVAT user ids
        "operation": {"type": "export:events", "target": "events", "format": "CSV",
                      "project_id": f.project_id, "task_id": f.task_id, "job_id": f.job_id, "org_id": f.org_id,
                      "function_id": None, "lightweight": None},
        "result_url": f"{base_url}/api/events/download?rq_id={job.id}" if status == "finished" else None,
        "result_id": None,
    }


def handle_request_status(jobs: ExportJobs, rq_id: str, base_url: str = "") -> Response:
    """GET /api/requests/{rq_id}: CVAT's request object, result_url once finished."""
    job = jobs.get(rq_id)
    if job is None:
        return _json(404, {"detail": f"unknown request {rq_id[:64]!r}"})
    return _json(200, request_object(job, base_url))


def handle_request_list(jobs: ExportJobs, query: dict, owner: str, base_url: str = "") -> Response:
    """GET /api/requests: the caller's own requests, newest first, in CVAT's page shape."""
    sizes = {}
    for name, default, most in (("page", 1, 10**6), ("page_size", 10, 1000)):
        text = one(query, name)
        if text is None:
            sizes[name] = default
        elif not (text.isascii() and text.isdigit() and 1 <= int(text) <= most):
            return _bad(name, f"must be an integer from 1 to {most}")
        else:
            sizes[name] = int(text)
    page, size = sizes["page"], sizes["page_size"]
    mine = jobs.list(owner)
    status = one(query, "status")
    if status:
        mine = [j for j in mine if _RQ_STATUS[j.status] == status]
    results = [request_object(j, base_url) for j in mine[(page - 1) * size: page * size]]

    def link(p: int) -> str:
        return f"{base_url}/api/requests?page={p}&page_size={size}" + (f"&status={status}" if status else "")

    return _json(200, {"count": len(mine), "next": link(page + 1) if page * size < len(mine) else None,
                       "previous": link(page - 1) if page > 1 else None, "results": results})


def handle_cancel(jobs: ExportJobs, rq_id: str) -> Response:
    """POST /api/requests/{rq_id}/cancel: the request and its file are gone (200)."""
    if not jobs.cancel(rq_id):
        return _json(404, {"detail": f"unknown request {rq_id[:64]!r}"})
    return Response(200, b"")


def handle_download(jobs: ExportJobs, query: dict) -> Response:
    """GET /api/events/download?rq_id=: the file (again until expiry_date), 404 unknown,
    400 not ready, 500 failed."""
    rq_id = one(query, "rq_id")
    if not rq_id:
        return _bad("rq_id", "required")
    job = jobs.get(rq_id)
    if job is None:
        return _json(404, {"detail": f"unknown rq_id {rq_id[:64]!r} (expired or cancelled)"})
    if job.status == "failed":
        return _failed(job)
    if job.status != "finished":
        return _bad("rq_id", f"the export is {job.status}, not finished yet")
    filename = sanitize_filename(one(query, "filename")) or job.filename
    fh = jobs.open(job.id)
    if fh is None:
        return _json(404, {"detail": f"unknown rq_id {rq_id[:64]!r}"})
    return _attachment(fh, filename)


_HOST = re.compile(r"^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")


def base_url(request: "RequestHandler", trusted_proxies: list) -> str:
    """scheme://host the caller used: X-Forwarded-Proto/-Host from a trusted proxy, else
    Host, else the address the server is bound to."""
    scheme, host = "http", request.headers.get("Host", "").strip()
    if trusted_proxies and _from_trusted(request.client_address[0], trusted_proxies):
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        forwarded = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
        scheme = proto if proto in ("http", "https") else scheme
        host = forwarded or host
    return f"{scheme}://{host}" if _HOST.match(host) else request.server.url


def _from_trusted(address: str, networks: list) -> bool:
    try:
        peer = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(peer in net for net in networks)


class ExportRoutes:
    """The route handlers: forced filters applied, each export kept to its owner."""

    def __init__(self, jobs: ExportJobs, trusted_proxies: list[str] | None = None):
        self.jobs = jobs
        self.trusted_proxies = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies or []]

    def legacy(self, request: "RequestHandler") -> Response:
        return self._guarded(request, lambda query: handle_legacy_get(self.jobs, query, request.principal.name))

    def start(self, request: "RequestHandler") -> Response:
        return self._guarded(request, lambda query: handle_export_post(self.jobs, query, request.principal.name))

    def download(self, request: "RequestHandler") -> Response:
        return self._guarded(request, lambda query: handle_download(self.jobs, query))

    def status(self, request: "RequestHandler") -> Response:
        rq_id = urlsplit(request.path).path.rsplit("/", 1)[-1]
        url = base_url(request, self.trusted_proxies)
        return self._guarded(request, lambda query: handle_request_status(self.jobs, rq_id, url))

    def list(self, request: "RequestHandler") -> Response:
        url = base_url(request, self.trusted_proxies)
        return self._guarded(request, lambda query: handle_request_list(self.jobs, query, request.principal.name, url))

    def cancel(self, request: "RequestHandler") -> Response:
        parts = urlsplit(request.path).path.split("/")  # "", api, requests, <id>, cancel
        if len(parts) != 5 or parts[4] != "cancel":
            return json_response(404, {"error": f"no such path: {urlsplit(request.path).path[:100]}"})
        return self._guarded(request, lambda query: handle_cancel(self.jobs, parts[3]), job_id=parts[3])

    def _guarded(self, request: "RequestHandler", handle: Callable[[dict], Response],
                 job_id: str | None = None) -> Response:
        # Blank values are kept, so `?job_id=` answers 400 instead of being ignored.
        query = parse_qs(urlsplit(request.path).query, keep_blank_values=True)
        try:
            query = apply_forced_filters(request.principal, query)
        except Forbidden as exc:
            return json_response(403, {"detail": str(exc)})
        path_id = job_id or urlsplit(request.path).path.rsplit("/", 1)[-1]
        for asked in (*query.get("query_id", []), *query.get("rq_id", []), path_id):
            job = self.jobs.get(asked)
            if job is not None and job.owner != request.principal.name:
                return json_response(404, {"detail": f"unknown export {asked[:64]!r}"})
        return handle(query)
