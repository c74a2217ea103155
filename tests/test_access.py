"""Access to `serve`: tokens from the environment, permissions, CVAT's forced row filters,
loopback-only without tokens; and what the rendered ClickHouse users may do, on chdb."""
from __future__ import annotations

import csv
import html
import http.client
import io
import json
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvat_analytics.export import FilterError, parse_filters
from cvat_analytics.store import open_handle
from cvat_analytics.service.access import (AccessError, Principal, Token, apply_forced_filters, authenticate,
                                           load_tokens)
from cvat_analytics_generator.render import render_all
from cvat_analytics_generator.spec import load_spec
from tests.conftest import write_spec
from tests.test_serve import CLI, cvat_batch

SECRETS = {"ingest": "i" * 32, "org7": "o" * 32, "user5": "u" * 32, "admin": "a" * 32}
TOKENS = [
    Token(SECRETS["ingest"].encode(), Principal("cvat-server", frozenset({"ingest"}))),
    Token(SECRETS["org7"].encode(), Principal("org-7", frozenset({"export", "dashboards"}), {"org_id": 7})),
    Token(SECRETS["user5"].encode(), Principal("user-5", frozenset({"export"}), {"user_id": 5, "org_id": 7})),
    Token(SECRETS["admin"].encode(), Principal("admin", frozenset({"ingest", "export", "dashboards"}))),
]


# -- tokens ----------------------------------------------------------------------

def test_secrets_come_from_the_environment_variable_the_spec_names(tmp_path):
    _, path = write_spec(tmp_path, **{"access.tokens": [
        {"name": "w", "secret_env": "CA_TEST_SECRET", "permissions": ["export"], "forced_filters": {"user_id": 3}}]})
    spec = load_spec(path)
    [token] = load_tokens(spec, {"CA_TEST_SECRET": "s" * 20})
    assert token.secret == b"s" * 20 and token.principal.forced_filters == {"user_id": 3}
    with pytest.raises(AccessError, match="CA_TEST_SECRET is not set"):
        load_tokens(spec, {})
    with pytest.raises(AccessError, match="only 5 characters"):
        load_tokens(spec, {"CA_TEST_SECRET": "short"})


def test_both_header_schemes_and_nothing_else_authenticate():
    assert authenticate(TOKENS, f"Bearer {SECRETS['org7']}").name == "org-7"
    assert authenticate(TOKENS, f"Token {SECRETS['org7']}").name == "org-7"
    for header in (None, "", SECRETS["org7"], f"Basic {SECRETS['org7']}", "Bearer " + "o" * 31,
                   "Bearer " + "o" * 33, f"Bearer {SECRETS['org7']} extra"):
        assert authenticate(TOKENS, header) is None, header


def test_a_conflicting_forced_filter_is_refused_and_a_matching_one_kept():
    org7 = TOKENS[1].principal
    assert apply_forced_filters(org7, {"job_id": ["3"]}) == {"job_id": ["3"], "org_id": ["7"]}
    assert apply_forced_filters(org7, {"org_id": ["7", " 7"]})["org_id"] == ["7"]
    for values in (["8"], ["7", "8"], [""], ["7.0"], ["０７"]):
        with pytest.raises(Exception, match="You don't have permission to view events with org_id="):
            apply_forced_filters(org7, {"org_id": values})


# -- the service -----------------------------------------------------------------

@pytest.fixture
def secured(make_served):
    """serve with the tokens above, and events of two orgs and several users."""
    srv = make_served(tokens=TOKENS, export=True, dashboards=True)
    events = []
    for org, user in [(7, 5), (7, 6), (8, 5), (8, 9), (None, 5)]:
        for event in cvat_batch(f"o{org}u{user}", 3):
            events.append({**event, "org_id": org, "user_id": user})
    assert call(srv, "POST", "/", "ingest", json.dumps(events).encode())[0] == 200
    return srv


def call(srv, method: str, path: str, who: str | None = None, body: bytes | None = None,
         scheme: str = "Bearer") -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if who:
        headers["Authorization"] = f"{scheme} {SECRETS.get(who, who)}"
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def export_rows(srv, who: str, query: str) -> tuple[int, list[dict] | str]:
    """CVAT's newer flow: POST /api/events/export, poll /api/requests/<id>, download."""
    status, body = call(srv, "POST", f"/api/events/export?{query}", who)
    if status != 202:
        return status, json.loads(body).get("detail", "")
    rq_id = json.loads(body)["rq_id"]
    for _ in range(400):
        status, body = call(srv, "GET", f"/api/requests/{rq_id}", who)
        if json.loads(body)["status"] in ("finished", "failed"):
            break
        time.sleep(0.02)
    status, body = call(srv, "GET", f"/api/events/download?rq_id={rq_id}", who)
    assert status == 200, body
    return status, list(csv.DictReader(io.StringIO(body.decode())))


@pytest.mark.clickhouse
def test_no_token_or_a_wrong_one_is_401_and_a_missing_permission_403(secured):
    body = json.dumps(cvat_batch("x", 1)).encode()
    assert call(secured, "POST", "/", None, body)[0] == 401
    assert call(secured, "POST", "/", "not-a-known-secret-at-all", body)[0] == 401
    assert call(secured, "POST", "/", "org7", body)[0] == 403  # export/dashboards only
    assert call(secured, "POST", "/", "ingest", body, scheme="Token")[0] == 200
    assert call(secured, "GET", "/api/events", "ingest")[0] == 403  # ingest only
    assert call(secured, "GET", "/api/events", None)[0] == 401
    assert call(secured, "GET", "/dashboards/", "ingest")[0] == 403
    status, health = call(secured, "GET", "/health")  # open: the status only, no path, no secret
    assert (status, json.loads(health)) == (200, {"status": "ok"})
    status, health = call(secured, "GET", "/health", "ingest")  # ingest-only: the status only
    assert (status, json.loads(health)) == (200, {"status": "ok"})
    status, health = call(secured, "GET", "/health", "admin")  # it may read every event anyway
    assert status == 200 and json.loads(health)["events"] == 16
    assert not any(s.encode() in health for s in SECRETS.values())


@pytest.mark.clickhouse
def test_forced_filters_limit_exports_and_a_conflict_is_403(secured):
    status, rows = export_rows(secured, "org7", "")
    assert status == 200 and {r["org_id"] for r in rows} == {"7"} and len(rows) == 6
    status, rows = export_rows(secured, "user5", "")
    assert status == 200 and {(r["org_id"], r["user_id"]) for r in rows} == {("7", "5")}
    status, detail = export_rows(secured, "org7", "org_id=8")
    assert status == 403 and detail == "You don't have permission to view events with org_id=8"
    status, detail = export_rows(secured, "user5", "user_id=6")
    assert status == 403 and detail.endswith("user_id=6")
    status, rows = export_rows(secured, "admin", "")
    assert status == 200 and {r["org_id"] for r in rows} == {"7", "8", ""}


@pytest.mark.clickhouse
def test_an_export_is_visible_only_to_the_token_that_started_it(secured):
    status, body = call(secured, "POST", "/api/events/export", "org7")
    rq_id = json.loads(body)["rq_id"]
    assert call(secured, "GET", f"/api/requests/{rq_id}", "admin")[0] == 404
    assert call(secured, "GET", f"/api/events/download?rq_id={rq_id}", "user5")[0] == 404
    assert call(secured, "GET", f"/api/requests/{rq_id}", "org7")[0] == 200


FORCED = {"org7": {"org_id": 7}, "user5": {"org_id": 7, "user_id": 5}}


def expected_status(who: str, query: str) -> int:
    """403 when a forced key is given any other value (a number with the forced value
    is fine: "07", " 7"); otherwise 400 when a filter is invalid, else 200."""
    params = parse_qs(query, keep_blank_values=True)
    for key, forced in FORCED[who].items():
        for value in params.get(key, []):
            text = value.strip()
            if not (text.isascii() and text.isdigit() and int(text) == forced):
                return 403
    try:
        parse_filters({**params, **{k: [str(v)] for k, v in FORCED[who].items()}})
    except FilterError:
        return 400
    return 200


query_params = st.lists(st.tuples(
    st.sampled_from(["org_id", "user_id", "project_id", "ORG_ID", "org_id[]", "org_id ", "from", "to", "filename"]),
    st.one_of(st.sampled_from(["7", "8", "5", "6", "", "07", "7 ", "-1", "8,7", "7&org_id=8", "2000-01-01"]),
              st.text(max_size=6))), max_size=4)


@pytest.mark.clickhouse
def test_whatever_the_query_string_a_forced_export_sees_only_its_rows(secured):
    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(query_params, st.sampled_from(["org7", "user5"]), st.booleans())
    def check(params, who, encode):
        # Unencoded, "7&org_id=8" smuggles a second parameter in.
        query = "&".join(f"{quote(k)}={quote(v, safe='' if encode else '&=')}" for k, v in params)
        status, rows = export_rows(secured, who, query)
        assert status == expected_status(who, query), (status, query, rows)
        if status == 200:
            allowed = {("7", "5")} if who == "user5" else {("7", "5"), ("7", "6")}
            assert {(r["org_id"], r["user_id"]) for r in rows} <= allowed, query

    check()


def test_serve_refuses_a_public_address_without_tokens_and_a_token_without_its_secret(tmp_path):
    _, plain = write_spec(tmp_path)
    done = subprocess.run([str(CLI), "serve", "--spec", str(plain), "--dsn", f"chdb://{tmp_path / 'd'}",
                           "--host", "0.0.0.0", "--port", "0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "refusing to listen on 0.0.0.0: no access token" in done.stderr
    assert not (tmp_path / "d").exists()  # refused before opening anything
    (tmp_path / "t").mkdir()
    _, secured = write_spec(tmp_path / "t", **{"access.tokens": [
        {"name": "w", "secret_env": "CA_UNSET_SECRET_FOR_TEST", "permissions": ["ingest"]}]})
    done = subprocess.run([str(CLI), "serve", "--spec", str(secured), "--dsn", f"chdb://{tmp_path / 'd'}",
                           "--host", "0.0.0.0", "--port", "0"], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and "CA_UNSET_SECRET_FOR_TEST is not set" in done.stderr


# -- ClickHouse users ------------------------------------------------------------

@pytest.mark.clickhouse
def test_the_dashboards_profile_refuses_writes_on_the_real_engine(store):
    """chdb has no access control of its own (CREATE USER: "Not enough privileges";
    EXECUTE AS: impersonation disabled), so the users cannot be created there. What the
    dashboards user gets is its profile: apply the rendered profile's settings to
    queries on chdb and see writes and schema changes refused, reads allowed. The
    grants themselves are checked in the rendered XML (test_render) and on a real
    server (test_deploy_docker)."""
    root = ET.fromstring(render_all(store.spec)["clickhouse/users.d/cvat-users.xml"])
    user = root.find(f"users/{store.spec['clickhouse']['users']['dashboards']}")
    profile = root.find(f"profiles/{user.findtext('profile')}")
    readonly = f" SETTINGS readonly = {int(profile.findtext('readonly'))}"
    db = store.database
    client = open_handle(store.dsn)  # a handle of its own
    assert client.command(f"SELECT count() FROM `{db}`.events" + readonly) == 0
    for sql in (f"INSERT INTO `{db}`.events (scope, timestamp) SELECT 'x', now()",
                f"ALTER TABLE `{db}`.events DELETE WHERE 1",
                f"ALTER TABLE `{db}`.events ADD COLUMN evil UInt8",
                f"DROP TABLE `{db}`.events",
                f"CREATE TABLE `{db}`.evil (x UInt8) ENGINE = Memory"):
        with pytest.raises(Exception, match=r"\(READONLY\)"):  # Code 164, not a syntax error
            client.command(sql + readonly)
    with pytest.raises(Exception, match="ACCESS_DENIED|Not enough privileges"):
        store.client.command("CREATE USER cvat_probe IDENTIFIED WITH no_password")
    assert store.client.command(f"EXISTS TABLE `{db}`.events") == 1


@pytest.mark.clickhouse
def test_a_forced_caller_reads_none_of_the_services_own_tables_on_the_monitoring_page(secured, store):
    """Vector's metrics and the working-time refresh log belong to no org or user: a token forced
    to org 7 sees none of their rows on the Monitoring dashboard, an unforced one sees them."""
    store.client.command(
        f"INSERT INTO `{store.database}`.vector_metrics (timestamp, host, name, component_id, tags, value) VALUES "
        "(now64(3) - toIntervalMinute(5), 'v', 'component_received_events_total', 'dead_letter_events', map(), 0), "
        "(now64(3) - toIntervalMinute(2), 'v', 'component_received_events_total', 'dead_letter_events', map(), 4242)")
    # a failed run whose watermark is the newest, so the panel's last_error is its error
    store.client.command(
        f"INSERT INTO `{store.database}`.working_time_refresh_log (refreshed_at, watermark, rule, full, users, failures, "
        "error) VALUES (now64(6), now64(6) + toIntervalDay(1), 'r', 0, 0, 1, 'a refresh error only the operator may read')")
    path = "/dashboards/WvDvWK04k?from=now-1h&to=now"
    status, admin = call(secured, "GET", path, "admin")
    assert status == 200 and b"4,242" in admin and b"only the operator may read" in admin
    status, org7 = call(secured, "GET", path, "org7")
    assert status == 200 and b"4,242" not in org7 and b"only the operator may read" not in org7
    assert b"Query failed" not in org7


# A custom dashboard (operator SQL) whose panels read tables the forced filters do not cover,
# beside one that reads events only; and a variable over such a table.
UNFILTERED = """\
uid: unfiltered
title: Unfiltered
variables: []
panels:
  - {id: 1, title: Events, type: stat, gridPos: {x: 0, y: 0, w: 6, h: 4},
     sql: "SELECT count() AS events FROM {{ db }}.events"}
  - {id: 2, title: Migrations, type: table, gridPos: {x: 6, y: 0, w: 6, h: 4},
     sql: "SELECT * FROM {{ db }}.schema_migrations"}
  - {id: 3, title: Shadowed, type: stat, gridPos: {x: 0, y: 4, w: 6, h: 4},
     sql: "WITH slots AS (SELECT user_id FROM {{ db }}.events) SELECT count() AS n FROM slots WHERE user_id IN (SELECT user_id FROM {{ db }}.working_time_slot_totals)"}
  - {id: 4, title: Merged, type: stat, gridPos: {x: 6, y: 4, w: 6, h: 4},
     sql: "SELECT count() AS n FROM merge('DATABASE', '^working_time_slot')"}
"""


@pytest.mark.clickhouse
def test_a_forced_caller_gets_no_panel_that_reads_a_table_their_filters_do_not_cover(make_served, store, tmp_path):
    """ClickHouse filters only the tables additional_table_filters names, and a custom panel's SQL
    may read any other: a forced caller gets such a panel refused, naming the table, while an
    unforced one sees its rows."""
    (tmp_path / "mine").mkdir()
    definition = UNFILTERED.replace("DATABASE", store.database)
    (tmp_path / "mine" / "unfiltered.yaml").write_text(definition)
    spec = {**store.spec, "custom_dashboards_dir": str(tmp_path / "mine")}
    srv = make_served(spec=spec, tokens=TOKENS, dashboards=True)
    events = [{**e, "org_id": 8, "user_id": 9} for e in cvat_batch("other org", 30)]
    assert call(srv, "POST", "/", "ingest", json.dumps(events).encode())[0] == 200

    status, admin = call(srv, "GET", "/dashboards/unfiltered", "admin")
    assert status == 200 and b"may not run this query" not in admin
    assert re.search(r'id="panel-2"[^>]*data-empty="false"', admin.decode())  # the migrations' rows
    status, org7 = call(srv, "GET", "/dashboards/unfiltered", "org7")
    text = html.unescape(org7.decode())
    assert status == 200
    db = store.database
    assert f"it reads {db}.working_time_slot_totals" in text
    assert f"it reads {db}.schema_migrations" in text
    assert "it reads table function merge()" in text
    assert text.count("may not run this query") == 3  # the events panel runs, filtered: org 7 has none of it
    assert re.search(r'id="panel-1"[^>]*data-empty="false"', text)

    # A variable over such a table refuses the page: 403, naming the table.
    (tmp_path / "mine" / "unfiltered.yaml").write_text(definition.replace("variables: []", (
        "variables:\n  - {name: users, label: User, kind: id, sql: \"SELECT DISTINCT user_id FROM "
        "{{ db }}.working_time_slot_checkpoints\"}")))
    srv = make_served(spec=spec, tokens=TOKENS, dashboards=True)
    status, page = call(srv, "GET", "/dashboards/unfiltered", "org7")
    assert status == 403 and f"reads {db}.working_time_slot_checkpoints" in html.unescape(page.decode())
    assert call(srv, "GET", "/dashboards/unfiltered", "admin")[0] == 200
