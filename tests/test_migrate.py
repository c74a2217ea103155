"""Migrations: ordered, recorded, idempotent; the same SQL on a fresh chdb path twice."""
import subprocess
import sys

import pytest

from cvat_analytics.migrate import Migration, MigrationDrift, applied, migrate, migrations
from cvat_analytics_generator.spec import load_spec
from tests.conftest import REPO


def test_migrations_are_ordered_and_split_into_statements():
    found = migrations(load_spec())
    names = [m.name for m in found]
    assert names == sorted(names) and names[0].startswith("0001_")
    assert [m.name for m in found if m.reapply_on_change] == ["0003_events_retention_and_dedup",
                                                              "0005_working_time_views",
                                                              "0009_working_time_refresh",
                                                              "0013_working_time_refresh",
                                                              "0017_working_time_refresh_limits",
                                                              "0018_working_time_refresh_slots",
                                                              "0020_vector_metrics_retention",
                                                              "0026_productivity_state"]
    first = found[0]
    assert first.statements[0] == "CREATE DATABASE IF NOT EXISTS `cvat`"
    # The checksum covers what runs: a comment edit is not a change to the database.
    assert Migration(first.name, "-- edited\n" + first.sql).checksum == first.checksum
    assert Migration(first.name, first.sql + "SELECT 1;\n").checksum != first.checksum


def with_column_type(spec: dict, column: str, type_: str) -> dict:
    spec["events"]["columns"] = [dict(c, type=type_) if c["name"] == column else c
                                 for c in spec["events"]["columns"]]
    return spec


@pytest.mark.clickhouse
def test_a_changed_migration_that_is_not_reapplied_stops_migrate_before_anything_runs(store):
    """0002 (CREATE TABLE IF NOT EXISTS) renders the spec's columns: a changed type would
    never reach the existing table, so migrate refuses instead of skipping it."""
    store.spec["clickhouse"]["retention_days"] = 30  # 0003 is pending: it must not run either
    with_column_type(store.spec, "user_name", "Nullable(String)")
    with pytest.raises(MigrationDrift) as caught:
        migrate(store.client, store.spec, log=lambda *_: None)
    message = str(caught.value)
    assert "generator/templates/clickhouse/migrations/0002_create_events.sql.j2" in message
    assert "applied with a different text" in message
    assert "Restore the spec value" in message and "new migration" in message
    assert "toIntervalDay(30)" not in store.client.command(f"SHOW CREATE TABLE `{store.database}`.events")


@pytest.mark.clickhouse
def test_a_ledger_from_the_whole_text_checksum_is_taken_over_without_applying(store):
    """Before checksums covered the statements they covered the whole rendered text: such a
    ledger means "applied as it is now", and is rewritten in the new form."""
    found = migrations(store.spec)
    store.client.command(f"TRUNCATE TABLE `{store.database}`.schema_migrations")
    for m in found:
        store.client.command(
            f"INSERT INTO `{store.database}`.schema_migrations (name, checksum, applied_at) "
            "VALUES ({n:String}, {c:String}, '2020-01-01 00:00:00')", parameters={"n": m.name, "c": m.text_checksum})
    assert migrate(store.client, store.spec, log=lambda *_: None) == []
    assert applied(store.client, store.spec) == {m.name: m.checksum for m in found}


@pytest.mark.clickhouse
def test_second_run_applies_nothing_and_a_changed_spec_value_is_reapplied(store):
    assert migrate(store.client, store.spec, log=lambda *_: None) == []
    store.spec["clickhouse"]["retention_days"] = 30
    assert migrate(store.client, store.spec, log=lambda *_: None) == ["0003_events_retention_and_dedup"]
    ddl = store.client.command(f"SHOW CREATE TABLE `{store.database}`.events")
    assert "toIntervalDay(30)" in ddl
    assert migrate(store.client, store.spec, log=lambda *_: None) == []


@pytest.mark.clickhouse
def test_the_vector_metrics_retention_is_the_spec_keys_and_reapplied_when_it_changes(store):
    def ttl() -> str:
        return store.client.command(f"SHOW CREATE TABLE `{store.database}`.vector_metrics").split("TTL")[1]

    assert "toIntervalDay(90)" in ttl()  # 0016 created it with 90 days, 0020 holds the spec's 90
    store.spec["vector"]["metrics"]["retention_days"] = 14
    assert migrate(store.client, store.spec, log=lambda *_: None) == ["0020_vector_metrics_retention"]
    assert "toIntervalDay(14)" in ttl()
    assert migrate(store.client, store.spec, log=lambda *_: None) == []


@pytest.mark.clickhouse
def test_events_table_has_cvats_columns_in_order_plus_request_id_and_inserted_at(store):
    rows = store.client.query(
        "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = 'events' ORDER BY position",
        parameters={"db": store.database}).result_rows
    names = [r[0] for r in rows]
    assert names[:18] == [c["name"] for c in store.spec["events"]["columns"]]
    assert names[18:] == ["request_id", "inserted_at", "remote_addr"]
    assert dict(rows)["timestamp"] == "DateTime64(3, 'Etc/UTC')"


@pytest.mark.clickhouse  # in subprocesses of their own, on a path of their own
def test_migrate_twice_on_a_fresh_chdb_path_from_the_cli_and_drift_exits_1(tmp_path):
    from tests.conftest import write_spec

    dsn = f"chdb://{tmp_path / 'db'}"
    data, _ = write_spec(tmp_path)
    (tmp_path / "drifted").mkdir()
    _, drifted = write_spec(tmp_path / "drifted", **{"events.columns": with_column_type(
        data, "user_name", "Nullable(String)")["events"]["columns"]})
    run = lambda *extra: subprocess.run([sys.executable, "-m", "cvat_analytics.cli", "migrate", "--dsn", dsn, *extra],
                                        capture_output=True, text=True, cwd=REPO, timeout=120)
    first, second = run(), run()
    assert first.returncode == 0, first.stderr
    assert "applied 0001_create_database" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "nothing to apply" in second.stdout and "applied" not in second.stdout.replace("already applied", "")
    third = run("--spec", str(drifted))
    assert third.returncode == 1, third.stderr
    assert "0002_create_events.sql.j2 was applied with a different text" in third.stderr


@pytest.mark.clickhouse
def test_an_existing_cvat_events_table_is_adopted(chdb_dsn, tmp_path):
    """CVAT's own table (its schema, ORDER BY timestamp, no request_id) gets what our
    queries need; its rows stay, and events are found by request id."""
    import uuid

    from cvat_analytics.store import connect
    from tests.conftest import write_spec

    db = f"cvat_{uuid.uuid4().hex[:10]}"
    _, path = write_spec(tmp_path, **{"clickhouse.database": db})
    spec = load_spec(path)
    client = connect(chdb_dsn)
    client.command(f"CREATE DATABASE `{db}`")
    client.command(
        f"CREATE TABLE `{db}`.events (scope String, obj_name Nullable(String), obj_id Nullable(UInt64), "
        "obj_val Nullable(String), source String, timestamp DateTime64(3, 'Etc/UTC'), count Nullable(UInt16), "
        "duration UInt32 DEFAULT toUInt32(0), project_id Nullable(UInt64), task_id Nullable(UInt64), "
        "job_id Nullable(UInt64), user_id Nullable(UInt64), user_name Nullable(String), "
        "user_email Nullable(String), org_id Nullable(UInt64), org_slug Nullable(String), payload Nullable(String)) "
        "ENGINE = MergeTree PARTITION BY toYYYYMM(timestamp) ORDER BY (timestamp)")
    client.command(f"INSERT INTO `{db}`.events (scope, source, timestamp, payload) VALUES "
                   "('create:task', 'server', now64(3), '{\"request\": {\"id\": \"r-7\"}}')")
    try:
        assert "0007_adopt_cvat_events_table" in migrate(client, spec, log=lambda *_: None)
        found = client.command(f"SELECT count() FROM `{db}`.events WHERE request_id = 'r-7'")
        assert int(found) == 1
        assert migrate(client, spec, log=lambda *_: None) == []
        # request_id and inserted_at are MATERIALIZED: CVAT's `SELECT *` sees CVAT's columns only,
        # and remote_addr, which CVAT 2.66+ adds itself and its export leaves out (0015). The
        # row stored before 0012 is not stamped (no part rewritten): it is history by its
        # block, at or below the one recorded with the column (tests/test_adoption.py).
        names = client.query(f"SELECT * FROM `{db}`.events LIMIT 0").column_names
        assert list(names) == [c["name"] for c in spec["events"]["columns"]] + ["remote_addr"]
        client.command(f"INSERT INTO `{db}`.events SELECT * REPLACE ('create:job' AS scope) FROM `{db}`.events")
        boundary = (f"(SELECT toUInt64(extract(comment, 'blocks up to ([0-9]+)')) FROM system.columns "
                    f"WHERE database = '{db}' AND table = 'events' AND name = 'inserted_at')")
        stamps = client.query(f"SELECT scope, inserted_at > toDateTime64(0, 6, 'Etc/UTC'), _block_number <= {boundary} "
                              f"FROM `{db}`.events ORDER BY scope").result_rows
        assert stamps == [("create:job", True, False), ("create:task", True, True)]
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{db}` SYNC")


@pytest.mark.clickhouse
def test_the_newest_jobs_granules_are_found_among_events_without_a_job(store):
    """0028: ids grow with time and most client events carry no job. The minmax index over the
    Nullable job_id counts NULL as larger than any id, so it could never skip a granule for the
    newest job, the one a refresh or a panel asks about; the one over ifNull(job_id, 0) does."""
    db, client = store.database, store.client
    # 20 users, one event a second each in turn; 3 of each user's events in 4 without a job; each
    # user a job of their own for 20,000 s, then the next (ids growing with time, as CVAT's do).
    # 3.5 days from the start of a recent month: one partition, well within the retention.
    client.command(f"INSERT INTO `{db}`.events (scope, source, timestamp, user_id, job_id) "
                   "SELECT 'update:job', 'server', toDateTime64(toStartOfMonth(now() - INTERVAL 10 DAY), 3) + number, number % 20, "
                   "if(intDiv(number, 20) % 4 = 0, intDiv(number, 20000) * 20 + number % 20 + 1, NULL) "
                   "FROM numbers(300000)")
    client.command(f"OPTIMIZE TABLE `{db}`.events FINAL")  # one part in the sort order (user, time)

    def granules(where: str) -> tuple[int, int]:
        """(granules read, of all): the engine's estimate from its indexes."""
        read = client.query(f"EXPLAIN ESTIMATE SELECT count() FROM `{db}`.events WHERE {where}").result_rows[0][4]
        return read, client.query(f"EXPLAIN ESTIMATE SELECT count() FROM `{db}`.events WHERE scope != ''").result_rows[0][4]

    newest = client.query(f"SELECT max(job_id) FROM `{db}`.events").result_rows[0][0]
    for where in (f"job_id = {newest}", f"job_id IN ({newest - 1}, {newest})"):
        read, total = granules(where)
        assert total >= 36 and read <= total // 4, (where, read, total)
    client.command(f"ALTER TABLE `{db}`.events DROP INDEX idx_job_id_value")
    read, total = granules(f"job_id = {newest}")
    assert read == total, (read, total)  # 0002's index alone: every granule


@pytest.mark.clickhouse
@pytest.mark.refresh  # the store holds the refreshable views and their query views
def test_a_copied_schema_leaves_each_refreshable_view_with_its_query_view_until_asked(store):
    """copy_schema(refreshable=False) leaves out the refreshable views and the plain views they
    run (`<view>_query`, refreshable_view in queries/working_time.jinja); copy_refreshable_views
    brings both."""
    from cvat_analytics.migrate import copy_refreshable_views, copy_schema
    from tests.conftest import new_database_name

    def names(database):
        return {n for n, in store.client.query("SELECT name FROM system.tables WHERE database = {db:String}",
                                                parameters={"db": database}).result_rows}

    views = {"working_time_refresh_plan", "working_time_refresh", "productivity_refresh"}
    queries = {f"{view}_query" for view in views}
    assert views | queries <= names(store.database)
    copy = new_database_name()
    try:
        copy_schema(store.client, store.database, copy, refreshable=False)
        copied = names(copy)
        assert not (views | queries) & copied and "events" in copied
        copy_refreshable_views(store.client, store.database, copy)
        assert names(copy) == names(store.database)
    finally:
        store.client.command(f"DROP DATABASE IF EXISTS `{copy}` SYNC")
