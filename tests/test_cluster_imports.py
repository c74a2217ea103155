"""The imports ledger across shards (issue #30, docs/cluster.md "Imports"): on a cluster,
`imports` is a Distributed table over every shard's `imports_local` (cluster migration
0024_imports_ledger_across_shards), so `import` through any shard's server finds a file
imported through another's. On split stores: two chdb databases play the two shards, each
running the cluster render's migrations; each one's `imports` reads both shards' ledgers,
as the Distributed table reads every shard (chdb has no server to send a query to, so a
Merge table over both databases stands for it). A file is imported through shard 1;
through shard 2 it is recognised and nothing is stored.
"""
from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pytest

from cvat_analytics import store
from cvat_analytics.demo import Demo, to_row
from cvat_analytics.importer import run_import
from tests import cluster_store
from tests.conftest import new_database_name
from tests.test_cluster_faults import cluster_spec


@pytest.mark.clickhouse
def test_a_file_imported_through_one_shard_is_recognised_through_another(tmp_path, chdb_dsn):
    spec, _ = cluster_spec(tmp_path, shards=2, replicas=1, quorum=1)
    now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"".join(to_row(e) for e in Demo(seed=5, days=1, now_ms=now_ms).events(300)))
    client = store.connect(chdb_dsn)
    shards = [new_database_name(), new_database_name()]
    specs = [json.loads(json.dumps(spec)) for _ in shards]
    try:
        for db, s in zip(shards, specs):
            s["clickhouse"]["database"] = db
            cluster_store.migrate_shard(client, s)
        split = all(int(client.command(f"EXISTS TABLE `{db}`.imports_local")) for db in shards)
        if split:  # the render's `imports` reads imports_local (its single-node equivalent: one shard's)
            assert all("imports_local" in client.command(
                f"SELECT engine_full FROM system.tables WHERE database = '{db}' AND name = 'imports'") for db in shards)
        # Through shard 1: stored, and its ledger row stored where the Distributed INSERT puts
        # it, on one shard: here shard 1's imports_local. chdb cannot insert through the Merge
        # tables that stand for the Distributed ones, so for this import each is exchanged
        # with its local table.
        local = ["events"] + (["imports"] if split else [])
        exchange = [f"EXCHANGE TABLES `{shards[0]}`.{t} AND `{shards[0]}`.{t}_local" for t in local]
        for sql in exchange:
            client.command(sql)
        first, second, err = io.StringIO(), io.StringIO(), io.StringIO()
        assert run_import(client, specs[0], str(path), out=first, err=err) == 0, err.getvalue()
        assert "imported 300 events" in first.getvalue()
        for sql in exchange:
            client.command(sql)
        if split:
            # shard 2's `imports` reads every shard's ledger, as the Distributed table does
            client.command(f"DROP TABLE `{shards[1]}`.imports")
            client.command(f"CREATE TABLE `{shards[1]}`.imports AS `{shards[1]}`.imports_local "
                           f"ENGINE = Merge(REGEXP('^({'|'.join(shards)})$'), '^imports_local$')")
        # Through shard 2: the file is found in shard 1's ledger.
        assert run_import(client, specs[1], str(path), out=second, err=io.StringIO()) == 0
        assert second.getvalue().startswith("nothing stored: these 300 events were imported on"), second.getvalue()
        assert int(client.command(f"SELECT count() FROM `{shards[1]}`.events_local")) == 0
    finally:
        for db in shards:
            client.command(f"DROP DATABASE IF EXISTS `{db}` SYNC")
