"""CVAT's own code on CVAT's schema, timed as the baselines: its working-time loop, its CSV export.

(CVAT's table itself is templates/cvat_events.sql.j2; the loop is cvat_analytics/cvat_reference.py.)
"""
from __future__ import annotations

import csv
import time
from datetime import timedelta
from pathlib import Path

from ..cvat_reference import compute_working_time_per_ids
from . import statements
from .measure import cpu_s, open_store, peak_mb, warm_up
from .statements import CVAT_DB

_MS = timedelta(milliseconds=1)


def python_baseline(rows, batch: int = 100) -> dict:
    """Totals per (user, job, task, project) from (user_id, timestamp, scope, duration,
    job_id, task_id, project_id) rows in (user, time) order: CVAT's loop per batch of
    `batch` events of one user, each batch carrying the previous batch's last event."""
    totals: dict = {}
    user, events, previous = object(), [], None

    def flush():
        nonlocal previous
        if not events:
            return
        result = compute_working_time_per_ids({"events": events, "previous_event": previous})
        for ids, item in result.items():
            key = (user, *ids)
            totals[key] = totals.get(key, 0) + item["value"] // _MS
        previous = events[-1]

    for uid, ts, scope, duration, job_id, task_id, project_id in rows:
        if uid != user:
            flush()
            events.clear()
            user, previous = uid, None
        events.append({"scope": scope, "timestamp": ts, "duration": duration, "job_id": job_id,
                       "task_id": task_id, "project_id": project_id})
        if len(events) >= batch:
            flush()
            events.clear()
    flush()
    return totals


def phase_wt_python(cfg: dict) -> dict:
    """CVAT's loop over every client event, read in (user, time) order; the read is timed apart."""
    spec, client = open_store(cfg)
    rss0 = warm_up(client)
    t, c = time.monotonic(), cpu_s()
    read_s = 0.0

    def rows():
        nonlocal read_s
        with client.query_row_block_stream(statements.sql("cvat_working_time_input"),
                                           parameters={"db": spec["clickhouse"]["database"]}) as stream:
            it = iter(stream)
            while True:
                r0 = time.monotonic()
                block = next(it, None)
                read_s += time.monotonic() - r0
                if block is None:
                    return
                yield from block

    totals = python_baseline(rows())
    elapsed = time.monotonic() - t
    return {"seconds": elapsed, "cpu_s": cpu_s() - c, "read_s": read_s, "loop_s": elapsed - read_s, "peak_mb": peak_mb(),
            "open_mb": rss0, "groups": sum(1 for v in totals.values() if v), "total_ms": int(sum(totals.values()))}


def phase_cvat_export(cfg: dict) -> dict:
    """CVAT's export code (cvat/apps/events/export.py): one query, then csv.writer."""
    _, client = open_store(cfg)
    rss0 = warm_up(client)
    path = Path(cfg["workdir"]) / "cvat_export.csv"
    t = time.monotonic()
    result = client.query(statements.sql("cvat_export"), parameters={
        "db": CVAT_DB, "t_from": cfg["export_from"], "t_to": cfg["export_to"]})
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(result.column_names)
        writer.writerows(result.result_rows)
    elapsed = time.monotonic() - t
    rows = len(result.result_rows)
    path.unlink()
    return {"rows": rows, "seconds": elapsed, "peak_mb": peak_mb(), "open_mb": rss0}
