"""One store of the sharding proof (tests/test_cluster.py), in its own process: chdb opens
one data path per process, so the single node and each shard run here, one at a time.

    python -m tests.cluster_store single SPEC DATA ROWS N KEY CONTROL_KEY OUT
        the single server: the default render's migrations, every event; writes OUT (JSON)
        and, beside it, shard_<k>.ndjson: the events whose `KEY % N` is k, as the engine
        evaluates the rendered sharding key over the stored rows (control_<k>.ndjson: the
        same by CONTROL_KEY, a key that does not keep a user's events together)
    python -m tests.cluster_store shard SPEC DATA ROWS OUT
        one shard: the cluster render's migrations as one server runs them (their
        single-node equivalents, as `check` executes them), the shard's events
        inserted into events_local; writes OUT (JSON)

OUT holds the working-time totals (read through `working_time_totals`, the name readers
use), the users stored, and every dashboard panel's rows ("All" selected) over the time
range in range.json beside SPEC.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

from cvat_analytics import store, working_time
from cvat_analytics.dashboards import panel_queries
from cvat_analytics_generator.render import render_sql
from cvat_analytics_generator.spec import load_spec
from cvat_analytics_generator.sql import parse
from cvat_analytics_generator.validate_sql import single_node_equivalent

TOTALS = ("SELECT user_id, toString(hour), project_id, task_id, job_id, sum(working_time_ms) AS ms "
          "FROM `{db}`.working_time_totals GROUP BY ALL HAVING ms != 0")


def results(client, spec: dict, spec_path: Path) -> dict:
    db = spec["clickhouse"]["database"]
    window = json.loads((spec_path.parent / "range.json").read_text())
    time_from, time_to = (datetime.fromisoformat(window[k]) for k in ("from", "to"))
    panels = {}
    for uid, title, sql in panel_queries(spec, time_from, time_to):
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


def single(spec_path: Path, data: Path, rows: Path, shards: int, keys: dict[str, str], out: Path) -> None:
    from cvat_analytics.migrate import migrate

    spec = load_spec(spec_path)
    spec["clickhouse"]["cluster"] = {"shards": 1, "replicas": 1, "insert_quorum": 1}  # one server
    db = spec["clickhouse"]["database"]
    client = store.connect(f"chdb://{data}")
    migrate(client, spec, log=lambda *_: None)
    store.insert_json_rows(client, db, rows.read_bytes())
    working_time.wait_current(client, spec)
    out.write_text(json.dumps(results(client, spec, spec_path)))
    for prefix, key in keys.items():
        split = client.query(f"SELECT ({key}) % {shards} AS shard, * FROM `{db}`.events",
                             settings={"output_format_json_quote_64bit_integers": 0})
        names = split.column_names[1:]
        files = {k: [] for k in range(shards)}
        for row in split.result_rows:
            files[row[0]].append(json.dumps({n: _plain(v) for n, v in zip(names, row[1:])}))
        for k, lines in files.items():
            (out.parent / f"{prefix}_{k}.ndjson").write_text("\n".join(lines) + "\n")


def shard(spec_path: Path, data: Path, rows: Path, out: Path) -> None:
    spec = load_spec(spec_path)
    db = spec["clickhouse"]["database"]
    client = store.connect(f"chdb://{data}")
    for name, text in sorted(render_sql(spec, "clickhouse/migrations").items()):
        for statement in parse(text, name).statements:
            equivalent, checks = single_node_equivalent(statement.sql)
            for sql in (equivalent, *checks):
                client.command(sql)
    client.raw_insert(f"`{db}`.events_local", None, rows.read_bytes(), settings=dict(store.INSERT_SETTINGS),
                      fmt="JSONEachRow")
    working_time.wait_current(client, spec)
    out.write_text(json.dumps(results(client, spec, spec_path)))


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "single":
        spec_path, data, rows, shards, key, control_key, out = args
        single(Path(spec_path), Path(data), Path(rows), int(shards), {"shard": key, "control": control_key},
               Path(out))
    else:
        spec_path, data, rows, out = args
        shard(Path(spec_path), Path(data), Path(rows), Path(out))
