"""GET /metrics: the service in Prometheus' text format (prometheus-client).

Counted as requests are answered (http.py calls `Metrics.observe`): requests by route
and status, events accepted, ingest requests refused by reason. Read from the engine
and the export jobs when scraped: engine up, the working-time refresh's lag, failures in a
row and last error, export jobs by
state and their bytes on disk. The insert latency histogram is process-wide
(store.insert_json_rows and insert_compact_rows observe it, whoever inserts).

Each server has a registry of its own, so two servers in one process (the tests)
count apart; the names are documented in docs/embedded-service.md.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.core import GaugeMetricFamily

from cvat_analytics_generator.render import render_template
from cvat_analytics_generator.sql import parse

from ..store import INSERT_REGISTRY
from .alerts import Alerts, alert_gauges
from .responses import Response
from .logs import SERVICE

if TYPE_CHECKING:
    from ..export import ExportJobs
    from .http import RequestHandler

QUERIES = "clickhouse/runtime/service_metrics.sql.j2"
# Why POST / was refused, by status; anything else is "other".
REFUSED_REASONS = {400: "invalid", 401: "unauthenticated", 403: "forbidden", 411: "length_required",
                   413: "too_large", 415: "unsupported_media_type", 500: "error", 503: "unavailable"}
JOB_STATES = ("queued", "running", "finished", "failed")
ERROR_LABEL_CHARS = 200  # of a refresh's error, in a label: its first line, cut


def refresh_state(client, queries) -> tuple[float | None, int, str, float | None]:
    """The working-time refresh as its logged runs tell it: seconds from its watermark to
    now (None before its first run), failed runs in a row, the last one's error; and the
    productivity state's refresh: seconds from its watermark to now (None before its first run)."""
    lag, failures, error, state_lag = client.query(queries.named("refresh_state")).result_rows[0]
    return (float(lag) if lag is not None else None), int(failures), error, \
        (float(state_lag) if state_lag is not None else None)


class Metrics:
    """The /metrics handler and the counters the HTTP layer feeds."""

    def __init__(self, client, spec: dict, jobs: "ExportJobs | None" = None):
        self.client = client
        self.jobs = jobs
        self.queries = parse(render_template(spec, QUERIES), QUERIES)
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("cvat_analytics_http_requests", "HTTP requests answered, by route and status",
                                ["route", "method", "status"], registry=self.registry)
        self.events_accepted = Counter("cvat_analytics_events_accepted", "Events stored by POST /",
                                       registry=self.registry)
        self.ingest_refused = Counter("cvat_analytics_ingest_refused",
                                      "POST / requests refused (nothing of them stored), by reason",
                                      ["reason"], registry=self.registry)
        self.registry.register(_ScrapeTime(self))
        self.registry.register(_AlertConditions(Alerts(client, spec)))

    def observe(self, route: str, method: str, status: int, events: int) -> None:
        self.requests.labels(route, method, str(status)).inc()
        if route == "/" and method == "POST":
            if status == 200:
                self.events_accepted.inc(events)
            else:
                self.ingest_refused.labels(REFUSED_REASONS.get(status, "other")).inc()

    def __call__(self, request: "RequestHandler") -> Response:
        body = generate_latest(self.registry) + generate_latest(INSERT_REGISTRY)
        # 0.0.4: the text format every Prometheus release reads (the body is the same).
        return Response(200, body, CONTENT_TYPE_PLAIN_0_0_4, {"Cache-Control": "no-store"})


class _ScrapeTime:
    """The gauges read when /metrics is asked for."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def describe(self):
        return []  # nothing is read from the engine when the registry is built

    def collect(self):
        m = self.metrics
        up = GaugeMetricFamily("cvat_analytics_engine_up", "1 when ClickHouse answers SELECT 1, else 0")
        lag = GaugeMetricFamily("cvat_analytics_working_time_refresh_lag_seconds",
                                "Seconds from the working-time refresh's watermark to now: totals count every "
                                "event inserted before it (absent before the first refresh)")
        failures = GaugeMetricFamily("cvat_analytics_working_time_refresh_failures",
                                     "Working-time refreshes failed in a row (0 when the last one worked)")
        state_lag = GaugeMetricFamily("cvat_analytics_productivity_refresh_lag_seconds",
                                      "Seconds from the productivity state's last refresh watermark to now: it "
                                      "grows while its runs fail (absent before the first run)")
        error = GaugeMetricFamily("cvat_analytics_working_time_refresh_last_error",
                                  "1, labelled with the first line of the last failed refresh's error "
                                  "(absent when the last refresh worked)", labels=["error"])
        try:
            m.client.command(m.queries.named("engine_up"))
            up.add_metric([], 1)
        except Exception:  # the engine is down: say so, keep the rest of the page
            SERVICE.warning("/metrics: the engine does not answer", exc_info=True)
            up.add_metric([], 0)
        else:
            try:
                seconds, failed, text, state_seconds = refresh_state(m.client, m.queries)
            except Exception:  # e.g. a store not migrated yet: no refresh to tell of
                SERVICE.warning("/metrics: the refresh logs cannot be read", exc_info=True)
            else:
                if seconds is not None:
                    lag.add_metric([], seconds)
                failures.add_metric([], failed)
                if failed:
                    error.add_metric([text.split("\n", 1)[0][:ERROR_LABEL_CHARS]], 1)
                if state_seconds is not None:
                    state_lag.add_metric([], state_seconds)
        yield up
        yield lag
        yield failures
        yield error
        yield state_lag
        if m.jobs is None:
            return
        jobs = GaugeMetricFamily("cvat_analytics_export_jobs", "Export jobs kept, by state", labels=["state"])
        counts = m.jobs.states()
        for state in JOB_STATES:
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs
        yield GaugeMetricFamily("cvat_analytics_export_bytes", "Bytes of export files on disk",
                                value=_bytes_under(m.jobs.directory))


class _AlertConditions:
    """A gauge per alert condition (service/alerts.py), read when /metrics is asked for;
    nothing of them when the engine does not answer (cvat_analytics_engine_up says so)."""

    def __init__(self, alerts: Alerts):
        self.alerts = alerts

    def describe(self):
        return []

    def collect(self):
        try:
            yield from alert_gauges(self.alerts)
        except Exception:
            SERVICE.warning("/metrics: the alert conditions could not be read", exc_info=True)


def _bytes_under(directory) -> int:
    total = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            total += entry.stat().st_size if entry.is_file() else 0
        except FileNotFoundError:  # downloaded (unlinked) while we looked
            pass
    return total
