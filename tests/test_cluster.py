"""The cluster render (clickhouse.cluster above 1 x 1; docs/cluster.md).

- The default spec (1 x 1) renders exactly the committed single-server tree, and none of
  the cluster's files.
- A 2 x 2 render passes `cvat-analytics check` (compose, Vector's schema, every statement
  parsed by the engine and its single-node equivalent executed) and holds what the cluster
  needs: macros, remote_servers with every server, 3 Keeper nodes, Distributed `events`.
- The sharding claim: a demo stream split by the rendered sharding key, evaluated by the
  engine, over N separate chdb stores (one process each), each running the cluster's
  per-shard working-time refresh, gives exactly the single server's totals; so do the
  dashboard panels whose results merge (counts, sums, and distinct users, since each user
  is on one shard). The cluster's productivity statements over the shards' tables together
  give the single server's figures (which come from the state its refresh keeps).
"""
from __future__ import annotations

import filecmp
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cvat_analytics import productivity
from cvat_analytics.demo import Demo, to_row
from cvat_analytics_generator.render import render_all, write_tree
from cvat_analytics_generator.spec import SpecError, load_spec
from cvat_analytics_generator.validate import sql_problems
from cvat_analytics_generator.validate_sql import _DISTRIBUTED
from cvat_analytics_generator.yaml_load import safe_load
from tests import cluster_store
from tests.conftest import REPO, new_database_name, write_spec

SHARDS = 3
EVENTS = 20_000
# A sharding key that splits users across shards: the control that shows the totals
# comparison can fail.
CONTROL_KEY = "cityHash64(timestamp, scope)"


def cluster_spec(directory: Path, shards: int = 2, replicas: int = 2, quorum: int = 2) -> tuple[dict, Path]:
    _, path = write_spec(directory, **{"clickhouse.cluster": {"shards": shards, "replicas": replicas,
                                                              "insert_quorum": quorum}})
    return load_spec(path), path


# --- 1 x 1 is the single server ---------------------------------------------------------

def test_the_default_one_by_one_spec_renders_the_committed_deploy_tree_and_no_cluster_file(tmp_path):
    spec = load_spec()
    assert spec["clickhouse"]["cluster"] == {"shards": 1, "replicas": 1, "insert_quorum": 1}
    out = tmp_path / "deploy"
    write_tree(render_all(spec), out)
    rendered = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    committed = sorted(str(p.relative_to(REPO / "deploy")) for p in (REPO / "deploy").rglob("*") if p.is_file())
    assert rendered == committed
    _, mismatch, errors = filecmp.cmpfiles(out, REPO / "deploy", rendered, shallow=False)
    assert (mismatch, errors) == ([], [])
    assert not any(name.startswith(("keeper/", "clickhouse/initdb-replica/")) for name in rendered)
    assert "clickhouse/config.d/cluster.xml" not in rendered


def test_a_quorum_above_the_replicas_is_refused_naming_the_key(tmp_path):
    _, path = write_spec(tmp_path, **{"clickhouse.cluster": {"shards": 2, "replicas": 2, "insert_quorum": 3}})
    with pytest.raises(SpecError, match=r"clickhouse\.cluster\.insert_quorum: expected at most "
                                        r"clickhouse\.cluster\.replicas \(2\), got 3"):
        load_spec(path)


def test_migrate_refuses_a_cluster_spec_and_says_why(tmp_path):
    from cvat_analytics.migrate import ClusterSpec, migrate

    spec, _ = cluster_spec(tmp_path)
    with pytest.raises(ClusterSpec, match=r"clickhouse\.cluster: 2 shards x 2 replicas.*cluster_migrate"):
        migrate(None, spec)  # refused before the store is touched


# --- the 2 x 2 render -------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster_files(tmp_path_factory) -> dict[str, str]:
    spec, _ = cluster_spec(tmp_path_factory.mktemp("cluster"))
    return render_all(spec)


def test_render_and_check_of_a_cluster_spec_through_the_cli(tmp_path):
    _, spec_path = cluster_spec(tmp_path)
    out = tmp_path / "deploy-cluster"
    for command in ("render", "check"):
        run = subprocess.run([sys.executable, "-m", "cvat_analytics.cli", command, "--spec", spec_path, "--out", out],
                             capture_output=True, text=True, cwd=REPO, timeout=600)
        assert run.returncode == 0, run.stdout + run.stderr
    assert "every rendered file is valid" in run.stdout
    assert (out / "keeper" / "keeper.xml").is_file() and not (out / "cvat-compose.override.yml").exists()


def test_check_names_a_replicated_statement_that_does_not_parse_and_one_whose_equivalent_fails(cluster_files):
    # both in one tree (one run of the engine): a statement that does not parse in one
    # migration, and one whose single-node equivalent fails in another
    broken = dict(cluster_files)
    metrics, events = "clickhouse/migrations/0016_vector_metrics.sql", "clickhouse/migrations/0002_create_events.sql"
    broken[metrics] = broken[metrics].replace("ENGINE = ReplicatedMergeTree\n", "ENGINE = ReplicatedMergeTree\nPARTITION BYE\n")
    broken[events] = broken[events].replace("cityHash64(ifNull(user_id, 0))", "cityHash64(ifNull(no_such_column, 0))")
    assert broken[metrics] != cluster_files[metrics] and broken[events] != cluster_files[events]
    problems = sql_problems(broken)
    assert any(p.startswith(f"{metrics}: statement 1 does not parse on ClickHouse") for p in problems), problems
    assert any(p.startswith(f"{events}: statement 2 does not execute on ClickHouse (its single-node equivalent)")
               and "no_such_column" in p for p in problems), problems


def test_the_cluster_render_has_four_servers_three_keepers_and_one_remote_servers_entry(cluster_files):
    compose = safe_load(cluster_files["docker-compose.yml"])
    services = compose["services"]
    servers = sorted(n for n in services if n.startswith("clickhouse-s"))
    assert servers == ["clickhouse-s1-r1", "clickhouse-s1-r2", "clickhouse-s2-r1", "clickhouse-s2-r2"]
    assert sorted(n for n in services if n.startswith("clickhouse-keeper")) == [
        "clickhouse-keeper-1", "clickhouse-keeper-2", "clickhouse-keeper-3"]
    for name in servers:
        service = services[name]
        assert service["environment"]["CLICKHOUSE_SHARD"] == name[len("clickhouse-s")]
        assert service["networks"]["default"]["aliases"] == ["clickhouse"]  # Vector and Grafana reach any
        init = [v for v in service["volumes"] if v.endswith(":/docker-entrypoint-initdb.d:ro")]
        assert init == [("./clickhouse/initdb-first" if name == "clickhouse-s1-r1" else "./clickhouse/initdb-replica")
                        + ":/docker-entrypoint-initdb.d:ro"]
    assert set(services["vector"]["depends_on"]) == set(servers)
    # every server's image is the pinned one, and so is every Keeper's
    images = {services[n]["image"] for n in services if n.startswith("clickhouse")}
    assert images == {"clickhouse/clickhouse-server:26.9.6.6"}

    config = ET.fromstring(cluster_files["clickhouse/config.d/cluster.xml"])
    shards = config.findall("remote_servers/cvat/shard")
    assert [[r.findtext("host") for r in s.findall("replica")] for s in shards] == [
        ["clickhouse-s1-r1", "clickhouse-s1-r2"], ["clickhouse-s2-r1", "clickhouse-s2-r2"]]
    assert all(s.findtext("internal_replication") == "true" for s in shards)
    assert config.find("macros/shard").get("from_env") == "CLICKHOUSE_SHARD"
    assert [n.findtext("host") for n in config.findall("zookeeper/node")] == [
        "clickhouse-keeper-1", "clickhouse-keeper-2", "clickhouse-keeper-3"]
    keeper = ET.fromstring(cluster_files["keeper/keeper.xml"])
    assert len(keeper.findall("keeper_server/raft_configuration/server")) == 3

    users = ET.fromstring(cluster_files["clickhouse/users.d/cvat-cluster.xml"])
    assert users.findtext("profiles/cvat_ingest/insert_quorum") == "2"
    assert users.findtext("profiles/cvat_ingest/distributed_foreground_insert") == "1"
    # An insert waiting for its quorum gives up before the ingest user's queries are cut
    # off, and those before Vector sends the batch again.
    quorum_s = int(users.findtext("profiles/cvat_ingest/insert_quorum_timeout")) / 1000
    ingest = ET.fromstring(cluster_files["clickhouse/users.d/cvat-users.xml"])
    vector = safe_load(cluster_files["vector/vector.yaml"])["sinks"]["clickhouse"]
    assert quorum_s < int(ingest.findtext("profiles/cvat_ingest/max_execution_time")) < vector["request"]["timeout_secs"]
    assert ingest.findall("users/cvat_ingest/grants/query")[1].text == "GRANT INSERT ON `cvat`.`events_local`"


def test_readers_keep_the_single_server_names(cluster_files):
    """Grafana, the export and CVAT's queries read `events` and `working_time_totals`: in
    the cluster these are the Distributed tables, and the dashboards are the same files, but
    Productivity's, which reads the events where the single server reads the state its
    refresh keeps (a job's events are spread over the shards)."""
    from cvat_analytics_generator import grafana

    single = render_all(load_spec())
    migrations = "\n".join(t for p, t in cluster_files.items() if p.startswith("clickhouse/migrations/"))
    assert re.search(r"CREATE TABLE IF NOT EXISTS `cvat`\.events\n\([^;]*\)\nENGINE = Distributed\(cvat, "
                     r"`cvat`, events_local, ", migrations)
    assert "CREATE TABLE IF NOT EXISTS `cvat`.working_time_totals\n" in migrations
    assert "ENGINE = Distributed(cvat, `cvat`, working_time_totals_local)" in migrations
    for path, text in single.items():
        # (not the alert rules: they read per-shard tables and are single-server only, tests/test_alerts.py)
        if path.startswith(("grafana/", "vector/vector.yaml", "clickhouse/queries/working_time")) \
                and not path.startswith("grafana/provisioning/alerting/"):
            if path == "clickhouse/queries/working_time_wait.sql":
                # a shard has the one-view refresh: no plan view (queries/working_time.jinja,
                # plan_select), no productivity state
                views = re.findall(r"SYSTEM (REFRESH|WAIT) VIEW `cvat`\.(\w+);", cluster_files[path])
                assert views == [("REFRESH", "working_time_refresh"), ("WAIT", "working_time_refresh")]
                assert "productivity_refresh" not in cluster_files[path]
                continue
            if path == "grafana/dashboards/productivity.json":
                text = grafana.definition_json(grafana.load("productivity", load_spec(), from_events=True), load_spec())
                assert "productivity_jobs" not in text and "productivity_objects" not in text
            assert cluster_files[path] == text, path
    assert "productivity_jobs" in single["grafana/dashboards/productivity.json"]


# --- the sharding proof -----------------------------------------------------------------

# Columns whose per-shard values add up to the single server's: counts and sums, and
# distinct users (each user's events are on one shard, so shards count disjoint users).
_MERGEABLE = r"(?:count|countIf|sum|sumIf|uniqExact\(\s*user_id|uniqExactIf\(\s*user_id)"
# Results that do not add up across shards: a top-N cut, a share or an average of the whole;
# and a panel reading now() (its stores are queried seconds apart, and "Active users (now)"
# lost a user between them when the run fell a quarter past the demo's last hour).
_NOT_MERGEABLE = re.compile(r"\b(?:LIMIT|OVER|avg|quantile|min|max|round|argMax|anyLast|now\w*|today|yesterday)\b",
                            re.IGNORECASE)


def _value_columns(sql: str, columns: list[str]) -> list[str] | None:
    """The columns that add up across shards, or None when the panel's result does not merge."""
    if _NOT_MERGEABLE.search(sql):
        return None
    values = [c for c in columns
              if re.search(_MERGEABLE + r"[^,]*?\)\s+AS\s+`?" + re.escape(c) + r"`?\b", sql)]
    return values or None


def _keyed(columns: list[str], rows: list[list], values: list[str]) -> dict:
    at = [columns.index(c) for c in values]
    merged: dict[tuple, list] = {}
    for row in rows:
        key = tuple(v for i, v in enumerate(row) if i not in at)
        sums = merged.setdefault(key, [0] * len(at))
        for j, i in enumerate(at):
            sums[j] += row[i]
    return merged


@pytest.mark.slow(44)
@pytest.mark.clickhouse
def test_a_stream_split_by_the_rendered_sharding_key_gives_the_single_servers_numbers(tmp_path, chdb_dsn):
    from cvat_analytics import store

    spec, spec_path = cluster_spec(tmp_path, shards=SHARDS, replicas=2, quorum=2)
    files = render_all(spec)
    events_ddl = next(s for s in files["clickhouse/migrations/0002_create_events.sql"].split(";")
                      if "Distributed(" in s)
    key = _DISTRIBUTED.search(events_ddl + ";")["key"]
    assert key == "cityHash64(ifNull(user_id, 0))"

    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    demo = Demo(seed=7, days=2, now_ms=int(now.timestamp() * 1000))
    rows = b"".join(to_row(ev) for ev in demo.events(EVENTS))
    window = (now - timedelta(days=3), now + timedelta(hours=1))
    client = store.connect(chdb_dsn)
    databases = []

    def named(spec: dict) -> dict:
        """The spec naming a database of its own in the session's chdb path."""
        copy = json.loads(json.dumps(spec))
        copy["clickhouse"]["database"] = new_database_name()
        databases.append(copy["clickhouse"]["database"])
        return copy

    # The single server: every event, the default render's migrations. It also splits the
    # stored events by `key % SHARDS`, computed by the engine.
    try:
        single = cluster_store.single(client, named(load_spec(spec_path)), rows, SHARDS,
                                      {"shard": key, "control": CONTROL_KEY}, tmp_path, window)
        assert single["events"] == EVENTS and single["totals"]

        def stores(prefix: str, panels: bool = True) -> list[dict]:
            return [cluster_store.shard(client, named(spec), (tmp_path / f"{prefix}_{k}.ndjson").read_bytes(),
                                        window if panels else None)
                    for k in range(SHARDS)]

        def summed(found: list[dict]) -> Counter:
            merged = Counter()
            for s in found:
                for *key_cols, ms in s["totals"]:
                    merged[tuple(key_cols)] += ms
            return +merged

        shards = stores("shard")

        # Every event is on exactly one shard, every shard has some, every user is on one shard.
        assert sum(s["events"] for s in shards) == EVENTS
        assert all(s["events"] > 0 for s in shards)
        seen = Counter(u for s in shards for u in s["users"])
        assert set(seen) == set(single["users"]) and set(seen.values()) == {1}

        # Working time: each shard's refresh over its own events adds up to the single server's.
        expected = Counter({tuple(k): ms for *k, ms in single["totals"]})
        assert summed(shards) == expected
        # ... and it would not if a user's events were spread over shards.
        control = stores("control", panels=False)
        assert sum(s["events"] for s in control) == EVENTS
        assert summed(control) != expected

        # Dashboard panels whose results merge: the same numbers from the shards as from one server.
        proven = []
        for name, panel in single["panels"].items():
            values = _value_columns(panel["sql"], panel["columns"])
            if values is None:
                continue
            per_shard = Counter()
            for s in shards:
                for key_cols, sums in _keyed(s["panels"][name]["columns"], s["panels"][name]["rows"], values).items():
                    for j, v in enumerate(sums):
                        per_shard[(key_cols, j)] += v
            whole = Counter()
            for key_cols, sums in _keyed(panel["columns"], panel["rows"], values).items():
                for j, v in enumerate(sums):
                    whole[(key_cols, j)] += v
            assert +per_shard == +whole, name
            if any(whole.values()):  # an all-zero panel proves nothing
                proven.append(name)
        assert len(proven) >= 10, proven

        # Productivity: the cluster render's statements read the events through `events` (a job's
        # events are on every shard its users are), so over the shards' tables together (a Merge
        # table stands in for Distributed) they give the single server's figures, which come
        # from the state its refresh keeps.
        shard_dbs = databases[1:1 + SHARDS]
        together = named(spec)
        db = together["clickhouse"]["database"]
        client.command(f"CREATE DATABASE `{db}`")
        for table, local in (("events", "events_local"), ("working_time_totals", "working_time_totals_local")):
            client.command(f"CREATE TABLE `{db}`.{table} AS `{shard_dbs[0]}`.{local} "
                           f"ENGINE = Merge(REGEXP('^({'|'.join(shard_dbs)})$'), '^{local}$')")
        one = json.loads(json.dumps(load_spec(spec_path)))  # the single server cluster_store.single made
        one["clickhouse"].update(database=databases[0], cluster={"shards": 1, "replicas": 1, "insert_quorum": 1})
        figures = 0
        for ask, shapes in ((productivity.speed, [{"level": level} for level in productivity.LEVELS]),
                            (productivity.reviews, [{"per": per} for per in productivity.REVIEWS_PER]),
                            (productivity.timesheet, [{"by_project": False}, {"by_project": True}])):
            for shape in shapes:
                from_state = ask(client, one, **shape)
                from_shards = ask(client, together, **shape)
                assert from_shards == from_state, (ask.__name__, shape)
                figures += len(from_state[1])
        assert figures > 100
        print(f"\nevents per shard {[s['events'] for s in shards]}, users per shard {[len(s['users']) for s in shards]}")
        print(f"{len(proven)} mergeable panels equal across {SHARDS} shards:", *proven, sep="\n  ")
    finally:
        for database in databases:
            client.command(f"DROP DATABASE IF EXISTS `{database}` SYNC")
