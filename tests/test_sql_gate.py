"""The SQL gate (generator/sql_gate.py) as an attacker meets it: /clickhouse's URL settings,
output formats and statements, a custom dashboard's panel SQL at page view and in `check`,
and a query_id that would break the response head. Real `serve` on 127.0.0.1, real chdb."""
from __future__ import annotations

import copy
import http.client
import logging
import re
import time
import textwrap
import urllib.error
import urllib.request
from urllib.parse import quote, urlencode

import pytest

from cvat_analytics.service.clickhouse_http import TRANSPORT
from cvat_analytics_generator.sql_gate import SETTINGS
from tests.conftest import REPO, write_spec

from .test_clickhouse_http import ANALYST, served, sql  # noqa: F401 - the fixture, the client, its token

pytestmark = pytest.mark.clickhouse
CLI = REPO / ".venv" / "bin" / "cvat-analytics"
LIMITS = ("max_execution_time", "max_memory_usage", "max_result_bytes", "max_result_rows", "max_threads",
          "max_block_size")


def lines(srv, query: str, **params) -> list[str]:
    status, _, body = sql(srv, query, **params)
    assert status == 200, body
    return body.decode().splitlines()


# -- files written and read through settings -----------------------------------------

@pytest.mark.parametrize("how", [{"query": "SELECT 'import os' AS x FORMAT Protobuf"},
                                 {"query": "SELECT 'import os' AS x", "default_format": "Protobuf"},
                                 {"query": "SELECT 'import os' AS x FORMAT CapnProto"}])
def test_output_format_schema_writes_no_file(served, tmp_path, how):
    target = tmp_path / "site-packages" / "evil.pth"
    target.parent.mkdir()
    status, headers, body = sql(served, how.pop("query"), output_format_schema=str(target), **how)
    assert status == 403 and b"output_format_schema" in body, body
    assert not list(target.parent.iterdir())


@pytest.mark.parametrize("setting", ["format_template_resultset", "format_template_row", "format_schema"])
def test_template_and_schema_settings_never_quote_a_file(served, tmp_path, setting):
    secret = tmp_path / "tokens.env"
    secret.write_text("CVAT_ANALYTICS_TOKEN_ADMIN=s3cr3t-admin-token-value\n")
    for fmt in ("Template", "CapnProto", "Protobuf", "JSON"):
        status, _, body = sql(served, f"SELECT 1 AS x FORMAT {fmt}", **{setting: str(secret)})
        assert status == 403 and setting.encode() in body, body
        assert b"s3cr3t" not in body


@pytest.mark.parametrize("fmt", ["Template", "TemplateIgnoreSpaces", "CustomSeparated", "Protobuf",
                                 "ProtobufSingle", "ProtobufList", "CapnProto", "Regexp"])
def test_formats_that_take_schema_files_are_refused_however_asked(served, fmt):
    for params in ({"query": f"SELECT 1 FORMAT {fmt}"}, {"query": "SELECT 1", "default_format": fmt}):
        status, _, body = sql(served, **params)
        assert status == 403 and f"'{fmt}'".encode() in body, body
    status, _, body = sql(served, "SELECT 1", headers={**ANALYST, "X-ClickHouse-Format": fmt})
    assert status == 403 and f"'{fmt}'".encode() in body, body


def test_every_setting_that_takes_a_path_url_or_schema_is_refused(served):
    # Generated from the engine's own list, so a setting a new release adds is swept too.
    names = lines(served, r"""
        SELECT name FROM system.settings
        WHERE match(name, '(?i)path|file|url|uri|schema|director|template|registry')
           OR (type IN ('String', 'URI') AND match(description, '(?i)path|file|url|schema|director'))
        ORDER BY name""")
    names = [n for n in names if n not in TRANSPORT]  # `database`: the interface's own parameter
    assert {"output_format_schema", "format_schema", "format_template_row", "format_avro_schema_registry_url",
            "input_format_record_errors_file_path", "url_base"} <= set(names)
    assert len(names) > 150
    conn = http.client.HTTPConnection(*served.server_address[:2], timeout=60)
    for name in names:
        conn.request("GET", "/clickhouse/?" + urlencode({"query": "SELECT 1", name: "/tmp/cvat-analytics-sweep"}), headers=ANALYST)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 403 and f"'{name}'".encode() in body, (name, body)


def test_every_other_setting_off_the_allow_list_is_refused_naming_it(served):
    names = lines(served, "SELECT name FROM system.settings ORDER BY name")
    off = [n for n in names if n not in SETTINGS and n not in LIMITS and n not in TRANSPORT and n != "readonly"]
    assert {"output_format", "format", "filter", "select", "allow_experimental_eval_table_function",
            "os_thread_priority", "max_bytes_to_read"} <= set(off)
    conn = http.client.HTTPConnection(*served.server_address[:2], timeout=60)
    for name in off:
        conn.request("GET", "/clickhouse/?" + urlencode({"query": "SELECT 1", name: "1"}), headers=ANALYST)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 403 and f"'{name}'".encode() in body, (name, body)
    # Those on the list are taken, and applied.
    assert lines(served, "SELECT getSetting('date_time_output_format')", date_time_output_format="iso") == ["iso"]
    assert lines(served, "SELECT 1", output_format_json_quote_64bit_integers="0", send_progress_in_http_headers="1",
                 readonly="1") == ["1"]


# -- limits ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, key", [
    ("max_execution_time", "clickhouse.dashboards_max_execution_time_s"),
    ("max_memory_usage", "clickhouse.dashboards_max_memory_usage_bytes"),
    ("max_result_bytes", "embedded.sql.max_result_bytes"),
    ("max_result_rows", "embedded.sql.max_result_rows"),
    ("max_threads", "embedded.sql.max_threads")])
def test_a_limit_may_be_lowered_never_raised_nor_lifted(served, store, name, key):
    section, _, leaf = key.rpartition(".")
    bound = store.spec
    for part in key.split("."):
        bound = bound[part]
    assert lines(served, f"SELECT getSetting('{name}')") == [str(bound)]
    lowered = str(bound // 2 or 1)
    assert lines(served, f"SELECT getSetting('{name}')", **{name: lowered}) == [lowered]
    # Raised: held at the bound (clients such as Grafana's plugin send a deadline + 5 s).
    assert lines(served, f"SELECT getSetting('{name}')", **{name: str(bound + 1)}) == [str(bound)]
    for lifted in ("-1", "0", "-0.5", "nan", "inf", "many"):
        status, _, body = sql(served, "SELECT 1", **{name: lifted})
        assert status == 400 and name.encode() in body and key.encode() in body, (lifted, body)


def test_a_negative_time_limit_no_longer_lifts_the_cap(served):
    # It was min(-1, 60) = -1, which ClickHouse reads as no limit at all.
    status, _, body = sql(served, "SELECT getSetting('max_execution_time')", max_execution_time="-1")
    assert status == 400 and b"max_execution_time" in body, body


# -- statements -----------------------------------------------------------------------

@pytest.mark.parametrize("statement", [
    "SELECT * FROM (SELECT 1 SETTINGS max_execution_time = 100000)",  # a SETTINGS clause that only reads
    "SHOW PROCESSLIST",
    "USE system",
    "CHECK TABLE system.one",
])
def test_statements_past_the_gate_are_refused(served, statement):
    status, headers, body = sql(served, statement)
    assert status == 403 and headers["X-ClickHouse-Exception-Code"] == "164", body


def test_table_functions_come_from_the_allow_list(served):
    for refused in ("SELECT * FROM generateRandom('a String') LIMIT 1", "SELECT * FROM input('a String')"):
        status, _, body = sql(served, refused)
        assert status == 403 and b"table function" in body, body
    for statement, answer in [
            ("SELECT sum(number) FROM numbers(10)", b"45\n"),
            ("SELECT count() FROM merge('system', '^one$')", b"1\n"),
            ("EXISTS TABLE system.one FORMAT CSV", b"1\n"),
            ("SELECT 1 UNION ALL SELECT 2 ORDER BY 1 FORMAT TSV", b"1\n2\n"),
            ("SELECT format('{} {}', 'a', 'b')", b"a b\n")]:  # format() the function, not the table function
        assert sql(served, statement)[::2] == (200, answer)


# -- query_id --------------------------------------------------------------------------

@pytest.mark.parametrize("query_id", ["a\r\nSet-Cookie: x=1", "a\nb", "caf\u00e9\u20ac", "x" * 201])
def test_a_query_id_that_cannot_be_echoed_is_a_400_with_a_log_line(served, caplog, query_id):
    caplog.set_level(logging.INFO, logger="cvat_analytics.access")
    conn = http.client.HTTPConnection(*served.server_address[:2], timeout=30)
    conn.request("GET", "/clickhouse/?query=" + quote("SELECT 1") + "&query_id=" + quote(query_id), headers=ANALYST)
    response = conn.getresponse()
    body = response.read()
    assert response.status == 400 and b"query_id" in body, body
    assert "\n" not in response.getheader("X-ClickHouse-Query-Id")
    # The line is written once the answer is sent, so it may land just after the client read it.
    deadline = time.monotonic() + 10
    while True:
        logged = [r for r in caplog.records if r.name == "cvat_analytics.access" and r.path.startswith("/clickhouse")]
        if logged or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert [r.status for r in logged] == [400]


# -- dashboards -------------------------------------------------------------------------

def custom_panels(tmp_path, db: str) -> str:
    """A dashboard whose panels try to read a file, write one, and raise their own limit."""
    return textwrap.dedent(f"""\
        uid: sneaky
        title: Sneaky
        panels:
          - id: 1
            title: Reads
            type: table
            gridPos: {{x: 0, y: 0, w: 12, h: 8}}
            sql: "SELECT * FROM file('{tmp_path}/tokens.env', 'LineAsString')"
          - id: 2
            title: Reads too
            type: table
            gridPos: {{x: 12, y: 0, w: 12, h: 8}}
            sql: "SELECT file('{tmp_path}/tokens.env') AS t"
          - id: 3
            title: Writes
            type: table
            gridPos: {{x: 0, y: 8, w: 12, h: 8}}
            sql: "SELECT 1 AS x INTO OUTFILE '{tmp_path}/written.txt'"
          - id: 4
            title: Raises
            type: table
            gridPos: {{x: 12, y: 8, w: 12, h: 8}}
            sql: "SELECT getSetting('max_execution_time') AS t SETTINGS max_execution_time = 100000"
          - id: 5
            title: Fine
            type: stat
            gridPos: {{x: 0, y: 16, w: 6, h: 4}}
            sql: "SELECT count() AS n FROM {db}.events"
          - id: 6
            title: Reads a path
            type: table
            gridPos: {{x: 6, y: 16, w: 6, h: 4}}
            sql: "SELECT * FROM `{tmp_path}/tokens.env`"
          - id: 7
            title: Writes past a line break
            type: table
            gridPos: {{x: 12, y: 16, w: 6, h: 4}}
            sql: "SELECT 'x' AS `a\\nX` INTO OUTFILE '{tmp_path}/written.txt' APPEND FORMAT TSVRaw"
          - id: 8
            title: Reaches the network
            type: table
            gridPos: {{x: 18, y: 16, w: 6, h: 4}}
            sql: "EXPLAIN TABLE OVERRIDE mysql('127.0.0.1:1', 'db', 't', 'u', 'p') PARTITION BY a"
        """)


def test_a_custom_panel_that_reads_writes_or_raises_is_refused_at_page_view(make_served, store, tmp_path):
    (tmp_path / "tokens.env").write_text("CVAT_ANALYTICS_TOKEN_ADMIN=s3cr3t-admin-token-value\n")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "sneaky.yaml").write_text(custom_panels(tmp_path, store.spec["clickhouse"]["database"]))
    spec = copy.deepcopy(store.spec)
    spec["custom_dashboards_dir"] = str(folder)
    srv = make_served(spec=spec, dashboards=True)
    host, port = srv.server_address[:2]
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/dashboards/sneaky", timeout=60) as r:
            status, page = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, page = e.code, e.read().decode()
    assert status == 200
    assert "s3cr3t" not in page and "100000" not in page
    assert not (tmp_path / "written.txt").exists()
    assert page.count("is refused") == 6  # panel 6 passes the gate; readonly=1 stops it in the engine
    assert "file() is refused" in page and "INTO OUTFILE" in page and "SETTINGS clause" in page
    assert "TABLE OVERRIDE is refused" in page and "structure could not be checked" in page


def test_check_refuses_the_same_panels_before_running_them(tmp_path):
    (tmp_path / "tokens.env").write_text("CVAT_ANALYTICS_TOKEN_ADMIN=s3cr3t-admin-token-value\n")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "sneaky.yaml").write_text(custom_panels(tmp_path, "{{ db }}"))
    _, path = write_spec(tmp_path, custom_dashboards_dir="mine")
    import subprocess

    def cli(*args):
        return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, cwd=tmp_path, timeout=600)

    assert cli("render", "--spec", path, "--out", tmp_path / "deploy").returncode == 0
    run = cli("check", "--spec", path, "--out", tmp_path / "deploy")
    assert run.returncode == 1
    for panel in ("panel 1 (Reads)", "panel 2 (Reads too)", "panel 3 (Writes)", "panel 4 (Raises)",
                  "panel 7 (Writes past a line break)", "panel 8 (Reaches the network)"):
        assert f"sneaky.json: {panel} is refused" in run.stderr, run.stderr
    assert "panel 5" not in run.stderr
    assert "s3cr3t" not in run.stderr + run.stdout
    assert not (tmp_path / "written.txt").exists()


# -- found by red-teaming the gate --------------------------------------------------------

@pytest.mark.parametrize("brk", ["\n", "\r", "\x1c", "\r\n"])
def test_a_line_break_in_an_alias_does_not_hide_into_outfile(served, tmp_path, brk):
    # EXPLAIN AST prints aliases as they are: a line break made a line of the query's choosing
    # and took INTO OUTFILE's literal out of its statement (a .pth file ran code as root).
    target = tmp_path / "evil.pth"
    for query in (f"SELECT 'import os' AS `a{brk}X` INTO OUTFILE '{target}' FORMAT TSVRaw",
                  f"SELECT 'import os' AS `a{brk}   Y) (children 1)` INTO OUTFILE '{target}' APPEND FORMAT TSVRaw",
                  f'SELECT `x{brk}y` FROM system.one INTO OUTFILE \'{target}\''):
        status, _, body = sql(served, query)
        assert status in (400, 403), body
        assert not target.exists()
    status, _, body = sql(served, f"SELECT 'ok' AS `a{brk}b`")  # a name with a line break: refused alone too
    assert status == 403 and b"line break" in body, body


def test_a_fraction_of_a_second_no_longer_lifts_the_time_limit(served):
    # The engine rounds 1e-7 s down to 0: no limit at all.
    for value in ("0.0000001", "1e-300", "0.5"):
        status, _, body = sql(served, "SELECT getSetting('max_execution_time')", max_execution_time=value)
        assert status == 400 and b"max_execution_time" in body, (value, body)


def test_every_ai_function_is_refused(served):
    for function in ("aiGenerate('x')", "aiClassify('x', ['a'])", "aiEmbed('x')"):
        status, _, body = sql(served, f"SELECT {function}")
        assert status == 403 and b"refused" in body, (function, body)


# --- what a caller with forced filters may read (check_reads) --------------------------------

@pytest.mark.parametrize("query, verdict", [
    ("SELECT count() FROM {db}.events", None),
    ("SELECT 1", None),
    ("SELECT number FROM numbers(3)", None),
    ("WITH mine AS (SELECT user_id FROM {db}.events) SELECT * FROM mine WHERE user_id IN mine", None),
    ("SELECT * FROM {db}.working_time_totals WHERE user_id IN (SELECT user_id FROM {db}.events)", None),
    ("SELECT (SELECT groupArray(user_id) FROM {db}.events) AS users", None),
    ("SELECT arrayFilter(x -> x > 0, [1, 2]) AS before", None),
    ("SELECT * FROM {db}.working_time_slot_totals", "it reads {db}.working_time_slot_totals"),
    ("SELECT 1 FROM {db}.events WHERE user_id GLOBAL IN (SELECT user_id FROM {db}.working_time_checkpoints)",
     "it reads {db}.working_time_checkpoints"),
    ("SELECT * FROM (WITH t AS (SELECT 1 AS user_id) SELECT user_id FROM t) AS x, {db}.imports",
     "it reads {db}.imports"),
    ("SELECT (scope, timestamp) IN {db}.ingest_requests FROM {db}.events", "it reads {db}.ingest_requests (IN)"),
    ("SELECT name FROM system.tables", "it reads system.tables"),
    # a bare name is a CTE's: not one of a table of the current database, nor a path
    ("SELECT (SELECT count() FROM schema_migrations), (WITH schema_migrations AS (SELECT 1) SELECT 1)",
     "it reads schema_migrations, a table of the current database"),
    ("SELECT arrayJoin((SELECT groupArray(c1) FROM `/etc/hostname`)) AS leaked", "it reads '/etc/hostname'"),
    # Found by red-teaming an analyser-based check, which ran the subqueries while checking:
    # a scalar subquery returning an array (it had left only __getScalar in the tree), and
    # throwIf() in one, whose error code answered a question about another org's row.
    ("SELECT arrayJoin((SELECT groupArray(toString(tuple(*))) FROM {db}.working_time_slot_totals)) AS leaked",
     "it reads {db}.working_time_slot_totals"),
    ("SELECT (SELECT throwIf(any(run_end_ms) > 1) FROM {db}.working_time_checkpoints WHERE user_id = 80)",
     "it reads {db}.working_time_checkpoints"),
    ("SELECT (SELECT toLowCardinality(any(name)) FROM system.tables)", "it reads system.tables"),
    ("SELECT x FROM {db}.events ARRAY JOIN (SELECT groupArray(name) FROM system.tables) AS x",
     "it reads system.tables"),
    ("SELECT * FROM view(SELECT 1)", "table function view()"),
    ("SELECT * FROM merge('{db}', '^working')", "table function merge()"),
    ("SELECT dictGet('{db}.nothing', 'x', 1)", "it calls dictGet()"),
    ("SELECT joinGetOrNull('{db}.nothing', 'x', 1)", "it calls joinGetOrNull()"),
    # Found by the third red-team: the *IgnoreSet forms of IN read their table whole, and
    # functions that read the server's settings or a table's columns by name.
    ("SELECT inIgnoreSet(toUInt64(80), {db}.working_time_checkpoints)",
     "it reads {db}.working_time_checkpoints (IN)"),
    ("SELECT globalNotNullInIgnoreSet(toUInt64(80), {db}.imports)", "it reads {db}.imports (IN)"),
    ("SELECT hasColumnInTable('{db}', 'working_time_checkpoints', 'run_end_ms')", "it calls hasColumnInTable()"),
    ("SELECT getServerSetting('path')", "it calls getServerSetting()"),
    ("SELECT w.user_id FROM {db}.working_time_totals AS w", None),  # a dotted column, not a table
    ("SELECT identity({db}.imports)", "it reads {db}.imports"),  # any function given a table's name
    # Found by review: a WITH alias of a bare table name, then IN the alias (the analyser
    # resolves it to the table of the current database).
    ("WITH schema_migrations AS t SELECT 43 IN t", "it reads schema_migrations, a table of the current database"),
    ("WITH schema_migrations AS a, a AS t SELECT globalIn(43, t)", "it reads schema_migrations"),
    ("WITH schema_migrations AS t SELECT number FROM numbers(100) WHERE number IN t",
     "it reads schema_migrations"),
    ("SHOW TABLES", "only a SELECT runs"),
    ("EXPLAIN SELECT * FROM {db}.working_time_slot_totals", "only a SELECT runs"),
])
def test_a_caller_with_forced_filters_reads_only_the_tables_they_cover(store, query, verdict):
    from cvat_analytics.dashboards import Dashboards
    from cvat_analytics_generator.sql_gate import Refused, filtered_tables

    db = store.database
    store.client.command(f"CREATE TABLE IF NOT EXISTS default.schema_migrations (x UInt8) ENGINE = Memory")
    pages = Dashboards(lambda: store.client, store.spec)
    assert filtered_tables(pages.forced_filters({"org_id": 7})) == {
        f"{db}.{t}" for t in ("events", "working_time_totals", "productivity_objects", "productivity_jobs",
                              "productivity_user_names", "vector_metrics", "working_time_refresh_log",
                              "productivity_refresh_log")}
    sql_text = query.format(db=db)
    pages.gate(sql_text)  # every one passes the gate of a caller without forced filters
    if verdict is None:
        pages.gate(sql_text, forced={"org_id": 7})
    else:
        with pytest.raises(Refused, match=r"a caller with org_id=7 may not run this query: .*"
                                          + re.escape(verdict.format(db=db)) + ".*; their forced filters cover only"):
            pages.gate(sql_text, forced={"org_id": 7})


def test_checking_a_forced_callers_query_runs_none_of_it(store):
    """The check reads the parser's tree only: a subquery whose throwIf would answer a question
    about another org's row gets the same refusal whatever the answer, and a query whose
    analysis would expand to gigabytes (each alias a copy of the one before) is refused at once."""
    from cvat_analytics.dashboards import Dashboards
    from cvat_analytics_generator.sql_gate import Refused

    db = store.database
    store.client.command(f"INSERT INTO `{db}`.working_time_checkpoints (user_id, hour, run_end_ms, version) "
                         "VALUES (80, now(), 987654321, 1)")
    pages = Dashboards(lambda: store.client, store.spec)
    answers = set()
    for threshold in (1, 987654320, 987654321, 2 ** 40):
        with pytest.raises(Refused) as refused:
            pages.gate(f"SELECT (SELECT throwIf(any(run_end_ms) > {threshold}) FROM {db}.working_time_checkpoints "
                       f"WHERE user_id = 80), 1 FROM {db}.events", forced={"org_id": 7})
        answers.add(str(refused.value))
    assert len(answers) == 1
    aliases = ", ".join(f"(a{n}, a{n}) AS a{n + 1}" for n in range(13))
    started = time.monotonic()
    with pytest.raises(Refused, match="it reads system.tables"):
        pages.gate(f"SELECT repeat('a', 100000) AS a0, {aliases} FROM system.tables", forced={"org_id": 7})
    assert time.monotonic() - started < 5
