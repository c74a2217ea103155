"""The rendered Grafana dashboards, checked for what Grafana relies on: CVAT's uids and
variable names, unique panel ids, a 24-column grid without overlaps, the provisioned
datasource, every variable a panel uses defined, the 7-day default range, the home dashboard."""
from __future__ import annotations

import json
import re

import pytest

from cvat_analytics_generator import grafana
from cvat_analytics_generator.render import render_all
from cvat_analytics_generator.spec import DEFAULT_SPEC, load_spec
from cvat_analytics_generator.yaml_load import safe_load
from tests.conftest import write_spec

SPEC = load_spec(DEFAULT_SPEC)
FILES = render_all(SPEC)
DASHBOARDS = {name: json.loads(FILES[f"grafana/dashboards/{name}.json"]) for name in SPEC["dashboards"]}
# CVAT's uids (its all_events.json, management.json, monitoring.json and its draft
# users_exceptions.json): bookmarks into CVAT's Grafana keep working.
CVAT_UIDS = {"all_events": "EIGSTDAVz", "management": "w0if6WAVz", "monitoring": "WvDvWK04k",
             "exceptions": "user-exceptions", "productivity": "cvat-productivity"}  # the last is ours
# CVAT's variable names, per dashboard (ours may add, never rename).
CVAT_VARIABLES = {
    "all_events": {"scopes", "sources", "users", "usernames", "projects", "tasks", "jobs", "organizations"},
    "management": {"users", "usernames", "projects", "tasks", "jobs"},
    "monitoring": {"sources", "users", "usernames", "projects", "tasks", "jobs", "organizations", "errors"},
    "exceptions": {"sources", "category"},
    "productivity": {"users", "usernames", "projects", "tasks", "jobs", "organizations"},  # as All events'
}
BUILTIN = {"__interval", "__interval_ms", "__from", "__to"}


def test_every_dashboard_of_the_spec_is_rendered_with_cvats_uid_and_variable_names():
    assert set(DASHBOARDS) == set(CVAT_UIDS)
    for name, d in DASHBOARDS.items():
        assert d["uid"] == CVAT_UIDS[name]
        assert CVAT_VARIABLES[name] <= {v["name"] for v in d["templating"]["list"]}, name
    assert SPEC["grafana"]["datasource_uid"] == "PDEE91DDB90597936"  # CVAT's datasource
    assert SPEC["grafana"]["datasource_name"] == "ClickHouse"


def test_only_listed_dashboards_are_rendered_with_the_uid_the_spec_gives(tmp_path):
    _, path = write_spec(tmp_path, dashboards={"monitoring": "ops-monitoring"})
    files = render_all(load_spec(path))
    assert [p for p in files if p.startswith("grafana/dashboards/")] == ["grafana/dashboards/monitoring.json"]
    assert json.loads(files["grafana/dashboards/monitoring.json"])["uid"] == "ops-monitoring"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_range_refresh_and_schema(name):
    d = DASHBOARDS[name]
    assert d["time"] == {"from": "now-7d", "to": "now"}
    assert d["refresh"] == "" and d["schemaVersion"] >= 39 and d["title"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panel_ids_unique_and_grid_positions_do_not_overlap(name):
    panels = DASHBOARDS[name]["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    titles = [p["title"] for p in panels]
    assert len(titles) == len(set(titles))  # a panel is named by its title (benchmark, README)
    taken: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0 and g["y"] >= 0, p["title"]
        for cx in range(g["x"], g["x"] + g["w"]):
            for cy in range(g["y"], g["y"] + g["h"]):
                assert (cx, cy) not in taken, f"{p['title']} overlaps {taken[(cx, cy)]}"
                taken[(cx, cy)] = p["title"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_datasource_is_the_provisioned_one_everywhere(name):
    provisioned = safe_load(FILES["grafana/provisioning/datasources/clickhouse.yaml"])["datasources"][0]
    expected = {"type": provisioned["type"], "uid": provisioned["uid"]}
    assert provisioned["uid"] == SPEC["grafana"]["datasource_uid"]
    d = DASHBOARDS[name]
    for v in d["templating"]["list"]:
        if v["type"] != "constant":  # the ad hoc filters' key query is a constant, not a query
            assert v["datasource"] == expected
    for p in d["panels"]:
        assert p["datasource"] == expected
        assert [t["datasource"] for t in p["targets"]] == [expected]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_variable_used_is_defined_and_every_defined_one_used(name):
    d = DASHBOARDS[name]
    queries = [v for v in d["templating"]["list"] if v["type"] == "query"]
    defined = {v["name"] for v in queries}
    used = set()
    texts = [p["targets"][0]["rawSql"] for p in d["panels"]] + [v["query"] for v in queries]
    for sql in texts:
        for m in re.finditer(r"\$\{(\w+)\}|\$(\w+)|\[\[(\w+)\]\]", sql):
            var = m.group(1) or m.group(2) or m.group(3)
            if not var.startswith("__"):
                used.add(var)
    assert used <= defined | BUILTIN, used - defined
    assert defined <= used, f"defined but never used: {defined - used}"
    for v in queries:
        assert v["multi"] and v["includeAll"] and v["refresh"] == 2
    assert [v["type"] for v in d["templating"]["list"] if v["type"] != "query"] == ["constant", "adhoc"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panels_are_known_types_with_sql_that_honours_the_time_range(name):
    for p in DASHBOARDS[name]["panels"]:
        assert p["type"] in grafana.PANEL_TYPES
        sql = p["targets"][0]["rawSql"]
        # The range, the range and the period before it (exceptions), or now (Active users (now)).
        reads_a_range = "$__timeFilter(" in sql or "$__fromTime" in sql or "now() - INTERVAL 15 MINUTE" in sql
        assert reads_a_range, f"{p['title']} reads without a time filter"
        assert f'"{SPEC["clickhouse"]["database"]}".' in sql  # the spec's database, not a hard-coded one
        assert "{{" not in sql and "}}" not in sql
        assert p["targets"][0]["format"] == (0 if p["type"] == "timeseries" else 1)


def test_working_time_reads_the_totals_and_rounds_only_for_display():
    panels = {p["title"]: p for p in DASHBOARDS["management"]["panels"]}
    table = panels["Working time"]
    sql = table["targets"][0]["rawSql"]
    assert "working_time_totals" in sql and "round(" not in sql  # the footer sums unrounded hours
    assert table["options"]["footer"]["show"]
    assert {o["matcher"]["options"]: o["properties"] for o in table["fieldConfig"]["overrides"]
            if o["properties"][0]["id"] == "decimals"} == {
        "working_time_h": [{"id": "decimals", "value": 2}], "cvat_reported_h": [{"id": "decimals", "value": 2}]}


def test_cells_link_to_the_same_dashboard_filtered_to_their_value():
    """Data links, as the embedded pages' cell links: the clicked value set, the other filters
    and the time range kept."""
    table = next(p for p in DASHBOARDS["management"]["panels"] if p["title"] == "Working time")
    links = {o["matcher"]["options"]: o["properties"][0]["value"][0]["url"] for o in table["fieldConfig"]["overrides"]
             if o["properties"][0]["id"] == "links"}
    assert set(links) == {"user_id", "user_name", "project_id", "task_id", "job_id"}
    assert links["user_id"] == ("/d/w0if6WAVz?${__url_time_range}&${usernames:queryparam}&${projects:queryparam}"
                                "&${tasks:queryparam}&${jobs:queryparam}&var-users=${__value.raw}")
    exceptions = next(p for p in DASHBOARDS["monitoring"]["panels"] if p["title"] == "Exceptions")
    linked = {o["matcher"]["options"] for o in exceptions["fieldConfig"]["overrides"]}
    assert {"user_id", "user_name", "source", "project_id", "task_id", "job_id", "error"} <= linked
    assert "stack" not in linked and "payload" not in linked


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_refresh_choices_and_ad_hoc_filters(name):
    d = DASHBOARDS[name]
    assert d["refresh"] == "" and d["timepicker"]["refresh_intervals"] == ["30s", "1m", "5m"]
    constant, adhoc = d["templating"]["list"][-2:]
    assert constant == {"name": "clickhouse_adhoc_query", "type": "constant", "hide": 2,
                        "query": f'SELECT DISTINCT $__adhoc_column FROM "{SPEC["clickhouse"]["database"]}".events '
                                 f"WHERE $__timeFilter(timestamp) LIMIT {grafana.ADHOC_VALUES}"}
    assert adhoc["type"] == "adhoc" and adhoc["datasource"]["uid"] == SPEC["grafana"]["datasource_uid"]


def test_grafana_home_dashboard_and_sub_path_match_the_files():
    compose = safe_load(FILES["docker-compose.yml"])
    env = compose["services"]["grafana"]["environment"]
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    provider = safe_load(FILES["grafana/provisioning/dashboards/cvat.yaml"])["providers"][0]
    assert home == provider["options"]["path"] + "/all_events.json"
    assert "grafana/dashboards/all_events.json" in FILES
    assert env["GF_SERVER_ROOT_URL"] == SPEC["grafana"]["root_url"] and env["GF_SERVER_SERVE_FROM_SUB_PATH"] == "true"
    mounts = compose["services"]["grafana"]["volumes"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in mounts


def test_dashboard_json_is_deterministic():
    assert render_all(SPEC)["grafana/dashboards/management.json"] == FILES["grafana/dashboards/management.json"]


@pytest.mark.parametrize("changes, message", [
    ({"exceptions.categories": [{"name": "it's", "match": ["x"]}]}, "exceptions.categories.0.name"),
    ({"exceptions.categories": [{"name": "A", "match": []}]}, "exceptions.categories.0.match"),
    ({"exceptions.noise": ["two\nlines"]}, "exceptions.noise.0"),
    ({"dashboards": {"nope": "x"}}, "dashboards.nope"),
    ({"dashboards": {"monitoring": "has space"}}, "dashboards.monitoring"),
])
def test_bad_exception_rules_and_dashboard_uids_are_named(tmp_path, changes, message):
    from cvat_analytics_generator.spec import SpecError

    _, path = write_spec(tmp_path, **changes)
    with pytest.raises(SpecError, match=message.replace(".", r"\.")):
        load_spec(path)


def test_exception_patterns_are_sql_literals_whatever_they_hold(tmp_path):
    _, path = write_spec(tmp_path, **{"exceptions.noise": ["it's \\ odd"],
                                      "exceptions.categories": [{"name": "Quotes", "match": ["say 'hi'"]}]})
    sql = grafana.load("exceptions", load_spec(path))["panels"][0]["sql"]
    assert "['it\\'s \\\\ odd']" in sql and "['say \\'hi\\'']), 'Quotes'" in sql
