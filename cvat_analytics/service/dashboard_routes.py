"""GET /dashboards (the list) and /dashboards/<uid>: the dashboards as HTML pages
(cvat_analytics.dashboards draws them), with the caller's forced filters applied."""
from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from .. import dashboards
from .responses import Response

if TYPE_CHECKING:
    from .http import RequestHandler

HEADERS = {
    "Cache-Control": "no-store",
    # Everything is inline and nothing is fetched: a page cannot load anything from elsewhere.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                               "form-action 'self'; frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
}


class DashboardPages:
    """The handler of both routes: the path and query string to dashboards.handle, its HTML back."""

    def __init__(self, pages: "dashboards.Dashboards"):
        self.pages = pages

    def __call__(self, request: "RequestHandler") -> Response:
        url = urlsplit(request.path)
        forced = dict(request.principal.forced_filters)
        status, html = dashboards.handle(self.pages, url.path, parse_qs(url.query), forced)
        return Response(status, html.encode(), "text/html; charset=utf-8", dict(HEADERS))
