"""The cluster render on Docker (docs/cluster.md): a 2 x 2 cluster with its
Keeper comes up; events posted to Vector reach the Distributed `events`; one replica is
killed while events keep coming and started again; nothing Vector acknowledged is lost or
stored twice; the working time kept by each shard's refresh equals the query-time SQL over
every shard; the live replica shows the missing one in system.replicas, and the restarted
one catches up; each shard refreshes working time once per interval, not once per replica.

Needs a Docker engine (and the images, or network to pull them). Without an engine
answering, every test here is skipped with the reason.
"""
from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
import uuid

import pytest

from cvat_analytics_generator.render import render_all, write_tree
from cvat_analytics_generator.spec import load_spec
from cvat_analytics_generator.validate import compose_binary
from tests.conftest import write_spec
from tests.test_deploy_docker_faults import post_to_vector

pytestmark = [pytest.mark.docker, pytest.mark.clickhouse]

SECRET_NAMES = ("CLICKHOUSE_ADMIN_PASSWORD", "CLICKHOUSE_INGEST_PASSWORD", "CLICKHOUSE_DASHBOARDS_PASSWORD",
                "CLICKHOUSE_CLUSTER_SECRET", "CLICKHOUSE_INTERSERVER_PASSWORD", "CLICKHOUSE_KEEPER_PASSWORD",
                "GRAFANA_ADMIN_PASSWORD")
KILLED = "clickhouse-s1-r2"   # a replica of shard 1; clickhouse-s1-r1 stays up
BATCH = 200


@pytest.fixture(scope="module")
def docker_engine():
    """Skip, with the reason, unless a Docker engine answers."""
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception as exc:  # no socket, permission denied, daemon down...
        pytest.skip(f"no Docker engine answers ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})")


def _free_block(n: int) -> int:
    """The first of n consecutive free local ports (servers publish base, base+1, ...)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        try:
            for port in range(base, base + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no {n} consecutive free ports")


@pytest.fixture(scope="module")
def cluster(docker_engine, tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    ports = {"clickhouse.http_port": _free_block(4), "clickhouse.native_port": _free_block(4),
             "vector.port": _free_block(1), "grafana.port": _free_block(1)}
    _, spec_path = write_spec(root, **ports, **{
        "clickhouse.cluster": {"shards": 2, "replicas": 2, "insert_quorum": 2},
        "grafana.root_url": f"http://127.0.0.1:{ports['grafana.port']}/analytics"})
    spec = load_spec(spec_path)
    deploy = root / "deploy-cluster"
    write_tree(render_all(spec), deploy)
    env = {name: secrets.token_urlsafe(24) for name in SECRET_NAMES}
    (deploy / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    compose = compose_binary() + ["-p", f"cvat-analytics-cluster-{uuid.uuid4().hex[:8]}",
                                  "--project-directory", str(deploy), "-f", str(deploy / "docker-compose.yml")]

    def run(*args, timeout=900):
        done = subprocess.run(compose + list(args), capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stderr[-3000:]

    run("up", "--build", "--wait", "--wait-timeout", "600")
    try:
        yield {"spec": spec, "env": env, "compose": run}
    finally:
        subprocess.run(compose + ["down", "-v", "--remove-orphans"], capture_output=True, timeout=300)


def _client(cluster, role: str, server: int = 0):
    import clickhouse_connect

    spec = cluster["spec"]
    return clickhouse_connect.get_client(host="127.0.0.1", port=spec["clickhouse"]["http_port"] + server,
                                         username=spec["clickhouse"]["users"][role],
                                         password=cluster["env"][f"CLICKHOUSE_{role.upper()}_PASSWORD"])


def _post(cluster, marker: str, user_ids: range, start_ms: int) -> bool:
    """One CVAT-like batch: each user's client events 5 s apart. True once Vector answers 200
    (the batch is in its disk buffer: acknowledged)."""
    events = [{"scope": "change:frame" if i % 3 else "click:element", "source": "client",
               "timestamp": f"{(start_ms + i * 5000) / 1000:.3f}", "duration": 1000 if i % 3 else 0,
               "user_id": user_ids[i % len(user_ids)], "job_id": 1 + i % 4, "task_id": 1, "project_id": 1,
               "payload": json.dumps({"request": {"id": marker}})} for i in range(BATCH)]
    return post_to_vector(cluster["spec"]["vector"]["port"], events)


def _wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(2)


def test_a_replica_killed_and_back_loses_nothing_acknowledged_and_working_time_stays_exact(cluster):
    db = cluster["spec"]["clickhouse"]["database"]
    admin = _client(cluster, "admin")
    start_ms = int(time.time() * 1000) - 3_600_000
    acknowledged: list[str] = []

    def send(n: int) -> None:
        for _ in range(n):
            marker = uuid.uuid4().hex
            if _post(cluster, marker, range(1, 41), start_ms + len(acknowledged) * BATCH * 5000):
                acknowledged.append(marker)

    send(5)
    cluster["compose"]("kill", KILLED)
    # The live replica of shard 1 sees its peer gone: the lag a Monitoring query shows.
    live = _client(cluster, "admin", server=0)
    missing = _wait(lambda: live.query(
        "SELECT total_replicas - active_replicas FROM system.replicas "
        "WHERE database = {db:String} AND table = 'events_local'", parameters={"db": db}).result_rows[0][0],
        60, "the killed replica shown as inactive")
    assert missing == 1
    send(10)  # acknowledged by Vector; shard 1's inserts wait for the quorum of 2
    cluster["compose"]("start", KILLED)
    send(5)

    # Every acknowledged batch is stored exactly once, read through the Distributed table.
    def stored() -> dict:
        rows = admin.query(f"SELECT request_id, count() FROM `{db}`.events GROUP BY request_id").result_rows
        counts = dict(rows)
        return counts if all(counts.get(m) == BATCH for m in acknowledged) else {}

    counts = _wait(stored, 600, "every acknowledged batch stored")
    assert len(acknowledged) == 20 and all(counts[m] == BATCH for m in acknowledged)

    # The restarted replica catches up: same rows as its peer, no delay left.
    back = _client(cluster, "admin", server=1)
    _wait(lambda: back.query(
        "SELECT absolute_delay = 0 AND queue_size = 0 FROM system.replicas "
        "WHERE database = {db:String} AND table = 'events_local'", parameters={"db": db}).result_rows[0][0],
        300, "the restarted replica caught up")
    count_local = "SELECT count() FROM `{db}`.events_local".format(db=db)
    assert back.query(count_local).result_rows == live.query(count_local).result_rows

    # Working time: each shard's refresh (every 10 s) adds up to the query-time SQL over all shards.
    def exact() -> bool:
        kept = admin.query(f"SELECT user_id, sum(working_time_ms) FROM `{db}`.working_time_totals "
                           "GROUP BY user_id HAVING sum(working_time_ms) != 0 ORDER BY user_id").result_rows
        computed = admin.query(f"SELECT user_id, sum(working_time_ms) FROM `{db}`.working_time_events "
                               "GROUP BY user_id HAVING sum(working_time_ms) != 0 ORDER BY user_id").result_rows
        return bool(computed) and kept == computed

    _wait(exact, 180, "working_time_totals equal to the query-time working time")
    # Each shard refreshes once per interval, not once per replica: over 2 minutes its
    # (replicated) refresh log has about 12 runs of the 10 s view; both replicas running
    # it would log about 24.
    interval = cluster["spec"]["working_time"]["refresh_interval_s"]
    time.sleep(120)
    for server in (0, 2):  # a replica of shard 1, of shard 2
        runs = _client(cluster, "admin", server).query(
            f"SELECT count() FROM `{db}`.working_time_refresh_log "
            "WHERE refreshed_at > now64(6) - INTERVAL 120 SECOND").result_rows[0][0]
        assert 120 / interval / 2 <= runs <= 120 / interval + 2, (server, runs)
