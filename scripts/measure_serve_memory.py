"""Measure `serve`'s memory at its busiest (issue 27): a 1M-row export over HTTP, a working-time
refresh and the dashboards at once, on a bench store of N events; /proc/<pid>/status sampled
every 100 ms (VmRSS, VmHWM, RssAnon, RssFile), the engine's own account at the peak.

The store is built once (the bench's gen and load phases) in --workdir and reused by later runs.

    .venv/bin/python scripts/measure_serve_memory.py --workdir /tmp/sm-10m --events 10000000
"""
from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from cvat_analytics.bench.export_download import export_via_service
from cvat_analytics.bench.orchestrator import DAYS, Runner
from cvat_analytics.bench.service import ServeProcess
from cvat_analytics_generator.spec import DEFAULT_SPEC, load_spec

KEYS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


def build(work: Path, n: int, spec: Path) -> dict:
    """The bench's store of n events in work/store (once: its load result is kept beside it)."""
    done = work / "load.json"
    if done.exists():
        return json.loads(done.read_text())
    work.mkdir(parents=True, exist_ok=True)
    runner = Runner(work)
    base = {"workdir": str(work), "spec": str(spec), "n": n, "days": DAYS, "seed": 1,
            "now_ms": (int(time.time()) - 120) * 1000, "ingest": {}}
    gen = runner.start("gen", base)
    load = runner.run("load", {**base, "dsn": f"chdb://{work / 'store'}"})
    runner.wait("gen", gen)
    load["now_ms"] = base["now_ms"]
    done.write_text(json.dumps(load, default=str))
    return load


def sql(svc: ServeProcess, query: str) -> str:
    request = urllib.request.Request(f"{svc.url}/clickhouse/?" + urllib.parse.urlencode({"query": query}),
                                     headers={"Authorization": f"Bearer {svc.sql_token}"})
    with urllib.request.urlopen(request, timeout=600) as resp:
        return resp.read().decode()


def status(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in KEYS:
            out[key] = int(line.split()[1]) // 1024
    return out


def measure(work: Path, spec: Path, load: dict, dashboards: int) -> dict:
    db = load_spec(spec)["clickhouse"]["database"]
    svc = ServeProcess(f"chdb://{work / 'store'}", spec, work / "serve.log")
    samples: list[dict] = []
    stop = threading.Event()

    def sample():
        while not stop.wait(0.1):
            try:
                samples.append({"t": time.monotonic(), **status(svc.proc.pid)})
            except OSError:
                return

    errors: list[str] = []

    def refresh():
        try:
            sql(svc, f"SYSTEM REFRESH VIEW {db}.working_time_refresh")
        except Exception as exc:  # the SQL interface may refuse SYSTEM: then the view's own schedule runs
            errors.append(f"refresh: {exc}")

    def pages():
        for _ in range(dashboards):
            for path in ("/dashboards/", "/dashboards/working-time", "/dashboards/overview"):
                status_code, _ = svc.get(path)
                if status_code >= 400:
                    errors.append(f"GET {path}: {status_code}")

    try:
        idle = status(svc.proc.pid)
        threading.Thread(target=sample, daemon=True).start()
        threads = [threading.Thread(target=refresh), threading.Thread(target=pages)]
        for t in threads:
            t.start()
        exp = export_via_service(svc, load["export_from"], load["export_to"], work / "export.csv")
        for t in threads:
            t.join()
        stop.set()
        engine = sql(svc, "SELECT metric, formatReadableSize(value) FROM system.asynchronous_metrics WHERE metric IN "
                          "('MemoryResident', 'jemalloc.retained', 'jemalloc.resident', 'jemalloc.allocated', "
                          "'jemalloc.mapped', 'MarkCacheBytes', 'PrimaryIndexCacheBytes', 'UncompressedCacheBytes', "
                          "'QueryCacheBytes', 'MMapCacheCells', 'PageCacheBytes') ORDER BY metric")
        tracked = sql(svc, "SELECT formatReadableSize(value) FROM system.metrics WHERE metric = 'MemoryTracking'")
        queries = sql(svc, "SYSTEM FLUSH LOGS") or sql(
            svc, "SELECT formatReadableSize(memory_usage) AS m, query_kind, substring(query, 1, 90) FROM system.query_log "
                 "WHERE type = 'QueryFinish' AND event_time > now() - 600 ORDER BY memory_usage DESC LIMIT 12")
    finally:
        stop.set()
        svc.stop()
    peak = max(samples, key=lambda s: s["VmRSS"]) if samples else {}
    return {"idle": idle, "peak_sample": peak, "max": {k: max(s[k] for s in samples) for k in KEYS} if samples else {},
            "export": exp, "errors": errors, "engine_after": engine, "tracked_after": tracked, "queries": queries}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True, type=Path)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    ap.add_argument("--dashboards", type=int, default=3, help="rounds of dashboard pages beside the export")
    ap.add_argument("--build-only", action="store_true")
    args = ap.parse_args()
    load = build(args.workdir.resolve(), args.events, args.spec.resolve())
    if args.build_only:
        return
    print(json.dumps(measure(args.workdir.resolve(), args.spec.resolve(), load, args.dashboards), indent=1))


if __name__ == "__main__":
    main()
