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
        timing = {side: median_time(client, panel[side], parameters, cfg["runs"]) for side in ("ours", "cvat")}
        out.append({"name": panel["name"], "kind": panel["kind"], **timing})
        print(f"  {panel['name']}: ours {timing['ours'] * 1000:.1f} ms, CVAT's {timing['cvat'] * 1000:.1f} ms",
              file=sys.stderr, flush=True)
    return {"panels": out, "product": _product_panels(cfg, spec, client, parameters),
            "productivity": _productivity_panels(cfg, spec, client)}


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
        if uid == spec["dashboards"].get("productivity"):
            continue  # _productivity_panels: against the same question from raw events
        ours = median_time(client, sql, runs=cfg["runs"])
        cvat_sql = sql.replace(f"`{db}`.", f"`{CVAT_DB}`.")  # the same panel, aimed at CVAT's table
        try:
            cvat, baseline = median_time(client, cvat_sql, runs=cfg["runs"]), "CVAT's schema, same SQL"
        except Exception:
            cvat = median_time(client, fallback, parameters, cfg["runs"])
            baseline = "CVAT's schema, its payload working-time query"
        kind = "user" if ("per user" in title.lower() or "working time" in title.lower()) else "overview"
        out.append({"name": f"{uid} / {title}", "kind": kind, "ours": ours, "cvat": cvat, "baseline": baseline})
        print(f"  {uid} / {title}: ours {ours * 1000:.1f} ms, {baseline} {cvat * 1000:.1f} ms",
              file=sys.stderr, flush=True)
    return out


def _productivity_panels(cfg: dict, spec: dict, client) -> list[dict]:
    """Each Productivity panel ("All" selected, the last 7 days) against the same question from
    raw events: the panel's SQL rendered to read the events instead of the state the engine
    keeps (productivity_objects, productivity_jobs), with the precomputed working time
    (working_time_totals) replaced by CVAT's rule run over the events when asked
    (productivity.jinja's capped_working_time_rows without a cap). Both answers must be equal."""
    from cvat_analytics_generator import grafana
    from cvat_analytics_generator.grafana_macros import expand
    from cvat_analytics_generator.render import context, environment

    from ..dashboards import all_selected, interval_for

    if "productivity" not in spec["dashboards"]:
        return []
    d = grafana.load("productivity", spec)
    d_raw = grafana.load("productivity", spec, from_events=True)
    rows = environment().get_template("clickhouse/queries/productivity.jinja").make_module(
        {**context(spec), "db": grafana.db_name(spec), "dashboard": {"filters": "1", "job_filters": "1"},
         "from_events": True})
    stored, raw = str(rows.working_time_rows()), str(rows.capped_working_time_rows(0))
    to = datetime.fromtimestamp(cfg["now_ms"] / 1000, timezone.utc)
    since = to - timedelta(days=7)
    interval = interval_for(since, to, spec["embedded"]["dashboards"]["max_points"])
    out = []
    for p, p_raw in zip(d["panels"], d_raw["panels"]):
        ours = expand(p["sql"], since, to, interval, all_selected(d))
        from_events = expand(p_raw["sql"].replace(stored, raw), since, to, interval, all_selected(d))
        precomputed = from_events != ours
        same = sorted(map(repr, client.query(ours).result_rows)) == sorted(map(repr, client.query(from_events).result_rows))
        t_ours = median_time(client, ours, runs=cfg["runs"])
        t_raw = median_time(client, from_events, runs=cfg["runs"]) if precomputed else t_ours
        baseline = "the same from raw events" if precomputed else "itself (reads raw events only)"
        out.append({"name": f"{d['uid']} / {p['title']}", "kind": "productivity", "ours": t_ours, "cvat": t_raw,
                    "baseline": baseline, "same_result": same})
        print(f"  {d['uid']} / {p['title']}: ours {t_ours * 1000:.1f} ms, {baseline} {t_raw * 1000:.1f} ms"
              f"{'' if same else ' (RESULTS DIFFER)'}", file=sys.stderr, flush=True)
    return out
