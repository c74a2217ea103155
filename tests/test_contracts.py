"""The contracts between the services of the Docker stack, checked on the rendered files
(cvat_analytics_generator.contracts): each check holds on the default render and names the
file and the broken side when a render breaks it."""
from __future__ import annotations

import re

import pytest
import yaml

from cvat_analytics_generator import contracts
from cvat_analytics_generator.render import render_all
from cvat_analytics_generator.spec import load_spec
from cvat_analytics_generator.yaml_load import safe_load


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return render_all(load_spec())


@pytest.fixture(scope="module")
def users(files) -> contracts.ClickHouseUsers:
    return contracts.ClickHouseUsers.from_files(files)


def edited(files: dict[str, str], rel: str, old: str, new: str) -> dict[str, str]:
    assert old in files[rel], (rel, old)
    return {**files, rel: files[rel].replace(old, new)}


DATASOURCE = "grafana/provisioning/datasources/clickhouse.yaml"
USERS = "clickhouse/users.d/cvat-users.xml"


def test_grafanas_query_timeout_plus_the_drivers_slack_stays_within_the_dashboards_constraint(files, users):
    assert contracts.grafana_timeout_problems(files, users) == []
    ds = safe_load(files[DATASOURCE])["datasources"][0]
    limit = int(users.profile(ds["jsonData"]["username"]).findtext("constraints/max_execution_time/max"))
    assert int(ds["jsonData"]["queryTimeout"]) + contracts.GRAFANA_DRIVER_SLACK_S <= limit
    # One second more and the driver's max_execution_time is refused.
    too_long = edited(files, DATASOURCE, f'queryTimeout: "{ds["jsonData"]["queryTimeout"]}"',
                      f'queryTimeout: "{limit - contracts.GRAFANA_DRIVER_SLACK_S + 1}"')
    [problem] = contracts.grafana_timeout_problems(too_long, users)
    assert problem.startswith(DATASOURCE) and f"max_execution_time={limit + 1}" in problem


def test_an_empty_query_timeout_is_the_plugins_default_of_60_seconds(files, users):
    ds = safe_load(files[DATASOURCE])["datasources"][0]
    empty = edited(files, DATASOURCE, f'queryTimeout: "{ds["jsonData"]["queryTimeout"]}"', 'queryTimeout: ""')
    problems = contracts.grafana_timeout_problems(empty, users)
    limit = int(users.profile(ds["jsonData"]["username"]).findtext("constraints/max_execution_time/max"))
    assert bool(problems) == (60 + contracts.GRAFANA_DRIVER_SLACK_S > limit)


def test_a_readonly_profile_must_let_the_driver_change_max_execution_time(files):
    broken = edited(files, USERS, "<changeable_in_readonly/>", "")
    users = contracts.ClickHouseUsers.from_files(broken)
    assert any("changeable_in_readonly" in p for p in contracts.grafana_timeout_problems(broken, users))


def test_vectors_insert_is_granted_and_clickhouse_gives_up_before_vectors_request_timeout(files, users):
    assert contracts.vector_problems(files, users) == []
    sink = safe_load(files["vector/vector.yaml"])["sinks"]["clickhouse"]
    profile = users.profile(sink["auth"]["user"])
    assert 0 < int(profile.findtext("max_execution_time")) < sink["request"]["timeout_secs"]
    other_table = edited(files, "vector/vector.yaml", 'table: "events"', 'table: "working_time_totals"')
    [problem] = contracts.vector_problems(other_table, users)
    assert "INSERT INTO cvat.working_time_totals" in problem and "cvat_ingest" in problem
    unbounded = edited(files, USERS, f"<max_execution_time>{profile.findtext('max_execution_time')}</max_execution_time>", "")
    problems = contracts.vector_problems(unbounded, contracts.ClickHouseUsers.from_files(unbounded))
    assert len(problems) == 4 and all("unlimited" in p for p in problems)  # two per ClickHouse sink (events, vector_metrics)
    # The refresh's commit margin: an INSERT stopped before it ends is counted by the next run.
    short_margin = edited(files, contracts.REFRESH_VIEW, "logged - toIntervalSecond(60), run_until) AS run_since",
                          "logged - toIntervalSecond(30), run_until) AS run_since")
    problems = contracts.vector_problems(short_margin, users)  # one per ClickHouse sink
    assert len(problems) == 2 and all("inserted up to 30 s before its last run" in p and "cvat_ingest" in p for p in problems)


@pytest.mark.parametrize("margin, limit", [(10, 5), (30, 25), (600, 55)])
def test_a_shorter_commit_margin_shortens_the_ingest_users_limit_with_it(tmp_path, margin, limit):
    """working_time.commit_margin_s: the refresh takes that margin again, and Vector's ClickHouse
    user gives up on an INSERT 5 s before it (never past Vector's own 60 s request timeout)."""
    from tests.conftest import write_spec

    _, path = write_spec(tmp_path, **{"working_time.commit_margin_s": margin})
    files = render_all(load_spec(path))
    users = contracts.ClickHouseUsers.from_files(files)
    assert contracts.vector_problems(files, users) == []
    assert f"logged - toIntervalSecond({margin}), run_until) AS run_since" in files[contracts.REFRESH_VIEW]
    user = safe_load(files["vector/vector.yaml"])["sinks"]["clickhouse"]["auth"]["user"]
    assert int(users.profile(user).findtext("max_execution_time")) == limit


ALERTING = "grafana/provisioning/alerting/cvat.yaml"


def without_rule(files: dict[str, str], uid: str) -> dict[str, str]:
    rules = safe_load(files[ALERTING])
    for group in rules["groups"]:
        group["rules"] = [r for r in group["rules"] if r["uid"] != uid]
    return {**files, ALERTING: yaml.safe_dump(rules)}


def test_a_batch_vector_drops_fires_an_alert_in_both_renders(files):
    """Vector 0.54 drops a batch ClickHouse answers with 403 or 404 (contracts.py cites where):
    its metrics count the drop, one rule fires on the count and, since the metrics log in as the
    events do (a refused password stops both), another on the metrics falling silent."""
    assert contracts.vector_drop_problems(files) == []
    silent = contracts.vector_drop_problems(without_rule(files, "cvat-analytics-vector-silent"))
    assert [p.split(":")[0] for p in silent] == [contracts.VECTOR, contracts.VECTOR_CVAT]
    assert all("403" in p and "cvat.vector_metrics" in p for p in silent)
    uncounted = contracts.vector_drop_problems(without_rule(files, "cvat-analytics-events-lost"))
    assert len(uncounted) == 2 and all("component_discarded_events_total" in p for p in uncounted)
    # Metrics written with a login of their own keep coming when the events' password is
    # refused: the drop count then shows it, and no silence rule is needed.
    config = safe_load(files[contracts.VECTOR])
    config["sinks"]["clickhouse_metrics"]["auth"]["user"] = "cvat_metrics"
    own_login = {**files, contracts.VECTOR: yaml.safe_dump(config)}
    assert contracts.vector_drop_problems(without_rule(own_login, "cvat-analytics-vector-silent")) == [
        p for p in silent if p.startswith(contracts.VECTOR_CVAT)]
    # No metrics at all: nothing would show the loss.
    del config["sinks"]["clickhouse_metrics"]
    [blind] = contracts.vector_drop_problems({**files, contracts.VECTOR: yaml.safe_dump(config)})
    assert blind.startswith(contracts.VECTOR) and "nothing would show the loss" in blind


@pytest.mark.clickhouse
def test_every_dashboard_panel_and_variable_reads_only_tables_granted_to_the_dashboards_user(files, users):
    queries = contracts.dashboard_queries(files)
    assert len(queries) > 30 and any(what.startswith("variable") for _, what, _ in queries)
    assert contracts.dashboard_grant_problems(files, users) == []
    # Granted only the events table, the panels on the working-time and productivity state are refused, by name.
    narrowed = edited(files, USERS, "GRANT SELECT ON `cvat`.*", "GRANT SELECT ON `cvat`.`events`")
    problems = contracts.dashboard_grant_problems(narrowed, contracts.ClickHouseUsers.from_files(narrowed))
    assert problems and all(re.search(r"cvat\.(working_time_|vector_metrics|productivity_)", p) for p in problems)
    assert any(p.startswith("grafana/dashboards/management.json: panel") for p in problems)


@pytest.mark.clickhouse
def test_the_tables_a_query_reads_come_from_clickhouses_parser():
    sql = ("WITH recent AS (SELECT * FROM `cvat`.events WHERE $__timeFilter(timestamp)) "
           "SELECT * FROM recent JOIN cvat.working_time_totals AS w USING user_id "
           "WHERE $__conditionalAll(user_id IN (${users}), $users) AND job_id IN (SELECT job_id FROM other.jobs)")
    [read] = contracts.tables_read([sql])
    assert set(read["tables"]) == {"cvat.events", "recent", "cvat.working_time_totals", "other.jobs"}
    [broken] = contracts.tables_read(["SELECT FROM WHERE"])
    assert "error" in broken


def test_every_healthcheck_command_exists_in_the_image_it_runs_in(files):
    assert contracts.healthcheck_problems(files) == []
    broken = edited(files, "docker-compose.yml", '["CMD", "wget", "--quiet", "--tries=1", "-O", "/dev/null", "http://127.0.0.1:8686/health"]',
                    '["CMD", "curl", "-fsS", "http://127.0.0.1:8686/health"]')
    [problem] = contracts.healthcheck_problems(broken)
    assert "services.vector" in problem and "'curl'" in problem and "alpine" in problem


def test_clickhouse_is_healthy_only_once_the_real_server_listens(files):
    """The init-phase server listens on 127.0.0.1 only: a loopback probe passes too early."""
    assert contracts.clickhouse_health_problems(files) == []
    test = safe_load(files["docker-compose.yml"])["services"]["clickhouse"]["healthcheck"]["test"]
    url = next(part for part in test if part.startswith("http"))
    assert not re.match(r"http://(127\.|localhost|\[::1\])", url)
    loopback = edited(files, "docker-compose.yml", url, "http://127.0.0.1:8123/ping")
    [problem] = contracts.clickhouse_health_problems(loopback)
    assert "services.clickhouse" in problem and "init-phase" in problem


def test_every_system_log_of_the_pinned_clickhouse_has_a_ttl_and_none_is_switched_on(files):
    assert contracts.system_log_problems(files) == []
    config = "clickhouse/config.d/cvat.xml"
    switched_on = edited(files, config, "</clickhouse>", "<session_log><ttl>event_date + INTERVAL 1 DAY</ttl></session_log></clickhouse>")
    assert contracts.system_log_problems(switched_on) == [f"{config}: <session_log> switches on system.session_log, which the image leaves off"]
    unknown = edited(files, config, "</clickhouse>", "<latency_log><ttl>event_date + INTERVAL 1 DAY</ttl></latency_log></clickhouse>")
    assert contracts.system_log_problems(unknown) == [f"{config}: <latency_log> is not a system log of the pinned ClickHouse"]
    without = {**files, config: re.sub(r"<iceberg_metadata_log>.*?</iceberg_metadata_log>", "", files[config], flags=re.S)}
    problems = contracts.system_log_problems(without)
    assert problems == ["clickhouse/config.d/: system.iceberg_metadata_log (on in the image) has no TTL: it grows for ever"]


@pytest.mark.clickhouse
def test_the_system_log_list_is_the_engines_own(chdb_dsn):
    """Every name the check knows is a system log of ClickHouse 26.9 (chdb 4.4), and the
    ones it refuses (latency_log, instrumentation_trace_log) are not."""
    import clickhouse_connect

    client = clickhouse_connect.get_client(dsn=chdb_dsn)
    assert client.command("SELECT version()").startswith("26.9.")
    for name in contracts.CLICKHOUSE_SYSTEM_LOGS["enabled"] + contracts.CLICKHOUSE_SYSTEM_LOGS["off"]:
        client.command(f"SYSTEM FLUSH LOGS {name}")  # raises "Log name ... does not exist" otherwise
    for name in ("latency_log", "instrumentation_trace_log"):
        with pytest.raises(Exception, match="does not exist"):
            client.command(f"SYSTEM FLUSH LOGS {name}")


def test_grants_are_read_as_clickhouse_reads_them(files):
    users = contracts.ClickHouseUsers.from_files(edited(
        files, USERS, "GRANT SELECT ON `cvat`.*", "GRANT SELECT(user_id, scope), SHOW TABLES ON `cvat`.`events`"))
    assert users.may("cvat_ingest", "INSERT", "cvat", "events")
    assert not users.may("cvat_ingest", "INSERT", "cvat", "working_time_totals")
    # A column-level grant is not the whole table.
    assert not users.may("cvat_dashboards", "SELECT", "cvat", "events")
    assert users.may("cvat_dashboards", "SHOW TABLES", "cvat", "events")
    unreadable = edited(files, USERS, "GRANT SELECT ON `cvat`.*", "GRANT SELECT ON cluster")
    with pytest.raises(ValueError, match="cannot read"):
        contracts.ClickHouseUsers.from_files(unreadable).grants("cvat_dashboards")


# --- the same contracts on the CVAT override (cvat-compose.override.yml) ------------------------

OVERRIDE = "cvat-compose.override.yml"


def test_check_applies_the_loopback_healthcheck_contract_to_the_cvat_override_too(files):
    """The override's ClickHouse meets the same init-phase server on a new volume."""
    no_dashboards = {rel: text for rel, text in files.items() if not rel.startswith(contracts.DASHBOARDS)}
    assert contracts.contract_problems(no_dashboards) == []
    loopback = edited(no_dashboards, OVERRIDE, '"http://clickhouse:8123/ping"]', '"http://127.0.0.1:8123/ping"]')
    [problem] = contracts.contract_problems(loopback)
    assert problem.startswith(f"{OVERRIDE}: services.cvat_clickhouse") and "init-phase" in problem


def test_the_overrides_healthchecks_and_entrypoints_run_commands_their_images_have(files, users):
    assert contracts.cvat_override_problems(files, users) == []
    curl = edited(files, OVERRIDE, '"wget", "--quiet", "--tries=1", "-O", "/dev/null", "http://127.0.0.1:8686/health"',
                  '"curl", "-fsS", "http://127.0.0.1:8686/health"')
    [problem] = contracts.cvat_override_problems(curl, users)
    assert problem.startswith(f"{OVERRIDE}: services.cvat_vector") and "'curl'" in problem
    setfacl = edited(files, OVERRIDE, 'entrypoint: ["chown", "-R"', 'entrypoint: ["setfacl", "-R"')
    [problem] = contracts.cvat_override_problems(setfacl, users)
    assert "services.cvat_analytics_vector_volumes" in problem and "'setfacl'" in problem


def test_the_overrides_vector_and_cvats_services_log_in_with_what_their_grants_allow(files, users):
    other_table = edited(files, contracts.VECTOR_CVAT, 'table: "events"', 'table: "working_time_totals"')
    [problem] = contracts.cvat_override_problems(other_table, users)
    assert problem.startswith(contracts.VECTOR_CVAT) and "INSERT INTO cvat.working_time_totals" in problem
    unknown = edited(files, OVERRIDE, 'CLICKHOUSE_USER: "cvat_server"', 'CLICKHOUSE_USER: "user"')
    problems = contracts.cvat_override_problems(unknown, users)
    assert problems and all("'user', a user no users.d file defines" in p for p in problems)
    no_read = edited(files, "clickhouse/users.d/cvat-server-user.xml", "GRANT SELECT ON `cvat`.*", "GRANT SELECT ON `cvat`.`imports`")
    problems = contracts.cvat_override_problems(no_read, contracts.ClickHouseUsers.from_files(no_read))
    assert problems and all("reads cvat.events as cvat_server" in p for p in problems)
    wrong_secret = edited(files, OVERRIDE, "CLICKHOUSE_PASSWORD: ${CLICKHOUSE_CVAT_SERVER_PASSWORD:",
                          "CLICKHOUSE_PASSWORD: ${CLICKHOUSE_ADMIN_PASSWORD:")
    problems = contracts.cvat_override_problems(wrong_secret, users)
    assert problems and all("CLICKHOUSE_PASSWORD is not what ClickHouse gives cvat_server" in p for p in problems)
