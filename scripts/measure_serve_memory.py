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


def late_events(svc: ServeProcess, db: str, days_ago: float) -> int:
    """One event per user `days_ago` days back: the refresh recomputes every user from then."""
    users = [int(u) for u in sql(svc, f"SELECT DISTINCT user_id FROM {db}.events WHERE user_id IS NOT NULL").split()]
    ts = time.time() - days_ago * 86400
    events = [{"scope": "update:job", "source": "server", "timestamp": f"{ts + i / 1000:.6f}", "user_id": u,
               "user_name": f"u{u}", "job_id": 1, "task_id": 1, "project_id": 1, "payload": "{}"} for i, u in enumerate(users)]
    request = urllib.request.Request(svc.url + "/", data=json.dumps(events).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as resp:
        resp.read()
    return len(users)


ENGINE = ("SELECT (SELECT value FROM system.metrics WHERE metric = 'MemoryTracking'), "
          "(SELECT sum(memory_usage) FROM system.processes), "
          "(SELECT arrayStringConcat(groupArray(concat(substring(replaceRegexpAll(query, '\\s+', ' '), 1, 60), "
          "'=', toString(intDiv(memory_usage, 1048576)), 'MB')), ' | ') FROM system.processes), "
          "(SELECT arrayStringConcat(groupArray(concat(status, ':', toString(last_success_duration_ms))), ',') "
          "FROM system.view_refreshes)")


def measure(work: Path, spec: Path, load: dict, days_ago: float) -> dict:
    loaded = load_spec(spec)
    db = loaded["clickhouse"]["database"]
    paths = ["/dashboards/"] + [f"/dashboards/{uid}" for uid in loaded["dashboards"].values() if isinstance(uid, str)]
    svc = ServeProcess(f"chdb://{work / 'store'}", spec, work / "serve.log")
    samples: list[dict] = []
    engine: list[dict] = []
    stop = threading.Event()

    def sample():
        while not stop.wait(0.1):
            try:
                samples.append({"t": time.monotonic(), **status(svc.proc.pid)})
            except OSError:
                return

    def sample_engine():
        while not stop.wait(0.5):
            try:
                tracked, in_queries, queries, refresh = sql(svc, ENGINE).rstrip("\n").split("\t")
                engine.append({"t": time.monotonic(), "tracked_mb": int(tracked) // 1048576,
                               "queries_mb": int(float(in_queries or 0)) // 1048576, "queries": queries,
                               "refresh": refresh, "rss": samples[-1]["VmRSS"] if samples else 0})
            except Exception as exc:
                engine.append({"error": str(exc)[:200]})

    errors: list[str] = []
    pages_done = threading.Event()

    def pages():
        while not pages_done.is_set():
            for path in paths:
                code, body = svc.get(path)
                if code >= 400 or b"max_memory" in body or b"MEMORY_LIMIT" in body:
                    errors.append(f"GET {path}: {code} {body[:100]!r}")

    try:
        time.sleep(15)  # serve's start-up work (the first refresh run) done
        idle = status(svc.proc.pid)
        threading.Thread(target=sample, daemon=True).start()
        threading.Thread(target=sample_engine, daemon=True).start()
        users = late_events(svc, db, days_ago) if days_ago else 0
        page_thread = threading.Thread(target=pages)
        page_thread.start()
        exp = export_via_service(svc, load["export_from"], load["export_to"], work / "export.csv")
        pages_done.set()
        page_thread.join()
        time.sleep(20)  # the refresh that recomputes the late events' users, if still running
        stop.set()
    finally:
        stop.set()
        pages_done.set()
        log = svc.stop()
    peak = max(samples, key=lambda s: s["VmRSS"]) if samples else {}
    top = sorted((e for e in engine if "tracked_mb" in e), key=lambda e: -e["tracked_mb"])[:3]
    return {"idle": idle, "peak_sample": peak, "max": {k: max(s[k] for s in samples) for k in KEYS},
            "late_event_users": users, "export": exp, "errors": errors[:10], "engine_top": top,
            "released": [l for l in log.splitlines() if "released" in l]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True, type=Path)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    ap.add_argument("--days-ago", type=float, default=20,
                    help="one late event per user this many days back, so the refresh recomputes them (0: none)")
    ap.add_argument("--build-only", action="store_true")
    args = ap.parse_args()
    load = build(args.workdir.resolve(), args.events, args.spec.resolve())
    if args.build_only:
        return
    print(json.dumps(measure(args.workdir.resolve(), args.spec.resolve(), load, args.days_ago), indent=1))


if __name__ == "__main__":
    main()
