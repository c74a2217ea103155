"""`migrate` on a cluster (cvat_analytics/cluster_migrate.py): the statements it sends, to which
server, in which order, with which ledger rows; the shard-count refusal; a changed spec value
re-applied; the plan for a new cluster equal to what its init scripts run.

chdb cannot run a cluster (no Keeper, macros or remote_servers), so what is proven here is the
plan and that each statement parses on ClickHouse; docs/cluster.md ("migrate on a cluster") says
what only a real cluster shows.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from cvat_analytics.cli import main
from cvat_analytics.cluster_migrate import (ANY, ClusterMigrateError, ShardCountChanged, State, fresh_plan,
                                            init_statements, ledger_rows, plan, plan_problems, shard,
                                            shard_connector)
from cvat_analytics.migrate import MigrationDrift, migrations
from cvat_analytics_generator.cluster_ddl import SHARDS_ROW, route
from cvat_analytics_generator.render import INIT_LEDGER, environment, render_all, context
from cvat_analytics_generator.spec import load_spec
from cvat_analytics_generator.sql import SqlTemplateError, parse
from tests.conftest import write_spec

LEDGER_ROW = re.compile(r"\('([^']+)', '([^']+)'\)")


def cluster_spec(directory: Path, shards: int = 2, replicas: int = 2, **changes) -> tuple[dict, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    _, path = write_spec(directory, **{"clickhouse.cluster": {"shards": shards, "replicas": replicas,
                                                              "insert_quorum": min(2, replicas)}, **changes})
    return load_spec(path), path


def applied_by(steps) -> dict[str, str]:
    """The ledger a cluster has after these steps ran: the rows of their ledger INSERTs."""
    return {name: checksum for s in steps if s.kind == "ledger" for name, checksum in LEDGER_ROW.findall(s.sql)}


def test_each_statement_goes_where_the_replicated_database_cannot_carry_it(tmp_path):
    spec, _ = cluster_spec(tmp_path)
    steps = fresh_plan(spec)
    # The database itself: ON CLUSTER, as the Kubernetes Job creates it (the same macro).
    on_cluster = environment().from_string("{% import 'cluster/clickhouse/cluster.jinja' as cl with context %}"
                                           "{{ cl.create_database(on_cluster=true) }}").render(context(spec))
    assert (steps[0].node, steps[0].sql) == (ANY, on_cluster)
    assert "ON CLUSTER cvat" in on_cluster
    # Every other DDL on the one server; nothing else goes there.
    assert all(not s.sql.startswith(("INSERT", "SYSTEM")) for s in steps if s.node == ANY)
    assert {s.kind for s in steps if s.node == ANY} == {"schema"}
    # 0012's data step (the "recompute all" row): on each shard, in shard order, after that
    # shard's replica replayed the database's log.
    data = [s for s in steps if s.kind == "data"]
    assert [(s.node, s.source) for s in data] == [(shard(1), "0012_events_inserted_at"),
                                                  (shard(2), "0012_events_inserted_at")]
    for step in data:
        before = steps[steps.index(step) - 1]
        assert (before.node, before.sql) == (step.node, "SYSTEM SYNC DATABASE REPLICA `cvat`")
    assert "INSERT INTO `cvat`.working_time_refresh_log" in data[0].sql
    # The data step sits between the DDL before and after it in 0012, in the template's order.
    of_0012 = [(s.node, s.kind) for s in steps if s.source == "0012_events_inserted_at"]
    assert of_0012 == [(ANY, "schema")] * 3 + [(shard(1), "sync"), (shard(1), "data"),
                                                (shard(2), "sync"), (shard(2), "data")] + [(ANY, "schema")] * 2 + [
        (shard(1), "sync"), (shard(1), "ledger"), (shard(2), "sync"), (shard(2), "ledger")]
    # Each migration recorded on every shard once all its steps ran there and everywhere, never
    # before; the shard count last. The same rows on every shard.
    for m in migrations(spec):
        of_m = [s for s in steps if s.source == m.name]
        assert [(s.node, s.kind) for s in of_m[-4:]] == [(shard(1), "sync"), (shard(1), "ledger"),
                                                       (shard(2), "sync"), (shard(2), "ledger")]
        assert LEDGER_ROW.findall(of_m[-1].sql) == [(m.name, m.checksum)]
    assert ledger_rows(steps, shard(1)) == ledger_rows(steps, shard(2)) == \
        [(m.name, m.checksum) for m in migrations(spec)] + [(SHARDS_ROW, "2")]
    assert LEDGER_ROW.findall(steps[-1].sql) == [(SHARDS_ROW, "2")]


def test_the_plan_for_a_new_cluster_is_what_its_init_scripts_run(tmp_path):
    spec, _ = cluster_spec(tmp_path, shards=3)
    files = render_all(spec)
    assert INIT_LEDGER in files  # the first server's init scripts record the ledger, shard count included
    steps = fresh_plan(spec)
    sent = [s.sql for s in steps if s.kind in ("schema", "data") and s.node in (ANY, shard(1))]
    *init, init_ledger = init_statements(files)
    assert sent[1:] == init[1:]  # byte for byte
    assert sent[0] == init[0].replace("`cvat`\nENGINE", "`cvat` ON CLUSTER cvat\nENGINE")
    assert ledger_rows(steps, shard(3)) == LEDGER_ROW.findall(init_ledger)
    # And so a cluster started from the init scripts has nothing pending.
    assert plan(spec, State(applied_by(steps))) == []
    assert applied_by(steps)[SHARDS_ROW] == "3"


@pytest.mark.clickhouse  # check runs every statement of the plan through ClickHouse's parser (chdb)
def test_check_proves_the_plan_parses_and_matches_the_init_scripts(tmp_path):
    spec, _ = cluster_spec(tmp_path)
    files = render_all(spec)
    assert plan_problems(spec, files) == []
    # An init script that no longer matches migrate's plan is named (one source of truth).
    tampered = dict(files)
    rel = "clickhouse/migrations/0006_events_fsync.sql"
    tampered[rel] = tampered[rel].replace("fsync_part_directory = 1", "fsync_part_directory = 0")
    init = init_statements(files)[:-1]  # the migrations' statements, the ledger after them
    assert plan_problems(spec, tampered) == [
        "migrate's plan for a new cluster is not what the init scripts (clickhouse/migrations/) run: "
        f"statement {init.index(next(s for s in init if 'fsync_part_directory' in s)) + 1} of {len(init)} differs"]
    # And an init ledger that records other rows than migrate would.
    tampered = {**files, INIT_LEDGER: files[INIT_LEDGER].replace("('cluster:shards', '2')", "('cluster:shards', '3')")}
    assert plan_problems(spec, tampered) == [
        "migrate's ledger rows for a new cluster are not the ones the init scripts record "
        f"({INIT_LEDGER}: rendered from the same migrations)"]


def test_a_changed_retention_is_applied_again_and_nothing_else(tmp_path):
    spec, _ = cluster_spec(tmp_path / "a", **{"clickhouse.retention_days": 365})
    applied = applied_by(fresh_plan(spec))
    shorter, _ = cluster_spec(tmp_path / "b", **{"clickhouse.retention_days": 30})
    steps = plan(shorter, State(applied, ttl_days=365))
    assert {s.source for s in steps if s.kind == "schema"} == {"0003_events_retention_and_dedup"}
    assert [s.sql for s in steps if s.kind == "schema"][0] == \
        "ALTER TABLE `cvat`.events_local MODIFY TTL toDateTime(timestamp) + toIntervalDay(30)"
    assert [s.node for s in steps if s.kind == "ledger"] == [shard(1), shard(2)]
    assert [name for name, _ in ledger_rows(steps, shard(2))] == ["0003_events_retention_and_dedup"]
    assert plan(shorter, State({**applied, **applied_by(steps)}, ttl_days=30)) == []
    # Retention 0: 0003 sets no TTL, so the one in force is removed first.
    none, _ = cluster_spec(tmp_path / "c", **{"clickhouse.retention_days": 0})
    steps = plan(none, State(applied, ttl_days=365))
    assert steps[0].sql == "ALTER TABLE `cvat`.events_local REMOVE TTL"
    assert plan(none, State(applied, ttl_days=None))[0].sql != steps[0].sql


def test_a_changed_refresh_interval_is_applied_again(tmp_path):
    spec, _ = cluster_spec(tmp_path / "a", **{"working_time.refresh_interval_s": 60})
    applied = applied_by(fresh_plan(spec))
    slower, _ = cluster_spec(tmp_path / "b", **{"working_time.refresh_interval_s": 300})
    steps = plan(slower, State(applied))
    # 0023 after 0018: the view it leaves runs the query with the lag guard
    assert {s.source for s in steps if s.kind == "schema"} == {"0018_working_time_refresh_slots",
                                                               "0023_working_time_refresh_guard"}
    last_view = [s for s in steps if "REFRESH EVERY" in s.sql][-1]
    last_query = [s for s in steps if s.sql.startswith("CREATE VIEW `cvat`.working_time_refresh_query")][-1]
    assert "REFRESH EVERY 300 SECOND" in last_view.sql
    assert "FROM `cvat`.working_time_refresh_query" in last_view.sql and "'behind'" in last_query.sql
    assert steps.index(last_query) < steps.index(last_view)


def test_a_changed_vector_metrics_retention_is_applied_to_every_shards_table(tmp_path):
    spec, _ = cluster_spec(tmp_path / "a")
    applied = applied_by(fresh_plan(spec))
    assert spec["vector"]["metrics"]["retention_days"] != 30
    shorter, _ = cluster_spec(tmp_path / "b", **{"vector.metrics.retention_days": 30})
    steps = [s for s in plan(shorter, State(applied)) if s.kind == "schema"]
    assert [(s.source, s.sql) for s in steps] == [
        ("0020_vector_metrics_retention",
         "ALTER TABLE `cvat`.vector_metrics_local MODIFY TTL toDateTime(timestamp) + toIntervalDay(30)")]


def test_an_applied_migration_that_changed_is_drift(tmp_path):
    spec, _ = cluster_spec(tmp_path)
    applied = applied_by(fresh_plan(spec))
    with pytest.raises(MigrationDrift, match=r"generator/templates/cluster/clickhouse/migrations/0002_create_events"):
        plan(spec, State({**applied, "0002_create_events": "0" * 64}))


def test_a_new_shard_count_is_refused_unless_the_data_was_resharded(tmp_path):
    two, _ = cluster_spec(tmp_path / "a", shards=2)
    applied = applied_by(fresh_plan(two))
    three, _ = cluster_spec(tmp_path / "b", shards=3)
    with pytest.raises(ShardCountChanged, match=r"sharded over 2 shards .* now says 3 \(clickhouse\.cluster\.shards\)"
                                                r".*docs/cluster\.md .*--resharded"):
        plan(three, State(applied))
    # A change of replicas alone is not a re-shard.
    assert plan(cluster_spec(tmp_path / "c", shards=2, replicas=3)[0], State(applied)) == []
    # Re-sharded (docs/cluster.md): the new count is recorded on every shard, nothing else runs.
    steps = plan(three, State(applied), resharded=True)
    assert [(s.node, s.kind) for s in steps] == [(shard(n), k) for n in (1, 2, 3) for k in ("sync", "ledger")]
    assert LEDGER_ROW.findall(steps[1].sql) == [(SHARDS_ROW, "3")]


def test_a_statement_kind_without_a_route_is_refused():
    assert route("ALTER TABLE `cvat`.events_local UPDATE x = 1 WHERE 1", "f:1") == "one server"
    for sql in ("SELECT 1", "OPTIMIZE TABLE `cvat`.events_local FINAL", "SYSTEM STOP MERGES",
                "TRUNCATE TABLE `cvat`.events_local", "DELETE FROM `cvat`.events_local WHERE 1"):
        with pytest.raises(SqlTemplateError, match=r"^f:1: a cluster migration may hold"):
            route(sql, "f:1")


def test_migrate_on_a_cluster_spec_needs_a_server(tmp_path, capsys):
    _, path = cluster_spec(tmp_path)
    assert main(["migrate", "--spec", str(path), "--dsn", f"chdb://{tmp_path / 'store'}"]) == 1
    assert "is the embedded store: give --dsn http://user@host:8123 of one of the cluster's servers" \
        in capsys.readouterr().err
    assert not (tmp_path / "store").exists()
    (tmp_path / "single").mkdir()
    _, single = write_spec(tmp_path / "single")
    assert main(["migrate", "--spec", str(single), "--dry-run"]) == 1
    assert "--dry-run, --resharded and --shard-dsn are for a cluster spec" in capsys.readouterr().err
    # A 1 x 1 spec migrating a Kubernetes install is the cluster's migrate.
    assert main(["migrate", "--spec", str(single), "--target", "k8s", "--dsn", f"chdb://{tmp_path / 'store'}"]) == 1
    assert "is the embedded store" in capsys.readouterr().err


def test_a_shard_dsn_names_a_shard_of_the_spec(tmp_path):
    spec, _ = cluster_spec(tmp_path)
    with pytest.raises(ClusterMigrateError, match=r"--shard-dsn '3'=...: expected N=DSN with N a shard "
                                                  r"number from 1 to clickhouse.cluster.shards \(2\)") as refused:
        shard_connector("http://admin@127.0.0.1:8123", None, spec, ["3=http://admin:secret@127.0.0.1:8125"])
    assert "secret" not in str(refused.value)


@pytest.mark.clickhouse
def test_dry_run_reads_the_ledger_over_http_prints_the_plan_per_server_and_sends_nothing(make_served, tmp_path):
    """Against `serve`'s read-only SQL interface (a real server over HTTP, on which any write
    fails): a cluster whose database does not exist yet gets the new-cluster plan."""
    import subprocess
    import sys

    from cvat_analytics.service.access import Principal, Token

    secret = "analyst-secret-0123456789"
    served = make_served(tokens=[Token(secret.encode(), Principal("analyst", frozenset({"sql"})))])
    spec, path = cluster_spec(tmp_path, **{"clickhouse.database": "cluster_to_be"})
    host, port = served.server_address[:2]
    cli = Path(sys.executable).with_name("cvat-analytics")
    run = subprocess.run([str(cli), "migrate", "--spec", str(path), "--dry-run",
                          "--dsn", f"http://analyst:{secret}@{host}:{port}/clickhouse"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    expected = [s for s in fresh_plan(spec)]
    assert run.stdout.count("SYSTEM SYNC DATABASE REPLICA `cluster_to_be`;") == \
        sum(s.kind == "sync" for s in expected) > 0
    lines = run.stdout.splitlines()
    assert lines[0] == "-- 0001_create_database: on any one server (the Replicated database carries it to every server)"
    assert lines[1] == "CREATE DATABASE IF NOT EXISTS `cluster_to_be` ON CLUSTER cvat"
    assert "-- 0012_events_inserted_at: on one replica of shard 2" in lines
    assert lines[-3:] == ["-- ledger: on one replica of shard 2",
                          "INSERT INTO `cluster_to_be`.schema_migrations (name, checksum) VALUES",
                          "    ('cluster:shards', '2');"]


def test_after_the_kubernetes_job_migrate_target_k8s_has_nothing_to_send(tmp_path):
    """The Job (deploy-k8s/migrate.yaml) runs the compose cluster's first-start script: it
    records each migration with migrate's checksum, and the shard count; on a 1 x 1
    Kubernetes install the schema is still the cluster's (--target k8s)."""
    import yaml

    from cvat_analytics_generator.k8s import render_k8s

    (tmp_path / "k").mkdir()
    _, path = write_spec(tmp_path / "k")
    spec = load_spec(path)
    configmap = next(d for d in yaml.safe_load_all(render_k8s(spec)["migrate.yaml"]) if d["kind"] == "ConfigMap")
    job_ledger = dict(re.findall(r"^(\d{4}_\w+) ([0-9a-f]{64})$", configmap["data"]["apply-migrations.sh"], re.M))
    assert job_ledger  # the Job's own record of what it applied
    assert f"record '{SHARDS_ROW}' '1'" in configmap["data"]["apply-migrations.sh"]  # and the shard count
    assert plan(spec, State({**job_ledger, SHARDS_ROW: "1"}), k8s=True) == []
    # Without the shard count (a Job of an older render), that is all migrate records.
    steps = plan(spec, State(job_ledger), k8s=True)
    assert [(s.node, s.kind) for s in steps] == [(shard(1), "sync"), (shard(1), "ledger")]
    assert LEDGER_ROW.findall(steps[1].sql) == [(SHARDS_ROW, "1")]
    # And the statements migrate sends on a new install are the Job's files, one by one.
    job = [s.sql for name in sorted(configmap["data"]) if name.endswith(".sql")
           for s in parse(configmap["data"][name], name, options={"reapply"}).statements]
    sent = [s.sql for s in fresh_plan(spec, k8s=True) if s.kind in ("schema", "data")]
    assert sent[1:] == job[1:] and "ON CLUSTER cvat" in sent[0]


def test_a_data_step_through_a_distributed_table_is_refused(tmp_path):
    """Run once per shard, it would read (or write) every shard each time: rows N times over."""
    from cvat_analytics.cluster_migrate import _distributed_tables, _refuse_spread_reads

    spec, _ = cluster_spec(tmp_path)
    spread = _distributed_tables(migrations(spec))
    assert spread == {"events", "working_time_totals", "vector_metrics", "imports"}
    _refuse_spread_reads("INSERT INTO `cvat`.working_time_refresh_log SELECT count() FROM `cvat`.events_local", spread, "f:3")
    for sql in ("INSERT INTO `cvat`.working_time_refresh_log SELECT count() FROM `cvat`.events WHERE 1",
                "INSERT INTO `cvat`.`working_time_totals` SELECT * FROM `cvat`.working_time_totals_local"):
        with pytest.raises(SqlTemplateError, match=r"^f:3: a data step \(INSERT, run on each shard\) names "
                                                   r"(events|working_time_totals), a Distributed table"):
            _refuse_spread_reads(sql, spread, "f:3")


@pytest.mark.clickhouse
def test_a_retention_that_drops_stored_events_is_refused_without_yes(store):
    """As on one server: counted through `events` (on a cluster the Distributed table over every
    shard; here one store's), before anything is sent."""
    from cvat_analytics.cluster_migrate import Step, _check_retention
    from cvat_analytics.retention import RETENTION_MIGRATION, RetentionRefused

    store.client.command(f"INSERT INTO {store.database}.events (scope, timestamp, source) VALUES "
                         "('update:job', now64(3) - INTERVAL 40 DAY, 'server'), "
                         "('update:job', now64(3) - INTERVAL 50 DAY, 'server'), ('update:job', now64(3), 'server')")
    spec = {**store.spec, "clickhouse": {**store.spec["clickhouse"], "retention_days": 30}}
    steps = [Step(ANY, "ALTER TABLE x MODIFY TTL y", RETENTION_MIGRATION, "schema")]
    with pytest.raises(RetentionRefused, match=r"^refused: a retention of 30 days drops 2 events older than 30 days "
                                               r"from every shard's events_local; run migrate --yes"):
        _check_retention(store.client, spec, State(ttl_days=None), steps, assume_yes=False, log=print)
    said = []
    _check_retention(store.client, spec, State(ttl_days=None), steps, assume_yes=True, log=said.append)
    assert said == ["a retention of 30 days drops 2 events older than 30 days from every shard's events_local: "
                    "accepted (--yes)"]
    _check_retention(store.client, spec, State(ttl_days=20), steps, assume_yes=False, log=print)  # drops nothing new
    _check_retention(store.client, spec, State(), [], assume_yes=False, log=print)  # 0003 not in the plan
