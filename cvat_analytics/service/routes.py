"""The route table: every route names its method, its path, its handler and the
permission a caller needs (None: open to all). The access check reads the permission
from here and nowhere else; before it, every request passes origins.py's checks (the
Host it names, and whether a browser sent it from another site).

`table()` lists every route the service has; the modules beside this one provide the
handlers (ingest, health, metrics, export_routes, timesheet_routes, dashboard_routes,
clickhouse_http, openapi).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..store import chdb_path
from .access import ANONYMOUS, LOCAL, Token, authenticate, is_open
from .origins import Origins
from .responses import Response, json_response

if TYPE_CHECKING:
    from .http import RequestHandler

INGEST, EXPORT, DASHBOARDS, METRICS, SQL = "ingest", "export", "dashboards", "metrics", "sql"  # access.PERMISSIONS

Handler = Callable[["RequestHandler"], Response]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    permission: str | None  # None: anyone may call it, even with tokens configured
    prefix: bool = False  # also matches every path under `path` (which then ends in "/")
    # A GET route whose handler changes nothing also answers HEAD (the body left out);
    # one that starts or hands out an export does not: HEAD must have no side effects.
    head: bool = True

    def matches(self, method: str, path: str) -> bool:
        if method != self.method:
            return False
        return path.startswith(self.path) if self.prefix else path == self.path


class Routes:
    """Finds a request's route, checks the caller may use it, runs its handler."""

    def __init__(self, routes: list[Route], tokens: list[Token], metrics=None,
                 origins: Origins | None = None, sql_help: str = ""):
        self.routes = list(routes)
        self.tokens = tokens
        # Open mode (no token grants more than sql): every caller is LOCAL, sql excepted
        # (serve then binds to loopback only).
        self.open = is_open(tokens)
        self.metrics = metrics  # metrics.Metrics: counts every answer (http.py)
        self.origins = origins
        self.sql_help = sql_help  # how to get a token with the sql permission (table())

    def add(self, route: Route) -> None:
        self.routes.append(route)

    def find(self, method: str, path: str) -> Route | None:
        if method == "HEAD":
            route = self.find("GET", path)
            return route if route is not None and route.head else None
        exact = [r for r in self.routes if not r.prefix and r.matches(method, path)]
        return (exact or [r for r in self.routes if r.matches(method, path)] or [None])[0]

    def answer(self, request: "RequestHandler", path: str) -> Response:
        route = self.find(request.command, path)
        request.route = route.path if route else "unmatched"  # the metrics' label: never the raw path
        refused = None
        if self.origins is not None:
            refused = self.origins.refuse(request, path, ingest=route is not None and route.permission == INGEST)
        if refused is None:
            refused = self.check_access(request, route.permission if route else "")
        if refused is not None:
            return refused
        if route is not None:
            return route.handler(request)
        on_path = [r for r in self.routes if r.matches(r.method, path)]
        allowed = sorted({r.method for r in on_path} | {"HEAD" for r in on_path if r.method == "GET" and r.head})
        if allowed:
            return json_response(405, {"error": f"{request.command} not allowed on {path}"}, Allow=", ".join(allowed))
        return json_response(404, {"error": f"no such path: {path}"})

    def check_access(self, request: "RequestHandler", needed: str | None) -> Response | None:
        """Set request.principal; a 401/403 answer when the caller may not go on.
        `needed` "" (no such route): any known token may learn that it is a 404."""
        principal = authenticate(self.tokens, request.headers.get("Authorization"))
        if self.open and needed != SQL:
            request.principal = LOCAL
            return None
        if needed is None:  # open to all; a token still says who is asking
            request.principal = principal or ANONYMOUS
            return None
        if principal is None:
            request.close_connection = True  # a body we will not read may follow
            headers = {"WWW-Authenticate": 'Bearer realm="cvat-analytics"'}
            if needed == SQL:  # ClickHouse's AUTHENTICATION_FAILED, which its clients show
                headers["X-ClickHouse-Exception-Code"] = "516"
                return json_response(401, {"error": self.sql_help}, **headers)
            return json_response(401, {"error": "authentication required: send Authorization: Bearer <token>"},
                                 **headers)
        request.principal = principal
        if needed and needed not in principal.permissions:
            request.close_connection = True
            return json_response(403, {"error": f"token {principal.name!r} lacks the {needed!r} permission"})
        return None


def sql_help(spec: dict, tokens: list[Token]) -> str:
    """The 401 of /clickhouse: the SQL interface always needs a token, and where to find one."""
    text = ("the SQL interface needs a token with the sql permission: send Authorization: Bearer <secret> "
            "(or HTTP Basic with the secret as the password)")
    loaded = {token.principal.name for token in tokens}
    declared = [t for t in spec.get("access", {}).get("tokens", []) if SQL in t["permissions"]]
    if not declared:
        return text + "; no token has it: add one to access.tokens in the spec (docs/working-time-and-sql.md, SQL)"
    ready = [t["secret_env"] for t in declared if t["name"] in loaded]
    if ready:
        return text + f"; the secret is in the environment variable {ready[0]} (make up writes it to .env)"
    return text + (f"; its secret, the environment variable {declared[0]['secret_env']}, is not set where serve "
                   "runs: `make up` writes one to .env and starts serve with it")


def table(client, spec: dict, dsn: str, tokens: list[Token], jobs=None, pages=None) -> Routes:
    """Every route of the service. Export routes need `jobs` (export.ExportJobs), the
    dashboards `pages` (dashboards.Dashboards); without them those paths are 404."""
    from .export_routes import ExportRoutes
    from .health import Health
    from .ingest import Ingest
    from .metrics import Metrics
    from .openapi import OpenApi
    from .timesheet_routes import Timesheet

    metrics = Metrics(client, spec, jobs)
    routes = [
        Route("POST", "/", Ingest(client, spec, dsn), INGEST),
        Route("GET", "/health", Health(client, spec, dsn), None),
        Route("GET", "/metrics", metrics, METRICS),
    ]
    if jobs is not None:
        export = ExportRoutes(jobs, spec["embedded"].get("trusted_proxies", []))
        routes += [
            Route("GET", "/api/events", export.legacy, EXPORT, head=False),  # starts an export, or hands it out
            Route("POST", "/api/events/export", export.start, EXPORT),
            Route("GET", "/api/events/download", export.download, EXPORT, head=False),  # hands the file out
            Route("GET", "/api/requests", export.list, EXPORT),
            Route("GET", "/api/requests/", export.status, EXPORT, prefix=True),
            Route("POST", "/api/requests/", export.cancel, EXPORT, prefix=True),  # /api/requests/<id>/cancel
            Route("GET", "/api/timesheet", Timesheet(dsn, spec), EXPORT),  # docs/productivity.md
        ]
    if pages is not None:
        from .dashboard_routes import DashboardPages

        page = DashboardPages(pages)
        routes += [
            Route("GET", "/dashboards", page, DASHBOARDS),
            Route("GET", "/dashboards/", page, DASHBOARDS, prefix=True),
        ]
    data_path = chdb_path(dsn) if dsn else None
    if data_path is not None:  # on a ClickHouse server, SQL clients connect to the server itself
        from .clickhouse_http import PREFIX, ClickHouseHTTP

        sql = ClickHouseHTTP(data_path.resolve(), spec)
        routes += [Route(method, path, sql, SQL, prefix=path.endswith("/"))
                   for method in ("GET", "POST") for path in (PREFIX, PREFIX + "/")]
    every = Routes(routes, tokens, metrics, Origins(spec["embedded"]), sql_help(spec, tokens))
    every.add(Route("GET", "/openapi.json", OpenApi(every), None))
    return every
