"""The working-time refresh's limits (docs/working-time-and-sql.md, The refresh): a full
recompute a bucket of users per run, a memory cap, failures recorded and backed off, and
its lag and last error on /metrics and the Monitoring dashboard."""
from __future__ import annotations

import re
import time
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvat_analytics import store as store_module
from cvat_analytics import working_time as wt
from cvat_analytics.migrate import migrate
from cvat_analytics_generator import grafana
from cvat_analytics_generator.grafana_macros import expand
from cvat_analytics_generator.spec import load_spec
from tests.conftest import HOURLY_REFRESH, REPO, write_spec
from tests.test_operate import call, samples
from tests import working_time_oracle as oracle
from tests.test_working_time import BASE, _as_rows, ev, query_time_hourly, random_stream, stored_totals

LAG = ("cvat_analytics_working_time_refresh_lag_seconds", ())
FAILURES = ("cvat_analytics_working_time_refresh_failures", ())


def _until(condition, timeout_s):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.5)


def _spec(tmp_path, db, **changes):
    """Runs every second; a commit margin of 10 s (the least the spec takes), so that waiting
    past it (wait_past_commit_margin) is not a minute of each test."""
    _, path = write_spec(tmp_path, **{"clickhouse.database": db, "working_time.refresh_interval_s": 1,
                                      "working_time.commit_margin_s": 10, **changes})
    return load_spec(path)


def _recovered(client, tmp_path, db) -> dict:
    """The cause of the failures removed (the spec's own memory cap), the totals current. The
    views wait, stopped, until the commit margin has passed the events the test inserted: a run
    every second before that takes them all again (~0.8 CPU-s a run, most of these tests' CPU),
    and the recovered views run when wait_current starts them, after a back-off of a second
    (the default's 10 s doubled for each failure is a test's minute of waiting)."""
    fixed = _spec(tmp_path, db, **HOURLY_REFRESH, **{"working_time.refresh_backoff_initial_s": 1,
                                                     "working_time.refresh_backoff_max_s": 1})
    for view in ("working_time_refresh_plan", "working_time_refresh"):
        client.command(f"SYSTEM STOP VIEW `{db}`.{view}")
    wt.wait_past_commit_margin(client, fixed)
    migrate(client, fixed, log=lambda *_: None)
    wt.wait_current(client, fixed, timeout_s=180)
    return fixed


@pytest.fixture
def database(chdb_dsn):
    db = f"t_{uuid.uuid4().hex[:12]}"
    client = store_module.connect(chdb_dsn)
    yield client, db
    client.command(f"DROP DATABASE IF EXISTS `{db}` SYNC")


@pytest.mark.clickhouse
def test_a_full_recompute_takes_a_bucket_of_users_per_run_and_is_exact(database, tmp_path):
    client, db = database
    spec = _spec(tmp_path, db, **{"working_time.refresh_chunk_events": 1000,
                                  **HOURLY_REFRESH})
    migrate(client, spec, log=lambda *_: None)
    events = random_stream(5) + random_stream(6)
    store_module.insert_json_rows(client, db, _as_rows(events))
    changed = dict(spec, working_time=dict(spec["working_time"], idle_threshold_ms=50_000))
    migrate(client, changed, log=lambda *_: None)  # a changed rule: everything again, in buckets
    wt.wait_current(client, changed)
    assert stored_totals(client, db) == query_time_hourly(client, changed)
    runs = client.query(f"SELECT full_bucket, full_buckets FROM `{db}`.working_time_refresh_log "
                        "WHERE rule LIKE '[50000,%' ORDER BY watermark").result_rows
    buckets = runs[0][1]
    stored = client.command(f"SELECT count() FROM `{db}`.events")
    assert buckets == -(-stored // 1000) > 1  # about refresh_chunk_events events per run
    assert [b for b, _ in runs] == list(range(buckets))  # one bucket per run, then done


@pytest.mark.slow(75)  # a minute, mostly waiting for runs or the commit margin
@pytest.mark.clickhouse
def test_a_history_too_large_for_one_run_is_recomputed_in_buckets_under_the_memory_cap(database, tmp_path):
    """Issue 27: events loaded since the last run (a bench load, an import) whose users'
    recompute one run cannot hold under refresh_max_memory_mb: instead of failing (and
    failing again after each back-off), the run starts a full recompute, a bucket of users
    of about refresh_chunk_events events per run, each under the cap; the totals are exact."""
    client, db = database
    spec = _spec(tmp_path, db, **{"working_time.refresh_max_memory_mb": 128, "working_time.refresh_spill_mb": 8,
                                  "working_time.refresh_chunk_events": 30000,
                                  **HOURLY_REFRESH})
    migrate(client, spec, log=lambda *_: None)
    wt.wait_current(client, spec)  # the first run, over the empty store: done
    # 300,000 client events of 30 users over 10 days: one run over them needs more than 128 MiB
    client.command(f"INSERT INTO `{db}`.events (scope, source, timestamp, user_id, job_id, duration) "
                   "SELECT if(number % 7 = 0, 'change:frame', 'click:element'), 'client', "
                   "toDateTime64('2026-01-05 00:00:00', 3) + toIntervalMillisecond(intDiv(number, 30) * 86400 + number % 30), "
                   "number % 30 + 1, number % 50 + 1, number % 5000 FROM numbers(300000)")
    wt.wait_past_commit_margin(client, spec)  # as the bench does: no run takes them twice
    wt.wait_current(client, spec, timeout_s=300)
    assert stored_totals(client, db) == query_time_hourly(client, spec)
    runs = client.query(f"SELECT rule, full_bucket, full_buckets, failures, recomputed_events "
                        f"FROM `{db}`.working_time_refresh_log ORDER BY refreshed_at").result_rows
    assert not [r for r in runs if r[3]]  # no run failed
    # the run that found them recomputed nothing and logged a full recompute to come
    [started] = [r for r in runs if r[0] == "recompute all"]
    assert started[4] == 300000
    full = [r for r in runs if r[1] >= 0 and r[2] > 1]
    assert [r[1] for r in full] == list(range(full[0][2]))  # one bucket per run, then done
    assert max(r[4] for r in full) < 300000 // 2  # each run recomputed a part


@pytest.mark.slow(65)  # a minute, mostly waiting for runs or the commit margin
@pytest.mark.clickhouse
def test_a_failing_refresh_backs_off_shows_its_lag_and_error_and_recovers(database, tmp_path, make_served):
    """The memory cap lowered until a run fails: the runs after it record the failure and
    wait longer each time, /metrics and the Monitoring panel show the lag and the error;
    with the cap back, the totals are exact."""
    client, db = database
    capped = _spec(tmp_path, db, **{"working_time.refresh_max_memory_mb": 64, "working_time.refresh_spill_mb": 8,
                                    "working_time.refresh_backoff_initial_s": 2,
                                    "working_time.refresh_backoff_max_s": 8})
    migrate(client, _spec(tmp_path, db), log=lambda *_: None)
    _until(lambda: client.command(f"SELECT count() FROM `{db}`.working_time_refresh_log"), 180)  # a first run
    migrate(client, capped, log=lambda *_: None)  # the view again, with the lower cap
    # 300,000 events of 3 users: a run over them needs more than 64 MiB
    client.command(f"INSERT INTO `{db}`.events (scope, source, timestamp, user_id, job_id) "
                   "SELECT 'click:element', 'client', toDateTime64('2026-01-05 00:00:00', 3) "
                   "+ toIntervalMillisecond(number * 1000), number % 3 + 1, number % 50 + 1 FROM numbers(300000)")
    failed = f"SELECT refreshed_at, failures, error FROM `{db}`.working_time_refresh_log WHERE failures > 0 ORDER BY refreshed_at"
    _until(lambda: len(client.query(failed).result_rows) >= 3, 240)
    rows = client.query(failed).result_rows
    assert "memory limit" in rows[0][2].lower()
    for (t1, n1, _), (t2, n2, _) in zip(rows, rows[1:]):
        assert n2 == n1 + 1  # each failure recorded once, counted in a row
        assert (t2 - t1).total_seconds() >= min(2 * 2 ** (n1 - 1), 8)  # and the next try waited for it

    srv = make_served(spec=capped)
    page = samples(call(srv, "GET", "/metrics")[1].decode())
    assert page[LAG] > 5 and page[FAILURES] >= 3
    [error] = [labels for name, labels in page if name == "cvat_analytics_working_time_refresh_last_error"]
    assert "memory limit" in dict(error)["error"].lower()

    monitoring = grafana.load("monitoring", capped)
    sql = {p["id"]: p["sql"] for p in monitoring["panels"]}[12]
    # The range ends a minute ahead: a failure logged within the second of `now` is inside it
    # ($__timeFilter compares whole seconds).
    now = datetime.now(timezone.utc)
    [(lag_s, failures, last_error, in_range)] = client.query(
        expand(sql, now - timedelta(hours=1), now + timedelta(minutes=1))).result_rows
    assert lag_s > 5 and failures >= 3 and "memory limit" in last_error.lower() and in_range >= 3

    fixed = _recovered(client, tmp_path, db)
    assert stored_totals(client, db) == query_time_hourly(client, fixed)
    page = samples(call(srv, "GET", "/metrics")[1].decode())
    assert page[FAILURES] == 0 and page[LAG] < 30
    assert not [n for n, _ in page if n == "cvat_analytics_working_time_refresh_last_error"]


# ---- a run recomputes from the slot of the earliest new event (migration 0018) -----

@pytest.mark.slow(63)  # a minute, mostly waiting for runs or the commit margin
@pytest.mark.clickhouse
def test_a_run_after_a_few_new_events_recomputes_a_few_slots_not_the_hour(database, tmp_path):
    """The previous hour's first 55 minutes stored (4 users, an event every 100 ms each),
    counted and past the commit margin; then 6 events in minute 55 for 2 users: the run
    recomputes those users from their slot, a minute or two of their events, not the hour
    (the bound does not depend on the minute)."""
    client, db = database
    minute = 55
    spec = _spec(tmp_path, db, **HOURLY_REFRESH)
    migrate(client, spec, log=lambda *_: None)
    hour = client.command("SELECT toString(toStartOfHour(now('UTC')) - INTERVAL 1 HOUR)")
    per_user = minute * 60 * 10
    client.command(f"INSERT INTO `{db}`.events (scope, source, timestamp, user_id, job_id) "
                   f"SELECT 'click:element', 'client', toDateTime64('{hour}', 3, 'UTC') "
                   f"+ toIntervalMillisecond(intDiv(number, 4) * 100), number % 4 + 1, number % 7 + 1 "
                   f"FROM numbers({per_user * 4})")
    wt.wait_current(client, spec, timeout_s=180)
    wt.wait_past_commit_margin(client, spec)
    wt.wait_current(client, spec)  # the last run that takes the stored events again
    assert stored_totals(client, db) == query_time_hourly(client, spec)

    client.command(f"INSERT INTO `{db}`.events (scope, source, timestamp, user_id, job_id) "
                   f"SELECT 'click:element', 'client', toDateTime64('{hour}', 3, 'UTC') "
                   f"+ toIntervalSecond({minute * 60 - 20} + number), number % 2 + 1, 3 FROM numbers(6)")
    wt.wait_current(client, spec)
    recomputed, full, past_horizon = client.query(
        f"SELECT recomputed_events, full, toStartOfHour(watermark) - INTERVAL 1 HOUR > toDateTime('{hour}', 'UTC') "
        f"FROM `{db}`.working_time_refresh_log ORDER BY watermark DESC LIMIT 1").result_rows[0]
    assert full == 0
    if past_horizon:
        # the clock turned an hour since `hour` was read: the hour is before the run's slot
        # horizon (no per-slot checkpoints there), so the 2 users are recomputed from its start
        assert recomputed == 2 * per_user + 6
    else:
        # 2 users from the slot of their new events: at most 2 minutes of their events each
        assert recomputed <= 2 * 2 * 60 * 10 + 6
    assert stored_totals(client, db) == query_time_hourly(client, spec)


def _slot_horizon(client, db):
    """The first hour the last run keeps per-slot totals for: the hour before its watermark's
    (read from the run, not the clock, which may have turned an hour since)."""
    return client.query(f"SELECT toStartOfHour(max(watermark)) - INTERVAL 1 HOUR "
                        f"FROM `{db}`.working_time_refresh_log").result_rows[0][0]


def _slot_sums_by_hour(client, db, horizon):
    """The per-slot totals of the hours from `horizon` on, summed per hour."""
    rows = client.query(
        f"SELECT user_id, project_id, task_id, job_id, toStartOfHour(slot) AS hour, sum(working_time_ms) AS ms "
        f"FROM `{db}`.working_time_slot_totals WHERE slot >= {{horizon:DateTime('UTC')}} "
        "GROUP BY user_id, project_id, task_id, job_id, hour HAVING ms != 0",
        parameters={"horizon": horizon}).result_rows
    return {tuple(r[:5]): r[5] for r in rows}


recent_events = st.lists(
    st.tuples(st.integers(1, 3),  # user
              st.integers(0, 2 * 3600 * 1000 - 1),  # ms from the start of the previous hour
              st.sampled_from(["click:element", "change:frame", "zoom:image"]),
              st.sampled_from([0, 1, 800, 3000, 120_000]),  # duration
              st.sampled_from([None, 1, 2, 3])),  # job
    min_size=1, max_size=60)


@pytest.mark.slow
@pytest.mark.clickhouse
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(first=recent_events, later=st.lists(recent_events, min_size=1, max_size=3))
def test_late_and_out_of_order_events_across_slots_and_hours_stay_exact(chdb_dsn, tmp_path_factory, first, later):
    """Events of the previous and the current hour (where runs start at a slot), inserted in
    batches that go back in time, across slots and hours: after each run the hourly totals
    equal the query-time figure, the per-slot totals add up to them, and at the end they
    equal the oracle's."""
    tmp = tmp_path_factory.mktemp("slots")
    db = f"t_{uuid.uuid4().hex[:12]}"
    spec = _spec(tmp, db, **HOURLY_REFRESH)
    client = store_module.connect(chdb_dsn)
    try:
        migrate(client, spec, log=lambda *_: None)
        base_s = client.command("SELECT toUnixTimestamp(toStartOfHour(now('UTC')) - INTERVAL 1 HOUR)")
        events = []
        for batch in [first, *later]:
            rows = [ev(int(base_s) * 1000 + ms - BASE, scope, duration, user_id=user, job_id=job, task_id=job,
                       project_id=1) for user, ms, scope, duration, job in batch]
            events += rows
            store_module.insert_json_rows(client, db, _as_rows(rows))
            wt.wait_current(client, spec)
            hourly = stored_totals(client, db)
            assert hourly == query_time_hourly(client, spec)
            horizon = _slot_horizon(client, db)
            assert _slot_sums_by_hour(client, db, horizon) == {
                k: v for k, v in hourly.items() if k[4] >= horizon.replace(tzinfo=None)}
        got = defaultdict(int)
        for (user, project, task, job, _hour), ms in stored_totals(client, db).items():
            got[(user, project, task, job)] += ms
        assert {k: v for k, v in got.items() if v} == oracle.totals(events)
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{db}` SYNC")


@pytest.mark.clickhouse
def test_every_refresh_runs_with_the_specs_threads_and_interval(database, tmp_path):
    """working_time.refresh_max_threads is each refreshable view's max_threads (1 by default:
    a run takes at most a core, beside ingest), and the runs work with it; the totals' views
    run every refresh_interval_s, the productivity state's every productivity_refresh_interval_s."""
    client, db = database
    spec = _spec(tmp_path, db, **{**HOURLY_REFRESH, "working_time.refresh_max_threads": 3,
                                  "working_time.productivity_refresh_interval_s": 1800})
    migrate(client, spec, log=lambda *_: None)
    views = dict(client.query("SELECT name, create_table_query FROM system.tables WHERE database = {db:String} "
                              "AND name IN (SELECT view FROM system.view_refreshes WHERE database = {db:String})",
                              parameters={"db": db}).result_rows)
    assert sorted(views) == ["productivity_refresh", "working_time_refresh", "working_time_refresh_plan"]
    assert all(re.search(r"\bmax_threads = 3\b", ddl) for ddl in views.values()), views
    every = {name: re.search(r"REFRESH EVERY (\d+ \w+)", ddl)[1] for name, ddl in views.items()}
    assert every == {"productivity_refresh": "30 MINUTE", "working_time_refresh": "1 HOUR",
                     "working_time_refresh_plan": "1 HOUR"}, every  # as the engine words them
    store_module.insert_json_rows(client, db, _as_rows(random_stream(5)))
    wt.wait_current(client, spec)
    assert stored_totals(client, db) == query_time_hourly(client, spec) != {}
    default = (REPO / "deploy" / "clickhouse" / "migrations" / "0018_working_time_refresh_slots.sql").read_text()
    assert "max_threads = 1," in default


@pytest.mark.clickhouse
def test_a_run_is_a_plan_then_its_application_and_a_plan_is_applied_once(database, tmp_path):
    """The single server's refresh is two views (queries/working_time.jinja, plan_select): the
    plan view writes one row, the applying view runs after it. Run alone again, the applying
    view finds its plan applied and writes nothing: no log row, no delta."""
    client, db = database
    spec = _spec(tmp_path, db, **HOURLY_REFRESH)
    migrate(client, spec, log=lambda *_: None)
    store_module.insert_json_rows(client, db, _as_rows(random_stream(7)))
    wt.wait_current(client, spec)
    plan = client.query(f"SELECT action, length(run_users) FROM `{db}`.working_time_plan").result_rows
    assert len(plan) == 1 and plan[0][0] == "work" and plan[0][1] > 0
    log_rows = f"SELECT count() FROM `{db}`.working_time_refresh_log"
    apply_rows = f"SELECT count() FROM `{db}`.working_time_totals"
    before = (client.command(log_rows), client.command(apply_rows), stored_totals(client, db))
    client.command(f"SYSTEM REFRESH VIEW `{db}`.working_time_refresh")
    client.command(f"SYSTEM WAIT VIEW `{db}`.working_time_refresh")
    assert (client.command(log_rows), client.command(apply_rows), stored_totals(client, db)) == before
    assert stored_totals(client, db) == query_time_hourly(client, spec)


@pytest.mark.slow(40)
@pytest.mark.clickhouse
def test_a_failing_plan_is_recorded_backed_off_and_recovers(database, tmp_path):
    """A run is its plan, then the plan's application (migration 0018). A plan that fails is
    never applied (the applying view waits for its dependency), so the next plan takes the
    failure from the plan view's own state and records it as a failed application is recorded:
    the log's failures and error, the back-off. With the cap back, the totals are exact."""
    client, db = database
    migrate(client, _spec(tmp_path, db), log=lambda *_: None)
    wt.wait_current(client, _spec(tmp_path, db))
    capped = _spec(tmp_path, db, **{"working_time.refresh_max_memory_mb": 64, "working_time.refresh_spill_mb": 8,
                                    "working_time.refresh_backoff_initial_s": 1,
                                    "working_time.refresh_backoff_max_s": 2})
    migrate(client, capped, log=lambda *_: None)
    # 300,000 users with an event each: the plan's GROUP BY of the changed users needs more than
    # 64 MiB (its error names AggregatingTransform), so the plan fails and nothing is applied
    client.command(f"INSERT INTO `{db}`.events (scope, source, timestamp, user_id, job_id) "
                   "SELECT 'click:element', 'client', now64(3) - toIntervalMillisecond(number), number + 1, 1 "
                   "FROM numbers(300000)")
    failed = (f"SELECT failures, error FROM `{db}`.working_time_refresh_log WHERE failures > 0 "
              "ORDER BY refreshed_at")
    _until(lambda: len(client.query(failed).result_rows) >= 2, 120)
    rows = client.query(failed).result_rows
    assert [n for n, _ in rows[:2]] == [1, 2] and all("memory limit" in e.lower() for _, e in rows)
    fixed = _recovered(client, tmp_path, db)
    assert stored_totals(client, db) == query_time_hourly(client, fixed)


@pytest.mark.slow(20)
@pytest.mark.clickhouse
def test_a_run_stopped_by_an_operator_is_not_a_failure(database, tmp_path):
    """SYSTEM STOP VIEW (or KILL QUERY) during a run leaves the view's exception 'cancelled':
    someone stopped it, nothing failed. The next run works, with no failure logged and no
    back-off, and the totals are exact."""
    client, db = database
    spec = _spec(tmp_path, db)
    migrate(client, spec, log=lambda *_: None)
    wt.wait_current(client, spec)
    client.command(f"INSERT INTO `{db}`.events (scope, source, timestamp, user_id, job_id) "
                   "SELECT 'click:element', 'client', now64(3) - toIntervalMillisecond(number * 10), "
                   "number % 50 + 1, 1 FROM numbers(1000000)")
    running = (f"SELECT count() FROM system.view_refreshes WHERE database = '{db}' "
               "AND view = 'working_time_refresh' AND status = 'Running'")
    _until(lambda: client.command(running) == 1, 60)
    client.command(f"SYSTEM STOP VIEW `{db}`.working_time_refresh")
    _until(lambda: client.command(running) == 0, 60)
    [(error,)] = client.query(f"SELECT exception FROM system.view_refreshes WHERE database = '{db}' "
                              "AND view = 'working_time_refresh'").result_rows
    client.command(f"SYSTEM START VIEW `{db}`.working_time_refresh")
    wt.wait_current(client, spec, timeout_s=120)
    assert error == "cancelled"
    assert client.command(f"SELECT count() FROM `{db}`.working_time_refresh_log WHERE failures > 0") == 0
    assert stored_totals(client, db) == query_time_hourly(client, spec)


@pytest.mark.clickhouse
def test_serves_start_up_refresh_runs_now_whatever_the_interval(database, tmp_path):
    """serve calls refresh_once_the_engine_is_up once the store is open: the run the engine
    started at open may have failed (system.view_refreshes not yet attached), and with an
    hour's interval no other run would come for an hour. After it, a run has been logged."""
    client, db = database
    spec = _spec(tmp_path, db, **HOURLY_REFRESH)
    migrate(client, spec, log=lambda *_: None)
    wt.wait_current(client, spec)  # the run at creation, over the empty store
    store_module.insert_json_rows(client, db, _as_rows(random_stream(11)))
    since = client.command("SELECT now64(6, 'UTC')")
    runs_since = (f"SELECT count() FROM `{db}`.working_time_refresh_log "
                  f"WHERE refreshed_at >= toDateTime64('{since}', 6, 'UTC')")
    time.sleep(2)
    assert client.command(runs_since) == 0  # the next scheduled run is up to an hour away
    wt.refresh_once_the_engine_is_up(client, spec)
    # the run's log row can be visible a moment before its totals (a loaded run saw 0 between)
    _until(lambda: client.command(runs_since) >= 1
           and client.command(f"SELECT sum(working_time_ms) FROM `{db}`.working_time_totals") > 0, 60)
