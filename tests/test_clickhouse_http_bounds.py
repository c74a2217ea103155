"""/clickhouse answers: streamed, bounded by embedded.sql.max_answer_bytes, never taken for whole when cut.

Real clients on real sockets: curl, Python's http.client and clickhouse-connect (in a
process of its own), against `serve` in this process or, where its memory is measured,
in a process of its own (VmHWM of /proc/<pid>/status)."""
from __future__ import annotations

import copy
import http.client
import json
import subprocess
import sys
from urllib.parse import urlencode

import pytest

from cvat_analytics.bench.measure import process_mb
from cvat_analytics.bench.service import ServeProcess

from .conftest import write_spec
from .test_clickhouse_http import ANALYST, SECRET_ANALYST, TOKENS, engine

pytestmark = pytest.mark.clickhouse

ALIAS = "a" * 1000  # every JSONEachRow row repeats it: a large answer from a small result


def served_with(make_served, store, max_answer_bytes: int):
    spec = copy.deepcopy(store.spec)
    spec["embedded"]["sql"]["max_answer_bytes"] = max_answer_bytes
    return make_served(spec=spec, tokens=TOKENS[:1])  # the SQL interface always needs a token


def raw(srv, query: str, **params):
    """(status, headers, body, complete): the body as far as it came; complete is False when
    the transfer broke off (http.client's IncompleteRead)."""
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=120)
    try:
        conn.request("POST", "/clickhouse/?" + urlencode(params), body=query.encode(), headers=ANALYST)
        response = conn.getresponse()
        try:
            return response.status, dict(response.getheaders()), response.read(), True
        except http.client.IncompleteRead as exc:
            return response.status, dict(response.getheaders()), exc.partial, False
    finally:
        conn.close()


def test_an_answer_past_the_bound_is_cut_with_clickhouses_error_and_serve_holds_a_block_not_the_body(tmp_path):
    _, spec_path = write_spec(tmp_path, **{"embedded.data_dir": str(tmp_path / "data"),
                                           "embedded.sql.max_answer_bytes": 300_000_000})
    serve = ServeProcess(f"chdb://{tmp_path}/clickhouse", spec_path)
    try:
        assert subprocess.run(["curl", "-sf", "-H", f"Authorization: Bearer {serve.sql_token}", serve.url + "/clickhouse/?query=SELECT%201"],
                              capture_output=True).stdout == b"1\n"
        idle = process_mb(serve.proc.pid, "VmHWM")
        # 800,000 rows of 1 KB: an 820 MB answer, which main built whole (2.5 GB took serve to 8.2 GB).
        run = subprocess.run(["curl", "-sS", "-H", f"Authorization: Bearer {serve.sql_token}", "-D", str(tmp_path / "head"), "-o", str(tmp_path / "body"),
                              "--data-binary", f"SELECT number AS `{ALIAS}` FROM numbers(800000) FORMAT JSONEachRow",
                              serve.url + "/clickhouse/"], capture_output=True, text=True, timeout=300)
        peak = process_mb(serve.proc.pid, "VmHWM")
    finally:
        serve.stop()
    head = (tmp_path / "head").read_text()
    body = (tmp_path / "body").read_bytes()
    # curl sees a broken transfer (18: "transfer closed with outstanding read data remaining").
    assert run.returncode == 18, run.stderr
    assert head.startswith("HTTP/1.1 200") and "Transfer-Encoding: chunked" in head
    tag = head.split("X-ClickHouse-Exception-Tag: ", 1)[1].split()[0]
    data, _, error = body.partition(f"__exception__\r\n{tag}\r\n".encode())
    assert 290_000_000 < len(data) <= 300_000_000 and data.endswith(b"}\n")  # whole blocks, up to the bound
    assert b"(embedded.sql.max_answer_bytes)" in error and b"(TOO_MANY_ROWS_OR_BYTES)" in error
    assert error.endswith(f" {tag}\r\n__exception__\r\n".encode())
    # serve held a block or two at a time, not the 300 MB it sent (main: ~3.3x the body).
    assert peak - idle < 300, (idle, peak)


CUT_CLIENT = r"""
import json, sys, clickhouse_connect
host, port, alias = sys.argv[1], int(sys.argv[2]), sys.argv[3]
client = clickhouse_connect.get_client(host=host, port=port, proxy_path='/clickhouse', username='analyst',
                                       password=sys.argv[-1])
out = {}
for name, run in (("query", lambda: client.query("SELECT number, toString(number) AS s FROM numbers(3000000)").result_rows),
                  ("raw_stream", lambda: [b for b in client.raw_stream(
                      f"SELECT number AS `{alias}` FROM numbers(100000)", fmt="JSONEachRow")])):
    try:
        run()
        out[name] = "no error"
    except Exception as exc:
        out[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def test_clickhouse_connect_raises_the_cut_as_the_servers_error(make_served, store):
    srv = served_with(make_served, store, 20_000_000)  # past the first block of each answer
    run = subprocess.run([sys.executable, "-c", CUT_CLIENT, "127.0.0.1", str(srv.server_address[1]), ALIAS,
                          SECRET_ANALYST],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.splitlines()[-1])
    # Native (its client_protocol_version path): the exception markers, read as ClickHouse's error.
    assert out["query"].startswith("StreamFailureError: Code: 396.") and "embedded.sql.max_answer_bytes" in out["query"]
    # A raw stream: the missing terminating chunk (urllib3's "Response ended prematurely").
    assert out["raw_stream"].startswith("ProtocolError")


def test_an_error_after_the_first_mebibyte_breaks_the_transfer_and_one_before_it_is_a_clean_status(make_served, store):
    srv = served_with(make_served, store, 1_000_000_000)
    # 5 MB of rows, then the engine fails: a 200 was sent, so the transfer is left broken.
    status, headers, body, complete = raw(srv, "SELECT throwIf(number > 500000, 'stop here') AS x, "
                                               "repeat('y', 10) AS y FROM numbers(1000000)")
    assert (status, headers.get("Transfer-Encoding"), complete) == (200, "chunked", False)
    assert b"Code: 395." in body and b"stop here" in body and headers["X-ClickHouse-Exception-Tag"].encode() in body
    # An error within the held-back first MiB: ClickHouse's status and text, whole.
    status, headers, body, complete = raw(srv, "SELECT throwIf(number > 500, 'early') FROM numbers(1000)")
    assert (status, complete, headers.get("X-ClickHouse-Exception-Code")) == (500, True, "395")
    assert b"early" in body and "Transfer-Encoding" not in headers
    # The bound passed before anything was sent: 400 naming it.
    small = served_with(make_served, store, 1000)
    status, headers, body, complete = raw(small, "SELECT number FROM numbers(1000)")
    assert (status, complete, headers.get("X-ClickHouse-Exception-Code")) == (400, True, "396")
    assert b"embedded.sql.max_answer_bytes" in body


def test_a_long_answer_under_the_bound_streams_whole_and_byte_equal(make_served, store):
    srv = served_with(make_served, store, 1_000_000_000)
    query = "SELECT number, toString(number) AS s, [number, 1] AS a FROM numbers(700000)"
    status, headers, body, complete = raw(srv, query, default_format="CSV")
    assert (status, headers.get("Transfer-Encoding"), complete) == (200, "chunked", True)
    assert body == engine(store, query, "CSV")
    # Native for a client_protocol_version, many blocks: each carries its BlockInfo.
    status, headers, body, complete = raw(srv, "SELECT toString(number) AS s, number AS n FROM numbers(100000)",
                                          default_format="Native", client_protocol_version="54405")
    assert (status, headers.get("Transfer-Encoding"), complete) == (200, "chunked", True)
    assert body.count(b"\x01\x00\x02\xff\xff\xff\xff\x00\x02") == 13  # 100,000 rows in blocks of 8192


NATIVE_CLIENT = r"""
import json, sys, clickhouse_connect
host, port = sys.argv[1], int(sys.argv[2])
client = clickhouse_connect.get_client(host=host, port=port, proxy_path='/clickhouse', username='analyst',
                                       password=sys.argv[-1])
rows = client.query("SELECT toString(number) AS s, concat('u', toString(number % 7)) AS t, number AS n, "
                    "[toString(number)] AS a, toLowCardinality(toString(number % 3)) AS l FROM numbers(50000)").result_rows
print(json.dumps([list(r) for r in rows]))
"""


def test_native_of_many_blocks_through_clickhouse_connect_decodes_to_the_engines_values(make_served, store):
    srv = served_with(make_served, store, 1_000_000_000)
    run = subprocess.run([sys.executable, "-c", NATIVE_CLIENT, "127.0.0.1", str(srv.server_address[1]),
                          SECRET_ANALYST],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)
    assert rows == [[str(n), f"u{n % 7}", n, [str(n)], str(n % 3)] for n in range(50000)]


def test_native_for_clickhouse_go_is_the_block_walk_of_the_engines_blocks_even_where_values_hold_a_header(
        make_served, store):
    from cvat_analytics.service.native_revision import Rewriter

    srv = served_with(make_served, store, 1_000_000_000)
    # Every 1000th value of `s` holds the bytes of the header of `t` (name and type), which
    # sends that block's rewrite back to walking the values.
    query = ("SELECT if(number % 1000 = 0, concat(char(1, 116, 6), 'String'), toString(number)) AS s, "
             "concat('u', toString(number % 7)) AS t, [toString(number)] AS a, number AS n FROM numbers(40000)")
    status, headers, body, complete = raw(srv, query, default_format="Native", client_protocol_version="54479")
    assert (status, headers.get("Transfer-Encoding"), complete) == (200, "chunked", True)
    blocks = engine(store, f"{query} SETTINGS max_block_size=8192", "Native")
    assert body == Rewriter(54479, streamed=False)(blocks)  # every value walked, one chunk of all blocks
