"""The report: every figure against its baseline with the ratio, as a table and as JSON.

`ratio` is always "how many times better ours is": baseline/value where lower is better
(seconds, bytes, MB), value/baseline where higher is better (events/s; for ingest the
baseline is the ceiling, so the ratio is the share of it we reach).
"""
from __future__ import annotations

from .measure import machine


def figure(name, value, unit, baseline, baseline_value, better, target=None, met=None, **detail) -> dict:
    if better == "lower":
        ratio = baseline_value / value if value else float("inf")
    else:
        ratio = value / baseline_value if baseline_value else float("inf")
    return {"name": name, "value": value, "unit": unit, "baseline": baseline,
            "baseline_value": baseline_value, "ratio": round(ratio, 3), "better": better,
            "target": target, "met": met, **({"detail": detail} if detail else {})}


INGEST_TARGETS = {"1000": 50_000, "100": 20_000}


def build_report(results: dict, senders: int, seconds: float) -> dict:
    """The figures from the phases' results (keyed by phase, plus "exp" and "ingest" measured
    by the orchestrator against serve)."""
    gen, load, dash, ceiling = results["gen"], results["load"], results["dashboards"], results["ceiling"]
    wt_sql, wt_udf, wt_py = results["wt_sql"], results["wt_udf"], results["wt_python"]
    exp, cvat_exp, ingest_results = results["exp"], results["cvat_export"], results["ingest"]
    figures = []
    n_loaded = load["events"]
    figures.append(figure("working time: window SQL, all users", round(wt_sql["seconds"], 3), "s",
                          "Python, CVAT's per-batch loop", round(wt_py["seconds"], 3), "lower",
                          target="≥ 30× faster", met=wt_py["seconds"] / wt_sql["seconds"] >= 30,
                          total_ms=wt_sql["total_ms"], groups=wt_sql["groups"],
                          baseline_total_ms=wt_py["total_ms"], baseline_read_s=round(wt_py["read_s"], 3),
                          baseline_loop_s=round(wt_py["loop_s"], 3),
                          # CPU seconds (every thread): the ratio a busy machine does not move
                          cpu_s=round(wt_sql["cpu_s"], 3), baseline_cpu_s=round(wt_py["cpu_s"], 3)))
    figures.append(figure("working time: precomputed totals (working_time_totals), all users",
                          round(wt_sql["totals"]["seconds"], 4), "s", "Python, CVAT's per-batch loop",
                          round(wt_py["seconds"], 3), "lower", target="≥ 30× faster",
                          met=wt_py["seconds"] / max(wt_sql["totals"]["seconds"], 1e-9) >= 30,
                          total_ms=wt_sql["totals"]["total_ms"], groups=wt_sql["totals"]["groups"],
                          equals_window_sql=(wt_sql["totals"]["total_ms"] == wt_sql["total_ms"]
                                             and wt_sql["totals"]["groups"] == wt_sql["groups"])))
    figures.append(figure("working time: window SQL, peak memory", round(wt_sql["peak_mb"]), "MB",
                          "Python, CVAT's per-batch loop", round(wt_py["peak_mb"]), "lower",
                          target="< 2048 MB", met=wt_sql["peak_mb"] < 2048, open_mb=round(wt_sql["open_mb"])))
    figures.append(figure("working time: executable UDF, all users", round(wt_udf["seconds"], 3), "s",
                          "Python, CVAT's per-batch loop", round(wt_py["seconds"], 3), "lower",
                          total_ms=wt_udf["total_ms"], groups=wt_udf["groups"]))
    figures.append(figure("working time: executable UDF, peak memory", round(wt_udf["peak_mb"]), "MB",
                          "Python, CVAT's per-batch loop", round(wt_py["peak_mb"]), "lower"))
    for size in sorted(ingest_results, key=int, reverse=True):
        r, c = ingest_results[size], ceiling[str(size)]
        rate, ceil = round(r["rate"]), round(c["rate"])
        # Issue 13's targets: 50k/s (1000-event bodies, acknowledged within 250 ms at p99) and 20k/s.
        floor = INGEST_TARGETS.get(size)
        target = f"≥ {floor:,}/s" + (", p99 ack ≤ 250 ms" if size == "1000" else "") if floor else None
        met = (rate >= floor and (size != "1000" or r.get("ack_p99_ms", 0) <= 250)) if floor else None
        figures.append(figure(f"ingest: serve over HTTP, {size}-event bodies, {senders} senders", rate,
                              "events/s", f"engine insert, {size}-row INSERTs (ceiling)", ceil, "higher",
                              target=target, met=met, events=r["events"], server_peak_mb=round(r["server_peak_mb"]),
                              ack_p50_ms=round(r.get("ack_p50_ms", 0)), ack_p99_ms=round(r.get("ack_p99_ms", 0)),
                              busy_503=r.get("busy_503", 0),
                              share_of_bulk_ceiling=round(rate / ceiling["bulk"]["rate"], 2) if "bulk" in ceiling else None,
                              engine_bulk=round(ceiling["bulk"]["rate"]) if "bulk" in ceiling else None,
                              serve_validation_one_core=round(ceiling["validate_rate"]),
                              engine_cvat_schema=round(c["cvat_schema_rate"]),
                              engine_coalesced_async_insert=round(c["coalesced_rate"])))
        if "group_rate" in c:
            figures.append(figure(f"ingest: serve, {size}-event bodies, against the engine's own INSERTs of "
                                  f"{senders} bodies ({senders * int(size):,} rows, the largest group {senders} "
                                  "closed-loop senders allow)", rate, "events/s",
                                  f"engine insert, {senders * int(size):,}-row INSERTs", round(c["group_rate"]),
                                  "higher"))
    idle = ingest_results[max(ingest_results, key=int)]["idle_health"]  # before that ingest run
    kept, new = idle["kept_alive"], idle["new_connection"]
    figures.append(figure("serve: GET /health round trip while idle, kept-alive, median",
                          round(kept["median_ms"] / 1000, 6), "s", "a new connection per request",
                          round(new["median_ms"] / 1000, 6), "lower",
                          p99_ms=round(kept["p99_ms"], 2), baseline_p99_ms=round(new["p99_ms"], 2)))
    sql = results.get("sql_beside_ingest")
    if sql:
        figures.append(figure(f"ingest beside a full-scan SQL query on /clickhouse, 100-event bodies, {senders} senders",
                              round(sql["beside_rate"]), "events/s", "the same ingest alone", round(sql["alone_rate"]),
                              "higher", events=sql["events"], scans=sql["scans"],
                              scan_median_s=round(sql["scan_median_s"] or 0, 3)))
    for prefix, panels in (("dashboard panel", dash.get("product", [])), ("dashboard", dash["panels"])):
        for p in panels:
            per = p["kind"] in ("user", "job")
            ok = p["ours"] < 1.0 and (p["cvat"] / p["ours"] >= 3 if per else True)
            figures.append(figure(f"{prefix}: {p['name']}", round(p["ours"], 4), "s",
                                  p.get("baseline", "CVAT's schema"), round(p["cvat"], 4), "lower",
                                  target="< 1 s, ≥ 3× faster" if per else "< 1 s", met=ok, kind=p["kind"]))
    for p in dash.get("productivity", []):  # issue #29: each under 100 ms, equal to its raw-events answer
        figures.append(figure(f"productivity panel: {p['name']}", round(p["ours"], 4), "s", p["baseline"],
                              round(p["cvat"], 4), "lower", target="< 100 ms, same answer",
                              met=p["ours"] < 0.1 and p["same_result"], kind=p["kind"], same_answer=p["same_result"]))
    full, inc = load["refresh"], load["incremental_refresh"]
    figures.append(figure("working time: view refresh after 1,000 new events (engine's own cost)",
                          max(round(inc["view_ms"] / 1000, 3), 0.001), "s", "the full refresh of every event (same view)",
                          round(full["view_ms"] / 1000, 3), "lower", target="< 1 s",
                          met=inc["view_ms"] < 1000, read_rows=inc["read_rows"],
                          baseline_read_rows=full["read_rows"], baseline_runs=full.get("runs")))
    if "productivity_refresh" in load:  # issue #29: the productivity state's refresh
        inc_p, full_p = load["productivity_refresh"], load["productivity_full_refresh"]
        figures.append(figure("productivity: view refresh after 1,000 new server events (engine's own cost)",
                              max(round(inc_p["view_ms"] / 1000, 3), 0.001), "s",
                              "the full recompute of every event (same view)",
                              round(full_p["view_ms"] / 1000, 3), "lower", target="< 1 s",
                              met=inc_p["view_ms"] < 1000, read_rows=inc_p["read_rows"],
                              baseline_read_rows=full_p["read_rows"]))
    figures.append(figure("working time: totals exact again after 1,000 new events (wall)",
                          round(inc["wall_s"], 3), "s", "the full refresh of every event (wall)",
                          round(full["wall_s"], 3), "lower"))
    figures.append(figure(f"export: CSV of {exp['rows']:,} rows, rate", round(exp["rows"] / exp["seconds"]),
                          "rows/s", "CVAT's export code on CVAT's schema",
                          round(cvat_exp["rows"] / cvat_exp["seconds"]), "higher", rows=exp["rows"],
                          baseline_rows=cvat_exp["rows"]))
    figures.append(figure(f"export: CSV of {exp['rows']:,} rows, service peak memory", round(exp["peak_mb"]), "MB",
                          "CVAT's export code on CVAT's schema", round(cvat_exp["peak_mb"]), "lower",
                          target="< 500 MB", met=exp["peak_mb"] < 500, service_idle_mb=round(exp["idle_mb"]),
                          sampled_peak_during_export_mb=round(exp["export_peak_mb"]),
                          anonymous_idle_mb=round(exp.get("idle_anon_mb", 0)),
                          anonymous_peak_during_export_mb=round(exp.get("export_peak_anon_mb", 0))))
    figures.append(figure("storage: bytes on disk per event", round(load["ours_bytes"] / n_loaded, 1), "B/event",
                          "CVAT's schema", round(load["cvat_bytes"] / max(load["cvat_events"], 1), 1), "lower",
                          target="≤ CVAT's", met=load["ours_bytes"] / n_loaded <= load["cvat_bytes"] / max(load["cvat_events"], 1),
                          working_time_tables_bytes=load["working_time_bytes"]))
    report = {"events": n_loaded, "machine": machine(), "seconds": round(seconds, 1),
              "setup": {"generate_s": round(gen["seconds"], 1), "load_s": round(load["load_s"], 1),
                        "load_rate": round(n_loaded / max(load["load_s"], 1e-9)),
                        "copy_to_cvat_schema_s": round(load["copy_s"], 1),
                        "working_time_margin_wait_s": round(load["margin_wait_s"], 1),
                        "working_time_full_refresh_s": round(load["refresh_s"], 2),
                        "optimize_s": round(load["optimize_s"], 1), "users": gen["users"]},
              "figures": figures}
    return report


def _fmt(value, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f} s" if value >= 0.1 else f"{value * 1000:.1f} ms"
    if isinstance(value, float):
        return f"{value:,.1f} {unit}"
    return f"{value:,} {unit}"


def format_table(report: dict) -> str:
    m = report["machine"]
    lines = [f"cvat-analytics bench: {report['events']:,} events; {m['nproc']} cores, {m['ram_gb']} GB RAM, "
             f"{m['cpu']}; chdb {m['chdb']}; {report['seconds']:.0f} s", ""]
    rows = [("figure", "ours", "baseline", "", "ratio", "target")]
    for f in report["figures"]:
        mark = "" if f["met"] is None else (" met" if f["met"] else " MISSED")
        rows.append((f["name"], _fmt(f["value"], f["unit"]), _fmt(f["baseline_value"], f["unit"]),
                     f["baseline"], f"{f['ratio']:.2f}×", (f["target"] or "") + mark))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines.append("")
    lines.append("ratio: how many times better ours is (baseline/ours for s, MB, B; ours/baseline for rates;"
                 " for ingest the baseline is the engine's ceiling)")
    return "\n".join(lines)
