"""Every panel's and every variable's SQL, expanded as the Grafana plugin expands it,
run on chdb: with "All" selected and with one value selected for each variable, over
demo data; the columns fit the panel's visualization. The working-time and exceptions
tables are checked against hand-computed rows."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from cvat_analytics import demo, store as store_module, working_time
from cvat_analytics.dashboards import (BadRequest, Dashboards, all_selected, interval_for, panel_queries,
                                       parse_selection, variable_queries, variables_for)
from cvat_analytics_generator.grafana_macros import ALL, Variable, expand
from cvat_analytics.store import insert_json_rows
from cvat_analytics_generator import grafana
from cvat_analytics_generator.spec import DEFAULT_SPEC, load_spec
from cvat_analytics_generator.sql import escape_string
from tests.conftest import HOURLY_REFRESH, Store, write_spec

# Recent days: events older than the spec's retention are dropped at once.
NOW = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
FROM, TO = NOW - timedelta(days=7), NOW
NUMERIC = ("Int", "UInt", "Float", "Decimal")

# What the tables must show, in this order.
TABLE_COLUMNS = {
    # every column CVAT stores, as CVAT's SELECT * shows them
    ("EIGSTDAVz", "Events"): ["timestamp", "scope", "obj_name", "obj_id", "obj_val", "source", "count", "duration",
                              "project_id", "task_id", "job_id", "user_id", "user_name", "user_email", "org_id",
                              "org_slug", "payload", "access_token_id"],
    ("w0if6WAVz", "Working time"): ["user_id", "user_name", "project_id", "project", "task_id", "task", "job_id",
                                    "working_time_h", "cvat_reported_h", "activity"],
    ("WvDvWK04k", "Exceptions"): ["timestamp", "user_id", "user_name", "source", "project_id", "task_id",
                                  "job_id", "error", "stack", "payload"],
    ("WvDvWK04k", "Duration of events (ms)"): ["scope", "source", "events", "avg_ms", "p95_ms", "min_ms", "max_ms"],
    ("WvDvWK04k", "Number of events"): ["scope", "source", "events"],
    ("WvDvWK04k", "Working-time refresh — lag and last error"): ["lag_s", "failed_in_a_row", "last_error",
                                                                 "failures_in_range"],
    ("user-exceptions", "Category summary"): ["source", "category", "errors", "share_pct", "users", "previous_errors",
                                              "change_pct", "previous_users"],
    ("user-exceptions", "Top messages"): ["category", "message", "source", "errors", "users"],
}


def base(type_name: str) -> str:
    for wrapper in ("LowCardinality(", "Nullable("):
        while type_name.startswith(wrapper):
            type_name = type_name[len(wrapper):-1]
    return type_name


def check_shape(client, uid: str, panel: dict, sql: str) -> None:
    """Run `sql`; its columns (from DESCRIBE: an empty result has none) must fit the panel."""
    result = client.query(sql)
    described = client.query(f"DESCRIBE ({sql})").result_rows
    names = [r[0] for r in described]
    types = [base(r[1]) for r in described]
    where = f"{uid} / {panel['title']}: {list(zip(names, types))}"
    kind = panel["type"]
    if kind == "timeseries":  # time first; text columns name series; at least one number
        assert types[0].startswith("DateTime"), where
        assert any(t.startswith(NUMERIC) for t in types[1:]), where
        assert all(t.startswith(NUMERIC) or t == "String" for t in types[1:]), where
    elif kind == "barchart":  # a text category, then one number per series
        assert types[0] == "String" and len(types) >= 2 and all(t.startswith(NUMERIC) for t in types[1:]), where
    elif kind == "stat":  # one row of numbers: the figure first, then e.g. the previous period's
        assert len(result.result_rows) == 1 and all(t.startswith(NUMERIC) for t in types), where
    else:
        assert names == TABLE_COLUMNS[(uid, panel["title"])], where


@pytest.fixture(scope="module")
def seeded(chdb_dsn, tmp_path_factory):
    """A database with 7 days of demo traffic ending at NOW, and its working time."""
    from cvat_analytics.migrate import migrate

    # Refreshed when asked (wait_current) and hourly, not every 10 s while the module runs: each run costs CPU.
    _, path = write_spec(tmp_path_factory.mktemp("spec"), **{
        "clickhouse.database": f"t_{uuid.uuid4().hex[:12]}",
        **HOURLY_REFRESH})
    spec = load_spec(path)
    client = store_module.connect(chdb_dsn)
    migrate(client, spec, log=lambda *_: None)
    demo.run(20_000, days=7, seed=3, client=client, database=spec["clickhouse"]["database"],
             now_ms=int(NOW.timestamp() * 1000), err=open("/dev/null", "w"))
    working_time.wait_current(client, spec)
    yield client, spec
    client.command(f"DROP DATABASE IF EXISTS `{spec['clickhouse']['database']}` SYNC")


def options_of(client, variable: dict, variables: dict) -> list[str]:
    rows = client.query(expand(variable["sql"], FROM, TO, 60, variables)).result_rows
    return [str(r[0]) for r in rows if r[0] is not None]



@pytest.mark.slow
@pytest.mark.xdist_group("dashboards-sql-demo-data")  # one worker builds `seeded`
@pytest.mark.clickhouse
@pytest.mark.parametrize("name", ["all_events", "management", "monitoring", "exceptions"])
def test_every_panel_and_variable_with_all_and_with_one_value(seeded, name):
    client, spec = seeded
    d = grafana.load(name, spec)
    interval = interval_for(FROM, TO)
    everything = all_selected(d)
    # "All" everywhere: every variable has options, every panel its columns and (but stats) rows.
    chosen = {}
    for v in d["variables"]:
        options = options_of(client, v, everything)
        assert options, f"{name}: variable {v['name']} has no values"
        chosen[v["name"]] = options[0]
    for p in d["panels"]:
        sql = expand(p["sql"], FROM, TO, interval, everything)
        check_shape(client, d["uid"], p, sql)
        if p["type"] != "stat":
            assert client.query(sql).result_rows, f"{name} / {p['title']}: no rows with All selected"
    # One value of one variable at a time, the rest All: everything still runs with the same shape.
    for var_name, value in chosen.items():
        variables = dict(everything, **{var_name: Variable([escape_string(value)])})
        for v in d["variables"]:
            options_of(client, v, variables)
        for p in d["panels"]:
            check_shape(client, d["uid"], p, expand(p["sql"], FROM, TO, interval, variables))


@pytest.mark.slow
@pytest.mark.xdist_group("dashboards-sql-demo-data")  # one worker builds `seeded`
@pytest.mark.clickhouse
def test_a_selected_value_filters_every_panel(seeded):
    client, spec = seeded
    d = grafana.load("all_events", spec)
    user = options_of(client, d["variables"][2], all_selected(d))[0]
    sql = {p["title"]: p["sql"] for p in d["panels"]}["Events"]
    rows = client.query(expand(sql, FROM, TO, 3600, dict(all_selected(d), users=Variable([user])))).result_rows
    assert rows and {r[11] for r in rows} == {int(user)}


@pytest.mark.slow
@pytest.mark.xdist_group("dashboards-sql-demo-data")  # one worker builds `seeded`
@pytest.mark.clickhouse
def test_panel_queries_for_the_benchmark_run(seeded):
    client, spec = seeded
    queries = panel_queries(spec, FROM, TO)
    assert len(queries) == sum(len(grafana.load(n, spec)["panels"]) for n in spec["dashboards"])
    for uid, title, sql in queries:
        assert "$" not in sql.replace("'$.platform", ""), (uid, title)
        client.query(sql)
    assert all("$__" not in sql for _, _, sql in variable_queries(spec, FROM, TO))


# --- hand-computed: the working-time table and the exceptions table

T0 = NOW - timedelta(days=2) + timedelta(hours=10)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def ev(scope, seconds, source="client", user=1, project=None, task=None, job=None, **extra):
    names = {1: "ann", 2: "bob", 3: "cy"}
    return {"scope": scope, "source": source, "timestamp": at(seconds), "user_id": user, "user_name": names[user],
            "project_id": project, "task_id": task, "job_id": job, "duration": 0, **extra}


HAND_EVENTS = [
    ev("create:project", -3600, "server", obj_id=2, obj_name="Cars", project=2),
    ev("create:task", -3500, "server", obj_id=5, obj_name="batch-a", project=2, task=5),
    # ann: the rule gives 30 s + 30 min to the load's (empty) ids, 30 s + 1.5 h + 30 s to job 10, 30 s to job 11
    ev("load:cvat", 0, payload=json.dumps({"platform": {"name": "Chrome", "version": "120", "os": "Linux"}})),
    ev("change:frame", 30, project=2, task=5, job=10, duration=1_800_000),
    ev("change:frame", 1860, project=2, task=5, job=10, duration=5_400_000),
    ev("draw:object", 7290, project=2, task=5, job=11),
    ev("save:job", 7320, project=2, task=5, job=11),
    ev("send:working_time", 7500, "server", project=2, task=5, job=10, duration=5_400_000,
       payload=json.dumps({"working_time": 5_400_000})),
    # An older CVAT's report: the figure only in the payload (duration 0).
    ev("send:working_time", 7600, "server", project=2, task=5, job=11, payload=json.dumps({"working_time": 3_600_000})),
    # bob: one instant event, so no working time of ours. Its payload figure is how CVAT before
    # v2.14.1 reported; those per-event payloads are not read (see the panel's description).
    ev("draw:object", 3600, user=2, project=3, task=6, job=20, duration=40_000,
       payload=json.dumps({"working_time": 900_000})),
    # A report with the figure in obj_val only.
    ev("send:working_time", 3700, "server", user=2, project=3, task=6, job=20, obj_val="600000"),
    # bob's browser reports no platform: no blank bar
    ev("load:cvat", 3500, user=2, payload=json.dumps({})),
    # exceptions: one from ann's browser in job 10, one from the server for bob without task or job
    ev("send:exception", 900, project=2, task=5, job=10,
       payload=json.dumps({"message": "Boom 'x'", "stack": "Error: Boom\n    at a.js:1"})),
    ev("send:exception", 5400, "server", user=2,
       payload=json.dumps({"message": "Server fail", "stack": "Traceback: fail"})),
]
DAY = (NOW - timedelta(days=2), NOW - timedelta(days=1))


@pytest.fixture
def hand(store):
    body = "\n".join(json.dumps(e) for e in HAND_EVENTS).encode()
    insert_json_rows(store.client, store.database, body)
    working_time.wait_current(store.client, store.spec)
    return store


def run_panel(store, dashboard: str, title: str, **selected) -> list[tuple]:
    d = grafana.load(dashboard, store.spec)
    sql = {p["title"]: p["sql"] for p in d["panels"]}[title]
    variables = dict(all_selected(d), **{k: Variable(v) for k, v in selected.items()})
    interval = 86400 if title == "Overall activity" else 3600
    return store.client.query(expand(sql, *DAY, interval, variables)).result_rows


H = 3_600_000  # ms per hour


@pytest.mark.refresh
@pytest.mark.clickhouse
def test_working_time_table_by_hand(hand):
    rows = run_panel(hand, "management", "Working time")
    assert rows == [
        # user, name, project, name, task, name, job, ours h, CVAT's h, activity = CVAT's working-time rows
        (1, "ann", 2, "Cars", 5, "batch-a", 10, 5_460_000 / H, 5_400_000 / H, 1),  # reported in duration
        (1, "ann", None, None, None, None, None, 1_830_000 / H, 0.0, 0),  # kept though it has no job
        (1, "ann", 2, "Cars", 5, "batch-a", 11, 30_000 / H, 3_600_000 / H, 1),  # reported in the payload only
        (2, "bob", 3, None, 6, None, 20, 0.0, 600_000 / H, 1),  # obj_val; not the client event's payload
    ]
    # The footer adds unrounded hours: 7 320 000 ms = 2.03 h, where rows rounded first would give 2.04.
    assert sum(r[7] for r in rows) == pytest.approx(7_320_000 / H)
    # One job selected: only its row; the row without a job is not that job's.
    assert [r[6] for r in run_panel(hand, "management", "Working time", jobs=["10"])] == [10]
    # A username (CVAT's `usernames` variable) selects that user's rows, ours and CVAT's alike.
    assert [r[:2] for r in run_panel(hand, "management", "Working time", usernames=["bob"])] == [(2, "bob")]
    per_user = run_panel(hand, "management", "Working time per user (hours)")
    assert per_user == [("ann #1", 7_320_000 / H, 9_000_000 / H), ("bob #2", 0.0, 600_000 / H)]


@pytest.mark.refresh
@pytest.mark.clickhouse
def test_activity_panels_count_every_source_as_cvat(hand):
    # Every hand event is in DAY; with one-day intervals the single bucket holds them all.
    overall = run_panel(hand, "management", "Overall activity")
    assert sum(r[1] for r in overall) == len(HAND_EVENTS)
    per_user: dict[str, int] = {}
    for _, user, events in run_panel(hand, "management", "Activity per user"):
        per_user[user] = per_user.get(user, 0) + events
    assert per_user == {"ann #1": sum(e["user_id"] == 1 for e in HAND_EVENTS),
                        "bob #2": sum(e["user_id"] == 2 for e in HAND_EVENTS)}


@pytest.mark.refresh
@pytest.mark.clickhouse
def test_browsers_and_systems_skip_blanks_and_ignore_the_scope_filter(hand):
    for selected in ({}, {"scopes": ["draw:object"]}, {"sources": ["server"]}, {"jobs": ["10"]}):
        assert run_panel(hand, "all_events", "Browsers", **selected) == [("Chrome 120", 1)], selected
        assert run_panel(hand, "all_events", "Operating systems", **selected) == [("Linux", 1)], selected
    assert run_panel(hand, "all_events", "Browsers", users=["2"]) == []  # bob's load reported none


@pytest.mark.clickhouse
def test_active_users_now_is_the_last_15_minutes_before_now_and_buckets_are_15_minutes(store):
    now = datetime.now(timezone.utc)
    recent = [{"scope": "click:element", "source": "client", "user_id": user, "duration": 0,
               "timestamp": (now - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"}
              for user, minutes in ((1, 5), (3, 2), (2, 20))]
    # Around T0 (10:00, on a 15-minute boundary): two users in the first quarter, one in the next.
    quarter = [ev("click:element", 0), ev("click:element", 300, user=2), ev("click:element", 960)]
    insert_json_rows(store.client, store.database, "\n".join(json.dumps(e) for e in recent + quarter).encode())
    # The range ends a day ago, yet "now" means now: users 1 and 3 (user 2 was 20 minutes ago).
    assert run_panel(store, "monitoring", "Active users (now)") == [(2,)]
    buckets = {r[0].replace(tzinfo=timezone.utc): r[1] for r in run_panel(store, "monitoring", "Active users")}
    assert len(buckets) == 24 * 4  # one point per 15 minutes though the panel interval is an hour
    assert buckets[T0] == 2 and buckets[T0 + timedelta(minutes=15)] == 1 and buckets[T0 - timedelta(minutes=15)] == 0


@pytest.mark.refresh
@pytest.mark.clickhouse
def test_exceptions_table_by_hand(hand):
    rows = run_panel(hand, "monitoring", "Exceptions")
    assert [r[1:9] for r in rows] == [
        (2, "bob", "server", None, None, None, "Server fail", "Traceback: fail"),
        (1, "ann", "client", 2, 5, 10, "Boom 'x'", "Error: Boom\n    at a.js:1"),
    ]
    assert rows[0][0].replace(tzinfo=timezone.utc) == T0 + timedelta(seconds=5400)
    assert json.loads(rows[1][9])["message"] == "Boom 'x'"
    # An error message with a quote, selected as the embedded service passes it (escaped).
    only = run_panel(hand, "monitoring", "Exceptions", errors=[escape_string("Boom 'x'")])
    assert [r[7] for r in only] == ["Boom 'x'"]
    assert run_panel(hand, "monitoring", "Exceptions", errors=[escape_string("x') OR 1=1 --")]) == []
    assert run_panel(hand, "monitoring", "Exceptions") and run_panel(hand, "monitoring", "Exceptions", users=["1"])[0][1] == 1


@pytest.mark.refresh
@pytest.mark.clickhouse
def test_the_embedded_pages_use_the_same_numbers(hand):
    pages = Dashboards(lambda: hand.client, hand.spec)
    html = pages.dashboard_page("w0if6WAVz", {"from": [DAY[0].isoformat()], "to": [DAY[1].isoformat()]})
    assert "batch-a" in html and "1.52" in html and "Query failed" not in html


# --- what the query string may put into SQL

SPEC = load_spec(DEFAULT_SPEC)
MONITORING = grafana.load("monitoring", SPEC)


@pytest.mark.parametrize("query, message", [
    ({"users": ["1 OR 1=1"]}, "whole number"),
    ({"users": ["-1"]}, "whole number"),
    ({"jobs": ["1e3"]}, "whole number"),
    ({"sources": ["client') OR ('1"]}, "client or server"),
    ({"range": ["forever"]}, "range"),
    ({"from": ["yesterday"]}, "ISO time"),
    ({"from": ["2024-01-02T00:00"], "to": ["2024-01-01T00:00"]}, "after"),
])
def test_bad_query_values_never_reach_sql(query, message):
    with pytest.raises(BadRequest, match=message):
        parse_selection(query, MONITORING, SPEC)


def test_grafana_url_names_and_times_are_understood():
    """Links copied from CVAT's Grafana: var-<name>=..., All as $__all, from/to as now-7d or epoch ms."""
    d = grafana.load("all_events", SPEC)
    now = datetime(2024, 3, 10, 12, 0, tzinfo=timezone.utc)
    sel = parse_selection({"var-organizations": ["3"], "var-users": ["$__all"], "jobs": ["5"],
                           "from": ["now-7d"], "to": ["now"]}, d, SPEC, now=now)
    assert sel.values["organizations"] == ["3"] and sel.values["users"] == [] and sel.values["jobs"] == ["5"]
    assert (sel.time_from, sel.time_to) == (now - timedelta(days=7), now)
    sel = parse_selection({"from": ["1709985600000"], "to": ["1710072000000"]}, d, SPEC, now=now)
    assert (sel.time_from, sel.time_to) == (datetime(2024, 3, 9, 12, tzinfo=timezone.utc), now)
    with pytest.raises(BadRequest, match="whole number"):
        parse_selection({"var-organizations": ["3 OR 1=1"]}, d, SPEC)
    with pytest.raises(BadRequest, match="ISO time"):
        parse_selection({"from": ["now-7y"]}, d, SPEC)


def test_scopes_must_be_known():
    d = grafana.load("all_events", SPEC)
    assert parse_selection({"scopes": ["change:frame"]}, d, SPEC).values["scopes"] == ["change:frame"]
    with pytest.raises(BadRequest, match="scope"):
        parse_selection({"scopes": ["change:frame' OR 1=1"]}, d, SPEC)


def test_free_text_must_be_one_of_the_variables_values():
    sel = parse_selection({"errors": ["nope"]}, MONITORING, SPEC)
    kinds = {v["name"]: v["kind"] for v in MONITORING["variables"]}
    with pytest.raises(BadRequest, match="not one of"):
        variables_for(sel, {"errors": ["Boom"]}, kinds)
    sel = parse_selection({"errors": ["it's"], "users": ["007"]}, MONITORING, SPEC)
    out = variables_for(sel, {"errors": ["it's"]}, kinds)
    assert out["errors"].value == ["it\\'s"] and out["users"].value == ["7"] and out["jobs"].value == ALL


@pytest.mark.refresh
@pytest.mark.clickhouse
def test_a_limit_caps_the_rows_of_the_outer_query_only(hand):
    """How a variable's options are capped (MAX_OPTIONS) without appending to its SQL."""
    pages = Dashboards(lambda: hand.client, hand.spec)
    sql = "SELECT number FROM numbers(10) WHERE number IN (SELECT number FROM numbers(2, 8)) ORDER BY number"
    assert pages.query(sql, limit=3)[1] == [(2,), (3,), (4,)]
    assert len(pages.query(sql)[1]) == 8


@pytest.mark.refresh
@pytest.mark.clickhouse
def test_forced_filters_of_an_access_token_hold_on_every_panel(hand):
    pages = Dashboards(lambda: hand.client, hand.spec)
    query = {"from": [DAY[0].isoformat()], "to": [DAY[1].isoformat()]}
    bob_only = pages.dashboard_page("w0if6WAVz", query, forced={"user_id": 2})
    assert "bob" in bob_only and "ann" not in bob_only and "Query failed" not in bob_only
    monitoring = pages.dashboard_page("WvDvWK04k", query, forced={"user_id": 1})
    assert "Boom" in monitoring and "Server fail" not in monitoring
    # working_time_totals has no org_id: an org-limited caller sees none of it, not everyone's.
    org = pages.dashboard_page("w0if6WAVz", query, forced={"org_id": 99})
    assert "ann" not in org and "Query failed" not in org
    # Every built-in panel reads only the tables forced filters cover (sql_gate.check_reads).
    for uid in pages.definitions:
        assert "Query failed" not in pages.dashboard_page(uid, query, forced={"org_id": 7, "user_id": 1}), uid


# --- hand-computed: the exceptions dashboard (current range = DAY, previous = the day before)

DAY_S = 86400
JS = "TypeError: Cannot read properties of undefined (reading 'x')"


def exc(seconds, source, user, message):
    return ev("send:exception", seconds, source, user=user, payload=json.dumps({"message": message}))


EXCEPTION_EVENTS = [
    # in the range
    exc(100, "client", 1, JS),
    exc(200, "client", 1, JS),
    exc(300, "server", 2, "ConnectionError: Network Error"),
    exc(400, "server", 3, "Cannot read properties of y"),  # JS patterns are for client errors only: Other
    exc(500, "client", 2, "Request failed with status code 429"),  # noise
    exc(600, "server", 1, "PermissionDenied: not yours"),  # noise
    exc(700, "server", 3, "   "),  # no message
    # in the day before
    exc(100 - DAY_S, "client", 1, "Cannot read properties of null"),
    exc(200 - DAY_S, "client", 2, "network error"),
    exc(300 - DAY_S, "client", 2, "Throttled: slow down"),  # noise
    # before both
    exc(100 - 3 * DAY_S, "client", 3, JS),
]


@pytest.fixture
def errors(store):
    insert_json_rows(store.client, store.database, "\n".join(json.dumps(e) for e in EXCEPTION_EVENTS).encode())
    return store


@pytest.mark.clickhouse
def test_exceptions_deltas_and_categories_by_hand(errors):
    # 4 errors now (2 JS, 1 network, 1 other) against 2 before: +100 %; users 1, 2, 3 against 1, 2: +50 %.
    assert run_panel(errors, "exceptions", "Total errors") == [(4, 2, 100.0)]
    assert run_panel(errors, "exceptions", "Unique users impacted") == [(3, 2, 50.0)]
    assert run_panel(errors, "exceptions", "Server vs client") == [("client", 2, 2), ("server", 2, 0)]
    assert run_panel(errors, "exceptions", "Category share") == [
        ("JS null/undefined access", 50.0), ("Network Error", 25.0), ("Other / uncategorized", 25.0)]
    day = DAY[0]
    assert [(r[0].replace(tzinfo=timezone.utc), r[1], r[2]) for r in
            run_panel(errors, "exceptions", "Errors per day by category")] == [
        (day, "JS null/undefined access", 2), (day, "Network Error", 1), (day, "Other / uncategorized", 1)]
    assert run_panel(errors, "exceptions", "Category summary") == [
        # source, category, errors, share %, users, previous errors, change %, previous users
        ("client", "JS null/undefined access", 2, 50.0, 1, 1, 100.0, 1),
        ("server", "Network Error", 1, 25.0, 1, 0, None, 0),
        ("server", "Other / uncategorized", 1, 25.0, 1, 0, None, 0),
        ("client", "Network Error", 0, 0.0, 0, 1, -100.0, 1),
    ]
    assert run_panel(errors, "exceptions", "Top messages", category=["JS null/undefined access"]) == [
        ("JS null/undefined access", JS, "client", 2, 1)]
    assert run_panel(errors, "exceptions", "Total errors", sources=["server"]) == [(2, 0, None)]


@pytest.mark.clickhouse
def test_exceptions_noise_and_categories_come_from_the_spec(errors):
    spec = json.loads(json.dumps(errors.spec))
    spec["exceptions"] = {"noise": [], "categories": [{"name": "Rate limits", "match": ["STATUS CODE 429", "throttled"]}]}
    tuned = Store(errors.dsn, spec, errors.spec_path, errors.client)
    # Nothing is noise now: 6 errors with a message in the range, 3 the day before.
    assert run_panel(tuned, "exceptions", "Total errors") == [(6, 3, 100.0)]
    assert run_panel(tuned, "exceptions", "Category share") == [("Other / uncategorized", 83.33), ("Rate limits", 16.67)]
    assert [r[0] for r in run_panel(tuned, "exceptions", "Top messages", category=["Rate limits"])] == ["Rate limits"]


@pytest.mark.clickhouse
def test_the_cache_panel_draws_writes_above_zero_and_reads_below_as_cvat_does_since_2_66(store):
    """CVAT 2.65 logs a chunk read from the cache (`read:cache_item`) and its 2.66 Monitoring
    panel draws reads as negative series beside the writes (its stock monitoring.json)."""
    at = NOW - timedelta(hours=1)
    rows = [{"scope": scope, "source": "server", "timestamp": at.strftime("%Y-%m-%d %H:%M:%S.000"),
             "payload": json.dumps({"queue": "chunks", "cache_item": {"size": size}})}
            for scope, size in (("create:cache_item", 2 * 1048576), ("read:cache_item", 1048576),
                                ("read:cache_item", 1048576), ("update:task", 5 * 1048576))]
    insert_json_rows(store.client, store.database, "".join(json.dumps(r) + "\n" for r in rows).encode())
    [panel] = [p for p in grafana.load("monitoring", store.spec)["panels"] if p["title"].startswith("Cache throughput")]
    got = {queue: mb for _, queue, mb in store.client.query(expand(panel["sql"], FROM, TO, interval_s=60)).result_rows}
    assert got == {"write:chunks": round(2 / 60, 3), "read:chunks": -round(2 / 60, 3)}
