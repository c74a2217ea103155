"""/clickhouse: ClickHouse's HTTP interface on the engine `serve` holds, read-only.

Real clients on real sockets: clickhouse-connect in a separate process, raw HTTP as
curl sends it. Results are compared byte for byte with the engine answering the same
query directly (what `cvat-analytics query` reads once serve is stopped)."""
from __future__ import annotations

import base64
import http.client
import json
import subprocess
import sys
import threading
import time
from urllib.parse import urlencode

import pytest

from cvat_analytics.service.access import Principal, Token

from .test_serve import cvat_batch, post

pytestmark = pytest.mark.clickhouse

SECRET_ANALYST = "analyst-secret-0123456789"
SECRET_ORG7 = "org7-secret-0123456789ab"
SECRET_INGEST = "ingest-secret-0123456789"
TOKENS = [
    Token(SECRET_ANALYST.encode(), Principal("analyst", frozenset({"sql"}))),
    Token(SECRET_ORG7.encode(), Principal("org-7", frozenset({"sql", "export"}), {"org_id": 7})),
    Token(SECRET_INGEST.encode(), Principal("cvat-server", frozenset({"ingest"}))),
]
ANALYST = {"Authorization": f"Bearer {SECRET_ANALYST}"}


def sql(srv, query: str, method: str = "GET", headers: dict | None = None, **params):
    """(status, headers, body) of one query, sent as curl sends it; by default as the
    analyst (the SQL interface always needs a token)."""
    headers = ANALYST if headers is None else headers
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=60)
    try:
        if method == "GET":
            conn.request("GET", "/clickhouse/?" + urlencode({"query": query, **params}), headers=headers)
        else:
            conn.request("POST", "/clickhouse/?" + urlencode(params), body=query.encode(), headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def engine(store, query: str, fmt: str) -> bytes:
    """The same query answered by the engine directly, in the same format."""
    import chdb
    from cvat_analytics.store import chdb_path

    conn = chdb.connect(str(chdb_path(store.dsn).resolve()))
    try:
        return conn.query(query, fmt).bytes()
    finally:
        conn.close()


@pytest.fixture
def served(make_served, store):
    srv = make_served(tokens=TOKENS[:1])  # the analyst only: ingest needs no token
    status, _ = post(srv, cvat_batch("req-a", 50) + cvat_batch("req-b", 7))
    assert status == 200
    return srv


def test_curl_gets_the_count_with_clickhouse_headers(served, store):
    status, headers, body = sql(served, f"SELECT count() FROM {store.database}.events")
    assert (status, body) == (200, b"57\n")
    assert headers["X-ClickHouse-Format"] == "TabSeparated"
    assert headers["X-ClickHouse-Timezone"]
    status, headers, body = sql(served, f"SELECT count() FROM {store.database}.events WHERE payload != ''")
    assert json.loads(headers["X-ClickHouse-Summary"])["read_rows"] == "57"
    status, headers, _ = sql(served, "SELECT 1", query_id="mine-1")
    assert headers["X-ClickHouse-Query-Id"] == "mine-1"
    conn = http.client.HTTPConnection(*served.server_address[:2], timeout=10)
    for path in ("/clickhouse/ping", "/clickhouse/"):
        conn.request("GET", path, headers=ANALYST)
        assert conn.getresponse().read() == b"Ok.\n"


def test_post_body_database_default_format_and_parameters(served, store):
    query = "SELECT request_id, count() AS n FROM events WHERE request_id = {id:String} GROUP BY request_id"
    status, headers, body = sql(served, query, method="POST", database=store.database,
                                default_format="JSONEachRow", param_id="req-b")
    assert status == 200, body
    assert body == engine(store, query.replace("{id:String}", "'req-b'").replace("FROM events", f"FROM {store.database}.events"),
                          "JSONEachRow")
    assert json.loads(body)["request_id"] == "req-b"
    assert headers["X-ClickHouse-Format"] == "JSONEachRow"
    # A FORMAT clause wins over default_format, and the header says which was used.
    status, headers, body = sql(served, "SELECT 1 AS x FORMAT CSVWithNames", default_format="JSONEachRow")
    assert (status, body, headers["X-ClickHouse-Format"]) == (200, b'"x"\n1\n', "CSVWithNames")
    status, headers, body = sql(served, f"EXISTS TABLE {store.database}.events", default_format="CSV")
    assert (status, body, headers["X-ClickHouse-Format"]) == (200, b"1\n", "CSV")


@pytest.mark.parametrize("fmt", ["TabSeparatedWithNames", "JSONEachRow", "CSVWithNames"])
def test_results_are_byte_equal_to_the_engine(served, store, fmt):
    query = (f"SELECT scope, timestamp, obj_name, obj_val, user_id, payload, request_id "
             f"FROM {store.database}.events ORDER BY timestamp, obj_name")
    status, _, body = sql(served, f"{query} FORMAT {fmt}")
    assert status == 200, body
    assert body == engine(store, query, fmt)
    assert body.count(b"\n") >= 57


@pytest.mark.parametrize("statement", [
    "INSERT INTO {db}.events (scope, timestamp) VALUES ('x:y', now())",
    "INSERT INTO {db}.events SELECT * FROM {db}.events",
    "ALTER TABLE {db}.events DELETE WHERE 1",
    "ALTER TABLE {db}.events ADD COLUMN z UInt8",
    "DROP TABLE {db}.events",
    "TRUNCATE TABLE {db}.events",
    "RENAME TABLE {db}.events TO {db}.gone",
    "OPTIMIZE TABLE {db}.events FINAL",
    "DETACH TABLE {db}.events",
    "CREATE TABLE {db}.x (a UInt8) ENGINE = Memory",
    "CREATE TEMPORARY TABLE x (a UInt8)",
    "CREATE DATABASE other",
    "CREATE FUNCTION f AS (x) -> x",
    "SYSTEM FLUSH LOGS",
    "SYSTEM SHUTDOWN",
    "SYSTEM STOP MERGES",
    "SYSTEM START TTL MERGES",
    "SET max_execution_time = 100000",
    "SET readonly = 0",
    "SELECT 1 SETTINGS max_memory_usage = 0",
    "SELECT 1 SETTINGS readonly = 0",
    "KILL QUERY WHERE 1",
    "SELECT 1 INTO OUTFILE '{tmp}/out.csv'",
    "GRANT ALL ON *.* TO default",
])
def test_every_write_is_refused_by_the_engine_with_its_error_as_a_4xx(served, store, tmp_path, statement):
    query = statement.format(db=store.database, tmp=tmp_path)
    for method in ("GET", "POST"):
        status, headers, body = sql(served, query, method=method)
        assert 400 <= status < 500, (status, body)
        assert body.startswith(b"Code: ") and b"DB::Exception" in body
        assert headers["X-ClickHouse-Exception-Code"] in ("164", "497")
    assert not (tmp_path / "out.csv").exists()
    assert sql(served, f"SELECT count() FROM {store.database}.events")[2] == b"57\n"
    assert sql(served, f"EXISTS TABLE {store.database}.events")[2] == b"1\n"


@pytest.mark.parametrize("reader", [
    "SELECT * FROM file('/etc/hostname', 'LineAsString')",
    "SELECT file('/etc/hostname')",
    "SELECT * FROM filesystem('/')",
    "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')",
    "SELECT * FROM s3('http://127.0.0.1:9/bucket/x.csv', 'CSV', 'a String')",
    "SELECT * FROM gcs('http://127.0.0.1:9/bucket/x.csv', 'CSV', 'a String')",
    "SELECT * FROM azureBlobStorage('http://127.0.0.1:9', 'c', 'x.csv')",
    "SELECT * FROM hdfs('hdfs://127.0.0.1:9/x', 'CSV', 'a String')",
    "SELECT * FROM remote('127.0.0.1:9', system.one)",
    "SELECT * FROM mysql('127.0.0.1:9', 'db', 't', 'u', 'p')",
    "SELECT * FROM postgresql('127.0.0.1:9', 'db', 't', 'u', 'p')",
    "SELECT * FROM mongodb('127.0.0.1:9', 'db', 'c', 'u', 'p', 'a String')",
    "SELECT * FROM redis('127.0.0.1:9', 'k', 'k String, v String')",
    "SELECT * FROM sqlite('/tmp/x.db', 't')",
    "SELECT * FROM jdbc('x', 'y', 'z')",
    "SELECT * FROM odbc('x', 'y', 'z')",
    "SELECT * FROM executable('x.sh', 'CSV', 'a String')",
    "SELECT * FROM deltaLake('http://127.0.0.1:9/bucket/x')",
    "SELECT * FROM iceberg('http://127.0.0.1:9/bucket/x')",
    "SELECT * FROM icebergLocal('/tmp/x')",
    "SELECT * FROM hudi('http://127.0.0.1:9/bucket/x')",
    "SELECT * FROM python(spec)",
    "SELECT * FROM Python(spec)",
    "SELECT * FROM (SELECT 1) WHERE file('/etc/hostname') != ''",
    "EXPLAIN PLAN SELECT FILE('/etc/hostname')",
    "SELECT * FROM arrowstream(spec)",
    "SELECT * FROM eval('SELECT file(''/etc/hostname'')')",
])
def test_every_file_and_network_reader_is_refused(served, reader):
    status, headers, body = sql(served, reader, allow_experimental_eval_table_function="1")
    assert status == 403, (status, body)
    assert headers["X-ClickHouse-Exception-Code"] == "164"


def test_several_statements_in_one_request_are_refused(served, store):
    status, headers, body = sql(served, "SELECT 1; KILL QUERY WHERE 1")
    assert status == 400 and headers["X-ClickHouse-Exception-Code"] == "62"
    assert b"Multi-statements are not allowed" in body


def test_limits_cannot_be_raised_and_a_query_past_them_is_a_clean_error(served, store):
    spec_time = store.spec["clickhouse"]["dashboards_max_execution_time_s"]
    status, _, body = sql(served, "SELECT getSetting('max_execution_time'), getSetting('readonly'), "
                                  "getSetting('os_thread_priority')")
    assert (status, body) == (200, f"{spec_time}\t1\t19\n".encode())
    for name, value in (("readonly", "0"), ("os_thread_priority", "-20")):
        status, _, body = sql(served, "SELECT 1", **{name: value})
        assert status == 403 and f"'{name}'".encode() in body, body
    status, _, body = sql(served, "SELECT getSetting('max_execution_time')", max_execution_time="100000")
    assert body == f"{spec_time}\n".encode()  # held at the spec's bound
    assert sql(served, "SELECT getSetting('readonly')", readonly="1")[2] == b"1\n"
    status, _, body = sql(served, "SELECT getSetting('max_execution_time')", max_execution_time="5")
    assert body == b"5\n"  # lowering is allowed
    status, headers, body = sql(served, "SELECT groupArray(number) FROM numbers(100000000)",
                                max_memory_usage="50000000")
    assert status == 500 and headers["X-ClickHouse-Exception-Code"] == "241", body
    status, headers, body = sql(served, "SELECT count() FROM numbers(1000000000000)", max_execution_time="1")
    assert status == 408 and headers["X-ClickHouse-Exception-Code"] == "159", body
    status, headers, body = sql(served, "SELECT number FROM numbers(1000)", max_result_rows="10")
    assert status == 500 and headers["X-ClickHouse-Exception-Code"] == "396", body


def test_a_token_needs_the_sql_permission_and_forced_filters_are_refused(make_served, store):
    srv = make_served(tokens=TOKENS)
    query = f"SELECT count() FROM {store.database}.events"
    assert sql(srv, query, headers={})[0] == 401
    assert sql(srv, query, headers={"Authorization": f"Bearer {SECRET_INGEST}"})[0] == 403
    status, headers, body = sql(srv, query, headers={"Authorization": f"Bearer {SECRET_ORG7}"})
    assert status == 403 and headers["X-ClickHouse-Exception-Code"] == "497"
    assert b"forced filters (org_id=7)" in body
    assert sql(srv, query, headers={"Authorization": f"Bearer {SECRET_ANALYST}"})[:3:2] == (200, b"0\n")
    # As Grafana's plugin (clickhouse-go) sends it: a user and a password, the password the secret.
    basic = base64.b64encode(f"grafana:{SECRET_ANALYST}".encode()).decode()
    assert sql(srv, query, headers={"Authorization": f"Basic {basic}"})[0] == 200


CLIENT = r"""
import json, sys, clickhouse_connect
host, port, db, token, rounds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
client = clickhouse_connect.get_client(host=host, port=port, proxy_path='/clickhouse', access_token=token)
counts = [client.query(f'SELECT count() FROM {db}.events').result_rows[0][0] for _ in range(rounds)]
rows = client.query(f'SELECT scope, timestamp, obj_name, user_id, payload FROM {db}.events '
                    'WHERE request_id = {r:String} ORDER BY obj_name', parameters={'r': 'req-a'}).result_rows
frame = client.query_df(f'SELECT scope, count() AS n FROM {db}.events GROUP BY scope')
print(json.dumps({'counts': counts, 'version': client.server_version,
                  'rows': [[str(v) for v in r] for r in rows], 'frame': frame.to_dict('records')}, default=str))
"""


def test_clickhouse_connect_from_another_process_queries_while_events_are_ingested(make_served, store):
    srv = make_served(tokens=TOKENS)
    auth = {"Authorization": f"Bearer {SECRET_INGEST}"}
    assert post(srv, cvat_batch("req-a", 50), headers=auth)[0] == 200
    stop = threading.Event()
    posted = []

    def ingest():
        n = 0
        while not stop.is_set():
            status, _ = post(srv, cvat_batch(f"flow-{n}", 20), headers=auth)
            assert status == 200
            posted.append(n)
            n += 1

    feeder = threading.Thread(target=ingest)
    feeder.start()
    try:
        run = subprocess.run([sys.executable, "-c", CLIENT, "127.0.0.1", str(srv.server_address[1]), store.database,
                              SECRET_ANALYST, "20"], capture_output=True, text=True, timeout=120)
    finally:
        stop.set()
        feeder.join(30)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["counts"] == sorted(out["counts"]) and out["counts"][0] >= 50
    assert len(posted) > 0
    # Native through clickhouse-connect decodes to the engine's own values.
    expected = [line.split("\t") for line in engine(
        store, f"SELECT scope, timestamp, obj_name, user_id, payload FROM {store.database}.events "
               "WHERE request_id = 'req-a' ORDER BY obj_name", "TabSeparatedRaw").decode().splitlines()]
    assert [[r[0], r[1][:23], r[2], r[3], r[4]] for r in out["rows"]] == [
        [e[0], e[1], e[2], e[3], e[4]] for e in expected]
    [seen] = [row["n"] for row in out["frame"] if row["scope"] == "update:task"]
    assert 50 <= seen <= 50 + 20 * len(posted)


def test_the_cli_query_reaches_serve_through_its_dsn(served, store):
    from pathlib import Path

    cli = Path(sys.executable).with_name("cvat-analytics")
    host, port = served.server_address[:2]
    run = subprocess.run([str(cli), "query", "--spec", str(store.spec_path), "--dsn",
                          f"http://analyst:{SECRET_ANALYST}@{host}:{port}/clickhouse",
                          f"SELECT count() AS n FROM {store.database}.events"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "57" in run.stdout


def test_queries_past_the_concurrency_bound_get_503_and_the_bound_frees_again(served, store):
    bound = store.spec["embedded"]["sql"]["max_concurrent_queries"]
    slow = "SELECT count() FROM numbers(100000000000) FORMAT Null"
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(sql(served, slow, max_execution_time="2")))
               for _ in range(bound)]
    for thread in threads:
        thread.start()
    time.sleep(0.7)  # the slow ones hold every slot now
    status, headers, body = sql(served, "SELECT 1")
    for thread in threads:
        thread.join()
    assert status == 503 and headers["X-ClickHouse-Exception-Code"] == "202", body
    assert sorted(a[0] for a in answers) == [408] * bound
    assert sql(served, "SELECT 1")[:3:2] == (200, b"1\n")


def test_native_for_a_client_protocol_version_carries_block_info_as_clickhouse_go_reads_it(served, store):
    # clickhouse-connect's probe: BlockInfo (8 bytes), then one column, one row, named "check".
    status, _, body = sql(served, "SELECT 1 AS check", default_format="Native", client_protocol_version="54405")
    assert status == 200 and body[8:16] == b"\x01\x01\x05check"
    # Grafana's clickhouse-go asks its hello with its own revision: a custom-serialization byte per column.
    status, headers, body = sql(served, "SELECT 1 AS check FORMAT Native", client_protocol_version="54479")
    assert (status, headers["X-ClickHouse-Format"]) == (200, "Native")
    assert body == b"\x01\x00\x02\xff\xff\xff\xff\x00" + b"\x01\x01\x05check\x05UInt8\x00\x01"
    status, _, body = sql(served, "SELECT displayName(), version(), revision(), timezone()",
                          default_format="Native", client_protocol_version="54479")
    assert status == 200 and body.startswith(b"\x01\x00\x02\xff\xff\xff\xff\x00\x04\x01")
    # Without the parameter, Native is the engine's own bytes.
    query = f"SELECT scope, user_name, timestamp, payload FROM {store.database}.events ORDER BY timestamp, obj_name"
    assert sql(served, f"{query} FORMAT Native")[2] == engine(store, query, "Native")
