"""`cvat-analytics serve`: the embedded ingest over real sockets on 127.0.0.1."""
from __future__ import annotations

import datetime as dt
import http.client
import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from cvat_analytics.bench.service import ServeProcess
from cvat_analytics.service.responses import Response
from cvat_analytics.service.routes import Route

pytestmark = pytest.mark.clickhouse

CLI = Path(sys.executable).with_name("cvat-analytics")
Serve = ServeProcess  # the name tests/test_durability.py imports
BASE = int(time.time()) - 86400


def cvat_batch(request_id: str, n: int = 3) -> list[dict]:
    """A batch exactly as CVAT's server logs it: epoch-seconds strings, payload a JSON string."""
    payload = json.dumps({"request": {"id": request_id, "user_agent": "python-requests/2.32"}})
    return [
        {"scope": "update:task", "source": "server", "timestamp": f"{BASE + i}.{123456 + i}",
         "obj_name": f"field{i}", "obj_id": None, "obj_val": str(i), "count": None, "duration": None,
         "project_id": 1, "task_id": 5, "job_id": None, "user_id": 2, "user_name": "ann",
         "user_email": "ann@example.com", "org_id": None, "org_slug": None, "payload": payload,
         "access_token_id": None}
        for i in range(n)
    ]


def request(srv, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=30)
    try:
        conn.request(method, path, body=body,
                     headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        data = response.read()
        return response.status, (json.loads(data) if data else None)
    finally:
        conn.close()


def post(srv, events, **kw):
    body = events if isinstance(events, bytes) else json.dumps(events).encode()
    return request(srv, "POST", "/", body, **kw)


def count(store, request_id: str | None = None) -> int:
    if request_id is None:
        return int(store.client.command(f"SELECT count() FROM `{store.database}`.events"))
    return int(store.client.command(
        f"SELECT count() FROM `{store.database}`.events WHERE request_id = {{id:String}}",
        parameters={"id": request_id}))


def test_a_cvat_batch_is_stored_and_found_by_its_request_id(server, store):
    request_id = str(uuid.uuid4())
    status, body = post(server, cvat_batch(request_id, 3))
    assert (status, body) == (200, {"stored": 3})
    assert count(store, request_id) == 3
    ms = store.client.query(f"SELECT toUnixTimestamp64Milli(timestamp) FROM `{store.database}`.events "
                            "ORDER BY timestamp").result_rows
    assert [r[0] for r in ms] == [(BASE + i) * 1000 + 123 for i in range(3)]


def test_a_single_object_and_ndjson_are_accepted(server, store):
    assert post(server, cvat_batch("one", 1)[0]) == (200, {"stored": 1})
    ndjson = "\n".join(json.dumps(e) for e in cvat_batch("nd", 2)).encode()
    assert post(server, ndjson, headers={"Content-Type": "application/x-ndjson"}) == (200, {"stored": 2})
    assert post(server, []) == (200, {"stored": 0})
    assert count(store) == 3


def test_a_truncated_body_gets_400_stores_nothing_and_the_server_keeps_serving(server, store):
    body = json.dumps(cvat_batch("cut", 3)).encode()
    status, answer = post(server, body[: len(body) // 2])
    assert status == 400 and "not valid JSON" in answer["error"] and "index" in answer
    assert count(store) == 0
    assert post(server, cvat_batch("after", 2)) == (200, {"stored": 2})


def test_one_bad_event_gets_400_naming_index_and_field_and_nothing_is_stored(server, store):
    events = cvat_batch("bad", 3)
    events[2]["task_id"] = -5
    status, answer = post(server, events)
    assert status == 400
    assert answer["index"] == 2 and answer["field"] == "task_id"
    assert answer["error"].startswith("index 2: task_id: expected an integer")
    assert count(store) == 0


def test_an_identical_retried_body_is_stored_once(server, store):
    body = json.dumps(cvat_batch("retry", 4)).encode()
    assert post(server, body) == (200, {"stored": 4})
    assert post(server, body) == (200, {"stored": 0, "duplicate": True})  # recognised, not stored again
    assert count(store, "retry") == 4


def parallel(calls) -> list:
    """Run the calls at once (one thread each); their results in order."""
    results = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i, call):
        barrier.wait()
        results[i] = call()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_requests_arriving_together_are_stored_together_each_all_or_nothing_and_once(server, store):
    """Group commit: fewer inserts than requests, a bad request refused alone, and a retry
    sent while its first try is in flight (by body or by Idempotency-Key) stored exactly once."""
    rounds = 4
    for r in range(rounds):
        same_body = json.dumps(cvat_batch(f"same-{r}", 4)).encode()
        bad = cvat_batch(f"bad-{r}", 3)
        bad[1]["task_id"] = "five"
        calls = [lambda i=i: post(server, cvat_batch(f"own-{r}-{i}", 5)) for i in range(8)]
        calls += [lambda: post(server, same_body) for _ in range(4)]
        calls += [lambda i=i: post(server, cvat_batch(f"keyed-{r}-{i}", 2), headers={"Idempotency-Key": f"k{r}"})
                  for i in range(3)]
        calls += [lambda: post(server, bad)]
        results = parallel(calls)
        assert results[:8] == [(200, {"stored": 5})] * 8
        same = sorted(results[8:12], key=repr)
        assert same == sorted([(200, {"stored": 4})] + [(200, {"stored": 0, "duplicate": True})] * 3, key=repr)
        keyed = sorted(results[12:15], key=repr)
        assert keyed == sorted([(200, {"stored": 2})] + [(200, {"stored": 0, "duplicate": True})] * 2, key=repr)
        assert results[15][0] == 400 and results[15][1]["index"] == 1
        assert count(store, f"same-{r}") == 4 and count(store, f"bad-{r}") == 0
        assert sum(count(store, f"keyed-{r}-{i}") for i in range(3)) == 2
    assert count(store) == rounds * (8 * 5 + 4 + 2)
    # Each group's INSERT records its requests with one timestamp: fewer groups than requests.
    groups, requests = store.client.query(
        "SELECT uniqExact(inserted_at), count() FROM {db:Identifier}.ingest_requests",
        parameters={"db": store.database}).result_rows[0]
    assert requests == rounds * 10 and groups < requests, (groups, requests)


def test_busy_senders_are_waited_for_so_their_requests_share_one_insert_and_a_lone_one_is_not(server, store,
                                                                                             monkeypatch):
    """Closed-loop senders on kept-alive connections (Vector, CVAT's server): each is answered by
    one group and sends again at once; a group waits for them (GroupCommit._linger) instead of
    alternating half groups. A sender on its own never waits."""
    from cvat_analytics.service import group_commit

    monkeypatch.setattr(group_commit, "LINGER_S", 1.0)  # far above a resend; one wait shows in the timings below
    monkeypatch.setattr(group_commit, "SENDER_WINDOW_S", 30.0)  # a closed connection must not count, however recent
    senders, bodies = 4, 12

    def send(name: str, n: int) -> None:
        conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
        for i in range(n):
            conn.request("POST", "/", json.dumps(cvat_batch(f"{name}-{i}", 3)).encode(),
                         {"Content-Type": "application/json"})
            response = conn.getresponse()
            assert (response.status, json.loads(response.read())) == (200, {"stored": 3})
        conn.close()

    threads = [threading.Thread(target=send, args=(f"busy-{s}", bodies)) for s in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    groups, requests = store.client.query(
        "SELECT uniqExact(inserted_at), count() FROM {db:Identifier}.ingest_requests",
        parameters={"db": store.database}).result_rows[0]
    assert requests == senders * bodies
    # Alternating halves would take 2 inserts per round (24); waiting for the busy senders takes
    # one per round, plus a few while the senders first become known.
    assert groups <= bodies + senders, (groups, requests)

    # Right after them (their connections closed), a sender with a new connection per request
    # (curl in a loop, a proxy speaking HTTP/1.0) waits for nobody: not for the closed ones,
    # not for its own earlier connections.
    started = time.monotonic()
    for i in range(4):
        assert post(server, cvat_batch(f"one-shot-{i}", 3)) == (200, {"stored": 3})
    assert time.monotonic() - started < group_commit.LINGER_S  # not one wait in four requests
    started = time.monotonic()
    send("alone", 4)
    assert time.monotonic() - started < group_commit.LINGER_S  # a kept-alive sender alone does not wait either


def test_when_too_many_events_wait_for_the_engine_ingest_answers_503_with_retry_after(server, store, monkeypatch):
    from cvat_analytics.service import group_commit

    monkeypatch.setattr(group_commit, "MAX_WAITING_EVENTS", 5)
    gate = threading.Event()
    store_group = group_commit.GroupCommit._store
    monkeypatch.setattr(group_commit.GroupCommit, "_store", lambda self, group: (gate.wait(30), store_group(self, group)))
    first = []
    sender = threading.Thread(target=lambda: first.append(post(server, cvat_batch("first", 5))))
    sender.start()
    deadline = time.monotonic() + 10
    while not any(r.handler.commits.waiting_events for r in server.routes.routes if r.path == "/"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    conn.request("POST", "/", json.dumps(cvat_batch("second", 2)), {"Content-Type": "application/json"})
    response = conn.getresponse()
    answer = json.loads(response.read())
    assert response.status == 503 and response.getheader("Retry-After") == "1", answer
    assert "retry shortly" in answer["error"]
    conn.close()
    gate.set()
    sender.join()
    assert first == [(200, {"stored": 5})] and count(store, "second") == 0 and count(store, "first") == 5


def test_nan_or_infinity_in_a_payload_is_a_400_naming_the_event(server, store):
    good = json.dumps(cvat_batch("nan", 2))[1:-1]
    for payload in ('{"a": NaN}', '[Infinity]', '"{\\"a\\": -Infinity}"', '"NaN"'):
        body = f'[{good}, {{"scope": "create:task", "source": "server", "timestamp": "{BASE}", "payload": {payload}}}]'
        status, answer = post(server, body.encode())
        assert status == 400 and (answer["index"], answer["field"]) == (2, "payload"), (payload, answer)
    assert count(store, "nan") == 0


def test_an_ingest_token_forced_to_an_org_writes_that_org_only(store, make_served):
    from cvat_analytics.service.access import Principal, Token

    secret = "s" * 24
    srv = make_served(tokens=[Token(secret.encode(), Principal("org-8-ingest", frozenset({"ingest"}), {"org_id": 8}))])
    auth = {"Authorization": f"Bearer {secret}"}
    events = cvat_batch("forced", 3)
    events[2]["org_id"] = 7
    status, answer = post(srv, events, headers=auth)
    assert status == 403 and (answer["index"], answer["field"]) == (2, "org_id"), answer
    assert answer["error"] == "index 2: org_id: token 'org-8-ingest' may only write events with org_id=8, got 7"
    events[2]["org_id"] = 8  # the others carry none: they are stored as org 8's
    assert post(srv, events, headers=auth) == (200, {"stored": 3})
    assert int(store.client.command(
        "SELECT countIf(org_id = 8) FROM {db:Identifier}.events WHERE request_id = 'forced'",
        parameters={"db": store.database})) == 3


def test_an_oversize_body_is_refused_before_it_is_read(store, make_served):
    srv = make_served({**store.spec, "embedded": {**store.spec["embedded"], "max_body_bytes": 1000}})
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    conn.putrequest("POST", "/")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", "5000")
    conn.endheaders()  # the body is never sent: the answer must come without it
    response = conn.getresponse()
    assert response.status == 413
    assert "at most 1000" in json.loads(response.read())["error"]
    conn.close()
    assert post(srv, cvat_batch("small", 1)) == (200, {"stored": 1})


def test_protocol_errors(server, store):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.putrequest("POST", "/")
    conn.endheaders()
    assert conn.getresponse().status == 411
    conn.close()
    assert request(server, "POST", "/", b"<html/>", {"Content-Type": "text/html"})[0] == 415
    assert request(server, "POST", "/", b"")[0] == 400
    assert request(server, "POST", "/", b"\xff\xfe")[0] == 400
    assert request(server, "GET", "/")[0] == 405
    assert request(server, "GET", "/nope")[0] == 404
    assert count(store) == 0


def test_health(server, store):
    post(server, cvat_batch("h", 2))
    status, body = request(server, "GET", "/health")
    assert status == 200
    assert body == {"status": "ok", "database": store.database, "dsn": store.dsn, "events": 2}


def test_routes_can_be_added(server):
    server.routes.add(Route("GET", "/api/ping", lambda req: Response(200, b"pong", "text/plain"), None))
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.request("GET", "/api/ping?x=1")
    assert conn.getresponse().read() == b"pong"


def test_a_failing_handler_is_a_500_whose_details_go_to_the_log_only(server, caplog):
    def broken(request):
        raise RuntimeError("Code: 60. DB::Exception: Table secret_db.hidden does not exist")

    server.routes.add(Route("GET", "/api/broken", broken, None))
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    conn.request("GET", "/api/broken")
    response = conn.getresponse()
    body = response.read().decode()
    assert response.status == 500 and "DB::Exception" not in body and "secret_db" not in body
    # The stack trace is logged at ERROR with the request id the caller got.
    request_id = response.getheader("X-Request-Id")
    assert request_id and request_id in body
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.request_id for r in errors] == [request_id]
    assert "DB::Exception: Table secret_db.hidden" in caplog.text and "Traceback" in caplog.text
    assert request(server, "GET", "/health")[0] == 200


def test_stop_closes_idle_keep_alive_connections_at_once(make_served):
    srv = make_served()
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    conn.request("GET", "/health")
    assert conn.getresponse().read()  # the connection stays open, idle
    started = time.monotonic()
    srv.stop()
    assert time.monotonic() - started < 5


# -- the real CLI, in processes of their own -----------------------------------

def test_serve_subprocess_stores_posts_and_owns_its_chdb_path(store, tmp_path):
    dsn = f"chdb://{tmp_path / 'data'}"
    serve = ServeProcess(dsn, store.spec_path)
    try:
        host, port = serve.url.removeprefix("http://").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("POST", "/", body=json.dumps(cvat_batch("sub", 3)), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())) == (200, {"stored": 3})
        conn.request("GET", "/health")
        assert json.loads(conn.getresponse().read())["events"] == 3
        conn.close()

        # A second process on the same path gets a clear message naming the owner.
        other = subprocess.run([str(CLI), "import", "--dsn", dsn, "--spec", str(store.spec_path), "-"],
                               input="[]", capture_output=True, text=True, timeout=120)
        assert other.returncode == 1
        assert f"is in use by process {serve.proc.pid}" in other.stderr and "serve" in other.stderr, other.stderr
    finally:
        err = serve.stop()
    assert serve.proc.returncode == 0, err
    assert "POST / 200 3" in err and "stopped" in err

    # Stopped: the path is free again, and what was acknowledged is there.
    query = subprocess.run([str(CLI), "query", "--dsn", dsn, "--spec", str(store.spec_path), "--format", "csv",
                            f"SELECT count() FROM {store.database}.events WHERE request_id = 'sub'"],
                           capture_output=True, text=True, timeout=120)
    assert query.returncode == 0, query.stderr
    assert query.stdout.split()[-1] == "3"


def test_concurrent_posts_are_all_stored(server, store):
    errors = []

    def client(worker: int):
        for i in range(10):
            status, _ = post(server, cvat_batch(f"w{worker}-{i}", 5))
            if status != 200:
                errors.append(status)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and count(store) == 8 * 10 * 5


def test_a_group_cut_short_by_a_crash_is_replayed_at_start_and_its_retries_count_once(store, make_served):
    """The two places a kill -9 can fall in a group's commit, set up by hand: after the redo
    file is written (rows not stored), and after the rows but before their requests were listed."""
    import hashlib

    from cvat_analytics.events import EventContract
    from cvat_analytics.service.group_commit import redo_path
    from cvat_analytics.service.ingest import BodyDecoder
    from cvat_analytics.store import insert_compact_rows

    decoder = BodyDecoder(EventContract(store.spec))
    redo = redo_path(store.spec, store.dsn)
    for name in ("cut-before", "cut-after"):
        body = json.dumps(cvat_batch(name, 3)).encode()
        key = hashlib.sha256(f"body:{hashlib.sha256(body).hexdigest()}".encode()).hexdigest()[:32]
        token, lines = f"ingest {key}", decoder.decode(body)[1]
        redo.write_bytes(token.encode() + b"\n" + lines)
        if name == "cut-after":
            insert_compact_rows(store.client, store.database, decoder.columns, lines, token=token)
            store.client.command("DELETE FROM {db:Identifier}.ingest_requests WHERE request = {k:String}",
                                 parameters={"db": store.database, "k": key})
        assert count(store, name) == (3 if name == "cut-after" else 0)
        srv = make_served()  # its start replays the group
        assert count(store, name) == 3 and not redo.exists()
        assert post(srv, body) == (200, {"stored": 0, "duplicate": True})  # the client's retry
        assert count(store, name) == 3
        srv.stop()


def test_request_keys_move_to_the_key_value_table_and_survive_a_rerun_of_its_migration(server, store):
    """Migration 0014 turns ingest_requests into an EmbeddedRocksDB table: keys recorded in the
    MergeTree table before it (and after it) still make their retries duplicates, also when
    the migration runs again (every statement is idempotent)."""
    from cvat_analytics.migrate import migrations

    db = {"db": store.database}
    engine = "SELECT engine FROM system.tables WHERE database = {db:String} AND name = 'ingest_requests'"
    assert store.client.command(engine, parameters=db) == "EmbeddedRocksDB"
    body = json.dumps(cvat_batch("before-0014", 2)).encode()
    assert post(server, body) == (200, {"stored": 2})
    key_value = next(m for m in migrations(store.spec) if m.name.startswith("0014_"))
    # Back to the MergeTree table of 0011, holding the key, as a store upgraded from it is:
    keys = store.client.query("SELECT request, inserted_at FROM {db:Identifier}.ingest_requests",
                              parameters=db).result_rows
    store.client.command("DROP VIEW {db:Identifier}.ingest_requests_mv", parameters=db)
    store.client.command("DROP TABLE {db:Identifier}.ingest_requests", parameters=db)
    for statement in key_value.statements:
        if "MergeTree" in statement:
            store.client.command(statement)
    store.client.insert(f"{store.database}.ingest_requests", keys, column_names=["request", "inserted_at"])
    for _ in range(2):  # the upgrade, then a re-run of the whole migration
        for statement in key_value.statements:
            store.client.command(statement)
        assert store.client.command(engine, parameters=db) == "EmbeddedRocksDB"
        assert post(server, body) == (200, {"stored": 0, "duplicate": True})
    assert count(store, "before-0014") == 2


def test_the_filter_of_stored_keys_is_never_wrong_about_a_stored_key_and_spares_new_groups_the_look_up(
        server, store, monkeypatch):
    """StoredKeys: built from ingest_requests (streamed), fed by each group, rebuilt larger
    when full; a key stored is always "maybe", a new one mostly "no"; a group of new keys
    runs no look-up (counted on the real client), a retry still finds its first try."""
    import hashlib
    import random

    from cvat_analytics.service.stored_keys import StoredKeys

    commits = next(r.handler.commits for r in server.routes.routes if r.path == "/")
    stored = [hashlib.sha256(str(i).encode()).hexdigest()[:32] for i in range(3000)]
    store.client.insert(f"{store.database}.ingest_requests", [(k, dt.datetime(2026, 1, 1)) for k in stored],
                        column_names=["request", "inserted_at"])
    monkeypatch.setattr(StoredKeys, "MIN_CAPACITY", 1000)
    keys = StoredKeys(store.client, commits.sql)
    assert keys.capacity == 6000 and all(k in keys for k in stored)
    rng = random.Random(7)
    others = [f"{rng.getrandbits(128):032x}" for _ in range(20_000)]
    assert sum(k in keys for k in others) < 0.03 * len(others)  # ~1% by design
    keys.add_stored(others[:4000])  # past its capacity: rebuilt from the table, twice the size
    assert keys.capacity == 12000 and all(k in keys for k in stored)

    looked_up = []
    query = store.client.query
    monkeypatch.setattr(store.client, "query", lambda sql, *a, **k: (looked_up.append(sql), query(sql, *a, **k))[1])
    body = json.dumps(cvat_batch("filter-new", 2)).encode()
    assert post(server, body) == (200, {"stored": 2})
    assert not [sql for sql in looked_up if "ingest_requests" in sql]  # new key: no look-up
    assert post(server, body) == (200, {"stored": 0, "duplicate": True})
    assert [sql for sql in looked_up if "ingest_requests" in sql]  # its retry: "maybe", so asked
    assert count(store, "filter-new") == 2


def test_curl_data_is_taken_as_curl_sends_it_and_a_415_names_what_is_accepted(server, store):
    """`curl --data '[...]'` sends application/x-www-form-urlencoded with the JSON as is."""
    body = json.dumps(cvat_batch("curl", 2)).encode()
    status, answer = request(server, "POST", "/", body, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and answer["stored"] == 2
    status, answer = request(server, "POST", "/", b"[]", {"Content-Type": "text/csv"})
    assert status == 415
    error = answer["error"]
    assert "text/csv is not JSON" in error and "application/json" in error and "application/x-ndjson" in error
