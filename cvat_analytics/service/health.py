"""GET /health: the store answers; the event count is a metadata read for MergeTree."""
from __future__ import annotations

from typing import TYPE_CHECKING

from cvat_analytics_generator.render import context, environment

from ..errors import first_line
from ..store import redact
from .http import Response, json_response

if TYPE_CHECKING:
    from .http import RequestHandler


class Health:
    def __init__(self, client, spec: dict, dsn: str):
        self.client = client
        self.database = spec["clickhouse"]["database"]
        self.dsn = dsn
        self.count_sql = environment().get_template("clickhouse/queries/events_count.sql.j2").render(context(spec))

    def __call__(self, request: "RequestHandler") -> Response:
        data = {"database": self.database, "dsn": redact(self.dsn)}
        try:
            count = self.client.command(self.count_sql)
        except Exception as exc:
            return json_response(503, {"status": "error", "error": first_line(exc), **data})
        return json_response(200, {"status": "ok", **data, "events": int(count)})
