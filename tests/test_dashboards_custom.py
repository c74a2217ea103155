"""Custom dashboards as code (custom_dashboards_dir) and `cvat-analytics dashboards import`:
a user's definition is rendered for Grafana, checked on the engine by `check`, and a
dashboard saved from Grafana as JSON comes back as a definition the next render keeps."""
from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from cvat_analytics_generator import grafana
from cvat_analytics_generator.grafana_import import definition_from_json
from cvat_analytics_generator.render import render_all
from cvat_analytics_generator.spec import load_spec
from tests.conftest import REPO, write_spec

CLI = REPO / ".venv" / "bin" / "cvat-analytics"
DEPLOY = REPO / "deploy" / "grafana" / "dashboards"

ERRORS_BY_USER = textwrap.dedent("""\
    uid: errors-by-user
    title: Errors by user
    description: Exceptions per user.
    variables:
      - {name: users, label: User, kind: id, sql: "SELECT DISTINCT user_id FROM {{ db }}.events WHERE $__timeFilter(timestamp) AND user_id IS NOT NULL ORDER BY user_id"}
    filters:
      - $__conditionalAll(user_id IN (${users}), $users)
    panels:
      - id: 1
        title: Exceptions per user
        type: table
        gridPos: {x: 0, y: 0, w: 24, h: 8}
        sql: |
          SELECT user_id, count() AS exceptions FROM {{ db }}.events
          WHERE scope = 'send:exception' AND $__timeFilter(timestamp) AND {{ filters }}
          GROUP BY user_id ORDER BY exceptions DESC
    """)


def custom_spec(tmp_path, **definitions):
    folder = tmp_path / "mine"
    folder.mkdir(exist_ok=True)
    for name, text in definitions.items():
        (folder / f"{name}.yaml").write_text(text)
    _, path = write_spec(tmp_path, custom_dashboards_dir="mine")
    return path


def cli(*args, cwd):
    return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_a_custom_dashboard_is_rendered_beside_the_built_in_ones(tmp_path):
    with_fragments = ERRORS_BY_USER.replace("panels:", textwrap.dedent("""\
        fragments:
          bucket: "{{ bucket_s(900) }}"
          hours: "intDiv(toUnixTimestamp(timestamp), {{bucket}})"
        panels:"""), 1).replace("GROUP BY user_id", "GROUP BY user_id, {{ hours }}")
    spec = load_spec(custom_spec(tmp_path, errors_by_user=with_fragments))
    files = render_all(spec)
    model = json.loads(files["grafana/dashboards/errors_by_user.json"])
    assert model["uid"] == "errors-by-user" and model["title"] == "Errors by user"
    assert '"cvat".events' in model["panels"][0]["targets"][0]["rawSql"]
    assert "user_id IN (${users})" in model["panels"][0]["targets"][0]["rawSql"]
    assert "GROUP BY user_id, intDiv(toUnixTimestamp(timestamp), 900 * greatest(1, intDiv($__to - $__from" \
        in model["panels"][0]["targets"][0]["rawSql"]
    assert [d["uid"] for d in grafana.load_all(spec)][-1] == "errors-by-user"
    assert "grafana/dashboards/monitoring.json" in files  # the built-in ones stay


@pytest.mark.slow
def test_check_runs_every_custom_panel_on_the_engine(tmp_path):
    broken = ERRORS_BY_USER + textwrap.indent(textwrap.dedent("""\
        - id: 2
          title: Broken
          type: stat
          gridPos: {x: 0, y: 8, w: 6, h: 4}
          sql: SELECT count() FROM {{ db }}.events WHERE no_such_column = 1
        """), "  ")
    path = custom_spec(tmp_path, errors_by_user=broken)
    assert cli("render", "--spec", path, "--out", tmp_path / "deploy", cwd=tmp_path).returncode == 0
    bad = cli("check", "--spec", path, "--out", tmp_path / "deploy", cwd=tmp_path)
    assert bad.returncode == 1
    # the broken panel is the one problem: the dashboard's good panel, and every other, ran
    problems = [line for line in bad.stderr.splitlines() if ".json: " in line]
    assert len(problems) == 1 and "errors_by_user.json: panel 2 (Broken) does not execute on ClickHouse" in problems[0]
    assert "no_such_column" in problems[0] and "check failed: 1 problem(s)" in bad.stderr, bad.stderr


@pytest.mark.parametrize("change, message", [
    (("uid: errors-by-user", "uid: has space"), "uid: expected 1-40 letters"),
    (("type: table", "type: radar"), "panels.0.type: expected one of"),
    (("w: 24", "w: 30"), "panels.0.gridPos"),
    (("kind: id", "kind: number"), "variables.0.kind"),
    (("{{ filters }}", "{{ filters "), "Exceptions per user: sql"),
])
def test_a_bad_custom_definition_is_named_by_file_and_key(tmp_path, change, message):
    spec = load_spec(custom_spec(tmp_path, errors_by_user=ERRORS_BY_USER.replace(*change)))
    with pytest.raises(grafana.DefinitionError, match="errors_by_user.yaml: .*" + message.replace(".", r"\.")):
        grafana.load_all(spec)


def test_two_dashboards_with_one_uid_are_refused(tmp_path):
    spec = load_spec(custom_spec(tmp_path, a=ERRORS_BY_USER, b=ERRORS_BY_USER))
    with pytest.raises(grafana.DefinitionError, match="uid 'errors-by-user' is also a's"):
        grafana.load_all(spec)


@pytest.mark.parametrize("name", ["all_events", "management", "monitoring", "exceptions"])
def test_import_of_the_rendered_json_renders_the_same_json(tmp_path, name):
    """import -> render gives back the same dashboard: same queries, same everything."""
    path = custom_spec(tmp_path)
    run = cli("dashboards", "import", "--spec", path, DEPLOY / f"{name}.json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert f"replaces the built-in {name}" in run.stdout
    files = render_all(load_spec(path))
    assert files[f"grafana/dashboards/{name}.json"] == (DEPLOY / f"{name}.json").read_text()


def test_a_dashboard_edited_in_grafana_keeps_the_change_and_names_what_it_loses(tmp_path):
    model = json.loads((DEPLOY / "monitoring.json").read_text())
    model["panels"][2]["targets"][0]["rawSql"] = "SELECT count() * 2 AS events FROM `cvat`.events WHERE $__timeFilter(timestamp)"
    model["panels"][3]["targets"].append(dict(model["panels"][3]["targets"][0], refId="B"))
    model["panels"].append({"type": "row", "title": "More", "id": 99, "panels": [
        dict(model["panels"][2], id=100, title="In a row", gridPos={"x": 0, "y": 50, "w": 6, "h": 4})]})
    model["panels"].append({"type": "text", "title": "Notes", "id": 101, "gridPos": {"x": 0, "y": 60, "w": 6, "h": 4}})
    model["templating"]["list"].append({"type": "custom", "name": "colour", "query": "red,green"})
    model["time"] = {"from": "now-30d", "to": "now"}
    saved = tmp_path / "monitoring-edited.json"
    saved.write_text(json.dumps({"dashboard": model, "meta": {}}))  # Grafana's "Export" wrapper
    definition, lost = definition_from_json(saved.read_text())
    assert [p["id"] for p in definition["panels"]] == [p["id"] for p in model["panels"][:-2]] + [100]
    assert any("panel 4 (Exceptions in range): 2 queries, only the first (A) kept" == line for line in lost)
    assert any(line.startswith("row 'More': rows are not kept") for line in lost)
    assert any(line.startswith("panel 101 (Notes): type text") for line in lost)
    assert any(line.startswith("variable colour: a custom variable is not kept") for line in lost)
    assert any(line.startswith("time range now-30d to now") for line in lost)

    path = custom_spec(tmp_path)
    run = cli("dashboards", "import", "--spec", path, saved, cwd=tmp_path)
    assert run.returncode == 0 and "rows are not kept" in run.stdout
    rendered = json.loads(render_all(load_spec(path))["grafana/dashboards/monitoring.json"])
    assert rendered["panels"][2]["targets"][0]["rawSql"] == model["panels"][2]["targets"][0]["rawSql"]
    assert rendered["uid"] == "WvDvWK04k"


def test_import_without_a_folder_or_of_a_non_dashboard_says_why(tmp_path):
    _, path = write_spec(tmp_path)
    run = cli("dashboards", "import", "--spec", path, DEPLOY / "monitoring.json", cwd=tmp_path)
    assert run.returncode == 1 and "custom_dashboards_dir is empty" in run.stderr
    path = custom_spec(tmp_path)
    (tmp_path / "x.json").write_text('{"title": "no panels"}')
    run = cli("dashboards", "import", "--spec", path, tmp_path / "x.json", cwd=tmp_path)
    assert run.returncode == 1 and "not a Grafana dashboard" in run.stderr


def test_jinja_looking_sql_is_kept_verbatim(tmp_path):
    model = json.loads((DEPLOY / "monitoring.json").read_text())
    model["uid"], model["title"] = "braces", "Braces"
    model["panels"] = [dict(model["panels"][2], targets=[{"refId": "A", "rawSql": "SELECT '{{ x }}' AS t, 1 AS n"}])]
    saved = tmp_path / "b.json"
    saved.write_text(json.dumps(model))
    path = custom_spec(tmp_path)
    assert cli("dashboards", "import", "--spec", path, saved, cwd=tmp_path).returncode == 0
    braces = next(d for d in grafana.load_all(load_spec(path)) if d["uid"] == "braces")
    assert braces["panels"][0]["sql"] == "SELECT '{{ x }}' AS t, 1 AS n"


def payload(marker) -> str:
    """Jinja that runs a shell command, as a non-sandboxed environment lets it."""
    return "{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}"


def test_imported_sql_that_breaks_out_of_raw_runs_nothing_and_is_kept_as_written(tmp_path):
    """On main, SQL holding {% endraw %} left the {% raw %} block the import wrapped it in, and
    the Jinja after it ran at the import and at every render."""
    marker = tmp_path / "ran"
    panel_sql = "SELECT '{% endraw %}" + payload(marker) + "{% raw %}' AS t, 1 AS n"
    variable_sql = "SELECT '{% endraw %}" + payload(marker) + "{% raw %}' AS users"
    model = json.loads((DEPLOY / "monitoring.json").read_text())
    model["uid"], model["title"] = "payload", "Payload"
    model["panels"] = [dict(model["panels"][2], targets=[{"refId": "A", "rawSql": panel_sql}])]
    model["templating"]["list"] = [{"type": "query", "name": "users", "query": variable_sql}]
    (tmp_path / "p.json").write_text(json.dumps(model))
    path = custom_spec(tmp_path)
    run = cli("dashboards", "import", "--spec", path, tmp_path / "p.json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert cli("render", "--spec", path, "--out", tmp_path / "deploy", cwd=tmp_path).returncode == 0
    d = next(d for d in grafana.load_all(load_spec(path)) if d["uid"] == "payload")
    assert not marker.exists()
    assert d["panels"][0]["sql"] == panel_sql and d["variables"][0]["sql"] == variable_sql
    rendered = json.loads((tmp_path / "deploy" / "grafana" / "dashboards" / "payload.json").read_text())
    assert rendered["panels"][0]["targets"][0]["rawSql"] == panel_sql


@pytest.mark.parametrize("where, change", [
    ("Exceptions per user: sql", ("GROUP BY user_id", "GROUP BY user_id {PAYLOAD}")),
    ("users: sql", ("ORDER BY user_id\"}", "ORDER BY user_id {PAYLOAD}\"}")),
    ("filters", ("$__conditionalAll(user_id IN (${users}), $users)", "\"{PAYLOAD}\"")),
    ("fragments.f", ("panels:", "fragments:\n  f: \"{PAYLOAD}\"\npanels:")),
])
def test_a_custom_definition_is_never_run_as_a_template(tmp_path, where, change):
    """A user's definition has its {{ names }} replaced, nothing more: on main each of these
    ran the command (the definitions were rendered by a non-sandboxed Jinja)."""
    marker = tmp_path / "ran"
    old, new = change
    text = ERRORS_BY_USER.replace(old, new.replace("{PAYLOAD}", payload(marker).replace('"', '\\"')))
    assert text != ERRORS_BY_USER
    spec = load_spec(custom_spec(tmp_path, errors_by_user=text))
    with pytest.raises(grafana.DefinitionError) as err:
        grafana.load_all(spec)
    assert not marker.exists()
    assert str(err.value).startswith(f"{tmp_path / 'mine' / 'errors_by_user.yaml'}: {where}: ")
    assert "only {{ name }} is filled in" in str(err.value) and "verbatim: true" in str(err.value)


def test_fragments_that_double_each_other_are_refused_at_once(tmp_path):
    """Each fragment twice the one before: 2**40 bytes on main (Jinja rendered it)."""
    from tests.test_user_files import bounded_cli

    fragments = "fragments:\n  f0: \"1\"\n" + "".join(f"  f{i}: \"{{{{ f{i - 1} }}}} + {{{{ f{i - 1} }}}}\"\n" for i in range(1, 41))
    path = custom_spec(tmp_path, errors_by_user=ERRORS_BY_USER.replace("panels:", fragments + "panels:"))
    run, seconds = bounded_cli("render", "--spec", path, "--out", tmp_path / "out", cwd=tmp_path)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "errors_by_user.yaml: fragments.f" in run.stderr and "the SQL is larger than 1048576 bytes" in run.stderr
    assert seconds < 10


def test_panels_that_each_fill_in_a_large_fragment_are_refused_at_once(tmp_path):
    """Each text under 1 MiB, but 400 panels of a 900 KB fragment: 360 MB of SQL (a render
    still running at 750 MB after 120 s) unless the whole definition is bounded."""
    from tests.test_user_files import bounded_cli

    fragments = "fragments:\n  f0: \"SELECT 1\"\n" + "".join(
        f"  f{i}: \"{{{{ f{i - 1} }}}} UNION ALL {{{{ f{i - 1} }}}}\"\n" for i in range(1, 14))
    panels = "panels:\n" + "".join(
        f"  - {{id: {i}, title: p{i}, type: table, gridPos: {{x: 0, y: {i}, w: 24, h: 1}}, sql: \"{{{{ f13 }}}}\"}}\n"
        for i in range(1, 401))
    text = ERRORS_BY_USER.split("panels:")[0] + fragments + panels
    path = custom_spec(tmp_path, errors_by_user=text)
    run, seconds = bounded_cli("render", "--spec", path, "--out", tmp_path / "out", cwd=tmp_path)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "errors_by_user.yaml" in run.stderr and "the definition's SQL is larger than" in run.stderr
    assert seconds < 20
