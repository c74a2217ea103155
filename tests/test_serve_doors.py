"""The doors a browser or a rebinding DNS name opens, closed (issue 24): cross-site
requests and foreign Host names are refused on every route but ingest, the SQL
interface always needs a token, /health tells its details only to callers that may
see everything, and a token with forced filters cannot label rows for others.

Real `serve` on 127.0.0.1, raw HTTP as a browser would send it (the headers Chromium
sets on a cross-site fetch, a navigation, a rebinding name)."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from urllib.parse import quote

import pytest

from cvat_analytics.service.access import AccessError, Principal, Token, load_tokens
from cvat_analytics_generator.spec import load_spec
from tests.conftest import REPO, write_spec
from tests.test_serve import CLI, cvat_batch

SQL_SECRET = "sql-secret-0123456789abcdef"
SQL = Token(SQL_SECRET.encode(), Principal("sql", frozenset({"sql"})))
BEARER = {"Authorization": f"Bearer {SQL_SECRET}"}
QUERY = "/clickhouse/?query=" + quote("SELECT 1")


def call(srv, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
    """(status, body) with exactly these headers (http.client adds Host unless one is given)."""
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=30)
    try:
        given = dict(headers or {})
        conn.putrequest(method, path, skip_host="Host" in given, skip_accept_encoding=True)
        if body is not None:
            given.setdefault("Content-Type", "application/json")
            given["Content-Length"] = str(len(body))
        for name, value in given.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def own(srv) -> str:
    return f"127.0.0.1:{srv.server_address[1]}"


# -- A: cross-site requests and foreign Host names ------------------------------------

@pytest.mark.clickhouse
def test_a_cross_site_get_of_clickhouse_is_refused_even_with_a_token(make_served):
    srv = make_served(tokens=[SQL], export=True, dashboards=True)
    # What a page on another site gets its browser to send: a simple GET, no preflight.
    for site in ("cross-site", "same-site"):
        status, body = call(srv, "GET", QUERY, {**BEARER, "Sec-Fetch-Site": site, "Sec-Fetch-Mode": "no-cors"})
        assert status == 403 and f"Sec-Fetch-Site: {site}" in body.decode(), (site, body)
        # Open routes and the other routes too (no token needed in open mode).
        for path in ("/health", "/api/events", "/dashboards/WvDvWK04k", "/metrics"):
            assert call(srv, "GET", path, {"Sec-Fetch-Site": site})[0] == 403, path
    # The service's own pages, a typed URL, and clients that are not browsers pass.
    for headers in ({"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, {}):
        assert call(srv, "GET", QUERY, {**BEARER, **headers}) == (200, b"1\n"), headers


@pytest.mark.clickhouse
def test_a_link_followed_from_another_site_opens_a_dashboard_but_a_subresource_does_not(make_served):
    srv = make_served(dashboards=True)
    navigate = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    assert call(srv, "GET", "/dashboards/WvDvWK04k", navigate)[0] == 200
    assert call(srv, "GET", "/dashboards/WvDvWK04k", {**navigate, "Sec-Fetch-Dest": "image"})[0] == 403
    assert call(srv, "GET", "/dashboards/WvDvWK04k", {**navigate, "Sec-Fetch-Mode": "no-cors"})[0] == 403
    assert call(srv, "GET", "/api/events", navigate)[0] == 403  # it starts an export: not a page to land on


@pytest.mark.clickhouse
def test_an_origin_of_another_site_is_refused_and_ours_passes(make_served):
    srv = make_served(tokens=[SQL])
    port = srv.server_address[1]
    for origin in ("http://evil.example", f"http://evil.example:{port}", "http://localhost:3000", "null",
                   f"ftp://127.0.0.1:{port}"):
        status, body = call(srv, "POST", "/clickhouse/", {**BEARER, "Origin": origin}, b"SELECT 1")
        assert status == 403 and b"Origin" in body, origin
        # Ingest too: a page can POST a Blob without a type, which needs no preflight.
        status, _ = call(srv, "POST", "/", {"Origin": origin, "Content-Type": ""}, json.dumps(cvat_batch("o")).encode())
        assert status == 403, origin
    for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"https://LOCALHOST:{port}"):
        assert call(srv, "POST", "/clickhouse/", {**BEARER, "Origin": origin}, b"SELECT 1") == (200, b"1\n"), origin


@pytest.mark.clickhouse
def test_a_foreign_host_is_refused_everywhere_but_ingest(make_served):
    """DNS rebinding: evil.example resolves to 127.0.0.1, and the browser sends Host: evil.example,
    same-origin as far as it knows."""
    srv = make_served(tokens=[SQL], export=True, dashboards=True)
    port = srv.server_address[1]
    rebound = {"Host": f"evil.example:{port}", "Sec-Fetch-Site": "same-origin"}
    for path in (QUERY, "/health", "/api/events", "/dashboards/", "/metrics", "/openapi.json", "/nowhere"):
        status, body = call(srv, "GET", path, {**BEARER, **rebound})
        assert status == 421 and b"embedded.allowed_hosts" in body, path
    for host in ("evil.example", f"localhost.evil.example:{port}", f"127.0.0.1.evil.example:{port}",
                 f"127.0.0.1:{port}@evil.example", "evil.example:80, 127.0.0.1"):
        assert call(srv, "GET", "/health", {"Host": host})[0] == 421, host
    # Loopback names with any port (a local proxy on :80); a rebinding name is never one of them.
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", f"LocalHost.:{port}", "127.0.0.1",
                 "localhost:80"):
        assert call(srv, "GET", QUERY, {**BEARER, "Host": host})[0] == 200, host
    # CVAT's server posts under whatever name its network gives serve (a compose service).
    body = json.dumps(cvat_batch("compose")).encode()
    assert call(srv, "POST", "/", {"Host": "cvat-analytics:8282"}, body)[0] == 200


@pytest.mark.clickhouse
def test_allowed_hosts_and_a_trusted_proxys_forwarded_host(make_served, store, tmp_path):
    _, path = write_spec(tmp_path, **{"clickhouse.database": store.database,
                                      "embedded.allowed_hosts": ["analytics.example.com", "box.lan:9000"],
                                      "embedded.trusted_proxies": ["127.0.0.1"]})
    srv = make_served(spec=load_spec(path))
    port = srv.server_address[1]
    assert call(srv, "GET", "/health", {"Host": "analytics.example.com"})[0] == 200
    assert call(srv, "GET", "/health", {"Host": "box.lan:9000"})[0] == 200
    assert call(srv, "GET", "/health", {"Host": "box.lan:9001"})[0] == 421
    # From a trusted proxy, the name judged is the one the client used.
    assert call(srv, "GET", "/health", {"Host": own(srv), "X-Forwarded-Host": "analytics.example.com"})[0] == 200
    assert call(srv, "GET", "/health", {"Host": own(srv), "X-Forwarded-Host": "evil.example"})[0] == 421
    assert call(srv, "GET", "/health", {"Host": own(srv), "Origin": "https://analytics.example.com"})[0] == 200
    assert call(srv, "GET", "/health", {"Host": f"127.0.0.1:{port}", "Origin": "https://evil.example"})[0] == 403


# -- B: nobody reaches the SQL interface anonymously ----------------------------------

@pytest.mark.clickhouse
def test_clickhouse_without_a_token_is_401_saying_how_to_get_one_while_ingest_stays_open(make_served, monkeypatch):
    monkeypatch.delenv("CVAT_ANALYTICS_TOKEN_SQL", raising=False)
    srv = make_served(dashboards=True)  # the shipped spec: no token needed but for sql
    status, body = call(srv, "GET", QUERY)
    assert status == 401, body
    assert "CVAT_ANALYTICS_TOKEN_SQL" in json.loads(body)["error"] and "make up" in json.loads(body)["error"]
    assert call(srv, "GET", QUERY, {"Authorization": "Basic ZGVmYXVsdDo="})[0] == 401  # user default, no password
    assert call(srv, "POST", "/", None, json.dumps(cvat_batch("open")).encode())[0] == 200
    assert call(srv, "GET", "/dashboards/WvDvWK04k")[0] == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.clickhouse
def test_serve_with_the_shipped_spec_takes_the_sql_token_from_its_variable(tmp_path):
    """`serve` as a process, the shipped spec: the optional sql token is read from the
    environment; with it /clickhouse answers, without it 401, ingest needs none."""
    _, spec = write_spec(tmp_path, **{"embedded.data_dir": str(tmp_path / "data")})
    port = _free_port()
    env = {**os.environ, "CVAT_ANALYTICS_TOKEN_SQL": SQL_SECRET}
    proc = subprocess.Popen([str(CLI), "serve", "--spec", str(spec), "--dsn", f"chdb://{tmp_path / 'data'}",
                             "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        srv = type("Srv", (), {"server_address": ("127.0.0.1", port)})
        for _ in range(300):
            try:
                if call(srv, "GET", "/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        assert call(srv, "GET", QUERY, BEARER) == (200, b"1\n")
        assert call(srv, "GET", QUERY)[0] == 401
        assert call(srv, "POST", "/", None, json.dumps(cvat_batch("p")).encode())[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_only_a_token_holding_nothing_but_sql_may_be_optional(tmp_path):
    _, path = write_spec(tmp_path, **{"access.tokens": [
        {"name": "cvat", "secret_env": "CA_UNSET_FOR_TEST", "permissions": ["ingest", "sql"], "optional": True}]})
    with pytest.raises(AccessError, match="only a token whose one permission is sql may be optional"):
        load_tokens(load_spec(path), {})
    _, path = write_spec(tmp_path, **{"access.tokens": [
        {"name": "sql", "secret_env": "CA_UNSET_FOR_TEST", "permissions": ["sql"], "optional": True}]})
    assert load_tokens(load_spec(path), {}) == []
    with pytest.raises(AccessError, match="only 5 characters"):  # set but too short is still an error
        load_tokens(load_spec(path), {"CA_UNSET_FOR_TEST": "short"})


# -- 9: /health tells its details only to callers that may see everything -------------

HEALTH_TOKENS = {
    "ingest": Principal("cvat-server", frozenset({"ingest"})),
    "metrics": Principal("prometheus", frozenset({"metrics"})),
    "org7": Principal("org-7", frozenset({"export", "dashboards"}), {"org_id": 7}),
    "admin": Principal("admin", frozenset({"export", "dashboards"})),
    "analyst": Principal("analyst", frozenset({"sql"})),
}


@pytest.mark.clickhouse
def test_health_details_only_for_callers_that_may_see_every_organisation(make_served, monkeypatch):
    secrets = {who: f"{who}-secret-0123456789abcdef" for who in HEALTH_TOKENS}
    srv = make_served(tokens=[Token(secrets[who].encode(), p) for who, p in HEALTH_TOKENS.items()])
    for who, detailed in [(None, False), ("ingest", False), ("metrics", False), ("org7", False),
                          ("admin", True), ("analyst", True)]:
        headers = {"Authorization": f"Bearer {secrets[who]}"} if who else {}
        status, body = call(srv, "GET", "/health", headers)
        health = json.loads(body)
        assert status == 200 and health["status"] == "ok", who
        assert ("dsn" in health and "events" in health) == detailed, (who, health)
        assert ("chdb" in body.decode()) == detailed, who
    # Open mode: every local caller may export everything anyway, so it sees the details.
    monkeypatch.delenv("CVAT_ANALYTICS_TOKEN_SQL", raising=False)
    assert "events" in json.loads(call(make_served(), "GET", "/health")[1])


# -- 12: forced filters bind the labels too ------------------------------------------

@pytest.mark.clickhouse
def test_a_forced_token_cannot_label_rows_with_another_orgs_slug_or_users_name(make_served, store):
    forced_secret, cvat_secret = "org7-ingest-0123456789abcdef", "cvat-ingest-0123456789abcdef"
    srv = make_served(tokens=[
        Token(forced_secret.encode(), Principal("org-7-sender", frozenset({"ingest"}), {"org_id": 7})),
        Token(cvat_secret.encode(), Principal("cvat-server", frozenset({"ingest"}))),
    ])
    spoofed = [{**e, "org_id": 7, "org_slug": "other-org", "user_id": 3, "user_name": "boss",
                "user_email": "boss@other.example"} for e in cvat_batch("spoof", 3)]
    assert call(srv, "POST", "/", {"Authorization": f"Bearer {forced_secret}"}, json.dumps(spoofed).encode())[0] == 200
    trusted = [{**e, "org_id": 8, "org_slug": "other-org", "user_name": "boss"} for e in cvat_batch("cvat", 2)]
    assert call(srv, "POST", "/", {"Authorization": f"Bearer {cvat_secret}"}, json.dumps(trusted).encode())[0] == 200
    rows = store.client.query(f"SELECT request_id, org_id, org_slug, user_id, user_name, user_email "
                              f"FROM `{store.database}`.events ORDER BY request_id").result_rows
    assert {r for r in rows if r[0] == "spoof"} == {("spoof", 7, None, 3, None, None)}
    assert {r for r in rows if r[0] == "cvat"} == {("cvat", 8, "other-org", 2, "boss", "ann@example.com")}
    # Another org is still refused, as before.
    other = [{**e, "org_id": 8} for e in cvat_batch("other", 1)]
    assert call(srv, "POST", "/", {"Authorization": f"Bearer {forced_secret}"}, json.dumps(other).encode())[0] == 403
