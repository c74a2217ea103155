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
import urllib.error
import urllib.request
import uuid
from pathlib import Path

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
        # End-to-end acknowledgements: 200 only once ClickHouse has the batch.
        assert response.status == 200
    rows = _client(services, "dashboards").query(
        f"SELECT scope, toUnixTimestamp64Milli(timestamp), duration FROM `{spec['clickhouse']['database']}`.events "
        "WHERE request_id = {m:String} ORDER BY timestamp", parameters={"m": marker}).result_rows
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
