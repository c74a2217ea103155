"""Faults in the rendered Docker stack: ClickHouse stopped while events flow, Vector
restarted. Vector answers CVAT once a batch is in its disk buffer (end-to-end
acknowledgements), so every acknowledged event must reach ClickHouse in the end.

Needs a Docker engine; without one every test is skipped with the reason (the
fixtures are test_deploy_docker's)."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid

import pytest

from tests.test_deploy_docker import (_client, docker_compose_file, docker_compose_project_name,  # noqa: F401
                                      docker_engine, services, stack)

pytestmark = [pytest.mark.docker, pytest.mark.clickhouse]


def compose(file: str, project: str, *args: str) -> None:
    subprocess.run(["docker", "compose", "-f", file, "-p", project, *args], check=True, timeout=300)


def post_to_vector(port: int, events: list[dict]) -> bool:
    """POST a batch as CVAT's server does; True once Vector answers 200 (acknowledged)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", method="POST",
                                     data=json.dumps(events).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status == 200
    except OSError:
        return False


def send(spec: dict, marker: str, n: int) -> bool:
    events = [{"scope": "create:task", "source": "server", "timestamp": f"{time.time():.6f}", "obj_id": i,
               "payload": json.dumps({"request": {"id": marker}})} for i in range(n)]
    return post_to_vector(spec["vector"]["port"], events)


def stored(stack, marker: str) -> int:
    db = stack["spec"]["clickhouse"]["database"]
    return int(_client(stack, "dashboards").command(
        f"SELECT count() FROM `{db}`.events WHERE request_id = {{m:String}}", parameters={"m": marker}))


def wait_for(stack, marker: str, expected: int, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = stored(stack, marker)
        except Exception:
            found = -1
        if found >= expected or time.monotonic() > deadline:
            return found
        time.sleep(2)


def test_clickhouse_stopped_while_events_flow_then_everything_arrives(services, docker_compose_file,
                                                                       docker_compose_project_name, capsys):
    spec, marker = services["spec"], uuid.uuid4().hex
    compose(docker_compose_file, docker_compose_project_name, "stop", "clickhouse")
    try:
        acked = sum(10 for _ in range(20) if send(spec, marker, 10))  # Vector buffers to disk
    finally:
        compose(docker_compose_file, docker_compose_project_name, "start", "clickhouse")
    found = wait_for(services, marker, acked)
    with capsys.disabled():
        print(f"\n[docker] ClickHouse down: {acked} events acknowledged by Vector, {found} in ClickHouse after it returned")
    assert acked > 0 and found == acked


def test_vector_restarted_loses_nothing_acknowledged(services, docker_compose_file, docker_compose_project_name,
                                                     capsys):
    spec, marker = services["spec"], uuid.uuid4().hex
    compose(docker_compose_file, docker_compose_project_name, "stop", "clickhouse")  # keep batches in the buffer
    try:
        acked = sum(10 for _ in range(10) if send(spec, marker, 10))
        compose(docker_compose_file, docker_compose_project_name, "restart", "vector")
        acked += sum(10 for _ in range(5) if send(spec, marker, 10))
    finally:
        compose(docker_compose_file, docker_compose_project_name, "start", "clickhouse")
    found = wait_for(services, marker, acked)
    with capsys.disabled():
        print(f"\n[docker] Vector restarted: {acked} events acknowledged, {found} in ClickHouse")
    assert acked > 0 and found == acked
