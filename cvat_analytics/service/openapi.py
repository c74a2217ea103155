"""GET /openapi.json: the OpenAPI 3.1 document of every route `serve` has.

Written by hand, not derived from the route table, so that tests/test_openapi.py can
compare the two (every route documented, nothing documented that is not a route) and
schemathesis can check live answers against it. A prefix route of the table
(`/api/requests/`) is the path with one parameter here (`/api/requests/{rq_id}`).
The document served lists only the routes this server has (export and dashboards are
optional).
"""
from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from .responses import Response

if TYPE_CHECKING:
    from .http import RequestHandler
    from .routes import Routes

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_DETAIL = {"type": "object", "properties": {"detail": {"type": "string"}, "parameter": {"type": "string"}},
           "required": ["detail"]}


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return _json(description, {"$ref": "#/components/schemas/Error"})


def _detail(description: str) -> dict:
    return _json(description, {"$ref": "#/components/schemas/Detail"})


def _query(name: str, description: str, type_: str = "string") -> dict:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": {"type": type_}}


# Where the caller lacks a token or its permission (only when tokens are configured).
_REFUSED = {"401": _error("no or an unknown token (tokens are configured)"),
            "403": _error("the token lacks the route's permission")}
# A Host that is not one of serve's names (a rebinding DNS name): origins.py.
_FOREIGN_HOST = {"421": _error("the Host is not one of this service's names (embedded.allowed_hosts)")}
_FILTERS = [
    _query("org_id", "only events of this organization"),
    _query("project_id", "only events of this project"),
    _query("task_id", "only events of this task"),
    _query("job_id", "only events of this job"),
    _query("user_id", "only events of this user"),
    _query("from", "ISO 8601 time, naive = UTC (default: 30 days before `to`)"),
    _query("to", "ISO 8601 time, naive = UTC (default: now)"),
    _query("filename", "the attachment's file name"),
    _query("location", "only `local`"),
    _query("cloud_storage_id", "not available here (400)"),
]
_CSV = {"description": "the CSV file (once; the export is forgotten after)",
        "content": {"text/csv": {"schema": {"type": "string"}}}}
_HTML = {"text/html": {"schema": {"type": "string"}}}

def _text(description: str) -> dict:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


# /clickhouse and everything under it: ClickHouse's own interface, GET or POST alike.
_CLICKHOUSE = {
    "summary": "ClickHouse's own HTTP interface, read-only (docs/working-time-and-sql.md, SQL): the query in `query` or the body",
    "x-permission": "sql",
    "parameters": [_query("query", "the SQL"), _query("database", "the default database"),
                   _query("default_format", "the answer's format when the query names none")],
    "responses": {
        "200": {"description": "the result, in the format asked for", "content": {"*/*": {"schema": {}}}},
        "400": _text("ClickHouse's error (X-ClickHouse-Exception-Code)"),
        "403": {"description": "refused: not read-only, or a token with forced filters", "content": {"*/*": {"schema": {}}}},
        "404": _text("an unknown table or database"),
        "408": _text("past the time limit"),
        "500": _text("past the memory limit, or another engine error"),
        "501": _text("compression asked for"),
        "503": _text("too many SQL queries at once"),
        "401": _REFUSED["401"]}}

PATHS: dict[str, dict] = {
    "/": {"post": {
        "summary": "Store events (CVAT's server sends them here, as to Vector's http_server)",
        "description": "A JSON array of events, one event, or NDJSON; all or nothing. "
                       "An Idempotency-Key header makes a retry store nothing twice.",
        "x-permission": "ingest",
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                        "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"oneOf": [{"type": "array", "items": {"type": "object"}},
                                                      {"type": "object"}]}},
            "application/x-ndjson": {"schema": {"type": "string"}}}},
        "responses": {
            "200": _json("every event stored", {"type": "object", "properties": {"stored": {"type": "integer"}},
                                                "required": ["stored"]}),
            "400": _json("an event or the body is invalid: nothing stored", {
                "type": "object", "required": ["error", "index"],
                "properties": {"error": {"type": "string"}, "index": {"type": ["integer", "null"]},
                               "field": {"type": "string"}}}),
            "411": _error("no Content-Length and not chunked"),
            "413": _error("the body is larger than embedded.max_body_bytes"),
            "415": _error("not JSON, or a Content-Encoding other than gzip or deflate"),
            "501": _error("a Transfer-Encoding other than chunked"),
            **_REFUSED}}},
    "/health": {"get": {
        "summary": "Whether the store answers and no alert condition holds; details for callers with a token",
        "x-permission": None,
        "responses": {
            "200": _json("the store answers", {
                "type": "object", "required": ["status"],
                "properties": {"status": {"const": "ok"}, "database": {"type": "string"},
                               "dsn": {"type": "string"}, "events": {"type": "integer"}}}),
            "503": _json("the store does not answer (status error), or an alert condition holds (status alerting, "
                         "failing: their names)",
                         {"type": "object", "required": ["status"],
                          "properties": {"status": {"enum": ["error", "alerting"]},
                                         "failing": {"type": "array", "items": {"type": "string"}},
                                         "alerts": {"type": "object"}, "database": {"type": "string"},
                                         "dsn": {"type": "string"}, "events": {"type": "integer"}}}),
        }}},
    "/metrics": {"get": {
        "summary": "The service's metrics in Prometheus' text format",
        "x-permission": "metrics",
        "responses": {"200": {"description": "Prometheus text exposition format 0.0.4",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}, **_REFUSED}}},
    "/openapi.json": {"get": {
        "summary": "This document",
        "x-permission": None,
        "responses": {"200": _json("the OpenAPI 3.1 document", {"type": "object"})}}},
    "/api/events": {"get": {
        "summary": "CVAT's legacy export: 202 {query_id}, then 202 / 201, then action=download",
        "deprecated": True,
        "x-permission": "export",
        "parameters": [*_FILTERS, _query("query_id", "the export started by the first call"),
                       _query("action", "`download` once the export is ready")],
        "responses": {
            "200": _CSV,
            "201": _json("ready", {"type": "object", "required": ["query_id", "status"],
                                   "properties": {"query_id": {"type": "string"}, "status": {"const": "finished"}}}),
            "202": _json("started, or still running", {
                "type": "object", "required": ["query_id"],
                "properties": {"query_id": {"type": "string"}, "status": {"type": "string"}}}),
            "400": _detail("a parameter is invalid"),
            "403": _json("forbidden: no token permission, or a filter outside the token's forced filters",
                         {"type": "object"}),
            "404": _detail("unknown query_id (expired or downloaded)"),
            "500": _detail("the export failed"),
            "401": _REFUSED["401"]}}},
    "/api/timesheet": {"get": {
        "summary": "Working time per user and day (and project) as CSV (docs/productivity.md, Timesheets)",
        "x-permission": "export",
        "parameters": [_query("from", "first day, YYYY-MM-DD (UTC)"), _query("to", "last day, YYYY-MM-DD (UTC)"),
                       _query("user_id", "only this user"), _query("org_id", "only time on this organisation's jobs"),
                       _query("project_id", "only time on this project"),
                       _query("by", "`project`: a row per user, day and project")],
        "responses": {
            "200": {"description": "the timesheet", "content": {"text/csv": {"schema": {"type": "string"}}}},
            "400": _detail("a parameter is invalid, or the timesheet passes embedded.timesheet.max_rows or max_bytes"),
            "403": _json("forbidden: no token permission, or a filter outside the token's forced filters",
                         {"type": "object"}),
            "408": _detail("the query ran past embedded.timesheet.max_seconds"),
            "429": _detail("another timesheet is running (one at a time); Retry-After"),
            "401": _REFUSED["401"]}}},
    "/api/events/export": {"post": {
        "summary": "Start an export: 202 {rq_id}",
        "x-permission": "export",
        "parameters": _FILTERS,
        "responses": {
            "202": _json("started", {"type": "object", "required": ["rq_id"],
                                     "properties": {"rq_id": {"type": "string"}}}),
            "400": _detail("a parameter is invalid"),
            "403": _json("forbidden", {"type": "object"}),
            "401": _REFUSED["401"]}}},
    "/api/events/download": {"get": {
        "summary": "The finished export's CSV, once",
        "x-permission": "export",
        "parameters": [{**_query("rq_id", "the export's id"), "required": True}, _query("filename", "file name")],
        "responses": {
            "200": _CSV,
            "400": _detail("no rq_id, or the export is not finished"),
            "404": _detail("unknown rq_id"),
            "500": _detail("the export failed"),
            "403": _json("forbidden", {"type": "object"}),
            "401": _REFUSED["401"]}}},
    "/api/requests/{rq_id}": {"get": {
        "summary": "An export's state as CVAT's request object",
        "x-permission": "export",
        "parameters": [{"name": "rq_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {
            "200": _json("the request", {"$ref": "#/components/schemas/Request"}),
            "404": _detail("unknown request"),
            "403": _json("forbidden", {"type": "object"}),
            "401": _REFUSED["401"]}}},
    "/api/requests": {"get": {
        "summary": "The caller's own export requests, newest first, in CVAT's page shape",
        "x-permission": "export",
        "parameters": [_query("page", "page number, from 1"), _query("page_size", "requests per page (1-1000)"),
                       _query("status", "only requests in this state")],
        "responses": {
            "200": _json("a page", {"type": "object", "required": ["count", "next", "previous", "results"],
                                    "properties": {"count": {"type": "integer"},
                                                   "next": {"type": ["string", "null"]},
                                                   "previous": {"type": ["string", "null"]},
                                                   "results": {"type": "array", "items": {
                                                       "$ref": "#/components/schemas/Request"}}}}),
            "400": _detail("a parameter is invalid"),
            "403": _json("forbidden", {"type": "object"}),
            "401": _REFUSED["401"]}}},
    "/api/requests/{rq_id}/cancel": {"post": {
        "summary": "Cancel an export: the request and its file are gone",
        "x-permission": "export",
        "parameters": [{"name": "rq_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {
            "200": {"description": "cancelled"},
            "404": _detail("unknown request"),
            "403": _json("forbidden", {"type": "object"}),
            "401": _REFUSED["401"]}}},
    "/clickhouse": {"get": _CLICKHOUSE, "post": _CLICKHOUSE},
    "/clickhouse/{rest}": {"get": _CLICKHOUSE, "post": _CLICKHOUSE},
    "/dashboards": {"get": {
        "summary": "The list of dashboards, as an HTML page",
        "x-permission": "dashboards",
        "responses": {"200": {"description": "the page", "content": _HTML}, **_REFUSED}}},
    "/dashboards/{uid}": {"get": {
        "summary": "One dashboard, drawn as an HTML page",
        "x-permission": "dashboards",
        "parameters": [{"name": "uid", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "the page", "content": _HTML},
                      "400": {"description": "a variable's value is invalid", "content": _HTML},
                      "404": {"description": "no such dashboard", "content": _HTML}, **_REFUSED}}},
}

COMPONENTS = {
    "schemas": {
        "Error": _ERROR,
        "Detail": _DETAIL,
        "Request": {"type": "object", "required": ["id", "status", "operation"], "properties": {
            "id": {"type": "string"},
            "status": {"enum": ["queued", "started", "finished", "failed"]},
            "message": {"type": "string"},
            "progress": {"type": "number"},
            "created_date": {"type": ["string", "null"]},
            "started_date": {"type": ["string", "null"]},
            "finished_date": {"type": ["string", "null"]},
            "expiry_date": {"type": ["string", "null"]},
            "operation": {"type": "object"},
            "result_url": {"type": ["string", "null"]},
            "result_id": {"type": "null"}}},
    },
    "securitySchemes": {"token": {"type": "http", "scheme": "bearer",
                                  "description": "access.tokens in the spec; `Token <secret>` works too"}},
}


def table_path(route_path: str, prefix: bool, method: str = "get") -> str:
    """The document's path for a route of the table: a prefix route takes one parameter
    (the documented path under that prefix that has the route's method)."""
    if not prefix:
        return route_path
    return next(p for p in PATHS if p.startswith(route_path) and p[len(route_path):].startswith("{")
                and method.lower() in PATHS[p])


def head_of(get: dict) -> dict:
    """The HEAD operation of a GET: the same answers, headers only."""
    return {**get, "summary": "Headers only: " + get["summary"],
            "responses": {status: {k: v for k, v in answer.items() if k != "content"}
                          for status, answer in get["responses"].items()}}


def document(routes: "Routes") -> dict:
    """The document for the routes this server has."""
    paths: dict[str, dict] = {}
    for route in routes.routes:
        path = table_path(route.path, route.prefix, route.method)
        operation = PATHS[path][route.method.lower()]
        if (route.method, route.path) != ("POST", "/"):  # every route but ingest judges the Host (origins.py)
            operation = {**operation, "responses": {**operation["responses"], **_FOREIGN_HOST}}
        paths.setdefault(path, {})[route.method.lower()] = operation
        if route.method == "GET" and route.head:  # answered like GET, without the body
            paths[path]["head"] = head_of(operation)
    try:
        release = version("cvat-analytics")
    except PackageNotFoundError:
        release = "0"
    return {"openapi": "3.1.0",
            "info": {"title": "cvat-analytics serve", "version": release,
                     "description": "The embedded service: CVAT's events in, CSV export and dashboards out."},
            "paths": paths, "components": COMPONENTS,
            # No token is needed when none is configured (serve then listens on loopback only).
            "security": [{}, {"token": []}]}


class OpenApi:
    """The GET /openapi.json handler."""

    def __init__(self, routes: "Routes"):
        self.routes = routes

    def __call__(self, request: "RequestHandler") -> Response:
        return Response(200, json.dumps(document(self.routes)).encode() + b"\n")
