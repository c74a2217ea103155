"""The demo traffic: valid against the spec, CVAT's wire format, deterministic per seed."""
from __future__ import annotations

import json
import re
import threading
import uuid
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cvat_analytics import demo
from cvat_analytics_generator.spec import DEFAULT_SPEC, load_spec

SPEC = load_spec(DEFAULT_SPEC)
NOW = 1_700_000_000_000


def events(n=20_000, seed=1, days=7):
    return list(demo.Demo(seed=seed, days=days, now_ms=NOW).events(n))


def test_every_scope_is_in_the_spec_and_dashboards_have_data():
    evs = events()
    assert len(evs) == 20_000
    for e in evs:
        assert e["scope"] in SPEC["events"]["scopes"][e["source"]], e["scope"]
    scopes = Counter(e["scope"] for e in evs)
    for needed in ("load:cvat", "load:job", "draw:object", "drag:object", "resize:object", "delete:object",
                   "change:frame", "zoom:image", "save:job", "click:element", "create:project",
                   "create:task", "create:job", "update:job", "send:working_time", "send:exception",
                   "create:cache_item"):
        assert scopes[needed] > 0, needed
    assert len({e["user_id"] for e in evs}) >= 10 and len({e["org_id"] for e in evs}) >= 3
    assert all(NOW - 7 * 86_400_000 <= e["_ts"] <= NOW for e in evs)
    # jobs reach completed and rejected; update:job is one row per field with the old value
    updates = [e for e in evs if e["scope"] == "update:job"]
    assert {"completed", "rejected"} <= {e["obj_val"] for e in updates if e["obj_name"] == "state"}
    assert all("old_value" in e["payload"] and e["obj_name"] in ("state", "stage") for e in updates)
    # idle breaks longer than the threshold exist within users' streams
    by_user = defaultdict(list)
    for e in evs:
        if e["source"] == "client":
            by_user[e["user_id"]].append(e["_ts"])
    gaps = [b - a for ts in by_user.values() for a, b in zip(sorted(ts), sorted(ts)[1:])]
    assert sum(g > demo.IDLE_MS for g in gaps) > 20


def test_wire_format_is_cvats():
    evs = events(5000)
    for e in evs:
        w = demo.to_wire(e)
        if e["source"] == "server":
            assert re.fullmatch(r"\d{10}\.\d{6}", w["timestamp"]), w["timestamp"]
            payload = json.loads(w["payload"])
            uuid.UUID(payload["request"]["id"])
        else:
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", w["timestamp"])
            assert "client_id" in json.loads(w["payload"])
        assert isinstance(w["payload"], str)
    cvat = [json.loads(demo.to_wire(e)["payload"]) for e in evs if e["scope"] == "load:cvat"]
    assert all(set(p["platform"]) >= {"name", "version", "os"} for p in cvat)
    exc = [json.loads(demo.to_wire(e)["payload"]) for e in events() if e["scope"] == "send:exception"]
    assert exc and all(p["message"] and p["stack"] for p in exc)


def test_request_ids_group_create_bursts():
    evs = events(3000)
    by_rid = defaultdict(list)
    for e in evs:
        if e["source"] == "server":
            by_rid[e["payload"]["request"]["id"]].append(e)
    for e in evs:
        if e["scope"] == "create:task":
            group = by_rid[e["payload"]["request"]["id"]]
            jobs = [g for g in group if g["scope"] == "create:job"]
            assert jobs and all(g["task_id"] == e["task_id"] for g in jobs)
    creates = [e for e in evs if e["scope"] == "create:task"]
    assert len({e["payload"]["request"]["id"] for e in creates}) == len(creates)


def test_working_time_rows_follow_cvats_rule():
    evs = events(5000)
    wt = [e for e in evs if e["scope"] == "send:working_time"]
    assert wt and all(e["duration"] == e["payload"]["working_time"] > 0 and e["count"] == 1 for e in wt)
    d = demo.Demo(seed=1, now_ms=NOW)
    u = d.users[0]
    job = u.jobs[0]
    mk = lambda scope, ts, dur=0: d._client(scope, ts, u, job, duration=dur)  # noqa: E731
    # a 5 s frame, a 6 s frame starting 3 s in -> 5000 + 4000; a 100 s gap counts nothing
    rows = list(d._working_time(u, [mk("change:frame", 0, 5000), mk("change:frame", 3000, 6000),
                                    mk("draw:object", 109_000)], None))
    assert [r["duration"] for r in rows] == [9000]
    rows = list(d._working_time(u, [mk("draw:object", 99_999)], mk("draw:object", 0)))
    assert [r["duration"] for r in rows] == [99_999]


def test_deterministic_per_seed():
    a = [demo.to_row(e) for e in events(4000, seed=7)]
    b = [demo.to_row(e) for e in events(4000, seed=7)]
    c = [demo.to_row(e) for e in events(4000, seed=8)]
    assert a == b and a != c


def test_post_to_url_sends_cvat_bodies():
    bodies = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        n = demo.run(450, 2, 5, url=f"http://127.0.0.1:{srv.server_address[1]}/", now_ms=NOW,
                     err=open("/dev/null", "w"))
    finally:
        srv.shutdown()
    assert n == 450 and [len(b) for b in bodies] == [100, 100, 100, 100, 50]
    assert all(isinstance(e, dict) and isinstance(e["payload"], str) for b in bodies for e in b)


@pytest.mark.clickhouse
def test_insert_into_store_and_dashboards_queries(store):
    n = demo.run(5000, 7, 1, client=store.client, database=store.database, err=open("/dev/null", "w"))
    db = store.database
    assert n == 5000 and store.client.command(f"SELECT count() FROM `{db}`.events") == 5000
    # request_id is materialized from payload.request.id: a create:task burst is found by it
    rid = store.client.command(f"SELECT request_id FROM `{db}`.events WHERE scope = 'create:task' LIMIT 1")
    scopes = {r[0] for r in store.client.query(
        f"SELECT scope FROM `{db}`.events WHERE request_id = {{r:String}}", parameters={"r": rid}).result_rows}
    assert {"create:task", "create:job"} <= scopes
    browsers = store.client.command(
        f"SELECT uniqExact(JSON_VALUE(payload, '$.platform.name')) FROM `{db}`.events WHERE scope = 'load:cvat'")
    assert browsers >= 2
