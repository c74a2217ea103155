"""Faults of the cluster render found by reading ClickHouse's source (issue #30 item 3,
docs/cluster.md), each with what proves it fixed here:

- the dashboards' username filter over the Distributed `events` (a double-distributed IN)
  is planned, not refused, under the dashboards profile: EXPLAIN over a real Distributed
  table of two shards on chdb;
- every user that inserts waits for the shards (distributed_foreground_insert);
- DDL returns once this server applied it (distributed_ddl_task_timeout = 0, not
  `distributed_ddl_output_mode = none`, which still waits and throws);
- the first start applies the schema resumably and a server is healthy only with it;
- every server has a memory limit, and the ratio applies to it;
- servers authenticate to each other with secrets from the environment, none rendered;
- `serve` refuses a cluster spec; a quorum equal to 2 replicas is warned about.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from cvat_analytics_generator.render import INIT_LEDGER, render_all
from cvat_analytics_generator.spec import load_spec
from cvat_analytics_generator.yaml_load import safe_load, safe_load_all
from tests.conftest import REPO, write_spec

SERVERS = ["clickhouse-s1-r1", "clickhouse-s1-r2", "clickhouse-s2-r1", "clickhouse-s2-r2"]
# A remote_servers entry for the cluster `cvat` with two shards. Nothing listens there:
# chdb plans a query over it (where a double-distributed IN is refused) without connecting.
TWO_SHARDS = """<clickhouse><remote_servers><cvat>
<shard><replica><host>127.0.0.1</host><port>9000</port></replica></shard>
<shard><replica><host>127.0.0.2</host><port>9000</port></replica></shard>
</cvat></remote_servers></clickhouse>"""


def cluster_spec(directory, shards=2, replicas=2, quorum=2):
    _, path = write_spec(directory, **{"clickhouse.cluster": {"shards": shards, "replicas": replicas,
                                                              "insert_quorum": quorum}})
    return load_spec(path), path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    spec, path = cluster_spec(tmp_path_factory.mktemp("cluster"))
    return spec, path, render_all(spec)


def profile(files: dict[str, str], name: str) -> dict[str, str]:
    """A profile's settings as the server merges them: users.d files in name order, a later
    file's element replacing an earlier one of the same name."""
    settings: dict[str, str] = {}
    for path in sorted(p for p in files if p.startswith("clickhouse/users.d/")):
        node = ET.fromstring(files[path]).find(f"profiles/{name}")
        for child in [] if node is None else node:
            if child.tag != "constraints":
                settings[child.tag] = (child.text or "").strip()
    return settings


# --- the username filter over two shards -------------------------------------------------

def _explain(tmp_path, spec_path, settings: dict) -> dict:
    config = tmp_path / "two_shards.xml"
    config.write_text(TWO_SHARDS)
    out = tmp_path / f"explain-{len(list(tmp_path.glob('explain-*')))}.json"
    data = tmp_path / f"data-{out.stem}"
    run = subprocess.run([sys.executable, "-m", "tests.cluster_explain", str(spec_path), str(config), str(data),
                          json.dumps(settings), str(out)], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(out.read_text())


@pytest.mark.clickhouse
def test_every_panel_with_a_username_selected_is_planned_over_two_shards_under_the_dashboards_profile(
        cluster, tmp_path):
    spec, spec_path, files = cluster
    settings = profile(files, "cvat_dashboards")
    assert settings["distributed_product_mode"] == "local"
    # readonly last: once set, the session may change no other setting
    settings = {k: v for k, v in settings.items() if k != "readonly"} | {"readonly": settings["readonly"]}
    result = _explain(tmp_path, spec_path, settings)
    # (the healthcheck's list of the schema's objects is what the migrations leave on the engine)
    assert sorted(re.findall(r"'(\w+)'", files["clickhouse/healthcheck.sh"].split("name IN (")[1].split(")")[0])) \
        == result["tables"]
    assert re.fullmatch(r"Distributed\(\\'cvat\\', \\'cvat\\', \\'events_local\\', cityHash64\(.*\)\)", result["engine"])
    assert len(result["panels"]) >= 15
    assert {panel: error for panel, error in result["panels"].items() if error} == {}

    # The control: the same panels under ClickHouse's default (deny) are refused, so the
    # plan above did meet the double-distributed IN.
    del settings["distributed_product_mode"]
    refused = _explain(tmp_path, spec_path, settings)["panels"]
    denied = {panel for panel, error in refused.items() if "DISTRIBUTED_IN_JOIN_SUBQUERY_DENIED" in error}
    assert len(denied) >= 10, refused


# --- who waits for what --------------------------------------------------------------------

def test_every_user_that_inserts_waits_for_the_shards_and_ddl_returns_once_applied_here(cluster):
    """The admin (`import`, migrations; the default profile, as the image's entrypoint creates
    it) and every user granted INSERT get distributed_foreground_insert: an INSERT into a
    Distributed table returns once every shard it touches stored its rows, not once they
    are queued on the receiving server's disk."""
    files = cluster[2]
    users = ET.fromstring(files["clickhouse/users.d/cvat-users.xml"]).find("users")
    inserting = {"default"} | {u.findtext("profile") for u in users
                               if any("INSERT" in q.text for q in u.findall("grants/query"))}
    assert inserting == {"default", "cvat_ingest"}
    for name in inserting:
        assert profile(files, name).get("distributed_foreground_insert") == "1", name
    # DDL in the Replicated database returns once this server applied it:
    # DatabaseReplicated::getQueryStatus returns at once for a timeout of 0, while output
    # mode `none` still waits for every replica (180 s) and throws.
    default = profile(files, "default")
    assert default["distributed_ddl_task_timeout"] == "0"
    assert default.get("distributed_ddl_output_mode") in (None, "throw_only_active", "none_only_active")


# --- the first start ----------------------------------------------------------------------

def test_a_first_start_resumes_where_it_stopped_and_a_server_is_healthy_only_with_the_schema(cluster, tmp_path):
    spec, _, files = cluster
    compose = safe_load(files["docker-compose.yml"])["services"]
    assert sorted(n for n in compose if n.startswith("clickhouse-s")) == SERVERS
    for name in SERVERS:
        service = compose[name]
        # init runs on every start, so a start that stopped half way is finished by the next
        assert service["environment"]["CLICKHOUSE_ALWAYS_RUN_INITDB_SCRIPTS"] == "1"
        assert service["restart"] == "unless-stopped"
        assert "./clickhouse/healthcheck.sh:/etc/clickhouse-server/cvat-healthcheck.sh:ro" in service["volumes"]
        assert service["healthcheck"]["test"] == ["CMD", "sh", "/etc/clickhouse-server/cvat-healthcheck.sh", name]
        init = [v.split(":")[0] for v in service["volumes"] if ":/docker-entrypoint-initdb.d" in v]
        assert init == (["./clickhouse/initdb-first"] if name == SERVERS[0] else ["./clickhouse/initdb-replica"])
    assert "./clickhouse/migrations:/migrations:ro" in compose[SERVERS[0]]["volumes"]
    # the first server's script: every migration, in order, with the checksum `migrate`
    # records (k8s.py renders the same script for the Kubernetes Job)
    from cvat_analytics_generator.k8s import render_k8s
    script = files["clickhouse/initdb-first/apply-migrations.sh"]
    listed = re.findall(r"^(\d{4}_\w+) ([0-9a-f]{64})$", script, re.M)
    migrations = sorted(p.rsplit("/", 1)[1][:-4] for p in files
                        if p.startswith("clickhouse/migrations/") and p != INIT_LEDGER)
    assert [n for n, _ in listed] == migrations
    # and then the shard count `migrate` compares, as the ledger it renders records it
    assert "record 'cluster:shards' '2'" in script
    job = next(d for d in safe_load_all(render_k8s(spec)["migrate.yaml"]) if d["kind"] == "ConfigMap")
    assert job["data"]["apply-migrations.sh"] == script  # the Kubernetes Job runs this same script
    # both scripts parse as the shells that run them (the entrypoint's bash, the healthcheck's sh)
    for path, shell in (("clickhouse/initdb-first/apply-migrations.sh", "bash"), ("clickhouse/healthcheck.sh", "sh")):
        (tmp_path / "s").write_text(files[path])
        run = subprocess.run([shell, "-n", str(tmp_path / "s")], capture_output=True, text=True)
        assert run.returncode == 0, (path, run.stderr)
    health = files["clickhouse/healthcheck.sh"]
    assert "system.database_replicas" in health and "log_ptr >= max_log_ptr" in health and "NOT is_readonly" in health
    # a failing migration is tried again, then stops the container (which resumes at it)
    assert "cvat_migrate || exit 1" in script and "/migrations/$name.sql" in script


# --- memory ---------------------------------------------------------------------------------

def test_every_server_has_a_memory_limit_that_holds_its_queries(cluster, tmp_path):
    spec, _, files = cluster
    compose = safe_load(files["docker-compose.yml"])["services"]
    limit = spec["clickhouse"]["server"]["cluster_memory_limit_bytes"]
    assert {name: compose[name].get("mem_limit") for name in SERVERS} == {name: limit for name in SERVERS}
    assert "<max_server_memory_usage_to_ram_ratio>0.5<" in files["clickhouse/config.d/cvat.xml"]
    _, path = write_spec(tmp_path, **{"clickhouse.cluster": {"shards": 2, "replicas": 1, "insert_quorum": 1},
                                      "clickhouse.server.cluster_memory_limit_bytes": 4 * 2**30})
    from cvat_analytics_generator.spec import SpecError
    with pytest.raises(SpecError, match=r"clickhouse\.server\.cluster_memory_limit_bytes: expected enough that "
                                        r".*at least 8000000000, got 4294967296"):
        load_spec(path)


# --- traffic between servers ------------------------------------------------------------------

def test_servers_authenticate_to_each_other_with_secrets_from_the_environment_only(tmp_path, monkeypatch):
    secrets = {name: f"s3cret-{name.lower()}" for name in (
        "CLICKHOUSE_CLUSTER_SECRET", "CLICKHOUSE_INTERSERVER_PASSWORD", "CLICKHOUSE_KEEPER_PASSWORD",
        "CLICKHOUSE_ADMIN_PASSWORD")}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    spec, _ = cluster_spec(tmp_path)
    files = render_all(spec)
    assert [(p, v) for p, text in files.items() for v in secrets.values() if v in text] == []
    config = ET.fromstring(files["clickhouse/config.d/cluster.xml"])
    auth = ET.fromstring(files["clickhouse/config.d/cluster-auth.xml"])
    # queries between servers: the cluster's secret, as the user who asked; no password user
    assert config.find("remote_servers/cvat/secret").get("from_env") == "CLICKHOUSE_CLUSTER_SECRET"
    assert config.findall("remote_servers/cvat/shard/replica/user") == []
    assert config.findall("remote_servers/cvat/shard/replica/password") == []
    users = ET.fromstring(files["clickhouse/users.d/cvat-cluster.xml"])
    assert users.find("users") is None
    # fetching parts: credentials; Keeper: the servers' digest identity
    assert auth.findtext("interserver_http_credentials/user") == "cvat_interserver"
    assert auth.find("interserver_http_credentials/password").get("from_env") == "CLICKHOUSE_INTERSERVER_PASSWORD"
    assert auth.find("zookeeper/identity").get("from_env") == "CLICKHOUSE_KEEPER_IDENTITY"
    server = safe_load(files["docker-compose.yml"])["services"][SERVERS[0]]
    assert "./clickhouse/config.d/cluster-auth.xml:/etc/clickhouse-server/config.d/cluster-auth.xml:ro" \
        in server["volumes"]
    environment = server["environment"]
    assert environment["CLICKHOUSE_CLUSTER_SECRET"].startswith("${CLICKHOUSE_CLUSTER_SECRET:?")
    assert environment["CLICKHOUSE_INTERSERVER_PASSWORD"].startswith("${CLICKHOUSE_INTERSERVER_PASSWORD:?")
    assert environment["CLICKHOUSE_KEEPER_IDENTITY"].startswith("cvat:${CLICKHOUSE_KEEPER_PASSWORD:?")
    # and `make up` writes each of them into .env
    up = (REPO / "scripts" / "up.sh").read_text()
    assert all(f'"{name}"' in up for name in secrets)

    # On Kubernetes: the same file, its values from the Secret
    from cvat_analytics_generator.k8s import problems, render_k8s
    manifests = render_k8s(spec)
    assert [(p, v) for p, text in manifests.items() for v in secrets.values() if v in text] == []
    chi = safe_load(manifests["clickhouse.yaml"].split("\n---\n")[0])
    assert chi["spec"]["configuration"]["files"]["config.d/cluster-auth.xml"] == files["clickhouse/config.d/cluster-auth.xml"]
    env = {e["name"]: e for e in chi["spec"]["templates"]["podTemplates"][0]["spec"]["containers"][0]["env"]}
    assert env["CLICKHOUSE_INTERSERVER_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "interserver-password"
    assert env["CLICKHOUSE_KEEPER_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "keeper-password"
    assert env["CLICKHOUSE_KEEPER_IDENTITY"]["value"] == "cvat:$(CLICKHOUSE_KEEPER_PASSWORD)"
    assert list(env).index("CLICKHOUSE_KEEPER_PASSWORD") < list(env).index("CLICKHOUSE_KEEPER_IDENTITY")
    assert problems(manifests) == []


# --- serve, and the spec's advice --------------------------------------------------------------

def test_serve_refuses_a_cluster_spec_before_opening_anything(tmp_path, capsys):
    from cvat_analytics.service.app import serve

    spec, _ = cluster_spec(tmp_path)
    data = tmp_path / "data"
    assert serve(f"chdb://{data}", spec, "127.0.0.1", 0) == 2
    err = capsys.readouterr().err
    assert "refusing to serve a ClickHouse cluster (clickhouse.cluster: 2 shard(s) x 2 replica(s))" in err
    assert not data.exists()


@pytest.mark.parametrize("replicas, quorum, warned", [(2, 2, True), (3, 2, False), (2, 1, False)])
def test_render_warns_of_a_quorum_that_one_restart_stops(tmp_path, replicas, quorum, warned):
    _, path = cluster_spec(tmp_path, replicas=replicas, quorum=quorum)
    run = subprocess.run([sys.executable, "-m", "cvat_analytics.cli", "render", "--spec", str(path),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    assert ("one replica's restart (an upgrade, a crash) stops all ingest" in run.stderr) == warned, run.stderr
    if warned:
        assert f"insert_quorum {quorum} of {replicas} replicas" in run.stderr


@pytest.mark.clickhouse
def test_a_part_a_replica_fetches_is_fsynced_as_one_it_writes(tmp_path, chdb_dsn):
    """The quorum's other copies are fetched: events_local fsyncs a fetched part's files
    (min_compressed_bytes_to_fsync_after_fetch = 1: every part) and its directory
    (fsync_part_directory), as an inserted one (ClickHouse DataPartsExchange.cpp)."""
    from cvat_analytics import store
    from tests import cluster_store
    from tests.conftest import new_database_name

    spec, _ = cluster_spec(tmp_path)
    spec["clickhouse"]["database"] = database = new_database_name()
    client = store.connect(chdb_dsn)
    try:
        cluster_store.migrate_shard(client, spec)
        engine = client.command(f"SELECT engine_full FROM system.tables WHERE database = '{database}' "
                                "AND name = 'events_local'")
        settings = dict(re.findall(r"(\w+) = (\w+)", engine.split(" SETTINGS ", 1)[1]))
        assert {k: settings.get(k) for k in ("fsync_after_insert", "fsync_part_directory",
                                             "min_compressed_bytes_to_fsync_after_fetch")} == \
            {"fsync_after_insert": "1", "fsync_part_directory": "1", "min_compressed_bytes_to_fsync_after_fetch": "1"}
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{database}` SYNC")
