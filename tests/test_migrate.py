"""Migrations: ordered, recorded, idempotent; the same SQL on a fresh chdb path twice."""
import subprocess
import sys

import pytest

from cvat_analytics.migrate import migrate, migrations, split_statements
from cvat_analytics_generator.spec import load_spec
from tests.conftest import REPO


def test_migrations_are_ordered_and_split_into_statements():
    names = [m.name for m in migrations(load_spec())]
    assert names == sorted(names) and names[0].startswith("0001_")
    assert split_statements("-- c\nSELECT 1;\nSELECT ';';\n") == ["SELECT 1", "SELECT ';'"]


@pytest.mark.clickhouse
def test_second_run_applies_nothing_and_a_changed_spec_value_is_reapplied(store):
    assert migrate(store.client, store.spec, log=lambda *_: None) == []
    store.spec["clickhouse"]["retention_days"] = 30
    assert migrate(store.client, store.spec, log=lambda *_: None) == ["0003_events_retention_and_dedup"]
    ddl = store.client.command(f"SHOW CREATE TABLE `{store.database}`.events")
    assert "toIntervalDay(30)" in ddl
    assert migrate(store.client, store.spec, log=lambda *_: None) == []


@pytest.mark.clickhouse
def test_events_table_has_cvats_columns_in_order_plus_request_id(store):
    rows = store.client.query(
        "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = 'events' ORDER BY position",
        parameters={"db": store.database}).result_rows
    names = [r[0] for r in rows]
    assert names[:18] == [c["name"] for c in store.spec["events"]["columns"]]
    assert names[18:] == ["request_id"]
    assert dict(rows)["timestamp"] == "DateTime64(3, 'Etc/UTC')"


def test_migrate_twice_on_a_fresh_chdb_path_from_the_cli(tmp_path):
    dsn = f"chdb://{tmp_path / 'db'}"
    run = lambda: subprocess.run([sys.executable, "-m", "cvat_analytics.cli", "migrate", "--dsn", dsn],
                                 capture_output=True, text=True, cwd=REPO, timeout=120)
    first, second = run(), run()
    assert first.returncode == 0, first.stderr
    assert "applied 0001_create_database" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "nothing to apply" in second.stdout and "applied" not in second.stdout.replace("already applied", "")


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
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{db}` SYNC")
