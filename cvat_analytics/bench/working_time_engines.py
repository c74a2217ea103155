"""Our working time over all users: the window SQL, the precomputed totals, the executable UDF."""
from __future__ import annotations

import time
from pathlib import Path

from .. import working_time as wt
from . import statements
from .measure import cpu_s, open_store, peak_mb, warm_up

GROUPS = ["user_id", "project_id", "task_id", "job_id"]


def result(columns, rows, elapsed: float, rss0: float, cpu: float | None = None) -> dict:
    i = list(columns).index("working_time_ms")
    return {"seconds": elapsed, "cpu_s": cpu, "peak_mb": peak_mb(), "open_mb": rss0, "groups": len(rows),
            "total_ms": int(sum(r[i] for r in rows))}


def phase_wt_sql(cfg: dict) -> dict:
    spec, client = open_store(cfg)
    rss0 = warm_up(client)
    t, c = time.monotonic(), cpu_s()
    columns, rows = wt.totals(client, spec, GROUPS, engine="sql")
    out = result(columns, rows, time.monotonic() - t, rss0, cpu_s() - c)
    # The same totals as dashboards read them: from working_time_totals, kept exact by refresh.
    t = time.monotonic()
    answer = client.query(statements.sql("precomputed_totals"), parameters={"db": spec["clickhouse"]["database"]})
    out["totals"] = result(answer.column_names, answer.result_rows, time.monotonic() - t, rss0)
    return out


def phase_wt_udf(cfg: dict) -> dict:
    from cvat_analytics_generator.spec import load_spec

    spec = load_spec(Path(cfg["spec"]))
    client = wt.connect_with_udf(cfg["dsn"], spec)
    rss0 = warm_up(client)
    t = time.monotonic()
    columns, rows = wt.totals(client, spec, GROUPS, engine="udf")
    return result(columns, rows, time.monotonic() - t, rss0)
