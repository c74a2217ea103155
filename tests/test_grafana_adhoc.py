"""Grafana's ad hoc filters, proven with the parts that decide them.

The ClickHouse plugin (grafana/clickhouse-datasource v4.20.0) reads the table to filter from the
dashboard's clickhouse_adhoc_query with its SQL parser, pgsql-ast-parser, run here under node at
the version the plugin locks (tests/js: `make .venv/.test-installed` installs it with npm ci); its
table matching and filter text are tests/js/plugin_adhoc.cjs, re-implemented from its source,
cited by file and line. What it then sends (` settings additional_table_filters={...}`) is run
through serve's /clickhouse (the SQL gate) on chdb; the Docker stack's read-only profile is
`check`'s (contracts.grafana_settings_problems)."""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cvat_analytics_generator import contracts, grafana
from cvat_analytics_generator.grafana_macros import ALL, Variable, expand
from cvat_analytics_generator.render import render_all
from cvat_analytics_generator.spec import load_spec

from .test_clickhouse_http import ANALYST, TOKENS
from .test_serve import BASE, cvat_batch, post

JS = Path(__file__).with_name("js")
USERS = "clickhouse/users.d/cvat-users.xml"
FILES = render_all(load_spec())
DASHBOARDS = {rel: json.loads(text) for rel, text in FILES.items()
              if rel.startswith(contracts.DASHBOARDS) and rel.endswith(".json")}


def plugin_folder() -> Path:
    """Where the Makefile's npm ci put pgsql-ast-parser: a cache folder named by the lock's hash."""
    digest = hashlib.sha256((JS / "package-lock.json").read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "cvat-analytics" / f"plugin-js-{digest}"


def plugin(adhoc_query: str, panels: list[str], filters: list[dict] | None = None) -> dict:
    """What the plugin makes of a dashboard: the table its ad hoc keys come from, the filter's
    target table (or the error it throws), and each panel's SQL as it sends it."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the plugin's parser (pgsql-ast-parser) runs under node")
    folder = plugin_folder()
    assert (folder / "node_modules" / "pgsql-ast-parser").is_dir(), \
        f"pgsql-ast-parser is not installed in {folder}: run make .venv/.test-installed"
    run = subprocess.run(["node", str(JS / "plugin_adhoc.cjs"), str(folder)], capture_output=True, text=True,
                         input=json.dumps({"adhoc_query": adhoc_query, "panels": panels, "filters": filters or []}),
                         timeout=60, check=True)
    return json.loads(run.stdout)


def adhoc_query(model: dict) -> str:
    [query] = [v["query"] for v in model["templating"]["list"] if v["name"] == "clickhouse_adhoc_query"]
    return query


def panel_sql(model: dict) -> list[str]:
    return [t["rawSql"] for p in contracts._panels(model["panels"]) for t in p.get("targets") or []]


EVENTS_FILTER = [{"key": "events.user_id", "operator": "=", "value": "2"}]


@pytest.mark.parametrize("rel", sorted(DASHBOARDS))
def test_the_plugins_parser_reads_the_ad_hoc_table_and_its_keys_come_from_the_schema(rel):
    seen = plugin(adhoc_query(DASHBOARDS[rel]), [])
    assert seen["error"] == "", f"{rel}: {seen['error']}"  # "Failed to get table from adhoc query." before
    assert seen["target_table"] == seen["keys_table"] == "cvat.events"
    # Keys: the table's columns from system.columns, not the rows of the query (a SELECT * of every event).
    assert seen["keys_sql"] == ("SELECT name, type, table FROM system.columns "
                                "WHERE database = 'cvat' AND table = 'events'")


@pytest.mark.parametrize("rel", sorted(DASHBOARDS))
def test_every_from_of_every_panel_reads_as_the_plugin_expects(rel):
    """Each table a panel's FROM names is read by the plugin's parser, and every panel that
    reads events gets the plugin's filter; the others are left as they are."""
    model = DASHBOARDS[rel]
    panels = panel_sql(model)
    seen = plugin(adhoc_query(model), panels, EVENTS_FILTER)
    suffix = " settings additional_table_filters={'cvat.events' : ' user_id = \\'2\\' '}"
    for sql, out in zip(panels, seen["panels"]):
        for ref in out["from"]:
            if ref["ref"].startswith("$"):
                continue  # a macro
            assert ref["table"], f"{rel}: FROM {ref['ref']}: the plugin's parser refuses it: {ref['error']}"
        reads_events = any(ref["table"] == "cvat.events" for ref in out["from"])
        assert out["sql"] == (sql + suffix if reads_events else sql), f"{rel}: {sql[:200]}"
    assert any(out["sql"].endswith(suffix) for out in seen["panels"]), f"{rel}: no panel is filtered"


@pytest.mark.clickhouse
def test_every_panel_that_reads_events_by_clickhouses_parser_is_filtered():
    """ClickHouse's own parser (on chdb) says which panels read cvat.events: each gets the filter."""
    everything = [(rel, sql) for rel, model in sorted(DASHBOARDS.items()) for sql in panel_sql(model)]
    read = iter(contracts.tables_read([sql for _, sql in everything]))  # one engine start for all
    checked = 0
    for rel, model in sorted(DASHBOARDS.items()):
        panels = panel_sql(model)
        seen = plugin(adhoc_query(model), panels, EVENTS_FILTER)
        for sql, out in zip(panels, seen["panels"]):
            if any(t.replace("`", "").replace('"', "") == "cvat.events" for t in next(read)["tables"]):
                assert "settings additional_table_filters=" in out["sql"], f"{rel}: {sql[:200]}"
                checked += 1
    assert checked >= len(DASHBOARDS)


def test_the_dashboards_profile_accepts_every_setting_the_plugin_sends_and_no_other():
    users = contracts.ClickHouseUsers.from_files(FILES)
    assert contracts.grafana_settings_problems(FILES, users) == []
    assert contracts.contract_problems(FILES) == []
    profile = users.profile("cvat_dashboards")
    assert profile.findtext("readonly") == "1"
    assert {c.tag for c in profile.findall("constraints/*")} == {"max_execution_time", "additional_table_filters"}
    # Without additional_table_filters every filtered panel fails (Code: 164 ... readonly mode).
    refused = FILES[USERS].replace("<additional_table_filters>\n                    <changeable_in_readonly/>\n"
                                   "                </additional_table_filters>\n", "")
    assert refused != FILES[USERS]
    broken = {**FILES, USERS: refused}
    [problem] = contracts.grafana_settings_problems(broken, contracts.ClickHouseUsers.from_files(broken))
    assert "additional_table_filters" in problem and "ad hoc filters" in problem
    # A setting the plugin never sends may not be changeable (least privilege), nor may the user be readonly=2.
    extra = FILES[USERS].replace("</constraints>", "<max_threads><changeable_in_readonly/></max_threads></constraints>", 1)
    wider = {**FILES, USERS: extra}
    [problem] = contracts.grafana_settings_problems(wider, contracts.ClickHouseUsers.from_files(wider))
    assert "max_threads" in problem and "never sends" in problem
    lax = {**FILES, USERS: FILES[USERS].replace("<readonly>1</readonly>", "<readonly>2</readonly>")}
    [problem] = contracts.grafana_settings_problems(lax, contracts.ClickHouseUsers.from_files(lax))
    assert "readonly=2" in problem
    # A datasource setting (jsonData.customSettings) the profile does not allow is named too.
    ds = contracts.DATASOURCES + "clickhouse.yaml"
    custom = {**FILES, ds: FILES[ds].replace("      queryTimeout:", "      customSettings: [{setting: max_threads, "
                                                                  "value: '4'}]\n      queryTimeout:")}
    [problem] = contracts.grafana_settings_problems(custom, users)
    assert "max_threads" in problem and "jsonData" in problem


# --- what the plugin sends, through serve's /clickhouse ---------------------------------------

def send(srv, sql: str) -> tuple[int, bytes]:
    """One query as the plugin's driver posts it (the SQL in the body)."""
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=60)
    try:
        conn.request("POST", "/clickhouse/?default_format=TabSeparated&max_execution_time=59", body=sql.encode(),
                     headers=ANALYST)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture
def served(make_served, store):
    srv = make_served(tokens=TOKENS[:1])
    other_user = [{**e, "user_id": 9, "user_name": "bob"} for e in cvat_batch("req-b", 4)]
    assert post(srv, cvat_batch("req-a", 6) + other_user)[0] == 200
    return srv


def dashboards_for(spec: dict) -> dict[str, dict]:
    return {d["name"]: json.loads(grafana.definition_json(d, spec)) for d in grafana.load_all(spec)}


@pytest.mark.clickhouse
def test_the_plugins_ad_hoc_requests_run_through_serve_and_narrow_every_events_panel(served, store):
    db = store.database
    model = dashboards_for(store.spec)["all_events"]
    time_from = datetime.fromtimestamp(BASE - 3600, timezone.utc)
    time_to = datetime.fromtimestamp(BASE + 3600, timezone.utc)
    variables = {v["name"]: Variable(ALL) for v in model["templating"]["list"] if v["type"] == "query"}
    seen = plugin(adhoc_query(model), panel_sql(model), EVENTS_FILTER)
    assert seen["target_table"] == f"{db}.events"
    # Keys, then the values of user_id (the variable with the key in place of $__adhoc_column).
    status, body = send(served, seen["keys_sql"])
    assert status == 200 and b"user_id\t" in body, body
    values = expand(adhoc_query(model).replace("$__adhoc_column", "events.user_id"), time_from, time_to)
    status, body = send(served, values)
    assert (status, sorted(body.split())) == (200, [b"2", b"9"]), body
    filtered = narrowed = 0
    for sql, out in zip(panel_sql(model), seen["panels"]):
        if out["sql"] == sql:
            continue
        plain = expand(sql, time_from, time_to, 60, variables)
        status, everyone = send(served, plain)
        assert status == 200, everyone
        status, only_ann = send(served, expand(out["sql"], time_from, time_to, 60, variables))
        assert status == 200, only_ann
        # What ClickHouse itself answers to the plugin's SQL (no gate, no read-only).
        direct = store.client.raw_query(expand(out["sql"], time_from, time_to, 60, variables), fmt="TabSeparated")
        assert only_ann == direct, sql[:200]
        filtered += 1
        narrowed += only_ann != everyone
    assert filtered >= 1 and narrowed >= 1


# Conditions an editor of a dashboard can type as a filter's value: each reads past the table's
# rows or calls what the gate does not allow, and is refused with its reason (403), or is not one
# expression and fails to parse (400), before anything runs.
ATTACKS = {
    "a subquery": ("user_id IN (SELECT user_id FROM {db}.events)", 403, "no subquery"),
    "IN a table": ("user_id IN {db}.events", 403, "reads a table"),
    "IN a bare table name": ("user_id IN events", 403, "reads a table"),
    "a scalar subquery": ("user_id = 2 OR (SELECT count() FROM system.users) > 0", 403, "no subquery"),
    "a function off the list": ("file('/etc/passwd') != ''", 403, "file() is not allowed"),
    "a table's columns": ("hasColumnInTable('system', 'users', 'name')", 403, "hasColumnInTable() is not allowed"),
    "a dictionary": ("dictGetString('d', 'a', toUInt64(1)) = ''", 403, "is not allowed"),
    "a lambda": ("arrayExists(x -> x > 0, [user_id])", 403, "arrayExists() is not allowed"),
    "a FROM": ("1 FROM system.users", 400, "Syntax error"),
    "two expressions": ("user_id = 2, 1", 400, "Syntax error"),
    "a SETTINGS clause": ("user_id = 2 SETTINGS max_threads = 64", 400, "Syntax error"),
    "a comment eating the rest": ("user_id = 2) OR (1 --", 400, "Syntax error"),
}


def quoted(condition: str) -> str:
    """A condition as the plugin writes it inside the setting's string (adHocFilter.ts line 165)."""
    return condition.replace("\\", "\\\\").replace("'", "\\'")


@pytest.mark.clickhouse
def test_a_filter_that_reads_past_the_table_is_refused_and_a_plain_one_passes(served, store):
    db = store.database
    base = f'SELECT count() FROM "{db}".events'
    assert send(served, f"{base} settings additional_table_filters={{'{db}.events' : ' user_id = \\'2\\' '}}") \
        == (200, b"6\n")
    for attack, (condition, expected, reason) in ATTACKS.items():
        status, body = send(served, f"{base} settings additional_table_filters={{'{db}.events' : "
                                    f"'{quoted(condition.format(db=db))}'}}")
        assert status == expected and reason in body.decode(), (attack, body)


# A second setting beside the filter, the filter's string closed early, a second table: not the
# plugin's clause, so the gate lets the engine's read-only mode refuse it as any SETTINGS clause.
NOT_THE_PLUGINS = [
    " settings additional_table_filters={{'{db}.events' : 'user_id = 2'}}, max_threads = 64",
    " settings additional_table_filters={{'{db}.events' : 'user_id = 2'}} , readonly = 0",
    " settings additional_table_filters={{'{db}.events' : 'user_id = 2'' OR 1 = 1 OR ''x'}}",
    " settings max_threads = 64, additional_table_filters={{'{db}.events' : 'user_id = 2'}}",
    " settings additional_table_filters={{'{db}.events' : 'user_id = 2', 'system.users' : '1'}}",
    " SETTINGS additional_table_filters={{'{db}.events' : 'user_id = 2'}}",
]


@pytest.mark.clickhouse
def test_only_the_plugins_own_clause_passes_the_gate(served, store):
    db = store.database
    base = f'SELECT count() FROM "{db}".events'
    assert send(served, f"{base} settings additional_table_filters={{'{db}.events' : 'user_id = 9'}}") == (200, b"4\n")
    for suffix in NOT_THE_PLUGINS:
        status, body = send(served, base + suffix.format(db=db))
        assert status == 403 and re.search(rb"SETTINGS clause is refused|in readonly mode", body), (suffix, body)
