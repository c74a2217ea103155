"""The working-time refresh's lag guard (issue #30, docs/cluster.md "A replica that is
behind"; queries/refresh_guard.jinja, migration 0023), on split stores: two chdb databases
play two replicas of one shard, each running the cluster render's migrations. Replica B is
given every row replica A holds except what A's last refresh wrote to the totals (the part
B has not fetched yet). B's refresh must refuse (write no totals, log why); once the missing
part arrives, B's totals equal A's and B's next refresh works. Without the guard B writes
new-minus-stored over totals missing that part, and the part, arriving, counts twice.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from cvat_analytics import store, working_time
from cvat_analytics.demo import Demo, to_row
from cvat_analytics.migrate import copy_schema
from cvat_analytics_generator.render import render_all
from tests import cluster_store
from cvat_analytics_generator.spec import load_spec
from tests.conftest import HOURLY_REFRESH, new_database_name, write_spec
from tests.test_cluster_faults import cluster_spec

KEY = "user_id, toString(hour), ifNull(project_id, 0), ifNull(task_id, 0), ifNull(job_id, 0)"
# Every table a shard's refresh reads or writes, and events_local, copied to the other "replica"
COPIED = ["events_local", "working_time_checkpoints", "working_time_slot_totals",
          "working_time_slot_checkpoints", "working_time_refresh_log", "working_time_refresh_sums"]


def _totals(client, db: str) -> dict:
    rows = client.query(f"SELECT {KEY}, sum(working_time_ms) AS ms FROM `{db}`.working_time_totals_local "
                        "GROUP BY ALL HAVING ms != 0").result_rows
    return {tuple(r[:-1]): r[-1] for r in rows}


def _refresh(client, db: str) -> tuple:
    """One refresh of `db`, out of schedule; its log row (error, watermark)."""
    client.command(f"SYSTEM REFRESH VIEW `{db}`.working_time_refresh")
    client.command(f"SYSTEM WAIT VIEW `{db}`.working_time_refresh")
    return client.query(f"SELECT argMax((error, watermark), refreshed_at) "
                        f"FROM `{db}`.working_time_refresh_log").result_rows[0][0]


def _written(client, db: str) -> list[int]:
    """Rows of what a run writes besides the totals and its log row."""
    return [client.query(f"SELECT count() FROM `{db}`.{table}").result_rows[0][0] for table in
            ("working_time_checkpoints", "working_time_slot_totals", "working_time_slot_checkpoints",
             "working_time_refresh_sums")]


def _fetch(client, src: str, dst: str, tables: list[str]) -> None:
    """`dst` holds what `src` holds in these tables (as a replica that fetched every part)."""
    present = {r[0] for r in client.query(f"SHOW TABLES FROM `{src}`").result_rows}
    for table in present.intersection(tables):  # (a store without the guard has no sums)
        client.command(f"TRUNCATE TABLE `{dst}`.{table}")
        client.command(f"INSERT INTO `{dst}`.{table} SELECT * FROM `{src}`.{table}")


@pytest.mark.clickhouse
def test_a_refresh_on_a_replica_missing_the_last_runs_totals_refuses_and_nothing_counts_twice(tmp_path, chdb_dsn):
    # refreshes once an hour: none runs but those the test starts (and the first, at creation)
    spec = load_spec(write_spec(tmp_path, **{"clickhouse.cluster": {"shards": 1, "replicas": 2, "insert_quorum": 2},
                                             **HOURLY_REFRESH})[1])
    now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
    events = list(Demo(seed=3, days=1, now_ms=now_ms).events(4_000))
    first, second = (b"".join(to_row(e) for e in part) for part in (events[:2_000], events[2_000:]))
    client = store.connect(chdb_dsn)
    a, b = new_database_name(), new_database_name()
    specs = {}
    try:
        for db in (a, b):
            specs[db] = {**spec, "clickhouse": {**spec["clickhouse"], "database": db}}
        cluster_store.migrate_shard(client, specs[a])
        copy_schema(client, a, b)  # the same schema, without migrating it again

        # A's first runs; B fetches all of it.
        client.raw_insert(f"`{a}`.events_local", None, first, fmt="JSONEachRow",
                          settings=dict(store.INSERT_SETTINGS))
        working_time.wait_current(client, specs[a])
        _fetch(client, a, b, COPIED + ["working_time_totals_local"])
        assert _totals(client, b) == _totals(client, a) != {}
        assert _refresh(client, b)[0] == ""  # a replica that holds everything works

        # A's next run; B fetches everything but that run's totals (the part, kept aside).
        client.raw_insert(f"`{a}`.events_local", None, second, fmt="JSONEachRow",
                          settings=dict(store.INSERT_SETTINGS))
        working_time.wait_current(client, specs[a])
        before = _totals(client, b)
        assert before != _totals(client, a)
        client.command(f"""
            CREATE TABLE `{b}`.missing_part ENGINE = Memory AS
            SELECT user_id, hour, project_id, task_id, job_id, sum(ms) AS working_time_ms FROM (
                SELECT user_id, hour, project_id, task_id, job_id, working_time_ms AS ms FROM `{a}`.working_time_totals_local
                UNION ALL
                SELECT user_id, hour, project_id, task_id, job_id, -working_time_ms FROM `{b}`.working_time_totals_local)
            GROUP BY ALL HAVING working_time_ms != 0""")
        _fetch(client, a, b, COPIED)
        written = _written(client, b)
        last_watermark = client.query(f"SELECT max(watermark) FROM `{b}`.working_time_refresh_log").result_rows[0][0]
        error, watermark = _refresh(client, b)
        assert error.startswith("behind: this store lacks rows of the last run")
        assert _totals(client, b) == before  # wrote no totals
        # nor anything else: it read its users' events (what it reads does not ask the guard)
        # but logged none of them, kept the watermark and wrote no checkpoint or slot row
        assert watermark == last_watermark
        assert _written(client, b) == written
        assert client.query(f"SELECT argMax((users, full, recomputed_events), refreshed_at) "
                            f"FROM `{b}`.working_time_refresh_log").result_rows[0][0] == (0, 0, 0)

        # The missing part arrives: B equals A, and B's next run works.
        client.command(f"INSERT INTO `{b}`.working_time_totals_local SELECT * FROM `{b}`.missing_part")
        assert _totals(client, b) == _totals(client, a)
        assert _refresh(client, b)[0] == ""
        assert _totals(client, b) == _totals(client, a)
    finally:
        for db in (a, b):
            client.command(f"DROP DATABASE IF EXISTS `{db}` SYNC")


def test_the_cluster_guard_also_asks_system_replicas_and_a_single_server_has_none(tmp_path):
    spec, _ = cluster_spec(tmp_path)
    guarded = render_all(spec)["clickhouse/migrations/0023_working_time_refresh_guard.sql"]
    assert "FROM system.replicas" in guarded
    # (a table whose replication log is empty reads log_pointer = log_max_index = 0: not behind,
    # or a new cluster's refresh would refuse for ever)
    for column in ("is_readonly", "inserts_in_queue > 0", "(log_pointer <= log_max_index AND log_max_index > 0)"):
        assert column in guarded
    # a single server has no replicas: no guard, whose subqueries would cost every run
    single = render_all(cluster_spec(tmp_path, 1, 1, 1)[0])
    assert not any("refresh_guard" in name for name in single)
    assert "'behind'" not in single["clickhouse/migrations/0018_working_time_refresh_slots.sql"]
