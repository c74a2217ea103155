"""The rendered Docker stack, end to end: events POSTed to Vector arrive in ClickHouse,
the users have exactly their rights, and Grafana's datasource is healthy.

Needs a Docker engine (and the images, or network to pull them). Without an engine
answering, every test here is skipped with the reason; the engine is asked before
pytest-docker starts anything.
"""
from __future__ import annotations

import base64
import json
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from cvat_analytics_generator.render import render_all, write_tree
from cvat_analytics_generator.spec import load_spec
from tests.conftest import write_spec

pytestmark = [pytest.mark.docker, pytest.mark.clickhouse]

SECRET_NAMES = ("CLICKHOUSE_ADMIN_PASSWORD", "CLICKHOUSE_INGEST_PASSWORD",
                "CLICKHOUSE_DASHBOARDS_PASSWORD", "GRAFANA_ADMIN_PASSWORD")


@pytest.fixture(scope="session")
def docker_engine():
    """Skip, with the reason, unless a Docker engine answers."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as exc:  # no socket, permission denied, daemon down...
        pytest.skip(f"no Docker engine answers ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})")
    return client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def stack(docker_engine, tmp_path_factory):
    """The default spec on free host ports, rendered with a fresh .env beside it."""
    root = tmp_path_factory.mktemp("stack")
    ports = {"clickhouse.http_port": _free_port(), "clickhouse.native_port": _free_port(),
             "vector.port": _free_port(), "grafana.port": _free_port()}
    _, spec_path = write_spec(root, **ports,
                              **{"grafana.root_url": f"http://127.0.0.1:{ports['grafana.port']}/analytics"})
    spec = load_spec(spec_path)
    deploy = root / "deploy"
    write_tree(render_all(spec), deploy)
    env = {name: secrets.token_urlsafe(24) for name in SECRET_NAMES}
    (deploy / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return {"spec": spec, "deploy": deploy, "env": env}


# pytest-docker's fixtures, pointed at the rendered stack; `stack` needs `docker_engine`,
# so nothing is started when no engine answers.
@pytest.fixture(scope="session")
def docker_compose_file(stack):
    return str(stack["deploy"] / "docker-compose.yml")


@pytest.fixture(scope="session")
def docker_compose_project_name():
    return f"cvat-analytics-test-{uuid.uuid4().hex[:8]}"


def _get(url: str, auth: tuple[str, str] | None = None, timeout: float = 5.0):
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.read()


@pytest.fixture(scope="session")
def services(docker_services, stack):
    """The stack, up and healthy (pytest-docker runs `up --build --wait`)."""
    spec = stack["spec"]

    def grafana_up() -> bool:
        try:
            return _get(f"http://127.0.0.1:{spec['grafana']['port']}/analytics/api/health")[0] == 200
        except (OSError, urllib.error.URLError):
            return False

    docker_services.wait_until_responsive(check=grafana_up, timeout=300, pause=2)
    return stack


def _client(stack, role: str):
    import clickhouse_connect

    spec = stack["spec"]
    password = stack["env"][f"CLICKHOUSE_{role.upper()}_PASSWORD"]
    return clickhouse_connect.get_client(host="127.0.0.1", port=spec["clickhouse"]["http_port"],
                                         username=spec["clickhouse"]["users"][role], password=password)


def test_events_posted_to_vector_are_in_clickhouse_when_vector_answers(services):
    spec = services["spec"]
    marker = uuid.uuid4().hex
    events = [
        # CVAT's server: epoch seconds as a string; a client: ISO-8601; plus an unknown field.
        {"scope": "create:task", "timestamp": "1700000000.123456", "source": "server", "obj_id": 1,
         "payload": json.dumps({"request": {"id": marker}}), "user_id": 7, "unknown_field": "ignored"},
        {"scope": "change:frame", "timestamp": "2024-01-01T12:00:00.123Z", "source": "client",
         "duration": 5000, "job_id": 3, "payload": json.dumps({"request": {"id": marker}}), "user_id": 7},
    ]
    request = urllib.request.Request(f"http://127.0.0.1:{spec['vector']['port']}/", method="POST",
                                     data=json.dumps(events).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        # 200 once the batch is in Vector's disk buffer (durable); ClickHouse has it soon after.
        assert response.status == 200
    dashboards = _client(services, "dashboards")
    deadline = time.monotonic() + 60
    while True:
        rows = dashboards.query(
            f"SELECT scope, toUnixTimestamp64Milli(timestamp), duration FROM `{spec['clickhouse']['database']}`.events "
            "WHERE request_id = {m:String} ORDER BY timestamp", parameters={"m": marker}).result_rows
        if len(rows) == 2 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert rows == [("create:task", 1700000000123, 0), ("change:frame", 1704110400123, 5000)]


def test_each_clickhouse_user_has_exactly_its_rights(services):
    db = services["spec"]["clickhouse"]["database"]
    ingest, dashboards = _client(services, "ingest"), _client(services, "dashboards")
    with pytest.raises(Exception, match="ACCESS_DENIED|Not enough privileges"):
        ingest.query(f"SELECT count() FROM `{db}`.events")
    with pytest.raises(Exception, match="readonly|READONLY"):
        dashboards.command(f"INSERT INTO `{db}`.events (scope, timestamp) VALUES ('x', now())")
    with pytest.raises(Exception):  # the passwordless default user is gone
        _get(f"http://127.0.0.1:{services['spec']['clickhouse']['http_port']}/?query=SELECT%201")


def test_grafana_datasource_is_provisioned_and_healthy(services):
    spec = services["spec"]
    url = (f"http://127.0.0.1:{spec['grafana']['port']}/analytics/api/datasources/uid/"
           f"{spec['grafana']['datasource_uid']}/health")
    status, body = _get(url, auth=("admin", services["env"]["GRAFANA_ADMIN_PASSWORD"]), timeout=30)
    assert status == 200 and json.loads(body)["status"] == "OK"
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        _get(url)
    assert anonymous.value.code == 401


# --- Grafana's own API, as the provisioned datasource -----------------------------------------

def _grafana(stack) -> tuple[str, tuple[str, str]]:
    spec = stack["spec"]
    return f"http://127.0.0.1:{spec['grafana']['port']}/analytics", ("admin", stack["env"]["GRAFANA_ADMIN_PASSWORD"])


def _panel_sql(stack, dashboard: str, title: str) -> str:
    """A panel's SQL as Grafana's frontend hands it to the plugin with every variable on
    "All": $__conditionalAll applied, the backend macros left for the plugin."""
    from cvat_analytics_generator.grafana_macros import ALL, Variable, _conditional_all

    model = json.loads((stack["deploy"] / "grafana" / "dashboards" / f"{dashboard}.json").read_text())
    panel = next(p for p in model["panels"] if p["title"] == title)
    names = [v["name"] for v in model["templating"]["list"]]
    return _conditional_all(panel["targets"][0]["rawSql"], {n: Variable(ALL) for n in names})


def _ds_query(stack, sql: str, range_from: str = "now-30d") -> list[dict]:
    """Rows of `sql` run through Grafana's /api/ds/query as the provisioned datasource."""
    base, auth = _grafana(stack)
    body = {"from": range_from, "to": "now", "queries": [{
        "refId": "A", "datasource": {"type": "grafana-clickhouse-datasource",
                                     "uid": stack["spec"]["grafana"]["datasource_uid"]},
        "editorType": "sql", "rawSql": sql, "format": 1, "intervalMs": 60000, "maxDataPoints": 1000}]}
    request = urllib.request.Request(f"{base}/api/ds/query", method="POST", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": "Basic "
                                              + base64.b64encode(":".join(auth).encode()).decode()})
    with urllib.request.urlopen(request, timeout=90) as response:
        result = json.loads(response.read())["results"]["A"]
    assert "error" not in result, result["error"]  # e.g. ClickHouse refusing max_execution_time
    frame = result["frames"][0]
    names = [f["name"] for f in frame["schema"]["fields"]]
    values = frame["data"]["values"] if frame.get("data") else [[] for _ in names]
    return [dict(zip(names, row)) for row in zip(*values)]


def test_a_panel_query_through_grafanas_api_as_the_provisioned_datasource_returns_rows(services):
    """Grafana → plugin → ClickHouse as the dashboards user: the driver's max_execution_time
    (queryTimeout + 5 s) is accepted, and a real panel returns the events just sent."""
    spec = services["spec"]
    event = {"scope": "load:job", "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
             "source": "client", "user_id": 4242, "user_name": "panel-check", "job_id": 1}
    request = urllib.request.Request(f"http://127.0.0.1:{spec['vector']['port']}/", method="POST",
                                     data=json.dumps([event]).encode(), headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=60).close()
    sql = _panel_sql(services, "all_events", next(
        p["title"] for p in json.loads((services["deploy"] / "grafana/dashboards/all_events.json").read_text())["panels"]
        if p.get("targets")))
    deadline = time.monotonic() + 60
    while not (rows := _ds_query(services, sql)) and time.monotonic() < deadline:
        time.sleep(2)
    assert rows, sql


def _compose(stack, project: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "compose", "--project-directory", str(stack["deploy"]), "-p", project,
                           "-f", str(stack["deploy"] / "docker-compose.yml"), "--env-file",
                           str(stack["deploy"] / ".env"), *args],
                          capture_output=True, text=True, timeout=300, check=True)


def test_clickhouses_prometheus_endpoint_answers_on_the_stacks_network_only(services, docker_engine,
                                                                          docker_compose_project_name):
    port = services["spec"]["clickhouse"]["server"]["prometheus_port"]
    vector_id = _compose(services, docker_compose_project_name, "ps", "-q", "vector").stdout.strip()
    code, output = docker_engine.containers.get(vector_id).exec_run(
        ["wget", "-qO-", f"http://clickhouse:{port}/metrics"])
    assert code == 0, output
    assert b"ClickHouseProfileEvents_Query" in output and b"ClickHouseMetrics_" in output
    published = subprocess.run(["docker", "compose", "--project-directory", str(services["deploy"]), "-p",
                                docker_compose_project_name, "-f", str(services["deploy"] / "docker-compose.yml"),
                                "--env-file", str(services["deploy"] / ".env"), "port", "clickhouse", str(port)],
                               capture_output=True, text=True, timeout=60)
    assert not published.stdout.strip() or published.stdout.strip().endswith(":0"), published.stdout


def test_an_offline_restart_of_grafana_keeps_the_plugin(services, docker_engine, docker_compose_project_name):
    """Grafana restarted with no network at all still has the ClickHouse plugin it was built with."""
    project = docker_compose_project_name
    container_id = _compose(services, project, "ps", "-q", "grafana").stdout.strip()
    container = docker_engine.containers.get(container_id)
    networks = list(container.attrs["NetworkSettings"]["Networks"])
    _compose(services, project, "stop", "grafana")
    for network in networks:
        docker_engine.networks.get(network).disconnect(container)
    try:
        container.start()
        base, auth = _grafana(services)
        path = base.split("127.0.0.1:", 1)[1].split("/", 1)[1]
        token = base64.b64encode(":".join(auth).encode()).decode()
        url = f"http://127.0.0.1:3000/{path}/api/plugins/grafana-clickhouse-datasource/settings"
        deadline = time.monotonic() + 180
        while True:
            code, output = container.exec_run(["wget", "-qO-", "--header", f"Authorization: Basic {token}", url])
            if code == 0 or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert code == 0, output
        plugin = json.loads(output)
        assert plugin["id"] == "grafana-clickhouse-datasource"
        assert plugin["info"]["version"] == services["spec"]["grafana"]["clickhouse_plugin_version"]
    finally:
        container.stop()
        for network in networks:
            docker_engine.networks.get(network).connect(container, aliases=["grafana"])
        _compose(services, project, "up", "-d", "--wait", "grafana")


def test_working_time_appears_in_the_management_dashboard_within_one_refresh_after_make_demo(services):
    """`make demo` posts CVAT traffic to Vector; within the refresh interval + 10 s of the
    events reaching ClickHouse, the Management dashboard's working-time panel shows each
    user's working time, equal to the query-time computation."""
    spec = services["spec"]
    admin = _client(services, "admin")
    db = spec["clickhouse"]["database"]
    before = admin.command(f"SELECT count() FROM `{db}`.events")
    run = subprocess.run([sys.executable, "-m", "cvat_analytics.cli", "demo", "--url",
                          f"http://127.0.0.1:{spec['vector']['port']}/", "--events", "3000", "--days", "1"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    sent = int(run.stderr.rsplit("demo: ", 1)[1].split()[0])
    deadline = time.monotonic() + 120
    while admin.command(f"SELECT count() FROM `{db}`.events") < before + sent:
        assert time.monotonic() < deadline, "the demo's events did not all reach ClickHouse"
        time.sleep(1)
    arrived = time.monotonic()

    from cvat_analytics import working_time

    columns, rows = working_time.totals(admin, spec, working_time.parse_by("user"))
    expected = {r["user_id"]: r["working_time_ms"] / 3_600_000
                for r in (dict(zip(columns, row)) for row in rows) if r["working_time_ms"]}
    assert expected, "the demo produced no working time"
    sql = _panel_sql(services, "management", "Working time per user (hours)")
    while True:
        shown = {int(r["user"].rsplit("#", 1)[1]): r["working_time_h"] for r in _ds_query(services, sql, "now-3d")}
        # The panel rounds to 0.01 h.
        if all(user in shown and abs(shown[user] - hours) <= 0.006 for user, hours in expected.items()):
            break
        assert time.monotonic() - arrived <= spec["working_time"]["refresh_interval_s"] + 10, (shown, expected)
        time.sleep(1)
