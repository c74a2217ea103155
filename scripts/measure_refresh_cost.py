"""Measure the working-time refresh's engine time after 1,000 new events, `minute` minutes into
an hour of steady ingest (docs/working-time-and-sql.md, "The refresh").

Applies the rendered migrations of a deploy/ folder (this branch's, or another commit's via
`git archive <commit> deploy/clickhouse/migrations`) to a fresh chdb store, stores `minute`
minutes of the previous hour at `rate` events/s over `users` users, lets the refresh count
them (the view stopped until they are past the commit margin), then inserts 1,000 events in the last 10 s of that minute
and reports the next run's duration and rows read (system.view_refreshes; since 0018 a run is
two views, the plan and the view that applies it: summed), three times.

    .venv/bin/python scripts/measure_refresh_cost.py --migrations deploy/clickhouse/migrations --minute 55
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import chdb.session

from cvat_analytics_generator.sql import split_statements

DB = "cvat"  # the database of the default spec the deploy/ folder is rendered from


def _q(s, sql):
    return str(s.query(sql, "TSV")).strip()


def _views(s) -> list[str]:
    """The refresh's views, in the order a run takes them: since 0018's split its plan, then
    the view that applies it; one view before (or in another commit's deploy/)."""
    return _q(s, f"SELECT name FROM system.tables WHERE database = '{DB}' "
                 "AND name IN ('working_time_refresh_plan', 'working_time_refresh') "
                 "ORDER BY name = 'working_time_refresh'").split()


def _refresh(s, views):
    for view in views:
        s.query(f"SYSTEM REFRESH VIEW {DB}.{view}")
        s.query(f"SYSTEM WAIT VIEW {DB}.{view}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--migrations", required=True, type=Path)
    ap.add_argument("--minute", type=int, default=55)
    ap.add_argument("--rate", type=int, default=2800)
    ap.add_argument("--users", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as path:
        s = chdb.session.Session(path)
        for f in sorted(args.migrations.glob("*.sql")):
            if f.name.startswith("9999"):
                continue
            for statement in split_statements(f.read_text()):
                s.query(statement)
        # no run until the stored events are past the commit margin: else every run of the full
        # recompute would take the users of the buckets before it again
        views = _views(s)
        for view in views:
            s.query(f"SYSTEM WAIT VIEW {DB}.{view}")  # its first run, over nothing
            s.query(f"SYSTEM STOP VIEW {DB}.{view}")
        hour = _q(s, "SELECT toString(toStartOfHour(now('UTC')) - INTERVAL 1 HOUR)")
        stored = args.minute * 60 * args.rate
        step_us = 1_000_000 // args.rate
        started = time.monotonic()
        s.query(f"INSERT INTO {DB}.events (scope, source, timestamp, user_id, job_id, task_id, project_id) "
                f"SELECT 'click:element', 'client', toDateTime64('{hour}', 3, 'UTC') "
                f"+ toIntervalMicrosecond(number * {step_us}), number % {args.users} + 1, "
                f"intDiv(number, 100000) % 50 + 1, 1, 1 FROM numbers({stored})")
        loaded = time.monotonic() - started
        time.sleep(62)
        # a full recompute from here (docs/working-time-and-sql.md): a bucket of users per run,
        # as after a migration over a stored history, not the whole store as new events at once
        s.query(f"INSERT INTO {DB}.working_time_refresh_log (refreshed_at, watermark, rule, full, users) "
                "VALUES (now64(6), now64(6), 'recompute all', 0, 0)")
        for view in views:
            s.query(f"SYSTEM START VIEW {DB}.{view}")
        started = time.monotonic()
        # the first runs count the store (a full recompute, a bucket of users per run)
        while True:
            _refresh(s, views)
            bucket, buckets, failed, rule = _q(s, f"SELECT full_bucket, full_buckets, failures, rule "
                                                  f"FROM {DB}.working_time_refresh_log ORDER BY watermark DESC, refreshed_at DESC LIMIT 1").split("\t")
            assert int(failed) == 0, _q(s, f"SELECT error FROM {DB}.working_time_refresh_log WHERE failures > 0 LIMIT 1")
            if rule != "recompute all" and (int(bucket) < 0 or int(bucket) + 1 >= int(buckets)):
                break
        counted = time.monotonic() - started
        _refresh(s, views)
        runs = []
        for i in range(3):
            # 1,000 new events in the last 10 s of the minute (and after each other round)
            s.query(f"INSERT INTO {DB}.events (scope, source, timestamp, user_id, job_id, task_id, project_id) "
                    f"SELECT 'click:element', 'client', toDateTime64('{hour}', 3, 'UTC') "
                    f"+ toIntervalMillisecond({args.minute * 60_000 - 10_000 + i * 100} + number * 10), "
                    f"number % {args.users} + 1, 7, 1, 1 FROM numbers(1000)")
            _refresh(s, views)
            ms, read = _q(s, "SELECT sum(last_success_duration_ms), sum(read_rows) FROM system.view_refreshes "
                             f"WHERE database = '{DB}' AND view IN ('working_time_refresh_plan', 'working_time_refresh')").split("\t")
            runs.append((int(ms), int(read)))
        failures = _q(s, f"SELECT groupArray((full_bucket, full_buckets, substring(error, 1, 160))) FROM {DB}.working_time_refresh_log WHERE failures > 0")
        exact = _q(s, f"SELECT (SELECT sum(working_time_ms) FROM {DB}.working_time_totals) = "
                      f"(SELECT sum(working_time_ms) FROM {DB}.working_time_events)")
        s.close()
    print(json.dumps({"migrations": str(args.migrations), "minute": args.minute, "rate": args.rate,
                      "users": args.users, "stored_events": stored, "load_s": round(loaded, 1),
                      "counted_s": round(counted, 1), "runs_ms_read_rows": runs,
                      "median_ms": statistics.median(ms for ms, _ in runs), "totals_exact": exact, "failed_runs": failures}))


if __name__ == "__main__":
    main()
