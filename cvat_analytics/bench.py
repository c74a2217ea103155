"""`cvat-analytics bench`: every headline figure against its baseline, measured in one run.

What it does (README "Benchmarks"):

1. generates N realistic events with the demo generator (cvat_analytics/demo.py)
   and bulk-loads them into a fresh embedded store (our schema, through
   `INSERT ... SELECT FROM file()`, working-time insert trigger included), and the
   same rows into a table with CVAT's original schema (bench_sql/cvat_events.sql);
2. measures, each engine phase in a process of its own (chdb: one data path per
   process; each phase's peak RSS is its own `ru_maxrss`):
   - working time over all users: the window SQL and the executable UDF against a
     plain Python implementation of CVAT's per-batch loop on the same rows;
   - ingest: events/s into `cvat-analytics serve` over HTTP on 127.0.0.1 with JSON
     array bodies of 100 and 1000 events from concurrent senders, against the
     engine's own insert rate of the same rows through clickhouse-connect;
   - dashboards: each panel (bench_sql/panels.sql) over the last 7 days on our
     schema against CVAT's schema;
   - export: rows/s and the service's peak memory for a 1M-row CSV export,
     against CVAT's export code (query everything, then csv.writer) on its schema;
   - storage: bytes on disk per event, ours against CVAT's;
3. prints a table and writes the same as JSON.

`ratio` is always "how many times better ours is": baseline/value where lower is
better (seconds, bytes, MB), value/baseline where higher is better (events/s; for
ingest the baseline is the ceiling, so the ratio is the share of it we reach).

Run as `python -m cvat_analytics.bench PHASE CONFIG RESULT` for one phase (how the
orchestrator runs them); `cvat-analytics bench` runs everything.
"""
from __future__ import annotations

import csv
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent / "bench_sql"
DEFAULT_EVENTS = 10_000_000
DAYS = 30  # the data spans 30 days; dashboards read the last 7
CHUNK_ROWS = 500_000
INGEST_SAMPLE = {1000: 500_000, 100: 100_000}  # events sent per body size (at most N)
SENDERS = 4
EXPORT_ROWS = 1_000_000
CVAT_DB = "cvat_original"
PANEL_RUNS = 5

# The file() structure of generated rows: CVAT's fields, `_ts` epoch ms, payload raw JSON.
GEN_STRUCTURE = (
    "scope String, source String, _ts Int64, obj_name Nullable(String), obj_id Nullable(UInt64), "
    "obj_val Nullable(String), count Nullable(UInt16), duration UInt32, project_id Nullable(UInt64), "
    "task_id Nullable(UInt64), job_id Nullable(UInt64), user_id Nullable(UInt64), "
    "user_name Nullable(String), user_email Nullable(String), org_id Nullable(UInt64), "
    "org_slug Nullable(String), payload Nullable(String), access_token_id Nullable(UInt64)"
)
EVENT_COLUMNS = ["scope", "obj_name", "obj_id", "obj_val", "source", "timestamp", "count", "duration",
                 "project_id", "task_id", "job_id", "user_id", "user_name", "user_email", "org_id",
                 "org_slug", "payload", "access_token_id"]


# -- helpers ---------------------------------------------------------------------
def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _proc_status(pid: int, key: str) -> float:
    """VmRSS / VmHWM of a process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine() -> dict:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines()
                  if l.startswith("MemTotal:"))
    import chdb

    return {"nproc": os.cpu_count(), "ram_gb": round(mem_kb / 1024 / 1024, 1), "cpu": model,
            "python": sys.version.split()[0], "chdb": getattr(chdb, "__version__", "?")}


def _render(name: str, **values) -> str:
    from jinja2 import Environment, StrictUndefined

    return Environment(undefined=StrictUndefined).from_string((SQL_DIR / name).read_text()).render(**values)


def parse_panels(text: str) -> list[dict]:
    """bench_sql/panels.sql -> [{name, kind, ours, cvat}]."""
    panels = []
    for block in re.split(r"^-- panel: ", text, flags=re.M)[1:]:
        name, rest = block.split("\n", 1)
        kind = re.search(r"^-- kind: (\w+)", rest, re.M).group(1)
        ours = rest.split("-- ours:\n", 1)[1].split("-- cvat:\n", 1)[0].strip()
        cvat = rest.split("-- cvat:\n", 1)[1].strip()
        panels.append({"name": name.strip(), "kind": kind, "ours": ours, "cvat": cvat})
    return panels


def _ts_text(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}"


# -- phases (each runs in a process of its own) ------------------------------------
def phase_gen(cfg: dict) -> dict:
    """Demo events -> JSONEachRow chunk files (raw payload JSON, `_ts` in ms) for the loader."""
    from . import demo

    out = Path(cfg["workdir"]) / "chunks"
    out.mkdir(parents=True, exist_ok=True)
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    gen = demo.Demo(seed=cfg["seed"], days=cfg["days"], now_ms=cfg["now_ms"])
    started = time.monotonic()
    buf, chunk, n = [], 0, 0
    for ev in gen.events(cfg["n"]):
        buf.append(dumps(ev))
        n += 1
        if len(buf) >= CHUNK_ROWS:
            _write_chunk(out, chunk, buf)
            chunk, buf = chunk + 1, []
    if buf:
        _write_chunk(out, chunk, buf)
        chunk += 1
    (out / "DONE").write_text(str(chunk))
    return {"events": n, "chunks": chunk, "seconds": time.monotonic() - started,
            "users": len(gen.users)}


def _write_chunk(out: Path, index: int, lines: list[str]) -> None:
    tmp = out / f"chunk_{index:05d}.part"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.rename(out / f"chunk_{index:05d}.jsonl")


def phase_bodies(cfg: dict) -> dict:
    """The ingest sample: CVAT's wire bodies (100 / 1000 events) and the stored rows."""
    from . import demo

    work = Path(cfg["workdir"])
    m = max(cfg["ingest"].values())
    gen = demo.Demo(seed=cfg["seed"], days=cfg["days"], now_ms=cfg["now_ms"])
    wire, rows = [], []
    for i, ev in enumerate(gen.events(m)):
        wire.append(demo.to_wire(ev, micros=(i * 7919) % 1000))
        rows.append(demo.to_row(ev))
    for size, count in cfg["ingest"].items():
        with open(work / f"bodies_{size}.bin", "wb") as fh:
            for start in range(0, count, int(size)):
                body = json.dumps(wire[start:start + int(size)], ensure_ascii=False).encode()
                fh.write(struct.pack("<I", len(body)) + body)
    with open(work / "rows.jsonl", "wb") as fh:
        fh.write(b"".join(rows))
    return {"events": len(rows)}


def read_bodies(path: Path) -> list[bytes]:
    data, bodies, pos = path.read_bytes(), [], 0
    while pos < len(data):
        (size,) = struct.unpack_from("<I", data, pos)
        bodies.append(data[pos + 4:pos + 4 + size])
        pos += 4 + size
    return bodies


def _validate_rate(cfg: dict) -> float:
    """Events/s through serve's per-event work on one core: parse the body, EventContract
    normalize + to_line (what each request does under the GIL before its INSERT)."""
    from cvat_analytics_generator.spec import load_spec

    from .events import EventContract
    from .service.ingest import parse_events

    contract = EventContract(load_spec(Path(cfg["spec"])))
    bodies = read_bodies(Path(cfg["workdir"]) / "bodies_1000.bin")[:100]
    t, n = time.monotonic(), 0
    for body in bodies:
        lines = [contract.to_line(contract.normalize(e, i)) for i, e in enumerate(parse_events(body))]
        n += len(lines)
    return n / max(time.monotonic() - t, 1e-9)


def _open(cfg: dict):
    from cvat_analytics_generator.spec import load_spec

    from .store import connect

    spec = load_spec(Path(cfg["spec"]))
    return spec, connect(cfg["dsn"])


def phase_load(cfg: dict) -> dict:
    """Bulk-load the chunk files into our schema, copy into CVAT's, settle, measure storage."""
    from . import working_time
    from .migrate import migrate

    spec, client = _open(cfg)
    db = spec["clickhouse"]["database"]
    migrate(client, spec, log=lambda *_: None)
    client.command(f"CREATE DATABASE IF NOT EXISTS `{CVAT_DB}`")
    client.command(_render("cvat_events.sql", db=CVAT_DB))
    chunks = Path(cfg["workdir"]) / "chunks"
    started = time.monotonic()
    loaded, index = 0, 0
    columns = ", ".join(f"`{c}`" for c in EVENT_COLUMNS)
    select = ", ".join("fromUnixTimestamp64Milli(_ts, 'Etc/UTC')" if c == "timestamp" else f"`{c}`"
                       for c in EVENT_COLUMNS)
    while True:
        path = chunks / f"chunk_{index:05d}.jsonl"
        done = chunks / "DONE"
        if not path.exists():
            if done.exists() and index >= int(done.read_text()):
                break
            time.sleep(0.2)
            continue
        client.command(
            f"INSERT INTO `{db}`.events ({columns}) SELECT {select} "
            f"FROM file('{path}', 'JSONEachRow', '{GEN_STRUCTURE}') "
            "SETTINGS input_format_json_read_objects_as_strings = 1, async_insert = 0")
        path.unlink()
        index += 1
        loaded = int(client.command(f"SELECT count() FROM `{db}`.events"))
        rate = loaded / max(time.monotonic() - started, 1e-9)
        print(f"\r  load: {loaded:,}/{cfg['n']:,} events ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    load_s = time.monotonic() - started
    t = time.monotonic()
    client.command(f"INSERT INTO `{CVAT_DB}`.events ({columns}) SELECT {columns} FROM `{db}`.events "
                   "SETTINGS async_insert = 0")
    copy_s = time.monotonic() - t
    t = time.monotonic()
    refresh = working_time.refresh(client, spec)
    refresh_s = time.monotonic() - t
    # The full refresh consumed every change: clear the log, so the service started for
    # the export measures the export, not a re-take of the last minute's changes.
    client.command(f"TRUNCATE TABLE `{db}`.working_time_changes")
    t = time.monotonic()
    for table in (f"`{db}`.events", f"`{CVAT_DB}`.events"):
        client.command(f"OPTIMIZE TABLE {table} FINAL")
    optimize_s = time.monotonic() - t

    def disk(database: str, table: str) -> tuple[int, int]:
        return client.query(
            "SELECT sum(bytes_on_disk), sum(rows) FROM system.parts "
            "WHERE active AND database = {d:String} AND table = {t:String}",
            parameters={"d": database, "t": table}).result_rows[0]

    ours_bytes, ours_rows = disk(db, "events")
    cvat_bytes, cvat_rows = disk(CVAT_DB, "events")
    wt_bytes = sum(disk(db, t)[0] for t in ("working_time_totals", "working_time_checkpoints"))
    # Panel variables: the busiest user and job of the last 7 days; the export window.
    t_from = _ts_text(cfg["now_ms"] - 7 * 86_400_000)
    user_id, job_id = client.query(
        f"SELECT (SELECT user_id FROM `{db}`.events WHERE timestamp >= '{t_from}' AND user_id IS NOT NULL "
        f"GROUP BY user_id ORDER BY count() DESC LIMIT 1), "
        f"(SELECT job_id FROM `{db}`.events WHERE timestamp >= '{t_from}' AND job_id IS NOT NULL "
        f"GROUP BY job_id ORDER BY count() DESC LIMIT 1)").result_rows[0]
    exportable = (f"FROM `{db}`.events WHERE source IN ('server', 'client') AND scope != 'send:exception'")
    total_exportable = int(client.command(f"SELECT count() {exportable}"))
    if total_exportable > EXPORT_ROWS:
        export_from = client.query(f"SELECT toString(timestamp) {exportable} ORDER BY timestamp DESC "
                                   f"LIMIT 1 OFFSET {EXPORT_ROWS - 1}").result_rows[0][0]
    else:
        export_from = client.query(f"SELECT toString(min(timestamp)) {exportable}").result_rows[0][0]
    return {"events": ours_rows, "cvat_events": cvat_rows, "load_s": load_s, "copy_s": copy_s,
            "refresh_s": refresh_s, "refresh": refresh, "optimize_s": optimize_s,
            "ours_bytes": ours_bytes, "cvat_bytes": cvat_bytes, "working_time_bytes": wt_bytes,
            "user_id": user_id, "job_id": job_id, "export_from": export_from,
            "export_to": _ts_text(cfg["now_ms"] + 86_400_000)}


def _wt_result(columns, rows, elapsed: float, rss0: float) -> dict:
    i = columns.index("working_time_ms")
    return {"seconds": elapsed, "peak_mb": peak_mb(), "open_mb": rss0, "groups": len(rows),
            "total_ms": int(sum(r[i] for r in rows))}


def phase_wt_sql(cfg: dict) -> dict:
    from . import working_time as wt

    spec, client = _open(cfg)
    client.command("SELECT 1")
    rss0 = peak_mb()
    t = time.monotonic()
    columns, rows = wt.totals(client, spec, ["user_id", "project_id", "task_id", "job_id"], engine="sql")
    out = _wt_result(columns, rows, time.monotonic() - t, rss0)
    # The same totals as dashboards read them: from working_time_totals, kept exact by refresh.
    t = time.monotonic()
    result = client.query(
        f"SELECT user_id, project_id, task_id, job_id, toInt64(sum(working_time_ms)) AS working_time_ms "
        f"FROM `{spec['clickhouse']['database']}`.working_time_totals "
        "GROUP BY user_id, project_id, task_id, job_id HAVING working_time_ms != 0")
    out["totals"] = _wt_result(list(result.column_names), result.result_rows, time.monotonic() - t, rss0)
    return out


def phase_wt_udf(cfg: dict) -> dict:
    from cvat_analytics_generator.spec import load_spec

    from . import working_time as wt

    spec = load_spec(Path(cfg["spec"]))
    client = wt.connect_with_udf(cfg["dsn"], spec)
    client.command("SELECT 1")
    rss0 = peak_mb()
    t = time.monotonic()
    columns, rows = wt.totals(client, spec, ["user_id", "project_id", "task_id", "job_id"], engine="udf")
    return _wt_result(columns, rows, time.monotonic() - t, rss0)


# CVAT's cvat/apps/events/utils.py, as it runs on each batch a client posts
# (reference/cvat.md §5): datetimes and timedeltas, dict events, previous_event carried.
MAX_EVENT_DURATION_MS = 100_000
COMPRESSED_EVENT_SCOPES = frozenset({"change:frame"})


def compute_working_time_per_ids(data: dict) -> dict:
    from datetime import timedelta

    max_event_duration = timedelta(milliseconds=MAX_EVENT_DURATION_MS)

    def read_ids(event: dict):
        return event.get("job_id"), event.get("task_id"), event.get("project_id")

    def get_end_timestamp(event: dict):
        if event["scope"] in COMPRESSED_EVENT_SCOPES:
            return event["timestamp"] + timedelta(milliseconds=event["duration"])
        return event["timestamp"]

    if previous_event := data["previous_event"]:
        previous_end_timestamp = get_end_timestamp(previous_event)
        previous_ids = read_ids(previous_event)
    elif data["events"]:
        previous_end_timestamp = data["events"][0]["timestamp"]
        previous_ids = read_ids(data["events"][0])

    working_time_per_ids = {}
    for event in data["events"]:
        working_time = timedelta()
        timestamp = event["timestamp"]
        if timestamp > previous_end_timestamp:
            t_diff = timestamp - previous_end_timestamp
            if t_diff < max_event_duration:
                working_time += t_diff
            previous_end_timestamp = timestamp
        end_timestamp = get_end_timestamp(event)
        if end_timestamp > previous_end_timestamp:
            working_time += end_timestamp - previous_end_timestamp
            previous_end_timestamp = end_timestamp
        if previous_ids not in working_time_per_ids:
            working_time_per_ids[previous_ids] = {"value": timedelta(), "timestamp": timestamp}
        working_time_per_ids[previous_ids]["value"] += working_time
        previous_ids = read_ids(event)
    return working_time_per_ids


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


def _ms():
    from datetime import timedelta
    return timedelta(milliseconds=1)


_MS = _ms()


def phase_wt_python(cfg: dict) -> dict:
    spec, client = _open(cfg)
    db = spec["clickhouse"]["database"]
    client.command("SELECT 1")
    rss0 = peak_mb()
    t = time.monotonic()
    read_s = 0.0

    def rows():
        nonlocal read_s
        sql = (f"SELECT user_id, timestamp, scope, duration, job_id, task_id, project_id FROM `{db}`.events "
               "WHERE source = 'client' AND user_id IS NOT NULL ORDER BY user_id, timestamp")
        with client.query_row_block_stream(sql) as stream:
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
    return {"seconds": elapsed, "read_s": read_s, "loop_s": elapsed - read_s, "peak_mb": peak_mb(),
            "open_mb": rss0, "groups": sum(1 for v in totals.values() if v), "total_ms": int(sum(totals.values()))}


def phase_dashboards(cfg: dict) -> dict:
    spec, client = _open(cfg)
    values = {"db": spec["clickhouse"]["database"], "cvat_db": CVAT_DB,
              "t_from": _ts_text(cfg["now_ms"] - 7 * 86_400_000), "t_to": _ts_text(cfg["now_ms"]),
              "user_id": cfg["user_id"] or 0, "job_id": cfg["job_id"] or 0}
    from jinja2 import Environment, StrictUndefined

    env = Environment(undefined=StrictUndefined)
    out = []
    for panel in parse_panels((SQL_DIR / "panels.sql").read_text()):
        timing = {}
        for side in ("ours", "cvat"):
            timing[side] = _median_time(client, env.from_string(panel[side]).render(**values))
        out.append({"name": panel["name"], "kind": panel["kind"], **timing})
        print(f"  {panel['name']}: ours {timing['ours'] * 1000:.1f} ms, CVAT's {timing['cvat'] * 1000:.1f} ms",
              file=sys.stderr, flush=True)
    return {"panels": out, "product": _product_panels(cfg, spec, client, env, values)}


def _median_time(client, sql: str) -> float:
    client.raw_query(sql)  # warm-up: caches, marks
    runs = []
    for _ in range(PANEL_RUNS):
        t = time.monotonic()
        client.raw_query(sql, fmt="Native")
        runs.append(time.monotonic() - t)
    return statistics.median(runs)


def _product_panels(cfg: dict, spec: dict, client, env, values: dict) -> list[dict]:
    """The product's own dashboards (cvat_analytics.dashboards.panel_queries, "All" selected)
    on our schema; the baseline is the same SQL on CVAT's schema where it runs there, else
    (working-time objects, columns CVAT lacks) CVAT's payload-parsed working-time query."""
    try:
        from .dashboards import panel_queries
    except ImportError:
        return []
    from datetime import datetime, timezone

    db = spec["clickhouse"]["database"]
    to = datetime.fromtimestamp(cfg["now_ms"] / 1000, timezone.utc)
    fallback_panel = next(p for p in parse_panels((SQL_DIR / "panels.sql").read_text())
                          if p["name"] == "Working time table (all users)")
    fallback = env.from_string(fallback_panel["cvat"]).render(**values)
    out = []
    for uid, title, sql in panel_queries(spec, to - timedelta(days=7), to):
        ours = _median_time(client, sql)
        cvat_sql = sql.replace(f"`{db}`.", f"`{CVAT_DB}`.")
        try:
            cvat, baseline = _median_time(client, cvat_sql), "CVAT's schema, same SQL"
        except Exception:
            cvat, baseline = _median_time(client, fallback), "CVAT's schema, its payload working-time query"
        kind = "user" if ("per user" in title.lower() or "working time" in title.lower()) else "overview"
        out.append({"name": f"{uid} / {title}", "kind": kind, "ours": ours, "cvat": cvat, "baseline": baseline})
        print(f"  {uid} / {title}: ours {ours * 1000:.1f} ms, {baseline} {cvat * 1000:.1f} ms",
              file=sys.stderr, flush=True)
    return out


def phase_cvat_export(cfg: dict) -> dict:
    """CVAT's export code (cvat/apps/events/export.py): one query, then csv.writer."""
    _, client = _open(cfg)
    client.command("SELECT 1")
    rss0 = peak_mb()
    path = Path(cfg["workdir"]) / "cvat_export.csv"
    t = time.monotonic()
    result = client.query(
        f"SELECT * FROM `{CVAT_DB}`.events WHERE source IN ('server', 'client') AND scope != 'send:exception' "
        "AND timestamp >= {f:DateTime64(3, 'Etc/UTC')} AND timestamp <= {t:DateTime64(3, 'Etc/UTC')} "
        "ORDER BY timestamp ASC", parameters={"f": cfg["export_from"], "t": cfg["export_to"]})
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(result.column_names)
        writer.writerows(result.result_rows)
    elapsed = time.monotonic() - t
    rows = len(result.result_rows)
    path.unlink()
    return {"rows": rows, "seconds": elapsed, "peak_mb": peak_mb(), "open_mb": rss0}


def phase_ceiling(cfg: dict) -> dict:
    """The engine's own insert rate of the ingest sample through clickhouse-connect,
    one INSERT per batch of 100 / 1000 stored rows, into a freshly migrated database."""
    from cvat_analytics_generator.spec import load_spec

    from .migrate import migrate
    from .store import connect, insert_json_rows

    base = load_spec(Path(cfg["spec"]))
    client = connect(cfg["dsn"])
    lines = (Path(cfg["workdir"]) / "rows.jsonl").read_bytes().splitlines(keepends=True)
    out = {"validate_rate": _validate_rate(cfg)}
    for size, count in cfg["ingest"].items():
        size = int(size)
        spec = json.loads(json.dumps(base))
        spec["clickhouse"]["database"] = f"ceiling_{size}"
        migrate(client, spec, log=lambda *_: None)
        batches = [b"".join(lines[i:i + size]) for i in range(0, min(count, len(lines)), size)]
        t = time.monotonic()
        for body in batches:
            insert_json_rows(client, spec["clickhouse"]["database"], body)
        elapsed = time.monotonic() - t
        stored = int(client.command(f"SELECT count() FROM `ceiling_{size}`.events"))
        out[str(size)] = {"events": stored, "seconds": elapsed, "rate": stored / elapsed}
        # For the report: the same INSERTs into CVAT's schema (no MV, no indexes, no fsync) ...
        client.command(f"CREATE DATABASE IF NOT EXISTS `cvat_{size}`")
        client.command(_render("cvat_events.sql", db=f"cvat_{size}"))
        t = time.monotonic()
        for body in batches:
            insert_json_rows(client, f"cvat_{size}", body)
        out[str(size)]["cvat_schema_rate"] = stored / (time.monotonic() - t)
        # ... and into our schema from SENDERS concurrent handles with async_insert (the engine
        # coalesces concurrent INSERTs into one part; each keeps its own deduplication token).
        spec["clickhouse"]["database"] = f"coalesced_{size}"
        migrate(client, spec, log=lambda *_: None)
        out[str(size)]["coalesced_rate"] = _coalesced_rate(cfg["dsn"], f"coalesced_{size}", batches)
    return out


def _coalesced_rate(dsn: str, database: str, batches: list[bytes]) -> float:
    import hashlib

    import clickhouse_connect

    from .store import INSERT_SETTINGS, chdb_path

    handles = [clickhouse_connect.get_client(dsn=f"chdb://{chdb_path(dsn).resolve()}") for _ in range(SENDERS)]
    work = iter(batches)
    lock = threading.Lock()

    def worker(handle):
        while True:
            with lock:
                body = next(work, None)
            if body is None:
                return
            settings = dict(INSERT_SETTINGS, async_insert=1, wait_for_async_insert=1,
                            async_insert_busy_timeout_max_ms=50,
                            insert_deduplication_token=hashlib.sha256(body).hexdigest())
            handle.raw_insert(f"`{database}`.events", None, body, settings=settings, fmt="JSONEachRow")

    threads = [threading.Thread(target=worker, args=(h,)) for h in handles]
    t = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.monotonic() - t
    return int(handles[0].command(f"SELECT count() FROM `{database}`.events")) / elapsed


PHASES = {"gen": phase_gen, "bodies": phase_bodies, "load": phase_load, "wt_sql": phase_wt_sql,
          "wt_udf": phase_wt_udf, "wt_python": phase_wt_python, "dashboards": phase_dashboards,
          "cvat_export": phase_cvat_export, "ceiling": phase_ceiling}


def _child_main(argv: list[str]) -> int:
    name, config, result = argv
    cfg = json.loads(Path(config).read_text())
    out = PHASES[name](cfg)
    Path(result).write_text(json.dumps(out, default=str))
    return 0


# -- the orchestrator (never opens chdb itself) ----------------------------------------
class Runner:
    def __init__(self, workdir: Path, err):
        self.workdir = workdir
        self.err = err
        self.count = 0

    def start(self, phase: str, cfg: dict) -> tuple[subprocess.Popen, Path]:
        self.count += 1
        config = self.workdir / f"{phase}_{self.count}.config.json"
        result = self.workdir / f"{phase}_{self.count}.result.json"
        config.write_text(json.dumps(cfg))
        proc = subprocess.Popen([sys.executable, "-m", "cvat_analytics.bench", phase, str(config), str(result)],
                                cwd=str(Path(__file__).resolve().parent.parent))
        return proc, result

    def wait(self, phase: str, started: tuple[subprocess.Popen, Path]) -> dict:
        proc, result = started
        if proc.wait() != 0:
            raise RuntimeError(f"bench phase {phase} failed (exit code {proc.returncode})")
        return json.loads(result.read_text())

    def run(self, phase: str, cfg: dict) -> dict:
        return self.wait(phase, self.start(phase, cfg))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """`cvat-analytics serve` in a subprocess, on its own port."""

    def __init__(self, dsn: str, spec_path: str, log: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cvat_analytics.cli", "serve", "--spec", spec_path, "--dsn", dsn,
             "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=self.log, stderr=self.log, cwd=str(Path(__file__).resolve().parent.parent))
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as resp:
                    self.health = json.loads(resp.read())
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"serve did not start; see {log}") from None
                time.sleep(0.2)

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=600) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def rss(self, key: str = "VmRSS") -> float:
        return _proc_status(self.proc.pid, key)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def send_bodies(url: str, path: Path, senders: int, progress) -> tuple[int, float]:
    """POST every body in `path` from `senders` keep-alive connections; (events, seconds)."""
    bodies = read_bodies(path)
    host, port = url.split("//", 1)[1].split(":")
    lock = threading.Lock()
    state = {"next": 0, "stored": 0, "error": None}

    def worker():
        conn = http.client.HTTPConnection(host, int(port), timeout=300)
        while True:
            with lock:
                i = state["next"]
                state["next"] += 1
            if i >= len(bodies) or state["error"]:
                break
            conn.request("POST", "/", bodies[i], {"Content-Type": "application/json"})
            resp = conn.getresponse()
            answer = resp.read()
            if resp.status != 200:
                state["error"] = f"HTTP {resp.status}: {answer[:200]!r}"
                break
            with lock:
                state["stored"] += json.loads(answer)["stored"]
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(senders)]
    t = time.monotonic()
    for th in threads:
        th.start()
    while any(th.is_alive() for th in threads):
        progress(state["stored"], time.monotonic() - t)
        for th in threads:
            th.join(timeout=0.5)
    elapsed = time.monotonic() - t
    if state["error"]:
        raise RuntimeError(f"ingest failed: {state['error']}")
    progress(state["stored"], elapsed)
    return state["stored"], elapsed


def export_via_service(svc: Service, t_from: str, t_to: str, out: Path) -> dict:
    from urllib.parse import urlencode

    q = urlencode({"from": t_from.replace(" ", "T") + "Z", "to": t_to.replace(" ", "T") + "Z"})
    rss0 = svc.rss()
    sampled = [rss0]
    done = threading.Event()

    def sample():
        while not done.wait(0.02):
            try:
                sampled.append(svc.rss())
            except OSError:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.monotonic()
    status, body = svc.get(f"/api/events?{q}")
    if status != 202:
        raise RuntimeError(f"export did not start: {status} {body[:200]!r}")
    query_id = json.loads(body)["query_id"]
    while True:
        status, body = svc.get(f"/api/events?{q}&query_id={query_id}")
        if status == 201:
            break
        if status != 202:
            raise RuntimeError(f"export failed: {status} {body[:200]!r}")
        time.sleep(0.1)
    rows = -1  # the header
    with urllib.request.urlopen(f"{svc.url}/api/events?{q}&query_id={query_id}&action=download",
                                timeout=600) as resp, open(out, "wb") as fh:
        while chunk := resp.read(1 << 20):
            fh.write(chunk)
    elapsed = time.monotonic() - t
    done.set()
    sampler.join()
    with open(out, "rb") as fh:
        for _ in csv.reader((line.decode() for line in fh)):
            rows += 1
    size = out.stat().st_size
    out.unlink()
    return {"rows": rows, "seconds": elapsed, "peak_mb": svc.rss("VmHWM"), "idle_mb": rss0,
            "export_peak_mb": max(sampled), "bytes": size}


def figure(name, value, unit, baseline, baseline_value, better, target=None, met=None, **detail) -> dict:
    if better == "lower":
        ratio = baseline_value / value if value else float("inf")
    else:
        ratio = value / baseline_value if baseline_value else float("inf")
    return {"name": name, "value": value, "unit": unit, "baseline": baseline,
            "baseline_value": baseline_value, "ratio": round(ratio, 3), "better": better,
            "target": target, "met": met, **({"detail": detail} if detail else {})}


def run(n: int = DEFAULT_EVENTS, json_path: str | None = None, spec_path: str | None = None,
        workdir: str | None = None, keep: bool = False, seed: int = 1, err=sys.stderr,
        out=sys.stdout, senders: int = SENDERS) -> dict:
    from cvat_analytics_generator.spec import DEFAULT_SPEC, load_spec

    spec_path = str(Path(spec_path or DEFAULT_SPEC).resolve())
    load_spec(Path(spec_path))
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="cvat-analytics-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    runner = Runner(work, err)
    now_ms = (int(time.time()) - 120) * 1000
    ingest = {str(size): min(n, count) for size, count in INGEST_SAMPLE.items()}
    base = {"workdir": str(work), "spec": spec_path, "n": n, "days": DAYS, "seed": seed,
            "now_ms": now_ms, "ingest": ingest}
    main_dsn = f"chdb://{work / 'store'}"
    started = time.monotonic()
    step = [0]
    steps = 10

    def say(text: str) -> None:
        step[0] += 1
        print(f"[{step[0]}/{steps}] {text} ({time.monotonic() - started:.0f}s)", file=err, flush=True)

    try:
        say(f"generating {n:,} demo events over {DAYS} days and loading them (ours + CVAT's schema)")
        gen = runner.start("gen", base)
        bodies = runner.start("bodies", base)
        load = runner.run("load", {**base, "dsn": main_dsn})
        gen = runner.wait("gen", gen)
        say("working time: window SQL over all users")
        wt_sql = runner.run("wt_sql", {**base, "dsn": main_dsn})
        say("working time: executable UDF")
        wt_udf = runner.run("wt_udf", {**base, "dsn": main_dsn})
        say("working time: Python baseline (CVAT's per-batch loop)")
        wt_py = runner.run("wt_python", {**base, "dsn": main_dsn})
        say("dashboards: each panel, ours vs CVAT's schema")
        dash = runner.run("dashboards", {**base, "dsn": main_dsn, "user_id": load["user_id"],
                                         "job_id": load["job_id"]})
        say("export: CVAT's export code on CVAT's schema")
        exp_cfg = {**base, "dsn": main_dsn, "export_from": load["export_from"], "export_to": load["export_to"]}
        cvat_exp = runner.run("cvat_export", exp_cfg)
        say("export: GET /api/events on `serve`")
        svc = Service(main_dsn, spec_path, work / "serve-export.log")
        try:
            exp = export_via_service(svc, load["export_from"], load["export_to"], work / "export.csv")
        finally:
            svc.stop()
        say("ingest ceiling: the engine's own insert rate through clickhouse-connect")
        runner.wait("bodies", bodies)
        ceiling = runner.run("ceiling", {**base, "dsn": f"chdb://{work / 'ceiling'}"})
        ingest_results = {}
        for size in sorted(ingest, key=int, reverse=True):
            say(f"ingest: {ingest[size]:,} events into `serve` over HTTP, {size}-event bodies, {senders} senders")
            svc = Service(f"chdb://{work / f'ingest_{size}'}", spec_path, work / f"serve-ingest-{size}.log")
            try:
                def progress(done, secs):
                    print(f"\r  {done:,} events ({done / max(secs, 1e-9):,.0f}/s)", end="", file=err, flush=True)
                stored, secs = send_bodies(svc.url, work / f"bodies_{size}.bin", senders, progress)
                print(file=err)
                ingest_results[size] = {"events": stored, "seconds": secs, "rate": stored / secs,
                                        "server_peak_mb": svc.rss("VmHWM")}
            finally:
                svc.stop()
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)

    figures = []
    n_loaded = load["events"]
    figures.append(figure("working time: window SQL, all users", round(wt_sql["seconds"], 3), "s",
                          "Python, CVAT's per-batch loop", round(wt_py["seconds"], 3), "lower",
                          target="≥ 30× faster", met=wt_py["seconds"] / wt_sql["seconds"] >= 30,
                          total_ms=wt_sql["total_ms"], groups=wt_sql["groups"],
                          baseline_total_ms=wt_py["total_ms"], baseline_read_s=round(wt_py["read_s"], 3),
                          baseline_loop_s=round(wt_py["loop_s"], 3)))
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
        target = "≥ 100,000/s and ≥ 50% of ceiling" if size == "1000" else None
        met = (rate >= 100_000 and rate >= 0.5 * ceil) if size == "1000" else None
        figures.append(figure(f"ingest: serve over HTTP, {size}-event bodies, {senders} senders", rate,
                              "events/s", f"engine insert, {size}-row INSERTs (ceiling)", ceil, "higher",
                              target=target, met=met, events=r["events"], server_peak_mb=round(r["server_peak_mb"]),
                              serve_validation_one_core=round(ceiling["validate_rate"]),
                              engine_cvat_schema=round(c["cvat_schema_rate"]),
                              engine_coalesced_async_insert=round(c["coalesced_rate"])))
    for prefix, panels in (("dashboard panel", dash.get("product", [])), ("dashboard", dash["panels"])):
        for p in panels:
            per = p["kind"] in ("user", "job")
            ok = p["ours"] < 1.0 and (p["cvat"] / p["ours"] >= 3 if per else True)
            figures.append(figure(f"{prefix}: {p['name']}", round(p["ours"], 4), "s",
                                  p.get("baseline", "CVAT's schema"), round(p["cvat"], 4), "lower",
                                  target="< 1 s, ≥ 3× faster" if per else "< 1 s", met=ok, kind=p["kind"]))
    figures.append(figure(f"export: CSV of {exp['rows']:,} rows, rate", round(exp["rows"] / exp["seconds"]),
                          "rows/s", "CVAT's export code on CVAT's schema",
                          round(cvat_exp["rows"] / cvat_exp["seconds"]), "higher", rows=exp["rows"],
                          baseline_rows=cvat_exp["rows"]))
    figures.append(figure(f"export: CSV of {exp['rows']:,} rows, service peak memory", round(exp["peak_mb"]), "MB",
                          "CVAT's export code on CVAT's schema", round(cvat_exp["peak_mb"]), "lower",
                          target="< 500 MB", met=exp["peak_mb"] < 500, service_idle_mb=round(exp["idle_mb"]),
                          sampled_peak_during_export_mb=round(exp["export_peak_mb"])))
    figures.append(figure("storage: bytes on disk per event", round(load["ours_bytes"] / n_loaded, 1), "B/event",
                          "CVAT's schema", round(load["cvat_bytes"] / max(load["cvat_events"], 1), 1), "lower",
                          target="≤ CVAT's", met=load["ours_bytes"] / n_loaded <= load["cvat_bytes"] / max(load["cvat_events"], 1),
                          working_time_tables_bytes=load["working_time_bytes"]))
    report = {"events": n_loaded, "machine": machine(), "seconds": round(time.monotonic() - started, 1),
              "setup": {"generate_s": round(gen["seconds"], 1), "load_s": round(load["load_s"], 1),
                        "load_rate": round(n_loaded / max(load["load_s"], 1e-9)),
                        "copy_to_cvat_schema_s": round(load["copy_s"], 1),
                        "working_time_full_refresh_s": round(load["refresh_s"], 2),
                        "optimize_s": round(load["optimize_s"], 1), "users": gen["users"]},
              "figures": figures}
    print(format_table(report), file=out)
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
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


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
