"""GET /health: the store answers; the event count is a metadata read for MergeTree.

A caller without a token (when tokens are configured) gets the status only: the
database, DSN and count are for callers the service knows. Errors go to the log."""
from __future__ import annotations

from typing import TYPE_CHECKING

from cvat_analytics_generator.render import context, environment

from ..store import redact
from .responses import Response, json_response
from .logs import SERVICE

if TYPE_CHECKING:
    from .http import RequestHandler


class Health:
    def __init__(self, client, spec: dict, dsn: str):
        self.client = client
        self.database = spec["clickhouse"]["database"]
        self.dsn = dsn
        self.count_sql = environment().get_template("clickhouse/queries/events_count.sql.j2").render(context(spec))

    def __call__(self, request: "RequestHandler | None") -> Response:
        """`request` None: the overflow's answer (overflow.py), status only."""
        detailed = request is not None and bool(request.principal.permissions)
        try:
            count = self.client.command(self.count_sql)
        except Exception:
            SERVICE.error("/health: the store does not answer", exc_info=True,
                          extra={"request_id": getattr(request, "request_id", None)})
            return json_response(503, {"status": "error"})
        if not detailed:
            return json_response(200, {"status": "ok"})
        return json_response(200, {"status": "ok", "database": self.database, "dsn": redact(self.dsn),
                                   "events": int(count)})
