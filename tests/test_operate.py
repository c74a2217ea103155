"""What an operator reads off `serve`: the log (text and JSON, one line per request,
nothing secret), GET /metrics (Prometheus' format, behind the `metrics` permission)."""
from __future__ import annotations

import http.client
import io
import json
import logging
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cvat_analytics.service import logs
from cvat_analytics.service.access import Principal, Token
from tests.test_serve import cvat_batch

pytestmark = pytest.mark.clickhouse

SECRET = "m" * 32
PASSWORD = "hunter2-password-value"


def call(srv, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of a Prometheus text page."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def log_lines():
    """The service's log as configured by serve (JSON), in memory."""
    stream = io.StringIO()
    handler = logs.configure("json", stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logging.getLogger("cvat_analytics").removeHandler(handler)
    logging.getLogger("cvat_analytics").propagate = True


def test_one_json_access_line_per_request_without_query_values_or_secrets(make_served, log_lines):
    tokens = [Token(SECRET.encode(), Principal("cvat-server", frozenset({"ingest", "export"})))]
    srv = make_served(tokens=tokens, export=True)
    auth = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    status, _, headers = call(srv, "POST", f"/?password={PASSWORD}", json.dumps(cvat_batch("log", 2)).encode(), auth)
    assert status == 200
    call(srv, "GET", f"/api/events?org_id=424242&to={PASSWORD}", headers={"Authorization": "Bearer wrong-secret"})
    deadline = time.monotonic() + 10  # a line is written after its answer, by the request's thread
    while len(access := [line for line in log_lines() if line["logger"] == "cvat_analytics.access"]) < 2:
        assert time.monotonic() < deadline, access
        time.sleep(0.05)
    assert len(access) == 2
    first, second = sorted(access, key=lambda line: line["method"] != "POST")
    assert {k: first[k] for k in ("client", "token", "method", "path", "status", "events")} == {
        "client": "127.0.0.1", "token": "cvat-server", "method": "POST", "path": "/?password",
        "status": 200, "events": 2}
    assert first["request_id"] == headers["X-Request-Id"] and isinstance(first["ms"], int)
    assert (second["token"], second["path"], second["status"]) == ("anonymous", "/api/events?org_id&to", 401)
    everything = json.dumps(log_lines())
    for secret in (SECRET, PASSWORD, "424242", "ann@example.com", "wrong-secret"):
        assert secret not in everything


def test_a_request_line_refused_before_routing_is_logged_without_its_text(make_served, log_lines):
    import socket

    srv = make_served()
    with socket.create_connection(srv.server_address[:2], timeout=10) as sock:
        sock.sendall(b"GET /secret-looking-body HTTP/9.9\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 505") and b"X-Request-Id: " in answer
    time.sleep(0.2)
    [line] = [line for line in log_lines() if line["logger"] == "cvat_analytics.access"]
    assert (line["method"], line["path"], line["status"]) == ("-", "-", 505)
    assert "secret-looking-body" not in json.dumps(log_lines())


def test_the_text_format_is_one_line_with_every_field():
    record = logging.LogRecord("cvat_analytics.access", logging.INFO, __file__, 1, "request", None, None)
    record.__dict__.update(client="10.0.0.5", token="org-7", method="GET", path="/health", status=200,
                           events=0, ms=3, request_id="abc123")
    line = logs.TextFormatter().format(record)
    assert line.endswith(" INFO access 10.0.0.5 org-7 GET /health 200 0 3ms id=abc123")
    assert "\n" not in line and line[:4].isdigit()


def test_loggable_path_keeps_parameter_names_only_and_escapes_control_characters():
    assert logs.loggable_path("/api/events?org_id=7&org_id=8&to=x") == "/api/events?org_id&to"
    assert logs.loggable_path("/a\x1b[31mb") == "/a\\x1b[31mb"
    assert len(logs.loggable_path("/" + "x" * 5000)) == 300


def test_metrics_count_requests_events_refusals_inserts_and_export_jobs(make_served, store):
    srv = make_served(export=True)
    before = samples(call(srv, "GET", "/metrics")[1].decode())
    assert call(srv, "POST", "/", json.dumps(cvat_batch("m", 4)).encode())[0] == 200
    assert call(srv, "POST", "/", b"[{\"scope\": 1}]")[0] == 400
    assert call(srv, "POST", "/", b"{}", {"Content-Type": "text/csv"})[0] == 415
    assert call(srv, "GET", "/no/such/path?secret=1")[0] == 404
    status, body, _ = call(srv, "POST", "/api/events/export?from=2000-01-01")
    assert status == 202
    srv.routes.metrics.jobs.wait(json.loads(body)["rq_id"])

    status, page, headers = call(srv, "GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    now = samples(page.decode())
    assert now[("cvat_analytics_http_requests_total", (("method", "POST"), ("route", "/"), ("status", "200")))] == 1
    assert now[("cvat_analytics_http_requests_total",
                (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1
    assert now[("cvat_analytics_events_accepted_total", ())] == 4
    assert now[("cvat_analytics_ingest_refused_total", (("reason", "invalid"),))] == 1
    assert now[("cvat_analytics_ingest_refused_total", (("reason", "unsupported_media_type"),))] == 1
    inserts = ("cvat_analytics_insert_seconds_count", ())
    assert now[inserts] == before.get(inserts, 0) + 1  # the one accepted batch
    groups = ("cvat_analytics_ingest_group_requests_count", ())
    assert now[groups] == before.get(groups, 0) + 1  # stored as one group of one request
    assert now[("cvat_analytics_ingest_waiting_events", ())] == 0  # nothing left waiting
    assert now[("cvat_analytics_engine_up", ())] == 1
    assert now[("cvat_analytics_export_jobs", (("state", "finished"),))] == 1
    assert now[("cvat_analytics_export_bytes", ())] > 0  # the finished CSV waits for its download
    # this store has no refresh views (tests/conftest.py): no run logged, no lag to tell
    assert ("cvat_analytics_productivity_refresh_lag_seconds", ()) not in now


@pytest.mark.refresh
def test_the_refresh_lag_comes_from_the_engine(make_served, store):
    """The working-time and productivity views refresh inside ClickHouse: each lag is from its
    last logged run's watermark, small right after one."""
    from cvat_analytics import working_time

    srv = make_served()
    working_time.wait_current(store.client, store.spec)
    page = samples(call(srv, "GET", "/metrics")[1].decode())
    for name in ("cvat_analytics_working_time_refresh_lag_seconds", "cvat_analytics_productivity_refresh_lag_seconds"):
        assert 0 <= page[(name, ())] < store.spec["working_time"]["refresh_interval_s"] + 5, name


def test_metrics_need_the_metrics_permission_when_tokens_are_configured(make_served):
    tokens = [Token(b"i" * 32, Principal("ingest-only", frozenset({"ingest"}))),
              Token(SECRET.encode(), Principal("prometheus", frozenset({"metrics"})))]
    srv = make_served(tokens=tokens)
    assert call(srv, "GET", "/metrics")[0] == 401
    assert call(srv, "GET", "/metrics", headers={"Authorization": "Bearer " + "i" * 32})[0] == 403
    status, page, _ = call(srv, "GET", "/metrics", headers={"Authorization": f"Bearer {SECRET}"})
    assert status == 200 and b"cvat_analytics_engine_up 1.0" in page


# -- progress on export ----------------------------------------------------------

def test_export_to_a_file_shows_progress_on_a_terminal_and_nothing_on_a_pipe(make_served, store, tmp_path,
                                                                             monkeypatch):
    import os
    import select

    from cvat_analytics import cli

    srv = make_served()
    assert call(srv, "POST", "/", json.dumps(cvat_batch("progress", 7)).encode())[0] == 200
    args = ["export", "--dsn", store.dsn, "--spec", str(store.spec_path)]

    master, slave = os.openpty()
    terminal = os.fdopen(slave, "w")
    try:
        monkeypatch.setattr("sys.stderr", terminal)
        assert cli.main([*args, "-o", str(tmp_path / "a.csv")]) == 0
        terminal.flush()
        shown = ""
        while select.select([master], [], [], 0.5)[0]:  # a pty hands over what was written in pieces
            shown += os.read(master, 65536).decode()
    finally:
        terminal.close()
        os.close(master)
    assert "exporting: 0 / 7 rows" in shown and shown.count("\r\033[K") == 1  # drawn, then cleared
    assert "exported 7 events" in shown

    pipe = io.StringIO()
    monkeypatch.setattr("sys.stderr", pipe)
    assert cli.main([*args, "-o", str(tmp_path / "b.csv")]) == 0
    assert pipe.getvalue() == f"exported 7 events to {tmp_path / 'b.csv'}\n"
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert len((tmp_path / "a.csv").read_text().splitlines()) == 8
