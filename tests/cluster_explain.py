"""The dashboards' SQL planned over a real Distributed `events` of two shards, in its own
process (chdb opens one data path per process; tests/test_cluster.py runs it).

    python -m tests.cluster_explain SPEC CONFIG DATA SETTINGS OUT

The cluster render's migrations run as one server runs them (their single-node
equivalents, as `check` executes them); then `events` is made the Distributed table the
render creates, over the cluster `cvat` that CONFIG (a remote_servers file) defines with
two shards. chdb has no server to reach: a query over it fails when it connects, but the
engine decides on a double-distributed IN (distributed_product_mode) while it plans, so
`EXPLAIN PLAN` of each panel, under the settings in SETTINGS (JSON: the dashboards
profile's), says whether ClickHouse would refuse it. OUT (JSON): panel -> "" or the error,
and the tables the migrations left.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from chdb import session

from cvat_analytics.dashboards import all_selected, interval_for
from cvat_analytics_generator import grafana
from cvat_analytics_generator.grafana_macros import Variable, expand
from cvat_analytics_generator.render import render_sql
from cvat_analytics_generator.spec import load_spec
from cvat_analytics_generator.sql import parse
from cvat_analytics_generator.validate_sql import _DISTRIBUTED, single_node_equivalent


def main(spec_path: Path, config: Path, data: Path, settings: dict, out: Path) -> None:
    spec = load_spec(spec_path)
    db = spec["clickhouse"]["database"]
    s = session.Session(f"{data}?config-file={config}")
    distributed = []
    for name, text in sorted(render_sql(spec, "clickhouse/migrations").items()):
        for statement in parse(text, name).statements:
            found = _DISTRIBUTED.search(statement.sql)
            if found and found["table"] == "events_local":
                distributed.append(statement.sql)
            equivalent, checks = single_node_equivalent(statement.sql)
            for sql in (equivalent, *checks):
                s.query(sql)
    tables = sorted(r.split("\t")[0] for r in s.query(
        f"SELECT name FROM system.tables WHERE database = '{db}'", "TSV").bytes().decode().splitlines())
    # `events` as the render creates it: the Distributed table over the two shards.
    s.query(f"DROP TABLE `{db}`.events SETTINGS check_table_dependencies = 0")
    s.query(distributed[-1])
    for name, value in settings.items():
        s.query(f"SET {name} = '{value}'")
    to = datetime(2026, 1, 8, tzinfo=timezone.utc)
    since = to - timedelta(days=7)
    interval = interval_for(since, to)
    results = {}
    for d in grafana.load_all(spec):
        variables = all_selected(d)
        if "usernames" in variables:
            variables["usernames"] = Variable(["alice"])
        for p in d["panels"]:
            sql = expand(p["sql"], since, to, interval, variables)
            try:
                s.query(f"EXPLAIN PLAN {sql}")
                results[f"{d['uid']} / {p['title']}"] = ""
            except Exception as exc:  # the engine's error is the result
                results[f"{d['uid']} / {p['title']}"] = str(exc).splitlines()[0]
    out.write_text(json.dumps({"engine": s.query("SELECT engine_full FROM system.tables WHERE database = '"
                                                 + db + "' AND name = 'events'", "TSV").bytes().decode().strip(),
                               "tables": tables, "panels": results}))


if __name__ == "__main__":
    spec_path, config, data, settings, out = sys.argv[1:]
    main(Path(spec_path), Path(config), Path(data), json.loads(settings), Path(out))
