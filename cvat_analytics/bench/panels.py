"""Dashboards: each panel's query on our schema against the same on CVAT's schema."""
from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone

from . import statements
from .measure import median_time, open_store, ts_text
from .statements import CVAT_DB


def phase_dashboards(cfg: dict) -> dict:
    spec, client = open_store(cfg)
    parameters = {"db": spec["clickhouse"]["database"], "cvat_db": CVAT_DB,
                  "t_from": ts_text(cfg["now_ms"] - 7 * 86_400_000), "t_to": ts_text(cfg["now_ms"]),
                  "user_id": cfg["user_id"] or 0, "job_id": cfg["job_id"] or 0}
    out = []
    for panel in statements.panels():
        timing = {side: median_time(client, panel[side], parameters) for side in ("ours", "cvat")}
        out.append({"name": panel["name"], "kind": panel["kind"], **timing})
        print(f"  {panel['name']}: ours {timing['ours'] * 1000:.1f} ms, CVAT's {timing['cvat'] * 1000:.1f} ms",
              file=sys.stderr, flush=True)
    return {"panels": out, "product": _product_panels(cfg, spec, client, parameters)}


def _product_panels(cfg: dict, spec: dict, client, parameters: dict) -> list[dict]:
    """The product's own dashboards (cvat_analytics.dashboards.panel_queries, "All" selected)
    on our schema; the baseline is the same SQL on CVAT's schema where it runs there, else
    (working-time objects, columns CVAT lacks) CVAT's payload-parsed working-time query."""
    from ..dashboards import panel_queries

    db = spec["clickhouse"]["database"]
    to = datetime.fromtimestamp(cfg["now_ms"] / 1000, timezone.utc)
    fallback = next(p for p in statements.panels() if p["name"] == "Working time table (all users)")["cvat"]
    out = []
    for uid, title, sql in panel_queries(spec, to - timedelta(days=7), to):
        ours = median_time(client, sql)
        cvat_sql = sql.replace(f"`{db}`.", f"`{CVAT_DB}`.")  # the same panel, aimed at CVAT's table
        try:
            cvat, baseline = median_time(client, cvat_sql), "CVAT's schema, same SQL"
        except Exception:
            cvat = median_time(client, fallback, parameters)
            baseline = "CVAT's schema, its payload working-time query"
        kind = "user" if ("per user" in title.lower() or "working time" in title.lower()) else "overview"
        out.append({"name": f"{uid} / {title}", "kind": kind, "ours": ours, "cvat": cvat, "baseline": baseline})
        print(f"  {uid} / {title}: ours {ours * 1000:.1f} ms, {baseline} {cvat * 1000:.1f} ms",
              file=sys.stderr, flush=True)
    return out
