"""GET /health: the store answers and no alert condition holds; the event count is a
metadata read for MergeTree.

The rule (docs/embedded-service.md): 200 {"status": "ok"} when the store answers and no
alert condition (service/alerts.py, the SQL of Grafana's alert rules) is above its
threshold; 503 {"status": "alerting", "failing": [names]} when one is, the names for
every caller (they say what is wrong, not what is stored); 503 {"status": "error"} when
the store does not answer. The overflow's answer (no request) checks the store only; the
alert readings are at most READINGS_MAX_AGE_S old.

The database, the DSN (the data's path on chdb) and the count of every organisation's
events are for callers that may read every organisation's events anyway (access.py,
may_see_everything: no forced filter, and export, dashboards or sql); anyone else (no
token, an ingest-only or metrics-only token, a forced filter) gets the status only.
Errors go to the log."""
from __future__ import annotations

from typing import TYPE_CHECKING

from cvat_analytics_generator.render import context, environment

from ..store import redact
from .access import may_see_everything
from .alerts import Alerts
from .responses import Response, json_response
from .logs import SERVICE

# /health's alert readings are at most this old (docs/dashboards.md, Alerts): a health check
# polled every second then costs the engine four small queries per 5 s, not per call.
READINGS_MAX_AGE_S = 5.0

if TYPE_CHECKING:
    from .http import RequestHandler


class Health:
    def __init__(self, client, spec: dict, dsn: str):
        self.client = client
        self.database = spec["clickhouse"]["database"]
        self.dsn = dsn
        self.alerts = Alerts(client, spec, max_age_s=READINGS_MAX_AGE_S)
        self.count_sql = environment().get_template("clickhouse/queries/events_count.sql.j2").render(context(spec))

    def __call__(self, request: "RequestHandler | None") -> Response:
        """`request` None: the overflow's answer (overflow.py), status only."""
        detailed = request is not None and may_see_everything(request.principal)
        try:
            count = self.client.command(self.count_sql)
        except Exception:
            SERVICE.error("/health: the store does not answer", exc_info=True,
                          extra={"request_id": getattr(request, "request_id", None)})
            return json_response(503, {"status": "error"})
        details = {"database": self.database, "dsn": redact(self.dsn), "events": int(count)} if detailed else {}
        if request is None:
            return json_response(200, {"status": "ok"})
        return self._alerts(request, details)

    def _alerts(self, request: "RequestHandler", details: dict) -> Response:
        try:
            readings = self.alerts.read()
        except Exception:
            SERVICE.error("/health: the alert conditions could not be read", exc_info=True,
                          extra={"request_id": getattr(request, "request_id", None)})
            return json_response(503, {"status": "error"})
        failing = [r for r in readings if r.failing]
        if not failing:
            return json_response(200, {"status": "ok", **details})
        if details:
            details["alerts"] = {r.condition.name: {"value": r.value, "threshold": r.condition.threshold}
                                 for r in failing}
        return json_response(503, {"status": "alerting", "failing": [r.condition.name for r in failing], **details})
