"""Working time: the window SQL, the executable UDF and the engine's refresh against a
plain-Python oracle (tests/working_time_oracle.py) and CVAT's published cases."""
from __future__ import annotations

import datetime as dt
import importlib.util
import json
import random
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from cvat_analytics import store as store_module
from cvat_analytics import working_time as wt
from cvat_analytics_generator.spec import load_spec
from tests.conftest import HOURLY_REFRESH, write_spec

sys.path.insert(0, str(Path(__file__).parent))
import working_time_oracle as oracle  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHORT, LONG = 99_999, 100_000
# Within the default retention (events older than it are dropped on insert).
BASE = (int(time.time()) - 10 * 86400) // 3600 * 3600 * 1000


def _udf_module():
    spec = importlib.util.spec_from_file_location("wt_udf", REPO / "udf" / "working_time.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


UDF = _udf_module()


def ev(ts, scope="click:element", duration=0, user_id=1, job_id=1, task_id=1, project_id=1, source="client"):
    return dict(scope=scope, source=source, ts=BASE + ts, duration=duration, user_id=user_id,
                job_id=job_id, task_id=task_id, project_id=project_id)


def frame(ts, duration, **kw):
    return ev(ts, "change:frame", duration, **kw)


# CVAT's WorkingTimeTestCase (cvat/apps/events/tests/test_events.py in CVAT's repository) and the rule's own examples. A
# `previous_event` in CVAT is simply the event before, in one stream.
CVAT_CASES = {
    "one instant": ([ev(0)], [0]),
    "one 100 s frame": ([frame(0, 100_000)], [100_000]),
    "instants, SHORT gap": ([ev(0), ev(SHORT)], [0, SHORT]),
    "instants, LONG gap": ([ev(0), ev(LONG)], [0, 0]),
    "frame, SHORT gap, frame": ([frame(0, 1000), frame(1000 + SHORT, 5000)], [1000, SHORT + 5000]),
    "frame, LONG gap, frame": ([frame(0, 1000), frame(1000 + LONG, 5000)], [1000, 5000]),
    "frame contained in a frame": ([frame(0, 5000), frame(1000, 1000)], [5000, 0]),
    "overlapping frames": ([frame(0, 5000), frame(3000, 6000)], [5000, 4000]),
    "instants inside and after a frame": ([frame(0, 5000), ev(3000), ev(6000)], [5000, 0, 1000]),
    "previous instant, SHORT gap": ([ev(0), ev(SHORT)], [0, SHORT]),
    "previous 1 s frame, SHORT gap": ([frame(0, 1000), ev(1000 + SHORT)], [1000, SHORT]),
    "previous 1 s frame, LONG gap": ([frame(0, 1000), ev(1000 + LONG)], [1000, 0]),
    "gap 100001": ([ev(0), ev(100_001)], [0, 0]),
    "non-collapsed duration ignored": ([ev(0, "zoom:image", 5000), ev(1000)], [0, 1000]),
}


def _as_rows(events):
    """JSONEachRow body with CVAT's columns, ISO millisecond timestamps."""
    lines = []
    for e in events:
        row = {k: v for k, v in e.items() if k != "ts"}
        stamp = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=e["ts"])
        row["timestamp"] = stamp.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        lines.append(json.dumps(row))
    return ("\n".join(lines) + "\n").encode()


def random_stream(seed, n=600, users=4):
    """Several users and jobs, ties, gaps of exactly 99999/100000/100001 ms to the
    running end, overlapping and contained frames, NULL ids, duplicates, and a few
    server events and user-less events that must not count."""
    rnd = random.Random(seed)
    events = []
    for user in range(1, users + 1):
        t, run_end = 0, 0
        job = rnd.randint(1, 5)
        for _ in range(n // users):
            choice = rnd.random()
            if choice < 0.1:
                t = t  # tie
            elif choice < 0.35:
                t = run_end + rnd.choice([SHORT, LONG, LONG + 1, 0, 1])
            elif choice < 0.5:
                t = max(0, run_end - rnd.randint(0, 3000))  # inside/overlapping the last frame
            else:
                t += rnd.choice([1, 50, 700, 5000, 40_000, 250_000])
            if rnd.random() < 0.1:
                job = rnd.randint(1, 5)
            ids = dict(job_id=job, task_id=job // 2 + 1, project_id=1 + job % 2)
            if rnd.random() < 0.08:
                ids = dict(job_id=None, task_id=None, project_id=rnd.choice([None, 1]))
            if rnd.random() < 0.45:
                e = frame(t, rnd.choice([0, 1, 800, 3000, 120_000]), user_id=user, **ids)
            else:
                e = ev(t, rnd.choice(["click:element", "zoom:image", "draw:object"]),
                       rnd.choice([0, 500]), user_id=user, **ids)
            events.append(e)
            run_end = max(run_end, oracle.end_of(e) - BASE)
            if rnd.random() < 0.03:
                events.append(dict(e))  # an exact duplicate
        events.append(ev(t + 10, "create:job", source="server", user_id=user))
    events.append(ev(5, user_id=None))
    return events


def split_shuffled(events, seed):
    """The events in many inserts of random sizes, arriving in random order."""
    rnd = random.Random(seed)
    rows = events[:]
    rnd.shuffle(rows)
    batches, i = [], 0
    while i < len(rows):
        size = rnd.randint(1, 80)
        batches.append(rows[i:i + size])
        i += size
    rnd.shuffle(batches)
    return batches


def oracle_events(events):
    """Multiset of (user, ts, end, scope, ids, ms, credited ids)."""
    return sorted(
        (e["user_id"], e["ts"], oracle.end_of(e), e["scope"], e["job_id"] or 0, e["task_id"] or 0,
         e["project_id"] or 0, ms, tuple(x or 0 for x in credited))
        for e, ms, credited in oracle.per_event(events))


def db_events(client, spec, engine):
    cols, rows = wt.per_event(client, spec, engine)
    r = [dict(zip(cols, row)) for row in rows]
    return sorted(
        (x["user_id"], x["ts"], x["end_ms"], x["scope"], x["job_id"] or 0, x["task_id"] or 0,
         x["project_id"] or 0, x["working_time_ms"],
         (x["credited_job_id"] or 0, x["credited_task_id"] or 0, x["credited_project_id"] or 0))
        for x in r)


def db_totals(client, spec, engine="sql", **filters):
    _cols, rows = wt.totals(client, spec, ["user_id", "project_id", "task_id", "job_id"],
                            engine=engine, **filters)
    return {tuple(r[:4]): r[4] for r in rows}


# ---- the rule itself, without ClickHouse -------------------------------------------

@pytest.mark.parametrize("name", sorted(CVAT_CASES))
def test_cvat_cases_oracle_and_udf_script(name):
    events, expected = CVAT_CASES[name]
    assert [ms for _e, ms, _c in oracle.per_event(events)] == expected
    ordered = sorted(events, key=oracle.tie_key)
    got = UDF.working_time([e["ts"] for e in ordered], [e["duration"] for e in ordered],
                           [e["scope"] for e in ordered], 100_000, {"change:frame"})
    assert got == expected


def test_credit_goes_to_the_previous_event():
    events = [frame(0, 1000, job_id=1), ev(2000, job_id=2), ev(3000, job_id=3)]
    assert [c[0] for _e, _ms, c in oracle.per_event(events)] == [1, 1, 2]


@pytest.mark.parametrize("seed", range(5))
def test_udf_script_process_matches_oracle(seed):
    """The script as ClickHouse runs it: JSON lines in, one flushed line out per row."""
    events = random_stream(seed)
    expected = defaultdict(list)
    for e, ms, _c in oracle.per_event(events):
        expected[e["user_id"]].append((e, ms))
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "udf" / "working_time.py"), "--idle-threshold-ms", "100000",
         "--collapsed-scopes", "change:frame"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    for user, pairs in sorted(expected.items()):
        stream = [e for e, _ms in pairs]
        proc.stdin.write(json.dumps({"ts": [e["ts"] for e in stream], "dur": [e["duration"] for e in stream],
                                     "scope": [e["scope"] for e in stream]}) + "\n")
        proc.stdin.flush()
        # Answers before stdin closes: usable as an executable_pool process.
        assert json.loads(proc.stdout.readline())["result"] == [ms for _e, ms in pairs]
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0


# ---- SQL on the real engine --------------------------------------------------------

@pytest.mark.slow
@pytest.mark.clickhouse
@pytest.mark.parametrize("name", sorted(CVAT_CASES))
def test_cvat_cases_sql(store, name):
    events, expected = CVAT_CASES[name]
    store_module.insert_json_rows(store.client, store.database, _as_rows(events))
    _cols, rows = wt.per_event(store.client, store.spec, "sql")
    assert [r[_cols.index("working_time_ms")] for r in rows] == expected


@pytest.mark.slow
@pytest.mark.clickhouse
@pytest.mark.parametrize("seed", range(4))
def test_sql_matches_oracle_on_shuffled_batches(store, seed):
    events = random_stream(seed)
    for batch in split_shuffled(events, seed):
        store_module.insert_json_rows(store.client, store.database, _as_rows(batch))
    assert db_events(store.client, store.spec, "sql") == oracle_events(events)
    assert db_totals(store.client, store.spec) == oracle.totals(events)
    # the view analysts read is the same computation
    view = store.client.query(
        f"SELECT user_id, project_id, task_id, job_id, sum(working_time_ms) FROM `{store.database}`.working_time_events"
        " GROUP BY user_id, credited_project_id AS project_id, credited_task_id AS task_id,"
        " credited_job_id AS job_id HAVING sum(working_time_ms) != 0").result_rows
    assert {tuple(r[:4]): r[4] for r in view} == oracle.totals(events)


@pytest.mark.clickhouse
def test_time_and_id_filters(store):
    events = random_stream(7)
    store_module.insert_json_rows(store.client, store.database, _as_rows(events))
    ts = sorted(e["ts"] for e in events)
    since, until = ts[len(ts) // 3], ts[2 * len(ts) // 3]
    iso = lambda ms: (dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=ms)).isoformat() + "Z"  # noqa: E731
    got = db_totals(store.client, store.spec, from_ts=iso(since), to_ts=iso(until))
    assert got == oracle.totals(events, since_ms=since, until_ms=until)
    # the event before --from decides the first gap: cutting the stream blindly differs
    assert got != oracle.totals([e for e in events if since <= e["ts"] < until])
    full = oracle.totals(events)
    assert db_totals(store.client, store.spec, user_id=2) == {k: v for k, v in full.items() if k[0] == 2}
    assert db_totals(store.client, store.spec, job_id=3) == {k: v for k, v in full.items() if k[3] == 3}
    assert db_totals(store.client, store.spec, project_id=1, task_id=2) == {
        k: v for k, v in full.items() if k[1] == 1 and k[2] == 2}


# ---- the precomputed totals --------------------------------------------------------

def stored_totals(client, db):
    rows = client.query(
        f"SELECT user_id, project_id, task_id, job_id, hour, sum(working_time_ms) AS ms FROM `{db}`.working_time_totals"
        " GROUP BY user_id, project_id, task_id, job_id, hour HAVING ms != 0").result_rows
    return {tuple(r[:5]): r[5] for r in rows}


def query_time_hourly(client, spec):
    _c, rows = wt.totals(client, spec, ["user_id", "project_id", "task_id", "job_id", "hour"])
    return {tuple(r[:5]): r[5] for r in rows}


@pytest.fixture
def refreshed(chdb_dsn, tmp_path):
    """A migrated database whose totals the engine refreshes every second."""
    from cvat_analytics.migrate import migrate

    _, spec_path = write_spec(tmp_path, **{"clickhouse.database": f"t_{uuid.uuid4().hex[:12]}",
                                           "working_time.refresh_interval_s": 1})
    spec = load_spec(spec_path)
    client = store_module.connect(chdb_dsn)
    migrate(client, spec, log=lambda *_: None)
    yield client, spec
    client.command(f"DROP DATABASE IF EXISTS `{spec['clickhouse']['database']}` SYNC")


def _until(condition, timeout_s=30):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.2)


@pytest.mark.clickhouse
def test_engine_keeps_totals_current_without_any_call(refreshed):
    """No serve and no refresh call: the refreshable view inside the engine brings the
    totals to the query-time result; then late events for earlier hours, and they follow."""
    client, spec = refreshed
    db = spec["clickhouse"]["database"]
    events = random_stream(7)
    early, late = events[::2], events[1::2]  # `late` fills in hours the first refresh counted
    store_module.insert_json_rows(client, db, _as_rows(early))
    _until(lambda: stored_totals(client, db) and stored_totals(client, db) == query_time_hourly(client, spec))
    first = stored_totals(client, db)
    store_module.insert_json_rows(client, db, _as_rows(late))
    _until(lambda: stored_totals(client, db) != first
           and stored_totals(client, db) == query_time_hourly(client, spec))
    got = defaultdict(int)
    for (user, project, task, job, _hour), ms in stored_totals(client, db).items():
        got[(user, project, task, job)] += ms
    assert {k: v for k, v in got.items() if v} == oracle.totals(events)
    runs = client.query(f"SELECT full FROM `{db}`.working_time_refresh_log ORDER BY refreshed_at").result_rows
    assert runs[0] == (1,) and runs[-1] == (0,)  # only the first run recomputes everything


@pytest.mark.refresh
@pytest.mark.slow
@pytest.mark.clickhouse
@pytest.mark.parametrize("seed", range(3))
def test_refresh_keeps_totals_equal_to_query_time(store, seed):
    """Shuffled batches (late and out-of-order events), waiting for a refresh after each few."""
    events = random_stream(100 + seed)
    batches = split_shuffled(events, seed)
    for i, batch in enumerate(batches):
        store_module.insert_json_rows(store.client, store.database, _as_rows(batch))
        if i % 3 == 2 or i == len(batches) - 1:
            wt.wait_current(store.client, store.spec)
            assert stored_totals(store.client, store.database) == query_time_hourly(store.client, store.spec)
    got = defaultdict(int)
    for (user, project, task, job, _hour), ms in stored_totals(store.client, store.database).items():
        got[(user, project, task, job)] += ms
    assert {k: v for k, v in got.items() if v} == oracle.totals(events)
    # settled: another refresh changes nothing
    before = stored_totals(store.client, store.database)
    wt.wait_current(store.client, store.spec)
    assert stored_totals(store.client, store.database) == before


@pytest.mark.refresh
@pytest.mark.clickhouse
def test_changed_rule_recomputes_everything(store, tmp_path):
    from cvat_analytics.migrate import migrate

    store_module.insert_json_rows(store.client, store.database, _as_rows(random_stream(9)))
    wt.wait_current(store.client, store.spec)
    spec = dict(store.spec, working_time=dict(store.spec["working_time"], idle_threshold_ms=50_000))
    migrate(store.client, spec, log=lambda *_: None)  # replaces the view: the rule is in it
    wt.wait_current(store.client, spec)
    assert stored_totals(store.client, store.database) == query_time_hourly(store.client, spec)
    runs = store.client.query(f"SELECT rule, full FROM `{store.database}`.working_time_refresh_log"
                              " ORDER BY refreshed_at").result_rows
    first_under_new_rule = next(full for rule, full in runs if rule.startswith("[50000,"))
    assert first_under_new_rule == 1


@pytest.mark.refresh
@pytest.mark.clickhouse
def test_reported_beside_computed(store):
    events = [frame(0, 5000, job_id=7), ev(6000, job_id=7),
              ev(0, "send:working_time", 4000, source="server", job_id=7)]
    store_module.insert_json_rows(store.client, store.database, _as_rows(events))
    wt.wait_current(store.client, store.spec)
    rows = store.client.query(
        f"SELECT user_id, job_id, reported_ms, computed_ms, difference_ms FROM `{store.database}`.working_time_comparison"
    ).result_rows
    assert rows == [(1, 7, 4000, 6000, 2000)]


# ---- new events found by events.inserted_at (migration 0012), no insert trigger ----

def active_parts(client, db) -> set[tuple[str, str]]:
    return set(client.query("SELECT table, name FROM system.parts WHERE database = {db:String} AND active",
                            parameters={"db": db}).result_rows)


@pytest.mark.clickhouse
def test_an_insert_writes_a_part_of_events_and_nothing_else(store):
    """The refresh finds new events by their inserted_at: an INSERT writes no change-log part.
    serve's group token records its request keys in ingest_requests, a key-value table
    (migration 0014): no part either."""
    db = store.database
    for view in ("working_time_refresh_plan", "working_time_refresh"):  # their runs write parts too
        store.client.command(f"SYSTEM STOP VIEW `{db}`.{view}")
    body = _as_rows(random_stream(3, n=40))
    started = store.client.command("SELECT toUnixTimestamp64Micro(now64(6))")
    before = active_parts(store.client, db)
    store_module.insert_json_rows(store.client, db, body)
    assert {table for table, _ in active_parts(store.client, db) - before} == {"events"}
    before = active_parts(store.client, db)
    store_module.insert_json_rows(store.client, db, body.replace(b'"user_id": 1', b'"user_id": 9'),
                                  token="ingest k1 k2")
    assert {table for table, _ in active_parts(store.client, db) - before} == {"events"}
    assert store.client.command(f"SELECT count() FROM `{db}`.ingest_requests WHERE request IN ('k1', 'k2')") == 2
    assert not store.client.command(f"EXISTS TABLE `{db}`.working_time_changes")
    stored = store.client.command("SELECT toUnixTimestamp64Micro(now64(6))")
    time.sleep(0.5)  # a value computed when read would now lie after `stored`
    low, high = store.client.query(f"SELECT min(toUnixTimestamp64Micro(inserted_at)), "
                                   f"max(toUnixTimestamp64Micro(inserted_at)) FROM `{db}`.events").result_rows[0]
    assert started <= low <= high <= stored  # stamped when written, not when read


def migrate_through_0011(client, spec):
    """A store as `migrate` left it before 0012: 0001-0011, with 0009's view reading the
    insert trigger's changes (tests/fixtures/before_0012), recorded in the ledger."""
    from cvat_analytics.migrate import Migration, ledger, migrations
    from cvat_analytics_generator.render import context, environment

    old_view = environment().from_string(
        (Path(__file__).parent / "fixtures" / "before_0012" / "0009_working_time_refresh.sql.j2").read_text()
    ).render(context(spec))
    record = ledger(spec).named("record")
    for m in migrations(spec):
        if m.name >= "0012":
            break
        if m.name == "0009_working_time_refresh":
            m = Migration(m.name, old_view)
        for statement in m.statements:
            client.command(statement)
        client.command(record, parameters={"name": m.name, "checksum": m.checksum})


@pytest.mark.clickhouse
def test_a_store_migrated_to_0012_keeps_its_old_rows_and_counts_what_the_trigger_recorded(chdb_dsn, tmp_path):
    """Events refreshed before 0012, events the trigger recorded but no refresh took yet,
    then 0012: the old rows hold the epoch (through a merge too), the next refresh counts
    every event, and the one after takes only what is new."""
    from cvat_analytics.migrate import migrate

    _, spec_path = write_spec(tmp_path, **{"clickhouse.database": f"t_{uuid.uuid4().hex[:12]}",
                                           **HOURLY_REFRESH})
    spec = load_spec(spec_path)
    db = spec["clickhouse"]["database"]
    client = store_module.connect(chdb_dsn)
    try:
        migrate_through_0011(client, spec)
        events = random_stream(21)
        refreshed, pending, later = events[0::3], events[1::3], events[2::3]  # interleaved: late events
        store_module.insert_json_rows(client, db, _as_rows(refreshed))
        client.command(f"SYSTEM REFRESH VIEW `{db}`.working_time_refresh")  # the old view, from the trigger's
        client.command(f"SYSTEM WAIT VIEW `{db}`.working_time_refresh")  # changes (its log has no 0017 columns)
        client.command(f"SYSTEM STOP VIEW `{db}`.working_time_refresh")
        store_module.insert_json_rows(client, db, _as_rows(pending))  # recorded by the trigger only
        assert int(client.command(f"SELECT count() FROM `{db}`.working_time_changes")) > 0

        assert migrate(client, spec, log=lambda *_: None) == [
            "0009_working_time_refresh", "0012_events_inserted_at", "0013_working_time_refresh",
            "0014_ingest_requests_key_value", "0015_events_remote_addr", "0016_vector_metrics",
            "0017_working_time_refresh_limits", "0018_working_time_refresh_slots", "0020_vector_metrics_retention",
            "0026_productivity_state", "0027_productivity_recompute", "0028_events_id_value_indexes"]
        assert not client.command(f"EXISTS TABLE `{db}`.working_time_changes")
        assert not client.command(f"EXISTS TABLE `{db}`.working_time_changes_mv")
        epoch = dt.datetime(1970, 1, 1)
        stamps = f"SELECT DISTINCT inserted_at FROM `{db}`.events"
        assert client.query(stamps).result_rows == [(epoch,)]
        client.command(f"OPTIMIZE TABLE `{db}`.events FINAL")  # a merge keeps the stored value
        assert client.query(stamps).result_rows == [(epoch,)]

        wt.wait_current(client, spec)
        assert stored_totals(client, db) == query_time_hourly(client, spec)
        settled = defaultdict(int)
        for (user, project, task, job, _hour), ms in stored_totals(client, db).items():
            settled[(user, project, task, job)] += ms
        assert {k: v for k, v in settled.items() if v} == oracle.totals(refreshed + pending)

        store_module.insert_json_rows(client, db, _as_rows([e for e in later if e["user_id"] == 2]))
        wt.wait_current(client, spec)
        assert stored_totals(client, db) == query_time_hourly(client, spec)
        runs = client.query(f"SELECT rule, full, users FROM `{db}`.working_time_refresh_log "
                            "ORDER BY watermark").result_rows
        marker = [i for i, (rule, _, _) in enumerate(runs) if "migration 0012" in rule]
        assert len(marker) == 1 and runs[marker[0] + 1][1] == 1  # the run after it was a full one
        assert runs[-1][1:] == (0, 1)  # the last took only user 2's new events
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{db}` SYNC")
