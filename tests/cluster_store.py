"""The stores of the sharding proof (tests/test_cluster.py), in the test's own process: each
a database of its own in the session's chdb path, named in a copy of the spec.

    single(client, spec, rows, shards, keys, out_dir) -> dict
        the single server: the default render's migrations, every event; returns its results
        and writes, into out_dir, <prefix>_<k>.ndjson: the events whose `key % shards` is k,
        as the engine evaluates each key of `keys` (by prefix) over the stored rows
    shard(client, spec, rows, panels=True) -> dict
        one shard: the cluster render's migrations as one server runs them (their
        single-node equivalents, as `check` executes them: migrate_shard), the shard's
        events inserted into events_local. The first shard of a render runs them; the
        others are made from what they left in its database (its tables and views, renamed:
        cvat_analytics.migrate.copy_schema), which is the same schema for a third of the CPU (each migration
        that replaces the refresh view started a run of it)

A result holds the working-time totals (read through `working_time_totals`, the name readers
use), the users stored, the count of events and (when asked) every dashboard panel's rows
("All" selected) over the time range `window`.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from cvat_analytics import store, working_time
from cvat_analytics.migrate import copy_refreshable_views, copy_schema
from cvat_analytics.dashboards import panel_queries
from cvat_analytics_generator.render import render_sql
from cvat_analytics_generator.spec import load_spec
from cvat_analytics_generator.sql import parse
from cvat_analytics_generator.validate_sql import single_node_equivalent

TOTALS = ("SELECT user_id, toString(hour), project_id, task_id, job_id, sum(working_time_ms) AS ms "
          "FROM `{db}`.working_time_totals GROUP BY ALL HAVING ms != 0")


def results(client, spec: dict, window: tuple[datetime, datetime] | None) -> dict:
    db = spec["clickhouse"]["database"]
    panels = {}
    for uid, title, sql in (panel_queries(spec, *window) if window else ()):
        result = client.query(sql)
        panels[f"{uid} / {title}"] = {"sql": sql, "columns": list(result.column_names),
                                      "rows": [[_plain(v) for v in row] for row in result.result_rows]}
    return {
        "totals": [[_plain(v) for v in row] for row in client.query(TOTALS.format(db=db)).result_rows],
        "users": sorted(r[0] for r in client.query(
            f"SELECT DISTINCT user_id FROM `{db}`.events WHERE user_id IS NOT NULL").result_rows),
        "events": client.query(f"SELECT count() FROM `{db}`.events").result_rows[0][0],
        "panels": panels,
    }


def _plain(value):
    return value if value is None or isinstance(value, (int, float, str)) else str(value)


def settle(client, spec: dict) -> None:
    """Totals current, then the schedule stopped: no event arrives any more, and the stores
    stay open until the test ends (a refresh every interval in each would only burn CPU)."""
    working_time.wait_current(client, spec)
    client.command(f"SYSTEM STOP VIEW `{spec['clickhouse']['database']}`.working_time_refresh")


def single(client, spec: dict, rows: bytes, shards: int, keys: dict[str, str], out_dir: Path,
           window) -> dict:
    from cvat_analytics.migrate import migrate

    spec = json.loads(json.dumps(spec))
    spec["clickhouse"]["cluster"] = {"shards": 1, "replicas": 1, "insert_quorum": 1}  # one server
    db = spec["clickhouse"]["database"]
    migrate(client, spec, log=lambda *_: None)
    store.insert_json_rows(client, db, rows)
    settle(client, spec)
    found = results(client, spec, window)
    for prefix, key in keys.items():
        split = client.query(f"SELECT ({key}) % {shards} AS shard, * FROM `{db}`.events",
                             settings={"output_format_json_quote_64bit_integers": 0})
        names = split.column_names[1:]
        files = {k: [] for k in range(shards)}
        for row in split.result_rows:
            files[row[0]].append(json.dumps({n: _plain(v) for n, v in zip(names, row[1:])}))
        for k, lines in files.items():
            (out_dir / f"{prefix}_{k}.ndjson").write_text("\n".join(lines) + "\n")
    return found


def migrate_shard(client, spec: dict) -> None:
    """The cluster render's migrations as one server of a shard runs them (their
    single-node equivalents, as `check` executes them)."""
    for name, text in sorted(render_sql(spec, "clickhouse/migrations").items()):
        for statement in parse(text, name).statements:
            equivalent, checks = single_node_equivalent(statement.sql)
            for sql in (equivalent, *checks):
                client.command(sql)


_migrated: dict[str, str] = {}  # a render's shape (its spec without the database name) -> a database it migrated


def shard(client, spec: dict, rows: bytes, window) -> dict:
    db = spec["clickhouse"]["database"]
    shape = json.dumps(dict(spec, clickhouse=dict(spec["clickhouse"], database="")), sort_keys=True)
    source = _migrated.get(shape)
    if source:  # the refreshable view after the events: its run at creation is the one settle waits for
        copy_schema(client, source, db, refreshable=False)
    else:
        migrate_shard(client, spec)
        _migrated[shape] = db
    client.raw_insert(f"`{db}`.events_local", None, rows, settings=dict(store.INSERT_SETTINGS),
                      fmt="JSONEachRow")
    if source:
        copy_refreshable_views(client, source, db)
    settle(client, spec)
    return results(client, spec, window)
