"""The alert conditions (#26 item 5): their SQL made true and false on chdb, the Grafana
rule file read as Grafana's provisioning reads it, `check` over their SQL, and serve's
/health and /metrics over a real socket."""
from __future__ import annotations

import copy
import datetime as dt
import http.client
import json
from pathlib import Path

import pytest
import yaml

from cvat_analytics_generator.alerts import PROVISIONING, alerting_problems, conditions
from cvat_analytics_generator.contracts import contract_problems
from cvat_analytics_generator.render import render_all
from cvat_analytics_generator.spec import load_spec
from cvat_analytics_generator.validate import parse_yaml, sql_problems
from cvat_analytics_generator.sql import string_literal
from cvat_analytics_generator.yaml_load import safe_load

REPO = Path(__file__).resolve().parent.parent
SPEC = load_spec(REPO / "analytics.yaml")


def ago(minutes: float) -> str:
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M:%S.%f")


def add_event(store, inserted_minutes_ago: float, scope: str = "click:element", source: str = "client",
              message: str = "", timestamp_minutes_ago: float | None = None) -> None:
    """One event whose insert time (inserted_at, normally the INSERT's) is set."""
    ts = ago(inserted_minutes_ago if timestamp_minutes_ago is None else timestamp_minutes_ago)
    store.client.command(
        f"INSERT INTO `{store.database}`.events (scope, timestamp, source, user_id, payload, inserted_at) "
        f"SETTINGS insert_allow_materialized_columns = 1 VALUES "
        f"('{scope}', '{ts[:23]}', '{source}', 1, {string_literal(json.dumps({'message': message}))}, '{ago(inserted_minutes_ago)}')")


def readings(store, spec=None) -> dict[str, tuple[float, bool]]:
    from cvat_analytics.service.alerts import Alerts
    return {r.condition.name: (r.value, r.failing) for r in Alerts(store.client, spec or store.spec).read()}


def failing(store, spec=None) -> set[str]:
    return {name for name, (_, fails) in readings(store, spec).items() if fails}


def stop_the_refresh(store) -> None:
    """As refreshes that keep failing: they write no more log rows (none is left)."""
    for view in ("productivity_refresh", "working_time_refresh"):
        store.client.command(f"SYSTEM STOP VIEW `{store.database}`.{view}")
        store.client.command(f"TRUNCATE TABLE `{store.database}`.{view}_log")


@pytest.mark.refresh
@pytest.mark.clickhouse
def test_a_fresh_store_fails_no_condition(store):
    assert readings(store) == {"events_lost": (0, False), "vector_silent": (0, False), "ingest_stalled": (0, False),
                               "working_time_stale": (0, False), "productivity_stale": (0, False),
                               "exception_spike": (0, False)}


@pytest.mark.clickhouse
def test_events_lost_counts_refused_and_dropped_events_in_the_window(store):
    db = store.database

    def sample(minutes, name, component, value, intentional="false"):
        store.client.command(
            f"INSERT INTO `{db}`.vector_metrics (timestamp, host, name, component_id, tags, value) VALUES "
            f"('{ago(minutes)[:23]}', 'v', '{name}', '{component}', map('intentional', '{intentional}'), {value})")

    sample(40, "component_received_events_total", "dead_letter_events", 5)  # before the window: not counted
    sample(30, "component_discarded_events_total", "remap", 9, intentional="true")  # a filter's, on purpose
    sample(10, "component_discarded_events_total", "remap", 12, intentional="true")
    assert readings(store)["events_lost"] == (0, False)
    sample(10, "component_received_events_total", "dead_letter_events", 5)  # no increase
    assert readings(store)["events_lost"] == (0, False)
    sample(5, "component_received_events_total", "dead_letter_events", 7)  # 2 refused
    sample(4, "component_discarded_events_total", "clickhouse", 3)  # 3 dropped (a new series: from 0)
    assert readings(store)["events_lost"] == (5, True)
    spec = copy.deepcopy(store.spec)
    spec["alerts"]["events_lost"]["max_events"] = 5
    assert "events_lost" not in failing(store, spec)


@pytest.mark.clickhouse
def test_vector_silent_fires_when_vectors_metrics_stop_arriving(store):
    """A password ClickHouse refuses stops Vector's events and its metrics together (the same
    login): Vector 0.54 drops the events' batches, and this is the condition that sees it."""
    def sample(minutes):
        store.client.command(
            f"INSERT INTO `{store.database}`.vector_metrics (timestamp, host, name, component_id, tags, value) "
            f"VALUES ('{ago(minutes)[:23]}', 'v', 'buffer_events', 'clickhouse', map(), 0)")

    assert readings(store)["vector_silent"] == (0, False)  # no Vector ever (the embedded service)
    sample(12)
    value, fails = readings(store)["vector_silent"]
    assert fails and 12 * 60 - 5 <= value <= 12 * 60 + 60  # quiet_minutes is 5
    sample(1)
    value, fails = readings(store)["vector_silent"]
    assert not fails and value <= 2 * 60
    spec = copy.deepcopy(store.spec)
    spec["alerts"]["vector_silent"]["quiet_minutes"] = 20
    sample(0)
    store.client.command(f"ALTER TABLE `{store.database}`.vector_metrics DELETE WHERE timestamp > now64(3) - "
                         "toIntervalMinute(11) SETTINGS mutations_sync = 1")
    assert "vector_silent" in failing(store) and "vector_silent" not in failing(store, spec)


def test_a_vector_silence_shorter_than_two_scrapes_is_refused_naming_both(tmp_path):
    from cvat_analytics_generator.spec import SpecError
    from tests.conftest import write_spec

    _, path = write_spec(tmp_path, **{"vector.metrics.scrape_interval_secs": 120, "alerts.vector_silent.quiet_minutes": 4})
    with pytest.raises(SpecError, match=r"alerts.vector_silent.quiet_minutes.*scrape_interval_secs \(120 s\)"):
        load_spec(path)


@pytest.mark.clickhouse
def test_ingest_stalled_fires_only_after_quiet_minutes_following_events(store):
    add_event(store, 70)  # more than twice quiet_minutes (30) ago: an idle store, not a stall
    assert readings(store)["ingest_stalled"] == (0, False)
    add_event(store, 40)
    value, fails = readings(store)["ingest_stalled"]
    assert fails and 40 * 60 - 5 <= value <= 40 * 60 + 60
    add_event(store, 0)
    assert readings(store)["ingest_stalled"][1] is False


@pytest.mark.clickhouse
def test_ingest_stalled_needs_min_events_before_the_quiet_minutes(store):
    spec = copy.deepcopy(store.spec)
    spec["alerts"]["ingest_stalled"]["min_events_before"] = 3
    add_event(store, 50)
    add_event(store, 40)
    assert "ingest_stalled" not in failing(store, spec)  # a trickle of 2
    add_event(store, 45)
    assert "ingest_stalled" in failing(store, spec)


# Each refresh's log, and what a row of it holds beside refreshed_at and watermark.
STALE_LOGS = {"working_time_stale": ("working_time_refresh_log", ", rule, full, users", ", 'r', 0, 0"),
              "productivity_stale": ("productivity_refresh_log", "", "")}


@pytest.mark.refresh
@pytest.mark.clickhouse
@pytest.mark.parametrize("condition", sorted(STALE_LOGS))
def test_stale_measures_the_oldest_event_after_the_refresh_watermark(store, condition):
    table, columns, values = STALE_LOGS[condition]
    stop_the_refresh(store)
    log = f"INSERT INTO `{store.database}`.{table} (refreshed_at, watermark{columns}) VALUES "
    store.client.command(log + f"(now64(6), '{ago(30)}'{values})")
    add_event(store, 35)  # before the watermark: counted
    add_event(store, 5)
    value, fails = readings(store)[condition]
    assert not fails and 5 * 60 - 5 <= value <= 5 * 60 + 60
    add_event(store, 20)  # inserted after the watermark, waiting 20 minutes > 15
    assert condition in failing(store)
    store.client.command(log + f"(now64(6), now64(6){values})")  # the refresh caught up
    assert readings(store)[condition] == (0, False)


@pytest.mark.clickhouse
def test_exception_spike_counts_recent_client_and_server_exceptions_without_noise(store):
    spec = copy.deepcopy(store.spec)
    spec["alerts"]["exception_spike"]["max_exceptions"] = 2
    add_event(store, 0, "send:exception", "client", "TypeError: x is undefined")
    add_event(store, 0, "send:exception", "server", "OperationalError")
    add_event(store, 0, "send:exception", "server", "PermissionDenied: no")  # noise (exceptions.noise)
    add_event(store, 0, "send:exception", "client", "old", timestamp_minutes_ago=20)  # before the window
    add_event(store, 0, "click:element", "client", "not an exception")
    assert readings(store, spec)["exception_spike"] == (2, False)
    add_event(store, 0, "send:exception", "client", "Network Error")
    assert readings(store, spec)["exception_spike"] == (3, True)


# --- the Grafana rule file ------------------------------------------------------------------

def rule_file() -> dict:
    return safe_load((REPO / "deploy" / PROVISIONING).read_text())


def test_the_rules_carry_the_sql_and_thresholds_serve_uses():
    by_name = {c.name: c for c in conditions(SPEC)}
    rules = rule_file()["groups"][0]["rules"]
    assert sorted(r["labels"]["condition"] for r in rules) == sorted(by_name)
    for rule in rules:
        c = by_name[rule["labels"]["condition"]]
        data = {d["refId"]: d for d in rule["data"]}
        assert data["A"]["model"]["rawSql"] == c.sql
        assert data["C"]["model"]["conditions"] == [{"evaluator": {"type": "gt", "params": [c.threshold]}}]
    assert render_all(SPEC)[PROVISIONING] == (REPO / "deploy" / PROVISIONING).read_text()


def test_the_rule_file_holds_to_grafanas_provisioning_structure_and_no_secret():
    files = render_all(SPEC)
    assert alerting_problems(files) == []
    doc = safe_load(files[PROVISIONING])
    assert set(doc) == {"apiVersion", "groups"}  # no contact point, policy or template: nothing secret
    datasource = safe_load(files["grafana/provisioning/datasources/clickhouse.yaml"])["datasources"][0]
    for rule in doc["groups"][0]["rules"]:
        assert rule["data"][0]["datasourceUid"] == datasource["uid"]


@pytest.mark.parametrize("break_it, named", [
    (lambda d, r: r.pop("uid"), "uid None"),
    (lambda d, r: r.update(condition="D"), "condition 'D'"),
    (lambda d, r: r["data"][0].update(datasourceUid="nope"), "no provisioned datasource"),
    (lambda d, r: r["data"][0]["model"].update(refId="X"), "model.refId"),
    (lambda d, r: r["data"][2]["model"].update(expression="Z"), "threshold reads 'Z'"),
    (lambda d, r: r["data"][1]["model"].update(reducer="avg"), "reducer 'avg'"),
    (lambda d, r: r.update(noDataState="Silent"), "noDataState"),
    (lambda d, r: d["groups"][0].update(interval="1 minute"), "interval"),
    (lambda d, r: d["groups"][0].update(folder=""), "no folder"),
    (lambda d, r: d.update(apiVersion=2), "apiVersion"),
])
def test_a_broken_rule_file_is_named_by_check(break_it, named):
    files = render_all(SPEC)
    doc = safe_load(files[PROVISIONING])
    break_it(doc, doc["groups"][0]["rules"][1])
    files[PROVISIONING] = yaml.safe_dump(doc)
    problems = contract_problems(files)
    assert any(p.startswith(PROVISIONING) and named in p for p in problems), problems


def with_alert_sql(files: dict, sql: str, rule: int = 0) -> dict:
    doc = safe_load(files[PROVISIONING])
    doc["groups"][0]["rules"][rule]["data"][0]["model"]["rawSql"] = sql
    return {**files, PROVISIONING: yaml.safe_dump(doc)}


def test_check_refuses_alert_sql_the_dashboards_user_may_not_read():
    problems = contract_problems(with_alert_sql(render_all(SPEC), "SELECT count() AS value FROM system.view_refreshes"))
    assert any("alert rule cvat-analytics-events-lost reads system.view_refreshes" in p for p in problems), problems


@pytest.mark.slow
def test_check_passes_alert_sql_through_the_gate_and_runs_it():
    """`check`'s SQL step (sql_problems: the engine, in a process of its own) over a tree whose
    first alert rule reads a file and whose second throws: the first is refused by the gate, the
    second fails as it runs, and nothing else in the tree has a problem. (It had passed only the
    .sql files and the dashboards.)"""
    files = with_alert_sql(render_all(SPEC), "SELECT count() AS value FROM file('/etc/passwd')")
    files = with_alert_sql(files, "SELECT throwIf(1) AS value", rule=1)
    problems = sql_problems(files)
    refused = f"{PROVISIONING}: alert rule cvat-analytics-events-lost is refused"
    failing = f"{PROVISIONING}: alert rule cvat-analytics-vector-silent does not execute on ClickHouse"
    assert any(p.startswith(refused) for p in problems) and any(p.startswith(failing) for p in problems), problems
    assert all(p.startswith((refused, failing)) for p in problems), problems


# --- serve ----------------------------------------------------------------------------------

def get(srv, path: str):
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=30)
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


@pytest.mark.refresh
@pytest.mark.clickhouse
def test_serve_answers_503_naming_the_failing_condition_and_a_gauge_per_condition(make_served, store):
    srv = make_served()
    assert get(srv, "/health")[0] == 200
    srv.routes.find("GET", "/health").handler.alerts.max_age_s = 0  # read anew on every call below
    stop_the_refresh(store)  # and say it counted up to now, so the event below is not waiting for it
    store.client.command(f"INSERT INTO `{store.database}`.working_time_refresh_log (refreshed_at, watermark, rule, "
                         "full, users) VALUES (now64(6), now64(6), 'r', 0, 0)")
    store.client.command(f"INSERT INTO `{store.database}`.productivity_refresh_log (refreshed_at, watermark) "
                         "VALUES (now64(6), now64(6))")
    add_event(store, 40)  # ingest stalled: the newest event arrived 40 minutes ago
    status, body = get(srv, "/health")
    answer = json.loads(body)
    assert status == 503 and answer["status"] == "alerting" and answer["failing"] == ["ingest_stalled"]
    assert answer["alerts"]["ingest_stalled"]["threshold"] == 1800
    status, page = get(srv, "/metrics")
    lines = page.decode().splitlines()
    assert status == 200
    for name in ("events_lost", "vector_silent", "ingest_stalled", "working_time_stale", "productivity_stale",
                 "exception_spike"):
        assert f'cvat_analytics_alert_failing{{condition="{name}"}} {1.0 if name == "ingest_stalled" else 0.0}' in lines
    assert 'cvat_analytics_alert_threshold{condition="ingest_stalled"} 1800.0' in lines
    add_event(store, 0)
    assert get(srv, "/health")[0] == 200


def test_a_staleness_limit_within_the_refresh_interval_is_refused_naming_both(tmp_path):
    from cvat_analytics_generator.spec import SpecError
    from tests.conftest import write_spec

    _, path = write_spec(tmp_path, **{"working_time.refresh_interval_s": 600,
                                      "alerts.working_time_stale.max_age_minutes": 15})
    with pytest.raises(SpecError, match=r"alerts.working_time_stale.max_age_minutes.*refresh_interval_s \(600 s\)"):
        load_spec(path)
    # the productivity state's staleness against its own interval (60 s by default: 15 minutes is fine)
    _, path = write_spec(tmp_path, **{"working_time.productivity_refresh_interval_s": 600,
                                      "alerts.productivity_stale.max_age_minutes": 15})
    with pytest.raises(SpecError, match=r"alerts.productivity_stale.max_age_minutes.*"
                                        r"working_time.productivity_refresh_interval_s \(600 s\)"):
        load_spec(path)
    _, path = write_spec(tmp_path, **{"working_time.productivity_refresh_interval_s": 420})
    assert load_spec(path)["working_time"]["productivity_refresh_interval_s"] == 420


def test_both_stacks_mount_the_rule_file_into_grafanas_provisioning():
    assert (REPO / "deploy" / PROVISIONING).is_file()
    for compose in ("docker-compose.yml", "cvat-compose.override.yml"):
        services = parse_yaml((REPO / "deploy" / compose).read_text())["services"]
        grafana = next(s for name, s in services.items() if "grafana" in name)
        assert any(v.endswith("/grafana/provisioning:/etc/grafana/provisioning:ro") for v in grafana["volumes"]), \
            (compose, grafana["volumes"])


def test_the_cluster_render_has_no_alert_rules(tmp_path):
    from tests.conftest import write_spec

    _, path = write_spec(tmp_path, **{"clickhouse.cluster.shards": 2})
    files = render_all(load_spec(path))
    assert PROVISIONING not in files and "clickhouse/queries/alerts.sql" not in files


@pytest.mark.clickhouse
def test_health_reuses_a_reading_younger_than_its_max_age(make_served, store):
    from cvat_analytics.service.health import READINGS_MAX_AGE_S

    srv = make_served()
    assert READINGS_MAX_AGE_S == 5.0
    assert get(srv, "/health")[0] == 200
    add_event(store, 40)
    assert get(srv, "/health")[0] == 200  # the reading of a moment ago
    srv.routes.find("GET", "/health").handler.alerts._last = None  # as if 5 s had passed
    assert get(srv, "/health")[0] == 503
